// Package gateway is the HTTP front of scattergather: any service that
// speaks HTTP submits requests, waits for or polls their replies, and can
// watch the parts of a request arrive one by one.
//
// Usage:
//
//	g, err := gateway.New(gateway.Config{
//		Client: kafkaconfig.Client{Brokers: []string{"127.0.0.1:9092"}},
//		Topics: kafkaconfig.Topics{Prefix: "sg."},
//		Routes: routes, // []scatterer.Route, the scatterer's table
//		Addr:   "127.0.0.1:8080",
//	})
//	if err != nil { ... }
//	return g.Run(ctx) // serves until ctx ends, then shuts down gracefully
//
// # API
//
//	POST /v1/routes/{route}/requests[?timeout=2s][&fanout=N][&wait=5s]
//	     body: the payload, with its Content-Type (JSON or any bytes).
//	     With wait: 200 and the reply (below) if it comes in time, else
//	     202. Without: 202 Accepted, Location: /v1/requests/{id}, and a
//	     PendingBody. An X-Correlation-ID header sets the id (409 if known).
//	GET  /v1/requests/{id}[?wait=5s]   200 reply | 202 pending | 404 unknown
//	GET  /v1/requests/{id}/events      Server-Sent Events: manifest, part..., reply
//	GET  /v1/routes, /v1/routes/{route}
//	GET  /v1/openapi.json              this API as an OpenAPI 3.1 document
//
// The OpenAPI document (openapi.json in this package, embedded) lists
// every operation, parameter, header, status and error code the handlers
// produce, and nothing else; its tests hold it to them both ways. Generate
// a client from it, or validate against it.
//
// That is all the gateway's handler serves: health, readiness and metrics
// belong on another port, the admin port, which the gateway command serves
// (--admin-addr: /metrics, /healthz, and /readyz,
// whose check is [Gateway.Ready]: caught up with the replies topic, and
// Kafka reachable). The
// API's port answers /healthz, /readyz and /metrics with a 404 that says
// so; before, it served /healthz and /readyz itself.
//
// Each endpoint takes only its own query parameters (timeout, fanout and
// wait on a POST; wait on GET /v1/requests/{id}; none on the routes and
// the event stream), each at most once: anything else is a 400, so that a misspelt ?timout=2s is not a request with the default
// timeout. A timeout is at least 1ms and is cut to whole milliseconds, the
// resolution of the request record.
//
// # Authentication
//
// With Config.AuthTokenFile set, every /v1/ request, whatever its path or
// method, must carry "Authorization: Bearer <token>" with one of the
// file's tokens, or it is answered 401 with a JSON error and
// "WWW-Authenticate: Bearer realm="scattergather"" (plus
// error="invalid_token" when a token was given), before anything else is
// looked at. The file holds one token a line, so that two are valid
// while callers move from the old to the new; it is read again at most
// once a second (on the monotonic clock). Rotate by writing a new file
// and renaming it over the old one: a file written in place can be read
// half-written, so a changed file that does not end with a newline (or
// cannot be read, or holds a malformed token or none) is not taken, with a
// warning, and the tokens read before stay valid. Tokens are compared by
// their SHA-256 digests in constant time, and never logged.
//
// # Limits
//
// MaxInFlight caps the requests submitted through this gateway whose reply
// it has not read: a POST above it is answered 429 with Retry-After and
// code too-many-in-flight, before its body is read. A request stops
// counting when its reply is read, when Kafka refuses it, or ReplyGrace
// after its deadline (a reply that never comes holds its slot that long).
// 429 rather than 503: the gateway is healthy, and a proxy that ejects
// hosts answering 5xx should not take it out. MaxStreams caps event
// streams, MaxBodyBytes bodies, MaxWait long polls.
//
// A reply is the JSON of [client.ReplyView]: status COMPLETE, PARTIAL or
// FAILED, the merged payload, and one marker per expected part (OK, ERROR,
// EXPIRED, MISSING, SKIPPED), so that a partial answer is never taken for a
// whole one; the X-Reply-Status header repeats the status. HTTP status 200
// means "here is the reply", whatever its status.
//
// Every error is JSON, {"error": "...", "code": "..."}, with the codes
// listed as Code* constants: 400 for a bad timeout, fan-out, wait, id,
// query string, Content-Type or JSON body; 401 without a valid bearer
// token; 404 for an unknown route, request or path; 409 for a known
// X-Correlation-ID; 413 for a body over MaxBodyBytes; 429 with Retry-After
// at MaxInFlight; 503 with Retry-After when Kafka does not take the
// request within ProduceTimeout, while the gateway is still reading back
// replies after a start, or when MaxStreams event streams are open.
//
// # Where replies come from
//
// The gateway does not keep replies in process memory alone. It reads the
// requests and replies topics, without a consumer group, from
// ReplyRetention ago (found with ListOffsets by timestamp) and then as they
// grow, into a bounded cache (MaxCachedRequests, MaxCacheBytes; the oldest
// leave first). So any gateway instance, also one restarted a minute ago,
// answers GET /v1/requests/{id} for any request of the last ReplyRetention,
// whoever submitted it: 202 while it is pending, 200 once replied. Until it
// has read up to where the topics ended at its start, it answers an id it
// does not know with 503 "catching-up" rather than a wrong 404; Ready
// (the admin port's /readyz) passes then. While its topics do not exist,
// Ready fails naming them. Requests whose reply goes to another reply
// topic (a Go client's own, see package client) are not tracked.
//
// # Kafka unreachable
//
// The gateway asks Kafka for metadata (the broker list only) every
// PingInterval (1s), giving it PingTimeout (2s) to answer. From the first
// ping that fails until one is answered, Ready fails with "Kafka
// unreachable for <how long>: <error>", so /readyz turns 503 within about
// 3s of an outage and a load balancer stops sending POSTs that would each
// wait ProduceTimeout for their 503; it passes again at the first answer.
// The tail alone would not tell: the Kafka client retries a fetch from a
// broker that is gone without reporting it.
//
// # Event streams
//
// The results of a request are keyed by its correlation id, so they all sit
// on one partition of the results topic. An event stream reads that one
// partition, from the request's submission time on (ListOffsets by
// timestamp again), with a Kafka client of its own, and sends the manifest
// and each part as it arrives; then the reply, once it is in the cache and
// every part it says arrived has been sent. A stream that opens after the
// reply still gets the parts while the results topic retains them. At most
// MaxStreams streams run at once.
//
// # Metrics
//
// With Config.Metrics set (the README's Observability section lists every metric):
//
//	scattergather_gateway_http_requests_total{endpoint,code}      answers by route pattern ("other" for unknown paths) and status
//	scattergather_gateway_http_request_duration_seconds{endpoint} time to answer, waits and streams included
//	scattergather_gateway_cached_requests                         requests and replies in the cache
//	scattergather_gateway_cache_evictions_total                   entries dropped for room before their retention ended
//	scattergather_gateway_event_streams                           open /events streams
//	scattergather_gateway_in_flight_requests                      requests submitted here, no reply read yet
//	scattergather_gateway_in_flight_rejected_total                POSTs answered 429 at MaxInFlight
//	scattergather_gateway_in_flight_expired_total                 in-flight requests that stopped counting at deadline + ReplyGrace, no reply read
//	scattergather_gateway_auth_failures_total{reason}             401s: missing (no bearer token) or invalid
//
// # Concurrency and shutdown
//
// Run owns three goroutines besides the HTTP server's: the serve loop, the
// tail of the requests and replies topics, and the pings. When its context ends it stops
// accepting connections, ends long waits (answered 202 with a Location) and
// event streams (an error event), gives running requests up to
// ShutdownTimeout, waits for every handler and for the tail, and closes its
// Kafka clients.
package gateway
