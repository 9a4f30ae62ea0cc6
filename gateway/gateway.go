package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// Gateway is the HTTP front of the pipeline. Build it with New and serve
// with Run.
type Gateway struct {
	cfg    Config
	ran    atomic.Bool // Run was called
	log    *slog.Logger
	routes map[schemas.Route]scatterer.Route
	store  *store
	state  atomic.Int32 // tailConnecting, tailCatchingUp, tailReady
	// down is set while Kafka does not answer the pings (ping.go).
	down atomic.Pointer[brokerDown]
	// tailErr is why the tail is connecting (its last setup error), nil
	// once it caught up.
	tailErr atomic.Pointer[error]
	mux     *http.ServeMux
	m       *gatewayMetrics
	// tokens are the accepted bearer tokens; nil: no authentication.
	tokens *tokens
	// inflight counts this gateway's requests awaiting their reply.
	inflight *inflight

	// streams is a semaphore of MaxStreams slots for /events.
	streams chan struct{}
	// closing is closed when Run's context ends, before the HTTP shutdown,
	// so that long waits and event streams end at once.
	closing chan struct{}
	// handlers counts the HTTP handlers running, so that Run returns only
	// after the last one.
	handlers sync.WaitGroup

	producer *kgo.Client // set by Run before serving

	mu               sync.Mutex // guards resultPartitions
	resultPartitions int
	// listTimeout bounds the lookup of the results topic's partitions
	// (listTopicsTimeout; tests shorten it).
	listTimeout time.Duration
}

// listTopicsTimeout bounds how long an event stream waits for the results
// topic's partition count when the broker does not answer.
const listTopicsTimeout = 5 * time.Second

// New checks cfg and builds a gateway; nothing touches the network until
// Run.
func New(cfg Config) (*Gateway, error) {
	cfg = cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	g := &Gateway{
		cfg:      cfg,
		log:      cfg.Logger.With("role", "gateway"),
		routes:   map[schemas.Route]scatterer.Route{},
		store:    newStore(cfg.MaxCachedRequests, cfg.MaxCacheBytes, cfg.ReplyRetention),
		streams:  make(chan struct{}, cfg.MaxStreams),
		closing:  make(chan struct{}),
		inflight: newInflight(cfg.MaxInFlight),

		listTimeout: listTopicsTimeout,
	}
	for _, r := range cfg.Routes {
		g.routes[r.Name] = r
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.m = m
	if err := registerInFlight(cfg.Metrics, g.inflight); err != nil {
		return nil, fmt.Errorf("gateway: register metrics: %w", err)
	}
	if cfg.AuthTokenFile != "" {
		if g.tokens, err = loadTokens(cfg.AuthTokenFile, g.log); err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
	}
	g.mux = g.routesMux()
	return g, nil
}

// Run listens (on Config.Listener, else Config.Addr), connects to Kafka
// and serves until ctx ends; then it stops accepting, ends waits and event
// streams, lets running requests finish for up to ShutdownTimeout, and
// closes its Kafka clients. A broker that is down does not stop Run: POSTs
// are answered 503 and the reading of replies is retried until it answers.
// Run may be called once.
func (g *Gateway) Run(ctx context.Context) error {
	if !g.ran.CompareAndSwap(false, true) {
		return errors.New("gateway: Run called twice; build a new Gateway with New")
	}
	ln := g.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", g.cfg.Addr); err != nil {
			return fmt.Errorf("gateway: listen on %s: %w", g.cfg.Addr, err)
		}
	}
	producer, err := kafka.NewClient(g.cfg.Client,
		// A request Kafka has not taken by then is failed (once that is
		// safe for the idempotent producer) rather than written long
		// after its caller was told 503.
		kgo.RecordDeliveryTimeout(g.cfg.ProduceTimeout),
		// Topics created after the gateway started (dev, demo) are seen
		// within a second rather than kgo's default 5s.
		kgo.MetadataMinAge(time.Second))
	if err != nil {
		ln.Close()
		return fmt.Errorf("gateway: %w", err)
	}
	g.producer = producer

	srv := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: 10 * time.Second,
		// No write timeout: waits and event streams are long by design.
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	tailCtx, stopTail := context.WithCancel(ctx)
	defer stopTail()
	var wg sync.WaitGroup
	// The tail and the pings exit when tailCtx ends.
	wg.Go(func() { g.tail(tailCtx) })
	wg.Go(func() { g.ping(tailCtx) })

	serveErr := make(chan error, 1)
	// Serve returns http.ErrServerClosed once Shutdown or Close is called.
	go func() { serveErr <- srv.Serve(ln) }()
	g.log.Info("gateway serving", "addr", ln.Addr().String(), "routes", len(g.routes),
		"auth", g.tokens != nil, "max_in_flight", g.cfg.MaxInFlight)

	var errs []error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		errs = append(errs, fmt.Errorf("gateway: serve: %w", err))
		serveErr = nil
	}
	close(g.closing)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		g.log.Warn("graceful shutdown timed out; closing connections", "err", err)
		srv.Close()
	}
	if serveErr != nil {
		if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("gateway: serve: %w", err))
		}
	}
	stopTail()
	wg.Wait()
	// Closing the producer fails what it still buffers, so a handler
	// stuck on an unreachable broker returns.
	producer.Close()
	g.handlers.Wait()
	return errors.Join(errs...)
}

