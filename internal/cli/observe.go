package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/metrics"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// Default metrics addresses of the long-running commands. Each role has
// its own port so that one of each can run on a host; more instances of a
// role on one host need their own --metrics-addr.
const (
	DefaultDevMetricsAddr        = "127.0.0.1:9090"
	DefaultScattererMetricsAddr  = "127.0.0.1:9191"
	DefaultProcessorMetricsAddr  = "127.0.0.1:9192"
	DefaultAggregatorMetricsAddr = "127.0.0.1:9193"
	DefaultGatewayMetricsAddr    = "127.0.0.1:9194"
)

// observeFlags are the observability flags of a long-running command.
type observeFlags struct {
	metricsAddr  string
	otlpEndpoint string
	lagInterval  time.Duration
}

// register defines --metrics-addr (default addr), --otlp-endpoint and
// --lag-interval.
func (o *observeFlags) register(fs *flag.FlagSet, addr string) {
	fs.StringVar(&o.metricsAddr, "metrics-addr", addr, "address of the /metrics, /healthz and /readyz endpoints (host:port; 0.0.0.0:PORT for every interface); empty disables them")
	fs.StringVar(&o.otlpEndpoint, "otlp-endpoint", "", "OTLP/HTTP endpoint that receives the trace spans, e.g. http://127.0.0.1:4318 (/v1/traces is appended unless it ends so); it overrides OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_TRACES_ENDPOINT. Empty: those decide, and with neither set no spans are recorded (the traceparent header is passed on either way). OTEL_SERVICE_NAME (default scattergather-<role>), OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and the other OTEL_EXPORTER_OTLP_* variables apply (README, Observability)")
	fs.DurationVar(&o.lagInterval, "lag-interval", metrics.DefaultLagInterval, "how often the consumer lag of the command's groups is sampled for /metrics")
}

// observability is what a command exposes: a registry (nil when
// --metrics-addr is empty), the Kafka client metrics and the tracer
// providers of its roles.
type observability struct {
	flags  observeFlags
	reg    *prometheus.Registry
	kafka  *metrics.KafkaMetrics
	traces traceSettings
	// providers are the roles' tracer providers, shut down (flushed) by run.
	providers []*sdktrace.TracerProvider
	log       *slog.Logger
	// topics, when set, is watched by run (watchTopics).
	topics *kafka.TopicWatch
}

// watchTopics has run check that topics exist (kafka.TopicWatch): until
// they do, the log warns naming them and hint, and /readyz fails with its
// check "topics" saying the same.
func (ob *observability) watchTopics(cc kafkaconfig.Client, topics []string, hint string) error {
	w, err := kafka.NewTopicWatch(kafka.TopicWatchConfig{Client: cc, Topics: topics, Hint: hint, Logger: ob.log})
	if err != nil {
		return err
	}
	ob.topics = w
	return nil
}

func (o *observeFlags) build(log *slog.Logger) (*observability, error) {
	ob := &observability{flags: *o, log: log}
	if o.lagInterval <= 0 {
		return nil, fmt.Errorf("--lag-interval: %s, want a positive duration", o.lagInterval)
	}
	if o.metricsAddr != "" {
		ob.reg = metrics.NewRegistry()
		ob.kafka = metrics.NewKafkaMetrics(ob.reg)
	}
	traces, err := o.traceSettings(os.Getenv)
	if err != nil {
		return nil, err
	}
	ob.traces = traces
	if traces.on {
		// The SDK reports failed exports through OpenTelemetry's one error
		// handler, a process global: send them to the command's log, in its
		// format, rather than the standard logger's stderr lines.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("opentelemetry", "err", err)
		}))
	}
	return ob, nil
}

// registerer returns the registry, or nil when metrics are off.
func (ob *observability) registerer() prometheus.Registerer {
	if ob.reg == nil {
		return nil
	}
	return ob.reg
}

// tracerProvider returns role's tracer provider (service.name
// scattergather-<role> unless OTEL_SERVICE_NAME says otherwise), or nil
// when tracing is off. run shuts it down.
func (ob *observability) tracerProvider(ctx context.Context, role string) (trace.TracerProvider, error) {
	if !ob.traces.on {
		return nil, nil
	}
	tp, err := newTracerProvider(ctx, ob.traces, role)
	if err != nil {
		return nil, err
	}
	ob.providers = append(ob.providers, tp)
	return tp, nil
}

// tracerProviders returns the tracer provider of each of roles, by role;
// nil when tracing is off.
func (ob *observability) tracerProviders(ctx context.Context, roles ...string) (map[string]trace.TracerProvider, error) {
	if !ob.traces.on {
		return nil, nil
	}
	tps := map[string]trace.TracerProvider{}
	for _, r := range roles {
		tp, err := ob.tracerProvider(ctx, r)
		if err != nil {
			return nil, err
		}
		tps[r] = tp
	}
	return tps, nil
}

// client returns cc with the kprom hooks of role.
func (ob *observability) client(cc kafkaconfig.Client, role string) kafkaconfig.Client {
	if hooks := ob.kafka.Hooks(role); hooks != nil {
		cc.NewHooks = hooks
	}
	return cc
}

// run runs main alongside the metrics server (serving checks), the lag
// sampler of groups (none when groups is empty) and the topic watch (with
// its check "topics"), until ctx ends or main returns; then it stops the
// others, waits for them, and flushes the spans (for at most
// traceShutdownTimeout). The server binds before main starts, so a taken
// port is an error at once.
func (ob *observability) run(ctx context.Context, cc kafkaconfig.Client, groups []string, checks []metrics.Check, main func(context.Context) error) error {
	defer shutdownTraces(ctx, ob.log, ob.providers)
	var side []func(context.Context) error
	if ob.topics != nil {
		checks = append(slices.Clone(checks), metrics.Check{Name: "topics", Ready: ob.topics.Ready})
		side = append(side, ob.topics.Run)
	}
	if ob.reg != nil {
		srv, err := metrics.NewServer(metrics.ServerConfig{Addr: ob.flags.metricsAddr, Gatherer: ob.reg, Registerer: ob.reg,
			Checks: checks, Logger: ob.log})
		if err != nil {
			return fmt.Errorf("--metrics-addr: %w (set another address, or an empty one to disable metrics)", err)
		}
		side = append(side, srv.Run)
		if len(groups) > 0 {
			lag, err := metrics.NewLagSampler(metrics.LagConfig{Client: cc, Groups: groups, Interval: ob.flags.lagInterval,
				Registerer: ob.reg, Logger: ob.log})
			if err != nil {
				srv.Close()
				return err
			}
			side = append(side, lag.Run)
		}
		ob.log.Info("serving metrics", "addr", srv.Addr(), "groups", strings.Join(groups, ","))
	}
	return runTogether(ctx, main, side...)
}

// runTogether runs main and side by side. When main returns, or any of them
// fails, the others' context is cancelled; it returns after all have
// returned, with their errors joined.
func runTogether(ctx context.Context, main func(context.Context) error, side ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, fn := range side {
		// Each exits when ctx is cancelled: by main's return or a failure.
		wg.Go(func() {
			if err := fn(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				cancel()
			}
		})
	}
	err := main(ctx)
	cancel()
	wg.Wait()
	return errors.Join(append([]error{err}, errs...)...)
}
