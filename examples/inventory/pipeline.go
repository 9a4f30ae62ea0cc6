package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// Route is the name of the example's route.
const Route schemas.Route = "stock"

// stockRoute is how the scatterer splits a stock request: by SKU, one part
// per shard holding any of them (splitBySKU).
var stockRoute = scatterer.Route{
	Name:      Route,
	Mode:      scatterer.Split,
	Fanout:    Shards,
	MaxFanout: Shards,
	Split:     splitBySKU,
	Timeout:   5 * time.Second,
}

// layout is the topics' partitioning: 4 partitions of tasks.stock, so that
// up to 4 processors share the shards.
var layout = kafkaconfig.Layout{Partitions: 4, ResultPartitions: 4, ReplicationFactor: -1}

// pipeline is the three roles of the example, built and ready to Run.
type pipeline struct {
	scatterer  *scatterer.Scatterer
	processors []*processor.Processor
	aggregator *aggregator.Aggregator
}

// newPipeline builds a scatterer, n processors (one consumer group, sharing
// the partitions of tasks.stock) and an aggregator. In production each would
// be a process of its own, on as many hosts as needed; their configs would
// be the same.
func newPipeline(client kafkaconfig.Client, topics kafkaconfig.Topics, n int, w *Warehouse, log *slog.Logger, tp trace.TracerProvider) (*pipeline, error) {
	// What every role shares. Each role takes a copy and names its
	// instance: the instance id is part of its transactional id, so it must
	// be unique within the role's group and stable across restarts.
	// The TracerProvider (OpenTelemetry's; main builds one with the SDK
	// when OTEL_EXPORTER_OTLP_ENDPOINT is set) records a span per request,
	// task and reply, and the Kafka client's publish and receive spans,
	// one trace per request across the fan-out; nil records none, and each
	// record's traceparent is passed on unchanged.
	role := kafkaconfig.Role{Client: client, Topics: topics, Guarantee: kafkaconfig.ExactlyOnce, Logger: log,
		TracerProvider: tp}
	named := func(id string) kafkaconfig.Role {
		r := role
		r.InstanceID = id
		return r
	}

	var p pipeline
	var err error
	p.scatterer, err = scatterer.New(scatterer.Config{
		Role:   named("inventory-scatterer"),
		Routes: []scatterer.Route{stockRoute},
	})
	if err != nil {
		return nil, err
	}
	for i := range n {
		pr, err := processor.New(processor.Config{
			Role:  named(fmt.Sprintf("inventory-processor-%d", i)),
			Route: Route,
			// A shard that does not answer is tried 3 times in all, 20ms
			// and then 40ms (at most; half of it at least) apart.
			Retries: new(2),
			Backoff: 20 * time.Millisecond,
		}, lookupHandler(w))
		if err != nil {
			return nil, err
		}
		p.processors = append(p.processors, pr)
	}
	p.aggregator, err = aggregator.New(aggregator.Config{
		Role:   named("inventory-aggregator"),
		Merges: map[schemas.Route]aggregator.Merge{Route: mergeStock},
	})
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// run runs every role until ctx ends and returns their errors. When one role
// fails the others are stopped.
func (p *pipeline) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	start := func(name string, run func(context.Context) error) {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				mu.Unlock()
				cancel()
			}
		})
	}
	start("scatterer", p.scatterer.Run)
	for i, pr := range p.processors {
		start(fmt.Sprintf("processor %d", i), pr.Run)
	}
	start("aggregator", p.aggregator.Run)
	wg.Wait()
	return errors.Join(errs...)
}

// stats sums the processors' counters.
func (p *pipeline) stats() processor.Stats {
	var s processor.Stats
	for _, pr := range p.processors {
		st := pr.Stats()
		s.OK += st.OK
		s.Error += st.Error
		s.Expired += st.Expired
		s.Retries += st.Retries
	}
	return s
}
