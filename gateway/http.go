package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/scattergather/scattergather/internal/tracing"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// The error codes of the API, in the "code" field of every error body.
const (
	CodeBadRequest        = "bad-request"
	CodeInvalidTimeout    = "invalid-timeout"
	CodeInvalidFanout     = "invalid-fanout"
	CodeInvalidWait       = "invalid-wait"
	CodeInvalidJSON       = "invalid-json"
	CodeInvalidID         = "invalid-correlation-id"
	CodeUnknownRoute      = "unknown-route"
	CodeUnknownRequest    = "unknown-request"
	CodeNotFound          = "not-found"
	CodeMethodNotAllowed  = "method-not-allowed"
	CodeDuplicateID       = "duplicate-correlation-id"
	CodeBodyTooLarge      = "body-too-large"
	CodeBrokerUnavailable = "broker-unavailable"
	CodeCatchingUp        = "catching-up"
	CodeTooManyStreams    = "too-many-streams"
	CodeTooManyInFlight   = "too-many-in-flight"
	CodeUnauthorized      = "unauthorized"
	CodeInternal          = "internal"
)

// HeaderCorrelationID names the correlation id on a POST (optional: the
// caller's own id) and on every answer about a request.
const HeaderCorrelationID = "X-Correlation-ID"

// HeaderReplyStatus carries a reply's status (COMPLETE, PARTIAL, FAILED)
// on a 200 answer, so a caller can branch without parsing the body.
const HeaderReplyStatus = "X-Reply-Status"

// ErrorBody is the JSON body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// PendingBody is the JSON body of a 202 answer: the request is accepted
// and its reply has not come yet.
type PendingBody struct {
	CorrelationID string    `json:"correlation_id"`
	Route         string    `json:"route,omitempty"`
	Status        string    `json:"status"` // PENDING
	SubmittedAt   time.Time `json:"submitted_at,omitzero"`
	Deadline      time.Time `json:"deadline,omitzero"`
	// Location polls for the reply; Events streams the parts and the reply.
	Location string `json:"location"`
	Events   string `json:"events"`
}

// RouteBody describes one route in GET /v1/routes.
type RouteBody struct {
	Name       string   `json:"name"`
	Mode       string   `json:"mode"`
	Fanout     int      `json:"fanout,omitempty"`
	MaxFanout  int      `json:"max_fanout"`
	Recipients []string `json:"recipients,omitempty"`
	TimeoutMS  int64    `json:"timeout_ms"`
	MaxTimeout int64    `json:"max_timeout_ms"`
	Policy     string   `json:"policy,omitempty"`
	Requests   string   `json:"requests"`
}

var validID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// endpoint is one operation of the API: a method, a path pattern (the
// same in net/http's mux and in the OpenAPI document, openapi.json), the
// query parameters its handler takes and the handler.
type endpoint struct {
	method, path string
	query        []string
	handle       func(*Gateway, http.ResponseWriter, *http.Request)
}

// endpoints are the API's operations, in the order of openapi.json. The
// mux serves exactly these (routesMux), and TestOpenAPIOperations checks
// that the document has exactly these, with exactly these query
// parameters: a route or parameter added here without the document, or to
// the document without a handler, fails it. Each handler parses its
// query with the list named here.
func endpoints() []endpoint {
	return []endpoint{
		{http.MethodPost, "/v1/routes/{route}/requests", submitParams, (*Gateway).postRequest},
		{http.MethodGet, "/v1/routes", nil, (*Gateway).listRoutes},
		{http.MethodGet, "/v1/routes/{route}", nil, (*Gateway).getRoute},
		{http.MethodGet, "/v1/requests/{id}", getParams, (*Gateway).getRequest},
		{http.MethodGet, "/v1/requests/{id}/events", nil, (*Gateway).streamEvents},
		{http.MethodGet, "/v1/openapi.json", nil, (*Gateway).openAPI},
	}
}

// routesMux serves the endpoints. Every /v1/ handler, the 405 and 404
// answers under /v1/ included, checks the bearer token first (authorize),
// so that a caller without one learns nothing, not even the route names.
func (g *Gateway) routesMux() *http.ServeMux {
	mux := http.NewServeMux()
	api := func(pattern string, h http.HandlerFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if g.authorize(w, r) {
				h(w, r)
			}
		})
	}
	allow := map[string][]string{} // path → its methods
	var paths []string
	for _, e := range endpoints() {
		api(e.method+" "+e.path, func(w http.ResponseWriter, r *http.Request) { e.handle(g, w, r) })
		if allow[e.path] == nil {
			paths = append(paths, e.path)
		}
		allow[e.path] = append(allow[e.path], e.method)
	}
	// The same paths without a method match only the wrong methods.
	for _, p := range paths {
		methods := strings.Join(allow[p], ", ")
		api(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", methods)
			writeError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method %s is not allowed on %s; use %s", r.Method, r.URL.Path, methods)
		})
	}
	api("/v1/", g.notFound)
	mux.HandleFunc("/", g.notFound)
	return mux
}

