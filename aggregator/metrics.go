package aggregator

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

// observer turns what the aggregator commits into metrics and spans (see
// the list in internal/metrics). Outputs are held as pending until their
// batch commits, and dropped when it aborts, so that a batch consumed again
// is counted once. Its methods run on Run's goroutine, except gauges and
// restored, which may run on the rebalance goroutine: all under a.mu.
type observer struct {
	shared *metrics.Shared
	tracer trace.Tracer

	manifests, results, duplicates, late, orphaned prometheus.Counter
	manifestsExpired                               prometheus.Counter
	open, held, paused                             metrics.Delta
	pauses                                         prometheus.Counter
	restore                                        prometheus.Histogram
	hedges                                         *prometheus.CounterVec

	// last is the Stats of the last commit: counters move by the difference.
	last    Stats
	pending []pendingOutput

	traces traceIndex
}

type pendingOutput struct {
	id                     schemas.CorrelationID
	route, outcome, reason string
	submitted              time.Time
	span                   trace.Span
}

func newObserver(cfg *Config) (*observer, error) {
	reg := cfg.Metrics
	sh, err := metrics.NewShared(reg)
	if err != nil {
		return nil, err
	}
	o := &observer{shared: sh, tracer: tracing.Tracer(cfg.TracerProvider)}
	counters := []struct {
		c          *prometheus.Counter
		name, help string
	}{
		{&o.manifests, "manifests_received_total", "Manifests the aggregator consumed."},
		{&o.results, "results_received_total", "Results the aggregator consumed."},
		{&o.duplicates, "results_duplicate_total", "Results for a part that already had one, and manifests for a request already open or done; counted once."},
		{&o.late, "results_late_total", "Results for a request already replied to; dropped."},
		{&o.orphaned, "results_orphaned_total", "Results whose manifest never came, or came expired; dead-lettered."},
		{&o.manifestsExpired, "manifests_expired_total", "Manifests read past their deadline plus the late window (a group reset past it, an outage longer than it); dead-lettered, never answered."},
	}
	for _, c := range counters {
		if *c.c, err = metrics.NewCounter(reg, c.name, c.help); err != nil {
			return nil, err
		}
	}
	if o.open.G, err = metrics.NewGauge(reg, "open_requests", "Requests the aggregator is gathering: manifest seen, not replied to."); err != nil {
		return nil, err
	}
	if o.held.G, err = metrics.NewGauge(reg, "held_results", "Results held because their manifest has not come yet."); err != nil {
		return nil, err
	}
	if o.paused.G, err = metrics.NewGauge(reg, "aggregator_fetch_paused",
		"Aggregator instances that paused fetching results because their open requests reached --max-open-requests (1 per paused instance)."); err != nil {
		return nil, err
	}
	if o.pauses, err = metrics.NewCounter(reg, "aggregator_fetch_pauses_total",
		"Times an aggregator paused fetching results at --max-open-requests."); err != nil {
		return nil, err
	}
	if o.hedges, err = metrics.NewCounterVec(reg, "hedges_total",
		"Hedged tasks, by outcome: issued (a part re-issued to another processor), denied (a part the route's budget refused, counted once; it may be re-issued later), won (the hedge answered the part first).",
		"outcome"); err != nil {
		return nil, err
	}
	for _, oc := range []string{"issued", "denied", "won"} {
		o.hedges.WithLabelValues(oc)
	}
	if o.restore, err = metrics.NewHistogram(reg, "state_restore_duration_seconds",
		"Time to restore the aggregator state of newly assigned partitions.", metrics.RestoreBuckets); err != nil {
		return nil, err
	}
	return o, nil
}

// manifest remembers the trace context of a manifest, for its reply.
func (o *observer) manifest(mf schemas.Manifest, rec *kgo.Record) {
	o.traces.remember(mf.CorrelationID, trace.SpanContextFromContext(tracing.Extract(rec)), mf.Deadline)
}

// output records one produced record of the batch in flight and sets the
// trace context of a reply on rec.
func (o *observer) output(out output, rec *kgo.Record, now time.Time) {
	if out.task != nil {
		return // counted from Stats at commit
	}
	if out.src != nil {
		o.pending = append(o.pending, pendingOutput{reason: out.reason})
		return
	}
	r := &out.reply
	parent := o.traces.get(r.CorrelationID)
	start := now
	for _, p := range r.Parts {
		// The span runs from the first result's arrival to the reply.
		if p.Latency > 0 {
			if at := r.SubmittedAt.Add(p.Latency); at.Before(start) && !r.SubmittedAt.IsZero() {
				start = at
			}
		}
	}
	ctx, span := o.tracer.Start(tracing.ContextWith(parent), "aggregate "+string(r.Route),
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithTimestamp(start),
		trace.WithAttributes(attribute.String("correlation_id", string(r.CorrelationID)),
			attribute.String("route", string(r.Route)), attribute.String("status", string(r.Status)),
			attribute.Int("parts", len(r.Parts))))
	if r.Status == schemas.ReplyFailed {
		span.SetStatus(codes.Error, string(r.Status))
	}
	tracing.Inject(ctx, rec)
	o.pending = append(o.pending, pendingOutput{id: r.CorrelationID, route: string(r.Route), outcome: string(r.Status), submitted: r.SubmittedAt, span: span})
}