// ServeHTTP serves the gateway's API; Run serves it, tests may call it.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.handlers.Add(1)
	defer g.handlers.Done()
	g.m.instrument(w, r, g.mux)
}

// Ready reports nil once the gateway has read the requests and replies
// topics back over its retention window (then an unknown id is a 404) and
// while Kafka answers its pings (a metadata request every PingInterval),
// and why not otherwise. It is the readiness check of the admin port's
// /readyz (see the package doc); safe for concurrent use.
func (g *Gateway) Ready() error {
	var why []string
	if err := g.unreachable(); err != nil {
		why = append(why, err.Error())
	}
	if s := g.state.Load(); s != tailReady {
		reason := tailStateNames[s]
		if err := g.tailErr.Load(); s == tailConnecting && err != nil {
			reason += ": " + (*err).Error()
		}
		why = append(why, reason)
	}
	if len(why) > 0 {
		return errors.New("gateway: " + strings.Join(why, "; "))
	}
	return nil
}

// partitionOf returns the partition of the results topic that holds the
// records keyed id: the pipeline writes them with the Kafka-compatible
// murmur2 key partitioner (internal/kafkaconfig.Client).
func partitionOf(id schemas.CorrelationID, partitions int) int32 {
	p := kgo.StickyKeyPartitioner(nil).ForTopic("")
	return int32(p.Partition(&kgo.Record{Key: []byte(id)}, partitions))
}

// resultsPartitions returns the partition count of the results topic,
// asking the broker once and then remembering it (a mismatch with the
// aggregator's state topic is an error elsewhere, so it does not change
// while the pipeline runs). The broker is asked outside the lock and for
// at most g.listTimeout, so that with the broker down each caller gets an
// error soon rather than queueing behind another's request.
func (g *Gateway) resultsPartitions(ctx context.Context) (int, error) {
	g.mu.Lock()
	n := g.resultPartitions
	g.mu.Unlock()
	if n > 0 {
		return n, nil
	}
	ctx, cancel := context.WithTimeout(ctx, g.listTimeout)
	defer cancel()
	topic := g.cfg.Topics.Results()
	td, err := kadm.NewClient(g.producer).ListTopics(ctx, topic)
	if err != nil {
		return 0, err
	}
	d, ok := td[topic]
	if !ok || d.Err != nil || len(d.Partitions) == 0 {
		if ok && d.Err != nil {
			return 0, fmt.Errorf("topic %s: %w", topic, d.Err)
		}
		return 0, fmt.Errorf("topic %s: no partitions", topic)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.resultPartitions = len(d.Partitions)
	return g.resultPartitions, nil
}