// notFound answers a path the API does not have; for the admin paths, it
// says where they are.
func (g *Gateway) notFound(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz", "/readyz", "/metrics":
		writeError(w, http.StatusNotFound, CodeNotFound, "%s is not served on the API's address but on the admin address (scattergather gateway --admin-addr)", r.URL.Path)
	default:
		writeError(w, http.StatusNotFound, CodeNotFound, "no endpoint %s %s; see GET /v1/routes and POST /v1/routes/{route}/requests", r.Method, r.URL.Path)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"render the answer","code":"internal"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, format string, args ...any) {
	writeJSON(w, status, ErrorBody{Error: fmt.Sprintf(format, args...), Code: code})
}

// unavailable answers 503 with Retry-After.
func (g *Gateway) unavailable(w http.ResponseWriter, code, format string, args ...any) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(g.cfg.RetryAfter.Seconds()))))
	writeError(w, http.StatusServiceUnavailable, code, format, args...)
}

func routeBody(r scatterer.Route) RouteBody {
	b := RouteBody{Name: string(r.Name), Mode: string(r.Mode), MaxFanout: r.MaxFanout, TimeoutMS: r.Timeout.Milliseconds(),
		MaxTimeout: r.MaxTimeout.Milliseconds(), Policy: r.Policy, Requests: "/v1/routes/" + url.PathEscape(string(r.Name)) + "/requests"}
	if r.Mode == scatterer.Split {
		b.Fanout = r.Fanout
	}
	for _, p := range r.Recipients {
		b.Recipients = append(b.Recipients, string(p))
	}
	return b
}

func (g *Gateway) listRoutes(w http.ResponseWriter, r *http.Request) {
	if _, perr := parseQuery(r.URL.RawQuery, nil); perr != nil {
		perr.write(w)
		return
	}
	out := struct {
		Routes []RouteBody `json:"routes"`
	}{Routes: []RouteBody{}}
	for _, r := range g.cfg.Routes {
		out.Routes = append(out.Routes, routeBody(r))
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) getRoute(w http.ResponseWriter, r *http.Request) {
	if _, perr := parseQuery(r.URL.RawQuery, nil); perr != nil {
		perr.write(w)
		return
	}
	rt, err := g.lookupRoute(r.PathValue("route"))
	if err != nil {
		err.write(w)
		return
	}
	writeJSON(w, http.StatusOK, routeBody(rt))
}

// postRequest is POST /v1/routes/{route}/requests.
func (g *Gateway) postRequest(w http.ResponseWriter, r *http.Request) {
	sub, perr := g.parseSubmit(r.PathValue("route"), r.URL.RawQuery, r.Header)
	if perr != nil {
		perr.write(w)
		return
	}
	// Refuse early, before the body is read, when the gateway is full;
	// acquire below decides.
	if g.inflight.full(time.Now()) {
		g.tooManyInFlight(w)
		return
	}
	rt, id := sub.route, sub.id
	if r.ContentLength > g.cfg.MaxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "body of %d bytes exceeds the limit of %d", r.ContentLength, g.cfg.MaxBodyBytes)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes))
	if err != nil {
		if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
			writeError(w, http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "body exceeds the limit of %d bytes", g.cfg.MaxBodyBytes)
			return
		}
		writeError(w, http.StatusBadRequest, CodeBadRequest, "read the body: %v", err)
		return
	}
	ct, perr := parseContentType(r.Header.Get("Content-Type"), body)
	if perr != nil {
		perr.write(w)
		return
	}

	now := time.Now()
	deadline := now.Add(sub.timeout)
	if _, err := g.store.submit(id, rt.Name, now, deadline); err != nil {
		writeError(w, http.StatusConflict, CodeDuplicateID, "%s %s is already known to this gateway; poll /v1/requests/%s", HeaderCorrelationID, id, id)
		return
	}
	if !g.inflight.acquire(id, deadline.Add(g.cfg.ReplyGrace), now) {
		g.store.forget(id)
		g.tooManyInFlight(w)
		return
	}
	req := schemas.Request{CorrelationID: id, Route: rt.Name, Payload: body, ContentType: ct, Timeout: sub.explicit,
		Fanout: sub.fanout, SubmittedAt: now}
	v, err := schemas.EncodeRequest(req)
	if err != nil {
		g.store.forget(id)
		g.inflight.release(id)
		writeError(w, http.StatusInternalServerError, CodeInternal, "encode the request: %v", err)
		return
	}
	// The caller's trace goes on through the pipeline, under the
	// gateway's span when it records spans; a malformed traceparent is
	// dropped, as W3C says, and the pipeline starts a trace of its own.
	ctx, span := tracing.Tracer(g.cfg.TracerProvider).Start(tracing.ExtractHTTP(r), "POST /v1/routes/{route}/requests",
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("scattergather.route", string(rt.Name)), attribute.String("scattergather.correlation_id", string(id))))
	defer span.End()
	carrier := kgo.Record{}
	tracing.Inject(ctx, &carrier)
	if err := g.produce(r.Context(), id, v, carrier.Headers); err != nil {
		span.SetStatus(codes.Error, err.Error())
		g.log.Warn("request not produced", "correlation_id", id, "route", rt.Name, "err", err)
		if errors.Is(err, errNotAcked) {
			// It may still be written: say where to look.
			w.Header().Set(HeaderCorrelationID, string(id))
			w.Header().Set("Location", "/v1/requests/"+url.PathEscape(string(id)))
		}
		g.unavailable(w, CodeBrokerUnavailable, "Kafka is unavailable: request %s: %v", id, err)
		return
	}
	w.Header().Set(HeaderCorrelationID, string(id))
	g.answer(w, r, id, sub.wait, http.StatusAccepted)
}

