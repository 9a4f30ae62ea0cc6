package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/scatterer"
)

// Defaults of [Config].
const (
	DefaultAddr              = "127.0.0.1:8080"
	DefaultMaxWait           = time.Minute
	DefaultReplyRetention    = 15 * time.Minute
	DefaultMaxCachedRequests = 100_000
	DefaultMaxCacheBytes     = 256 << 20
	DefaultMaxStreams        = 256
	DefaultMaxInFlight       = 10_000
	DefaultProduceTimeout    = 5 * time.Second
	DefaultRetryAfter        = 5 * time.Second
	DefaultReplyGrace        = 10 * time.Second
	DefaultShutdownTimeout   = 10 * time.Second
	DefaultPingInterval      = time.Second
	DefaultPingTimeout       = 2 * time.Second
)

// Config configures a [Gateway]. Validate fills in the defaults.
type Config struct {
	// Client is how to reach Kafka.
	Client kafkaconfig.Client
	// Topics names the topics; an empty Prefix takes kafkaconfig.DefaultPrefix.
	// The gateway produces to Topics.Requests(), reads Topics.Requests()
	// and Topics.Replies() back, and reads Topics.Results() per event
	// stream.
	Topics kafkaconfig.Topics
	// Routes the gateway accepts, the same table the scatterer serves (for
	// their fan-out and timeout limits); a request to another route is
	// answered 404 without reaching Kafka. At least one.
	Routes []scatterer.Route
	// Addr is where the HTTP server listens; default 127.0.0.1:8080. Use
	// ":8080" to listen on every interface.
	Addr string
	// Listener, when set, is served instead of listening on Addr (tests and
	// callers that pick a free port). Run closes it.
	Listener net.Listener
	// MaxBodyBytes caps a request body; default
	// scatterer.DefaultMaxPayloadBytes (1 MiB), what the scatterer accepts.
	MaxBodyBytes int64
	// MaxWait caps ?wait= on a POST or GET; default 1m.
	MaxWait time.Duration
	// ReplyRetention is how far back the gateway reads the requests and
	// replies topics when it starts, and how long it keeps what it read:
	// a restarted gateway still answers GET /v1/requests/{id} for replies
	// this recent. Default 15m.
	ReplyRetention time.Duration
	// MaxCachedRequests and MaxCacheBytes bound what the gateway keeps in
	// memory (requests seen and their replies); past either, the oldest
	// go first. Defaults 100,000 and 256 MiB.
	MaxCachedRequests int
	MaxCacheBytes     int64
	// MaxStreams caps concurrent /events streams, each of which reads one
	// partition of the results topic with its own Kafka client; default 256.
	MaxStreams int
	// MaxInFlight caps the requests this gateway submitted whose reply it
	// has not read yet; a POST above it is answered 429 with Retry-After.
	// A request stops counting when its reply is read, when Kafka refuses
	// it, or ReplyGrace after its deadline. Default 10,000.
	MaxInFlight int
	// AuthTokenFile, when set, names a file of bearer tokens, one a line
	// (blank lines and # comments skipped; each at least MinTokenLength of
	// A-Z a-z 0-9 - . _ ~ + / and trailing =). Every /v1/ request must then
	// carry "Authorization: Bearer <one of them>" or is answered 401 with
	// WWW-Authenticate. New fails when the file cannot be read or holds no
	// valid token; it is read again at most once a second while the gateway
	// serves, so a token is added or retired without a restart (a reload
	// that fails keeps the tokens read before). Empty: no authentication.
	AuthTokenFile string
	// ProduceTimeout is how long a POST waits for Kafka to take the request
	// before answering 503; default 5s.
	ProduceTimeout time.Duration
	// RetryAfter is sent with every 503; default 5s.
	RetryAfter time.Duration
	// ReplyGrace is how long past a request's deadline an event stream
	// waits for the reply before it ends with an error event; default 10s.
	ReplyGrace time.Duration
	// ShutdownTimeout bounds the graceful HTTP shutdown when Run's context
	// ends; default 10s.
	ShutdownTimeout time.Duration
	// PingInterval is how often the gateway asks Kafka for metadata (the
	// broker list, no topics) to know it is reachable, and PingTimeout how
	// long an answer may take: Ready fails from the first ping that fails
	// until one is answered, so within about PingInterval + PingTimeout of
	// an outage. Defaults 1s and 2s.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// Logger; nil discards logs.
	Logger *slog.Logger
	// Metrics registers the gateway's metrics (see the package doc); nil:
	// none.
	Metrics prometheus.Registerer
	// TracerProvider records a server span for each request submitted
	// ("POST /v1/routes/{route}/requests", the child of a caller's
	// traceparent header), whose context the request record carries to
	// the scatterer. nil records none: a caller's valid traceparent is
	// passed on as it came.
	TracerProvider trace.TracerProvider
}

