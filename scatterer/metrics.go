package scatterer

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/metrics"
	"github.com/scattergather/scattergather/internal/tracing"
	"github.com/scattergather/scattergather/schemas"
)

// observer turns what the scatterer commits into metrics and spans (see the
// list in internal/metrics). It reads the records a request was scattered
// into, so the scattering code needs no counting of its own; they are held
// until the batch ends and counted only when it commits. It runs on Run's
// goroutine only.
type observer struct {
	shared     *metrics.Shared
	requests   *prometheus.CounterVec
	tasks      *prometheus.CounterVec
	tracer     trace.Tracer
	taskTopics map[string]string // tasks.<route> topic -> route
	routes     map[schemas.Route]Route
	dlq        string

	pending []pendingRecord
	spans   []trace.Span
}

// pendingRecord is one counted output of the batch in flight.
type pendingRecord struct {
	kind      string // "task", "manifest", "dlq" or "reply"
	route     string
	reason    string
	submitted time.Time
}

func newObserver(cfg *Config, routes map[schemas.Route]Route) (*observer, error) {
	sh, err := metrics.NewShared(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	o := &observer{shared: sh, tracer: tracing.Tracer(cfg.TracerProvider), routes: routes, dlq: cfg.Topics.DLQ(), taskTopics: map[string]string{}}
	if o.requests, err = metrics.NewCounterVec(cfg.Metrics, "requests_scattered_total",
		"Requests split into tasks and a manifest, by route.", "route"); err != nil {
		return nil, err
	}
	if o.tasks, err = metrics.NewCounterVec(cfg.Metrics, "tasks_produced_total",
		"Task records written to tasks.<route>, by route.", "route"); err != nil {
		return nil, err
	}
	for name := range routes {
		o.taskTopics[cfg.Topics.Tasks(string(name))] = string(name)
		// Routes show up at zero before their first request.
		o.requests.WithLabelValues(string(name))
		o.tasks.WithLabelValues(string(name))
	}
	return o, nil
}

// scattered records the output of one consumed request and carries its
// trace: a scatter span, child of the request's traceparent (or the root of
// a new trace), whose context every output record gets. The span runs from
// the request's record timestamp to now: its time in the requests topic and
// its scattering.
func (o *observer) scattered(rec *kgo.Record, out []*kgo.Record) {
	now := time.Now()
	start := rec.Timestamp
	if start.IsZero() || start.After(now) {
		start = now
	}
	route := metrics.UnknownRoute
	for _, r := range out {
		p := pendingRecord{kind: kafka.Header(r, HeaderType)}
		switch {
		case r.Topic == o.dlq:
			p.kind, p.reason = "dlq", kafka.Header(r, kafka.HeaderDLQReason)
		case p.kind == "task":
			p.route = o.taskTopics[r.Topic]
			route = p.route
		case p.kind == "reply":
			// A FAILED answer to a rejected request.
			if reply, err := schemas.DecodeReply(r.Value); err == nil {
				p.submitted = reply.SubmittedAt
				if _, ok := o.routes[reply.Route]; ok {
					p.route = string(reply.Route)
				}
			}
			if p.route == "" {
				p.route = metrics.UnknownRoute
			}
			route = p.route
		}
		o.pending = append(o.pending, p)
	}
	ctx, span := o.tracer.Start(tracing.Extract(rec), "scatter "+route,
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(start),
		trace.WithAttributes(attribute.String("correlation_id", string(rec.Key)),
			attribute.String("route", route), attribute.Int("records", len(out))))
	for _, r := range out {
		if r.Topic == o.dlq {
			span.SetStatus(codes.Error, "dead-lettered")
		}
		tracing.Inject(ctx, r)
	}
	o.spans = append(o.spans, span)
}

// end counts the batch's outputs when it committed, and drops them when it
// did not (its requests are consumed again).
func (o *observer) end(committed bool) {
	now := time.Now()
	if committed {
		for i := range o.pending {
			p := &o.pending[i]
			switch p.kind {
			case "task":
				o.tasks.WithLabelValues(p.route).Inc()
			case "dlq":
				o.shared.DeadLetters.WithLabelValues("scatterer", p.reason).Inc()
			case "reply":
				o.shared.Replies.WithLabelValues(p.route, string(schemas.ReplyFailed)).Inc()
				if !p.submitted.IsZero() {
					o.shared.RequestDuration.WithLabelValues(p.route, string(schemas.ReplyFailed)).Observe(max(now.Sub(p.submitted), 0).Seconds())
				}
			case "manifest":
				// The manifest comes after the request's tasks.
				if i > 0 && o.pending[i-1].kind == "task" {
					o.requests.WithLabelValues(o.pending[i-1].route).Inc()
				}
			}
		}
		for _, s := range o.spans {
			s.End(trace.WithTimestamp(now))
		}
	} else {
		o.shared.BatchesAborted.WithLabelValues("scatterer").Inc()
	}
	clear(o.pending)
	o.pending = o.pending[:0]
	clear(o.spans)
	o.spans = o.spans[:0]
}

// Ready reports, as an error saying what is missing, whether the
// scatterer is settled in its consumer group: a member with an assignment,
// no rebalance for a second, so that the
// first request after it is not held up by a rebalance. Readiness probes
// (/readyz) use it. Safe for concurrent use.
func (s *Scatterer) Ready() error { return s.hop.Settled() }

// GroupAssignment reports whether the scatterer has joined its consumer
// group with an assignment, and how many partitions of the requests topic
// it holds. Safe for concurrent use.
func (s *Scatterer) GroupAssignment() (joined bool, partitions int) {
	return s.hop.Membership()
}

// Group returns the scatterer's consumer group.
func (s *Scatterer) Group() string { return s.cfg.Group }
