// Package stack runs a whole pipeline in one process: topics, a scatterer,
// the processors of every route, and aggregators. `scattergather dev`,
// `demo`, `bench` and the end-to-end tests use it; in production each role
// runs as its own process instead.
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/metrics"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// ProcessorSpec is one processor group of a route.
type ProcessorSpec struct {
	Route schemas.Route
	// Recipient of a broadcast route; empty for split routes.
	Recipient schemas.PartID
	Handler   processor.Handler
	// Instances in the group; default 1.
	Instances int
	// Tune adjusts the processor config of each instance before New.
	Tune func(*processor.Config)
}

// Config configures a Stack.
type Config struct {
	Client    kafkaconfig.Client
	Topics    kafkaconfig.Topics
	Layout    kafkaconfig.Layout
	Routes    *routes.Table
	Guarantee kafkaconfig.Guarantee
	// TransactionGap is every role's kafkaconfig.Role.TransactionGap; zero
	// takes the default.
	TransactionGap time.Duration
	Processors     []ProcessorSpec
	// Aggregators is the number of aggregator instances; default 1, and -1
	// for none (a test that starts its own).
	Aggregators int
	// TuneAggregator adjusts each aggregator's config before New.
	TuneAggregator func(*aggregator.Config)
	// TuneScatterer adjusts the scatterer's config before New.
	TuneScatterer func(*scatterer.Config)
	Logger        *slog.Logger
	// Metrics registers every role's metrics on one registerer (roles
	// share vectors); nil: none. See Checks and Groups for /readyz and
	// the lag sampler.
	Metrics prometheus.Registerer
	// KafkaMetrics, when set, gives every role's Kafka client its kprom
	// metrics, labelled by role.
	KafkaMetrics *metrics.KafkaMetrics
	// TracerProviders, by role ("scatterer", "processor", "aggregator"),
	// record each role's spans (kafkaconfig.Role.TracerProvider); a role
	// without one records none, and the trace context is carried either
	// way.
	TracerProviders map[string]trace.TracerProvider
}

// Stack is a built pipeline, ready to Run.
type Stack struct {
	cfg         Config
	Scatterer   *scatterer.Scatterer
	Processors  []*processor.Processor
	Aggregators []*aggregator.Aggregator
}

// New creates the topics and builds every role.
func New(ctx context.Context, cfg Config) (*Stack, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Aggregators == 0 {
		cfg.Aggregators = 1
	}
	if cfg.Routes == nil {
		return nil, errors.New("stack: no route table")
	}
	if err := EnsureTopics(ctx, cfg.Client, cfg.Topics, cfg.Layout, cfg.Routes.Names()); err != nil {
		return nil, err
	}
	st := &Stack{cfg: cfg}
	srs, err := cfg.Routes.ScattererRoutes()
	if err != nil {
		return nil, err
	}
	scfg := scatterer.Config{
		Role: kafkaconfig.Role{
			Client:         cfg.observedClient("scatterer"),
			Topics:         cfg.Topics,
			Guarantee:      cfg.Guarantee,
			TransactionGap: cfg.TransactionGap,
			InstanceID:     "stack",
			Logger:         cfg.Logger,
			Metrics:        cfg.Metrics,
			TracerProvider: cfg.TracerProviders["scatterer"],
		},
		Routes: srs,
	}
	if cfg.TuneScatterer != nil {
		cfg.TuneScatterer(&scfg)
	}
	if st.Scatterer, err = scatterer.New(scfg); err != nil {
		return nil, err
	}
	for _, ps := range cfg.Processors {
		n := max(ps.Instances, 1)
		for i := range n {
			pcfg := processor.Config{
				Role: kafkaconfig.Role{
					Client:         cfg.observedClient("processor"),
					Topics:         cfg.Topics,
					Guarantee:      cfg.Guarantee,
					TransactionGap: cfg.TransactionGap,
					InstanceID:     fmt.Sprintf("stack-%d", i),
					Logger:         cfg.Logger,
					Metrics:        cfg.Metrics,
					TracerProvider: cfg.TracerProviders["processor"],
				},
				Route:     ps.Route,
				Recipient: ps.Recipient,
			}
			if ps.Tune != nil {
				ps.Tune(&pcfg)
			}
			p, err := processor.New(pcfg, ps.Handler)
			if err != nil {
				return nil, err
			}
			st.Processors = append(st.Processors, p)
		}
	}
	merges, err := cfg.Routes.Merges()
	if err != nil {
		return nil, err
	}
	for i := range max(cfg.Aggregators, 0) {
		acfg := aggregator.Config{
			Role: kafkaconfig.Role{
				Client:         cfg.observedClient("aggregator"),
				Topics:         cfg.Topics,
				Guarantee:      cfg.Guarantee,
				TransactionGap: cfg.TransactionGap,
				InstanceID:     fmt.Sprintf("stack-%d", i),
				Logger:         cfg.Logger,
				Metrics:        cfg.Metrics,
				TracerProvider: cfg.TracerProviders["aggregator"],
			},
			Merges: merges,
		}
		if cfg.TuneAggregator != nil {
			cfg.TuneAggregator(&acfg)
		}
		a, err := aggregator.New(acfg)
		if err != nil {
			return nil, err
		}
		st.Aggregators = append(st.Aggregators, a)
	}
	return st, nil
}

// Run runs every role until ctx is done, then waits for all of them to drain
// and returns their joined errors. If one role fails, the others are stopped.
func (st *Stack) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	run := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		// Each role's goroutine exits when its Run returns, after ctx ends.
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				mu.Unlock()
				cancel()
			}
		}()
	}
	run("scatterer", st.Scatterer.Run)
	for i, p := range st.Processors {
		run(fmt.Sprintf("processor %d", i), p.Run)
	}
	for i, a := range st.Aggregators {
		run(fmt.Sprintf("aggregator %d", i), a.Run)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// EnsureTopics creates the pipeline's topics for routes and checks the
// existing ones.
func EnsureTopics(ctx context.Context, cc kafkaconfig.Client, topics kafkaconfig.Topics, layout kafkaconfig.Layout, routeNames []string) error {
	if err := layout.Validate(); err != nil {
		return fmt.Errorf("topic layout: %w", err)
	}
	// A short metadata cache: instances starting together race to create
	// the topics, and the loser must see the winner's topics quickly.
	cl, err := kafka.NewClient(cc, kgo.MetadataMinAge(100*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	if _, err := kafkaconfig.EnsureTopics(ctx, kadm.NewClient(cl), topics.Specs(layout, routeNames)); err != nil {
		return fmt.Errorf("topics: %w", err)
	}
	return nil
}
