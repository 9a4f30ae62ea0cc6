package processor

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/scattergather/scattergather/internal/metrics"
	"github.com/scattergather/scattergather/internal/tracing"
	"github.com/scattergather/scattergather/schemas"
)

// observer turns what the processor commits into metrics and spans (see the
// list in internal/metrics). The results and dead letters of a batch are
// held until it ends and counted only when it commits. result and
// deadLetter run on the batch's partition goroutines, end on Run's.
type observer struct {
	shared    *metrics.Shared
	processed *prometheus.CounterVec
	duration  prometheus.Observer
	retries   prometheus.Counter
	panics    prometheus.Counter
	// unknownRecipient counts, as they are read, broadcast tasks skipped
	// because their route does not have the processor's recipient.
	unknownRecipient prometheus.Counter
	tracer           trace.Tracer
	run              *runner
	route            string
	recipient        string

	mu      sync.Mutex
	pending []pendingResult
	reasons []string
	// Retries and panics already counted.
	seenRetries, seenPanics uint64
}

type pendingResult struct {
	status   schemas.ResultStatus
	finished time.Time
	duration time.Duration
	span     trace.Span
}

func newObserver(cfg *Config, run *runner) (*observer, error) {
	reg := cfg.Metrics
	sh, err := metrics.NewShared(reg)
	if err != nil {
		return nil, err
	}
	o := &observer{shared: sh, tracer: tracing.Tracer(cfg.TracerProvider), run: run, route: string(cfg.Route), recipient: string(cfg.Recipient)}
	if o.processed, err = metrics.NewCounterVec(reg, "tasks_processed_total",
		"Results written, by route, recipient (broadcast routes) and status (OK, ERROR, EXPIRED).",
		"route", "recipient", "status"); err != nil {
		return nil, err
	}
	for _, st := range []schemas.ResultStatus{schemas.ResultOK, schemas.ResultError, schemas.ResultExpired} {
		o.processed.WithLabelValues(o.route, o.recipient, string(st))
	}
	hist, err := metrics.NewHistogramVec(reg, "task_duration_seconds",
		"Time a task spent in its handler, all tries and backoff included, by route and recipient.",
		metrics.RequestBuckets, "route", "recipient")
	if err != nil {
		return nil, err
	}
	o.duration = hist.WithLabelValues(o.route, o.recipient)
	retries, err := metrics.NewCounterVec(reg, "task_retries_total", "Handler retries, by route and recipient.", "route", "recipient")
	if err != nil {
		return nil, err
	}
	o.retries = retries.WithLabelValues(o.route, o.recipient)
	panics, err := metrics.NewCounterVec(reg, "handler_panics_total", "Handler panics recovered, by route and recipient.", "route", "recipient")
	if err != nil {
		return nil, err
	}
	o.panics = panics.WithLabelValues(o.route, o.recipient)
	unknown, err := metrics.NewCounterVec(reg, "processor_unknown_recipient_tasks_total",
		"Broadcast tasks skipped, no result written, because their route's recipients do not include the processor's, by route and recipient.",
		"route", "recipient")
	if err != nil {
		return nil, err
	}
	o.unknownRecipient = unknown.WithLabelValues(o.route, o.recipient)
	return o, nil
}

// result records the result of task rec and carries its trace: a process
// span, child of the task's traceparent, running from the handler's start
// to its end, whose context the result record out gets.
func (o *observer) result(rec *kgo.Record, res schemas.Result, out *kgo.Record) {
	ctx, span := o.tracer.Start(tracing.Extract(rec), "process "+o.route,
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(res.StartedAt),
		trace.WithAttributes(attribute.String("correlation_id", string(res.CorrelationID)),
			attribute.String("part_id", string(res.PartID)), attribute.String("processor_id", res.ProcessorID),
			attribute.String("status", string(res.Status)), attribute.Int("tries", res.Tries)))
	if res.Status != schemas.ResultOK {
		span.SetStatus(codes.Error, string(res.Status))
	}
	tracing.Inject(ctx, out)
	o.mu.Lock()
	o.pending = append(o.pending, pendingResult{status: res.Status, finished: res.FinishedAt, duration: res.FinishedAt.Sub(res.StartedAt), span: span})
	o.mu.Unlock()
}

// deadLetter records a dead letter of the batch in flight.
func (o *observer) deadLetter(reason string) {
	o.mu.Lock()
	o.reasons = append(o.reasons, reason)
	o.mu.Unlock()
}

// end counts the batch's results when it committed and drops them when it
// did not; retries and panics are counted as they happened either way.
func (o *observer) end(committed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if committed {
		for _, p := range o.pending {
			o.processed.WithLabelValues(o.route, o.recipient, string(p.status)).Inc()
			o.duration.Observe(max(p.duration, 0).Seconds())
			p.span.End(trace.WithTimestamp(p.finished))
		}
		for _, r := range o.reasons {
			o.shared.DeadLetters.WithLabelValues("processor", r).Inc()
		}
	} else {
		o.shared.BatchesAborted.WithLabelValues("processor").Inc()
	}
	clear(o.pending)
	o.pending = o.pending[:0]
	o.reasons = o.reasons[:0]
	if n := o.run.nRetries.Load(); n > o.seenRetries {
		o.retries.Add(float64(n - o.seenRetries))
		o.seenRetries = n
	}
	if n := o.run.nPanics.Load(); n > o.seenPanics {
		o.panics.Add(float64(n - o.seenPanics))
		o.seenPanics = n
	}
}

// Ready reports, as an error saying what is missing, whether the
// processor is settled in its consumer group: a member with an assignment,
// no rebalance for a second, so that the
// first request after it is not held up by a rebalance. Readiness probes
// (/readyz) use it. Safe for concurrent use.
func (p *Processor) Ready() error { return p.hop.Settled() }

// GroupAssignment reports whether the processor is running and has joined
// its consumer group with an assignment, and how many partitions of
// tasks.<route> it holds. Safe for concurrent use.
func (p *Processor) GroupAssignment() (joined bool, partitions int) {
	return p.hop.Membership()
}

// Group returns the processor's consumer group.
func (p *Processor) Group() string { return p.cfg.Group }