// commit publishes a committed batch: stats are the aggregator's Stats
// after the commit.
func (o *observer) commit(stats Stats) {
	now := time.Now()
	for _, p := range o.pending {
		if p.reason != "" {
			o.shared.DeadLetters.WithLabelValues(role, p.reason).Inc()
			continue
		}
		o.shared.Replies.WithLabelValues(p.route, p.outcome).Inc()
		o.traces.forget(p.id)
		if !p.submitted.IsZero() {
			o.shared.RequestDuration.WithLabelValues(p.route, p.outcome).Observe(max(now.Sub(p.submitted), 0).Seconds())
		}
		p.span.End(trace.WithTimestamp(now))
	}
	clear(o.pending)
	o.pending = o.pending[:0]
	add := func(c prometheus.Counter, now, last int64) {
		if d := now - last; d > 0 {
			c.Add(float64(d))
		}
	}
	add(o.manifests, stats.Manifests, o.last.Manifests)
	add(o.results, stats.ResultsReceived, o.last.ResultsReceived)
	add(o.duplicates, stats.Duplicates, o.last.Duplicates)
	add(o.late, stats.Late, o.last.Late)
	add(o.orphaned, stats.OrphansExpired, o.last.OrphansExpired)
	add(o.manifestsExpired, stats.ManifestsExpired, o.last.ManifestsExpired)
	add(o.hedges.WithLabelValues("issued"), stats.HedgesIssued, o.last.HedgesIssued)
	add(o.hedges.WithLabelValues("denied"), stats.HedgesDenied, o.last.HedgesDenied)
	add(o.hedges.WithLabelValues("won"), stats.HedgesWon, o.last.HedgesWon)
	o.last = stats
	o.traces.prune(now)
}

// abort drops the outputs of a batch that did not commit.
func (o *observer) abort() {
	clear(o.pending)
	o.pending = o.pending[:0]
	o.shared.BatchesAborted.WithLabelValues(role).Inc()
}

func (o *observer) gauges(g gauges) {
	o.open.Set(float64(g.open))
	o.held.Set(float64(g.held))
}

// pause sets whether this instance has paused fetching; a pause counts.
func (o *observer) pause(paused bool) {
	if paused {
		o.paused.Set(1)
		o.pauses.Inc()
		return
	}
	o.paused.Set(0)
}

// restored observes how long restoring newly assigned partitions took.
func (o *observer) restored(d time.Duration) { o.restore.Observe(d.Seconds()) }

// traceIndex keeps the trace context of each open request's manifest until
// its reply commits: the request state does not carry record headers. Entries of
// requests replied to elsewhere (their partition moved) are pruned once
// their deadline is a minute past. A request whose partition moved between
// manifest and reply gets a reply span that starts a new trace.
type traceIndex struct {
	mu        sync.Mutex
	m         map[schemas.CorrelationID]traceEntry
	lastPrune time.Time
}

type traceEntry struct {
	sc       trace.SpanContext
	deadline time.Time
}

const tracePruneAfter = time.Minute

func (t *traceIndex) remember(id schemas.CorrelationID, sc trace.SpanContext, deadline time.Time) {
	if !sc.IsValid() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[schemas.CorrelationID]traceEntry{}
	}
	t.m[id] = traceEntry{sc: sc, deadline: deadline}
}

func (t *traceIndex) get(id schemas.CorrelationID) trace.SpanContext {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[id].sc
}

func (t *traceIndex) forget(id schemas.CorrelationID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, id)
}

func (t *traceIndex) prune(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.lastPrune) < tracePruneAfter {
		return
	}
	t.lastPrune = now
	for id, e := range t.m {
		if now.Sub(e.deadline) > tracePruneAfter {
			delete(t.m, id)
		}
	}
}

// GroupAssignment reports whether the aggregator has joined its consumer
// group with an assignment, and how many partitions of the results topic
// it holds. Safe for concurrent use.
func (a *Aggregator) GroupAssignment() (joined bool, partitions int) {
	return a.hop.Membership()
}

// Group returns the aggregator's consumer group.
func (a *Aggregator) Group() string { return a.cfg.Group }