// tooManyInFlight answers 429 with Retry-After: MaxInFlight requests of
// this gateway await their replies. Not 503: the gateway is healthy, and a
// proxy that ejects hosts on 5xx should not take it out of rotation.
func (g *Gateway) tooManyInFlight(w http.ResponseWriter) {
	g.m.inFlightRejected.Inc()
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(g.cfg.RetryAfter.Seconds()))))
	writeError(w, http.StatusTooManyRequests, CodeTooManyInFlight,
		"%d requests submitted through this gateway await their replies, the limit (max in flight); retry later", g.cfg.MaxInFlight)
}

// errNotAcked: the broker did not acknowledge a request in time.
var errNotAcked = errors.New("not acknowledged in time")

// produce writes a request record and waits up to ProduceTimeout for the
// broker's acknowledgement. A request the broker refused is forgotten; one
// still in flight at the timeout (errNotAcked) may yet be written, and is
// forgotten only if it finally fails (the producer gives up on it after
// ProduceTimeout too, when it safely can).
func (g *Gateway) produce(ctx context.Context, id schemas.CorrelationID, value []byte, headers []kgo.RecordHeader) error {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.ProduceTimeout)
	defer cancel()
	acked := make(chan error, 1) // the promise never blocks
	rec := &kgo.Record{Topic: g.cfg.Topics.Requests(), Key: []byte(id), Value: value, Headers: headers}
	g.producer.Produce(ctx, rec, func(_ *kgo.Record, err error) {
		if err != nil {
			g.store.forget(id)
			g.inflight.release(id)
		}
		acked <- err
	})
	select {
	case err := <-acked:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: no acknowledgement within %s; it may still be processed", errNotAcked, g.cfg.ProduceTimeout)
	}
}

// answer writes the reply of id if it is there or comes within wait (200),
// else the pending body with a Location (pendingStatus: 202). It stops
// waiting when the caller goes or the gateway shuts down.
func (g *Gateway) answer(w http.ResponseWriter, r *http.Request, id schemas.CorrelationID, wait time.Duration, pendingStatus int) {
	s, ok := g.store.get(id)
	if !ok {
		g.notKnown(w, id)
		return
	}
	if s.reply == nil && wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-s.done:
		case <-t.C:
		case <-r.Context().Done():
			return
		case <-g.closing:
		}
		if s2, ok := g.store.get(id); ok {
			s = s2
		}
	}
	w.Header().Set(HeaderCorrelationID, string(id))
	if s.reply != nil {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set(HeaderReplyStatus, string(s.reply.Status))
		w.WriteHeader(http.StatusOK)
		w.Write(append(s.view, '\n'))
		return
	}
	loc := "/v1/requests/" + url.PathEscape(string(id))
	w.Header().Set("Location", loc)
	writeJSON(w, pendingStatus, PendingBody{CorrelationID: string(id), Route: string(s.route), Status: "PENDING",
		SubmittedAt: s.submittedAt, Deadline: s.deadline, Location: loc, Events: loc + "/events"})
}

// notKnown answers for an id the store does not have: 404 once the
// gateway has read back the retention window, 503 before.
func (g *Gateway) notKnown(w http.ResponseWriter, id schemas.CorrelationID) {
	switch g.state.Load() {
	case tailConnecting:
		g.unavailable(w, CodeBrokerUnavailable, "Kafka is unavailable: cannot look up request %s yet", id)
	case tailCatchingUp:
		g.unavailable(w, CodeCatchingUp, "the gateway is still reading back the last %s of replies; ask again shortly", g.cfg.ReplyRetention)
	default:
		writeError(w, http.StatusNotFound, CodeUnknownRequest, "request %s is unknown: not submitted in the last %s, or its reply has expired from this gateway", id, g.cfg.ReplyRetention)
	}
}

// getRequest is GET /v1/requests/{id}[?wait=]: 200 with the reply, 202
// while pending, 404 when unknown.
func (g *Gateway) getRequest(w http.ResponseWriter, r *http.Request) {
	q, perr := parseQuery(r.URL.RawQuery, getParams)
	if perr != nil {
		perr.write(w)
		return
	}
	wait, perr := g.parseWaitValue(q)
	if perr != nil {
		perr.write(w)
		return
	}
	g.answer(w, r, schemas.CorrelationID(r.PathValue("id")), wait, http.StatusAccepted)
}