// setDefaults returns c with its empty fields filled in, sharing nothing
// the caller could see change: Routes is a new slice.
func (c Config) setDefaults() Config {
	if c.Topics.Prefix == "" {
		c.Topics.Prefix = kafkaconfig.DefaultPrefix
	}
	routes := make([]scatterer.Route, len(c.Routes))
	for i, r := range c.Routes {
		routes[i] = withDefaults(r)
	}
	c.Routes = routes
	if c.Addr == "" && c.Listener == nil {
		c.Addr = DefaultAddr
	}
	for _, d := range c.durations() {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	for _, n := range c.sizes() {
		if *n.v == 0 {
			*n.v = n.def
		}
	}
	for _, n := range c.counts() {
		if *n.v == 0 {
			*n.v = n.def
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every problem with c at once; a zero field that takes a
// default is not a problem. It changes nothing.
func (c Config) Validate() error {
	var errs []error
	if err := c.Client.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("client: %w", err))
	}
	if len(c.Routes) == 0 {
		errs = append(errs, errors.New("routes: none given"))
	}
	seen := map[string]bool{}
	for _, r := range c.Routes {
		if err := withDefaults(r).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("routes: %w", err))
		}
		if seen[string(r.Name)] {
			errs = append(errs, fmt.Errorf("routes: %s listed twice", r.Name))
		}
		seen[string(r.Name)] = true
	}
	for _, d := range c.durations() {
		if *d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %s is negative", d.name, *d.v))
		}
	}
	for _, n := range c.sizes() {
		if *n.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %d is negative", n.name, *n.v))
		}
	}
	for _, n := range c.counts() {
		if *n.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %d is negative", n.name, *n.v))
		}
	}
	return errors.Join(errs...)
}

// limit is one numeric field of Config with its name and default.
type limit[T time.Duration | int64 | int] struct {
	name string
	v    *T
	def  T
}

func (c *Config) durations() []limit[time.Duration] {
	return []limit[time.Duration]{
		{"max wait", &c.MaxWait, DefaultMaxWait},
		{"reply retention", &c.ReplyRetention, DefaultReplyRetention},
		{"produce timeout", &c.ProduceTimeout, DefaultProduceTimeout},
		{"retry after", &c.RetryAfter, DefaultRetryAfter},
		{"reply grace", &c.ReplyGrace, DefaultReplyGrace},
		{"shutdown timeout", &c.ShutdownTimeout, DefaultShutdownTimeout},
		{"ping interval", &c.PingInterval, DefaultPingInterval},
		{"ping timeout", &c.PingTimeout, DefaultPingTimeout},
	}
}

func (c *Config) sizes() []limit[int64] {
	return []limit[int64]{
		{"max body bytes", &c.MaxBodyBytes, scatterer.DefaultMaxPayloadBytes},
		{"max cache bytes", &c.MaxCacheBytes, DefaultMaxCacheBytes},
	}
}

func (c *Config) counts() []limit[int] {
	return []limit[int]{
		{"max cached requests", &c.MaxCachedRequests, DefaultMaxCachedRequests},
		{"max streams", &c.MaxStreams, DefaultMaxStreams},
		{"max in flight", &c.MaxInFlight, DefaultMaxInFlight},
	}
}

// withDefaults fills r's zero limits as the scatterer does.
func withDefaults(r scatterer.Route) scatterer.Route {
	if r.MaxFanout == 0 {
		r.MaxFanout = scatterer.DefaultMaxFanout
	}
	if r.Timeout == 0 {
		r.Timeout = scatterer.DefaultTimeout
	}
	if r.MaxTimeout == 0 {
		r.MaxTimeout = scatterer.DefaultMaxTimeout
	}
	return r
}
