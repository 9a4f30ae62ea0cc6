package aggregator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/schemas"
)

// Hedged tasks (see scatterer.Hedge). The aggregator is where a hedge is
// decided: it alone knows which parts of a request have not answered, it
// has a timer per request already, and what it produces is in the
// transaction of the results it consumed. The scatterer sends it, after a
// hedged route's manifest, the request's task as a hedge template (a Task
// record on the results topic, HeaderType "hedge-template", the route's
// settings in HeaderHedge). At the request's hedge time (its submission
// plus the route's delay, fixed or the observed latency percentile) every
// part still without a result is re-issued once, as the template with the
// part's id and attempt 2, to another partition of tasks.<route> than the
// one its key maps to, so to another processor: the first after it whose
// processor is answering (hedgePartition), while the route's budget has a
// token. The first result of a part wins; the other one is a duplicate
// (or late). A reply of a request with hedged parts carries HeaderHedged.

// Record headers of hedging.
const (
	// headerHedge is scatterer.HeaderHedge: the route's hedge settings on a
	// hedge template.
	headerHedge = "sg-hedge"
	// typeHedgeTemplate is scatterer.TypeHedgeTemplate.
	typeHedgeTemplate = "hedge-template"
	// HeaderHedged, on a reply, lists the parts that were re-issued, comma
	// separated, whichever attempt answered them (PartOutcome.Attempt says
	// which did: 2 for the hedge).
	HeaderHedged = "sg-hedged"
)

// hedgeAttempt is the attempt number of a hedged task.
const hedgeAttempt = 2

// The changelog keeps a request's hedge templates as held entries under
// their offsets, with the hedge time in arrived_at, and, once the hedge
// fired, one more held entry under hedgeMarkOffset: a Task whose
// hedgedSlotsHeader lists the slots that were re-issued.
const (
	hedgeMarkOffset   int64 = -1
	hedgedSlotsHeader       = "sg-hedged-slots"
)

// HedgeSpec is a route's hedge settings as a hedge template's HeaderHedge
// carries them (scatterer.Hedge writes them).
type HedgeSpec struct {
	Delay      time.Duration
	Percentile float64
	MinDelay   time.Duration
	MinSamples int
	Budget     float64
}

// ParseHedge reads "delay=20ms;percentile=95;min-delay=10ms;min-samples=100;budget=0.05".
// Every key is optional; unknown keys are errors.
func ParseHedge(s string) (HedgeSpec, error) {
	var (
		h    HedgeSpec
		errs []error
	)
	for kv := range strings.SplitSeq(s, ";") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		var err error
		switch k {
		case "delay":
			h.Delay, err = time.ParseDuration(v)
		case "min-delay":
			h.MinDelay, err = time.ParseDuration(v)
		case "percentile":
			h.Percentile, err = strconv.ParseFloat(v, 64)
		case "min-samples":
			h.MinSamples, err = strconv.Atoi(v)
		case "budget":
			h.Budget, err = strconv.ParseFloat(v, 64)
		default:
			err = errors.New("unknown setting")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%q: %w", kv, err))
		}
	}
	switch {
	case h.Delay < 0 || h.MinDelay < 0 || h.MinSamples < 0:
		errs = append(errs, errors.New("negative setting"))
	case math.IsNaN(h.Percentile) || h.Percentile < 0 || h.Percentile >= 100:
		errs = append(errs, fmt.Errorf("percentile %v, want [0, 100)", h.Percentile))
	case math.IsNaN(h.Budget) || h.Budget <= 0 || h.Budget > 1:
		errs = append(errs, fmt.Errorf("budget %v, want (0, 1]", h.Budget))
	case h.Delay == 0 && h.Percentile == 0:
		errs = append(errs, errors.New("neither a delay nor a percentile"))
	}
	if err := errors.Join(errs...); err != nil {
		return HedgeSpec{}, fmt.Errorf("hedge settings %q: %w", s, err)
	}
	return h, nil
}

// hedgeState is an open request's hedging. It is never changed in place:
// the undo log saves a request by value, so a change makes a copy.
type hedgeState struct {
	spec HedgeSpec
	// shared is the template of every part, or nil; perPart holds one
	// template per part id when the parts' tasks differ.
	shared  *schemas.Task
	perPart map[schemas.PartID]schemas.Task
	// srcs are the template records, for the changelog.
	srcs []*kgo.Record
	// at is when to hedge (Unix nanoseconds, whole microseconds as the
	// changelog keeps it); 0: not scheduled (no delay known when the
	// template came).
	at     int64
	fired  bool
	hedged []bool // by slot, once fired
	// denied is, by slot, whether the budget refused the part's hedge at
	// least once; next, once fired, is when the parts it refused are
	// tried again (Unix nanoseconds; 0: none waits): a refused part is
	// tried again every hedge delay until it answers or the deadline, so
	// that the budget goes to the parts that stay missing (stragglers)
	// rather than to the first parts that missed the delay.
	denied []bool
	next   int64
}

// refused reports whether, the hedge having fired, a part of slots is
// still missing and was not re-issued: the budget refused it (which parts
// it refused is not kept in the changelog).
func (h *hedgeState) refused(slots []slot) bool {
	if !h.fired {
		return false
	}
	for i, s := range slots {
		if s.status == "" && !h.hedged[i] {
			return true
		}
	}
	return false
}

// timer returns when r's hedge timer is due next: the hedge time until it
// fired, then the next try of refused parts; 0 for none.
func (h *hedgeState) timer() int64 {
	switch {
	case h == nil:
		return 0
	case !h.fired:
		return h.at
	default:
		return h.next
	}
}

func (h *hedgeState) clone() *hedgeState {
	c := *h
	c.srcs = slices.Clone(h.srcs)
	if h.perPart != nil {
		c.perPart = make(map[schemas.PartID]schemas.Task, len(h.perPart)+1)
		for k, v := range h.perPart {
			c.perPart[k] = v
		}
	}
	c.hedged = slices.Clone(h.hedged)
	c.denied = slices.Clone(h.denied)
	return &c
}

// add adds template t.
func (h *hedgeState) add(t schemas.Task, src *kgo.Record) {
	h.srcs = append(h.srcs, src)
	if t.PartID == "" {
		h.shared = &t
		return
	}
	if h.perPart == nil {
		h.perPart = map[schemas.PartID]schemas.Task{}
	}
	h.perPart[t.PartID] = t
}

// task returns the hedged task of part, if there is a template for it.
func (h *hedgeState) task(part schemas.PartID) (schemas.Task, bool) {
	t, ok := h.perPart[part]
	if !ok {
		if h.shared == nil {
			return schemas.Task{}, false
		}
		t = *h.shared
	}
	t.PartID, t.Attempt = part, hedgeAttempt
	return t, true
}

// hedgedParts returns the ids of the hedged parts of r.
func (h *hedgeState) hedgedParts(parts []schemas.PartID) []schemas.PartID {
	var out []schemas.PartID
	for i, hd := range h.hedged {
		if hd {
			out = append(out, parts[i])
		}
	}
	return out
}

// hedger keeps, per route, what hedge delays and budgets are made of: the
// latencies of first attempts and the budget's tokens. It lives in memory
// only: after a restart the adaptive delay starts over (the fixed delay,
// if any, until enough latencies are known) and the budget starts with
// what restored requests had earned (restore). Changes of the batch in
// flight are kept apart until it commits.
type hedger struct {
	routes map[schemas.Route]*routeHedging
	// The batch in flight.
	samples []sample
	tokens  map[schemas.Route]float64 // earned minus spent
}

type routeHedging struct {
	lat    latencies
	tokens float64
	burst  float64 // the cap of tokens, from the route's budget
}

type sample struct {
	route   schemas.Route
	latency int64
}

func newHedger() *hedger {
	return &hedger{routes: map[schemas.Route]*routeHedging{}, tokens: map[schemas.Route]float64{}}
}

func (h *hedger) route(r schemas.Route) *routeHedging {
	rh := h.routes[r]
	if rh == nil {
		rh = &routeHedging{}
		h.routes[r] = rh
	}
	return rh
}

// burst caps a route's tokens.
func burst(spec HedgeSpec) float64 { return max(1, 1000*spec.Budget) }

// delay returns the hedge delay of route now, and false when there is none
// yet (adaptive, not enough latencies, no fixed delay).
func (h *hedger) delay(route schemas.Route, spec HedgeSpec) (time.Duration, bool) {
	if spec.Percentile > 0 {
		lat := &h.route(route).lat
		if lat.count() > 0 && lat.count() >= max(spec.MinSamples, 1) {
			return max(time.Duration(lat.percentile(spec.Percentile)), spec.MinDelay), true
		}
	}
	return spec.Delay, spec.Delay > 0
}

// earn adds the tokens of tasks tasks issued on route.
func (h *hedger) earn(route schemas.Route, spec HedgeSpec, tasks int) {
	h.route(route).burst = burst(spec)
	h.tokens[route] += spec.Budget * float64(tasks)
}

// take spends a token of route if it has one.
func (h *hedger) take(route schemas.Route, spec HedgeSpec) bool {
	have := min(h.route(route).tokens+h.tokens[route], burst(spec))
	if have < 1 {
		return false
	}
	h.tokens[route]--
	return true
}

func (h *hedger) sample(route schemas.Route, latency int64) {
	h.samples = append(h.samples, sample{route, latency})
}

// commit applies the batch's changes.
func (h *hedger) commit() {
	for _, s := range h.samples {
		h.route(s.route).lat.add(s.latency)
	}
	for r, d := range h.tokens {
		rh := h.route(r)
		rh.tokens = max(min(rh.tokens+d, max(rh.burst, 1)), 0)
	}
	h.abort()
}

// restore gives back the tokens that restored open requests had earned:
// they were lost with the instance that gathered them.
func (h *hedger) restore(earned map[schemas.Route]earnedTokens) {
	for route, e := range earned {
		rh := h.route(route)
		rh.burst = burst(e.spec)
		rh.tokens = min(rh.tokens+e.spec.Budget*float64(e.tasks), rh.burst)
	}
}

// earnedTokens is what the hedged open requests of a restored partition
// had earned on one route.
type earnedTokens struct {
	spec  HedgeSpec
	tasks int
}

// abort drops the batch's changes.
func (h *hedger) abort() {
	clear(h.samples)
	h.samples = h.samples[:0]
	clear(h.tokens)
}

// latencies keeps the last latencySamples latencies of a route and their
// percentiles, recomputed once latencyStale new ones came (fewer while few
// are known).
type latencies struct {
	ring   []int64
	next   int
	n      int // latencies added, all told
	sorted []int64
	fresh  int // n when sorted was taken
}

const (
	latencySamples = 1024
	latencyStale   = 32
)

func (l *latencies) add(v int64) {
	if len(l.ring) < latencySamples {
		l.ring = append(l.ring, v)
	} else {
		l.ring[l.next] = v
		l.next = (l.next + 1) % latencySamples
	}
	l.n++
}

func (l *latencies) count() int { return l.n }

// percentile returns the p-th percentile (nearest rank) of the kept
// latencies; l must not be empty.
func (l *latencies) percentile(p float64) int64 {
	if l.sorted == nil || l.n-l.fresh >= max(1, min(latencyStale, len(l.ring)/16)) {
		l.sorted = append(l.sorted[:0], l.ring...)
		slices.Sort(l.sorted)
		l.fresh = l.n
	}
	i := int(math.Ceil(p/100*float64(len(l.sorted)))) - 1
	return l.sorted[min(max(i, 0), len(l.sorted)-1)]
}

// template handles a hedge template consumed from ps's partition at now:
// the request's task to re-issue, if it must be. Templates of a request
// that is not open (already replied to) are dropped: there is nothing left
// to hedge.
func (m *machine) template(ps *partitionState, now time.Time, t schemas.Task, src *kgo.Record) {
	r := ps.reqs[t.CorrelationID]
	if r == nil || r.phase != phaseOpen {
		return
	}
	spec, err := ParseHedge(kafka.Header(src, headerHedge))
	if err != nil {
		m.deadLetter(src, "bad-hedge", fmt.Errorf("hedge template of %s: %w", r.id, err))
		return
	}
	if t.PartID != "" && r.plan.find(t.PartID) < 0 {
		m.deadLetter(src, "unknown-part", fmt.Errorf("hedge template for part %q of %s, which its manifest does not list", t.PartID, r.id))
		return
	}
	// Mutation "template".
	m.touch(ps, r)
	var h *hedgeState
	if r.hedge == nil {
		h = &hedgeState{spec: spec}
		route := r.plan.mf.Route
		m.hedging.earn(route, spec, len(r.slots))
		if d, ok := m.hedging.delay(route, spec); ok {
			at := (nanos(r.plan.mf.SubmittedAt) + int64(d)) / 1000 * 1000
			if at < r.due {
				h.at = max(at, 1)
				ps.timers.push(h.at, r.id)
			}
		}
	} else {
		h = r.hedge.clone()
	}
	h.add(t, src)
	r.hedge = h
}

// hedge re-issues, at now, the parts of r that have no result yet and were
// not re-issued before, as the budget allows; the parts it refuses are
// tried again one hedge delay later, while that is before r's deadline.
func (m *machine) hedge(ps *partitionState, r *request, now int64) {
	// Mutation "hedge".
	m.touch(ps, r)
	h := r.hedge.clone()
	if !h.fired {
		h.fired = true
		h.hedged = make([]bool, len(r.slots))
	}
	if h.denied == nil {
		h.denied = make([]bool, len(r.slots))
	}
	h.next = 0
	route := r.plan.mf.Route
	after := time.Duration(h.at - nanos(r.plan.mf.SubmittedAt))
	refused := false
	for i, s := range r.slots {
		if s.status != "" || h.hedged[i] {
			continue
		}
		t, ok := h.task(r.plan.mf.Parts[i])
		if !ok {
			continue
		}
		if !m.hedging.take(route, h.spec) {
			if !h.denied[i] {
				h.denied[i] = true
				m.delta.hedgesDenied++
			}
			refused = true
			continue
		}
		h.hedged[i] = true
		m.delta.hedgesIssued++
		m.out = append(m.out, output{task: &t, hedgeAfter: after})
	}
	if next := now + int64(max(after, minRetry)); refused && next < r.due {
		h.next = next
		ps.timers.push(next, r.id)
	}
	r.hedge = h
}

// minRetry is the least wait before refused hedges are tried again.
const minRetry = time.Millisecond

// hedgeMark is the changelog entry that says which slots of r were
// hedged: a Task of r under hedgeMarkOffset.
func hedgeMark(r *request) (heldResult, error) {
	var slots []string
	for i, hd := range r.hedge.hedged {
		if hd {
			slots = append(slots, strconv.Itoa(i))
		}
	}
	t := schemas.Task{CorrelationID: r.id, Route: r.plan.mf.Route, PartCount: len(r.slots), Attempt: hedgeAttempt,
		Deadline: r.plan.mf.Deadline, SubmittedAt: r.plan.mf.SubmittedAt,
		Headers: map[string]string{hedgedSlotsHeader: strings.Join(slots, ",")}}
	v, err := schemas.EncodeTask(t)
	if err != nil {
		return heldResult{}, fmt.Errorf("hedge mark: %w", err)
	}
	return heldResult{src: &kgo.Record{Offset: hedgeMarkOffset, Key: []byte(r.id), Value: v}, arrived: r.hedge.at}, nil
}

// rebuildHedge gives a restored open request its hedging back from the
// held entries of its changelog: templates and the hedge mark. It returns
// the entries it could not use.
func rebuildHedge(r *request, held []schemas.HeldRecord) (bad []error) {
	for _, hr := range held {
		t, err := schemas.DecodeTask(hr.Value)
		if err != nil {
			bad = append(bad, fmt.Errorf("request %s: held entry at offset %d: %w", r.id, hr.Offset, err))
			continue
		}
		if hr.Offset == hedgeMarkOffset {
			if r.hedge == nil {
				r.hedge = &hedgeState{}
			}
			r.hedge.fired = true
			r.hedge.hedged = make([]bool, len(r.slots))
			if s := t.Headers[hedgedSlotsHeader]; s != "" {
				for f := range strings.SplitSeq(s, ",") {
					if i, err := strconv.Atoi(f); err == nil && i >= 0 && i < len(r.slots) {
						r.hedge.hedged[i] = true
					}
				}
			}
			continue
		}
		src := &kgo.Record{Partition: hr.Partition, Offset: hr.Offset, Key: []byte(r.id), Value: hr.Value}
		for _, hd := range hr.Headers {
			src.Headers = append(src.Headers, kgo.RecordHeader{Key: hd.Key, Value: hd.Value})
		}
		spec, err := ParseHedge(kafka.Header(src, headerHedge))
		if err != nil {
			bad = append(bad, fmt.Errorf("request %s: hedge template at offset %d: %w", r.id, hr.Offset, err))
			continue
		}
		if r.hedge == nil {
			r.hedge = &hedgeState{}
		}
		r.hedge.spec = spec
		r.hedge.add(t, src)
		if at := hr.ArrivedAt.UnixNano(); at > 0 {
			r.hedge.at = at
		}
	}
	if r.hedge != nil {
		// Templates by offset, as they came.
		slices.SortFunc(r.hedge.srcs, func(a, b *kgo.Record) int { return cmp.Compare(a.Offset, b.Offset) })
	}
	return bad
}

// partitionsTTL is how long the partition count of a tasks topic is
// trusted before it is looked up again; lookupRetry how long after a
// failed lookup the next one is tried.
const (
	partitionsTTL = time.Minute
	lookupRetry   = 5 * time.Second
)

// liveWindow is how far behind the newest first-attempt result of a tasks
// topic the last result of one of its partitions may be for a hedge to go
// there: a partition whose processor was lost (or is stuck) stops
// answering, and within about this long it is no longer chosen.
const liveWindow = time.Second

// taskPartitions is what the aggregator knows of the partitions of a tasks
// topic it hedges to: their count, when it last read the result of a first
// attempt of a task of each (unix ns; 0: never since the count was looked
// up), and since when each has had a first attempt known to be sent there
// and no result since (pending, unix ns; 0: none): a partition that stops
// answering has its tasks pending for longer and longer, seen well before
// its last result falls out of liveWindow. The aggregator's lock guards
// it.
type taskPartitions struct {
	n          int
	seen       time.Time
	part       kgo.TopicPartitioner
	lastResult []int64
	pending    []int64
}

// lookupFailure is a failed lookup of a tasks topic's partitions, kept
// lookupRetry long so that a broker that does not answer costs one
// lookup per lookupRetry, not one per record.
type lookupFailure struct {
	at  time.Time
	err error
}

// hedgeRecord encodes a hedged task for tasks.<route>, keyed by its part
// like the first attempt, on another partition than the one its key maps
// to (the scatterer's partitioner: Kafka's murmur2 of the key), so that
// another processor than the busy one gets it: the first after it whose
// processor answers (hedgePartition), a partition with a task pending for
// half of after (the request's hedge delay) counting as not answering; on
// a topic of one partition, on that one. It returns nil when the topic's
// partitions cannot be looked up: the hedge is dropped, the request goes on
// without it.
func (a *Aggregator) hedgeRecord(ctx context.Context, t schemas.Task, after time.Duration, now time.Time) (*kgo.Record, error) {
	v, err := schemas.EncodeTask(t)
	if err != nil {
		return nil, fmt.Errorf("hedged task %s part %s: %w", t.CorrelationID, t.PartID, err)
	}
	topic := a.cfg.Topics.Tasks(string(t.Route))
	tp, err := a.taskPartitions(ctx, t.Route, topic)
	if err != nil {
		a.log.Warn("hedged task dropped: the partitions of its topic are unknown", "topic", topic, "correlation_id", t.CorrelationID, "part_id", t.PartID, "err", err)
		return nil, nil
	}
	key := []byte(t.PartID)
	p := tp.part.Partition(&kgo.Record{Key: key}, tp.n)
	return &kgo.Record{
		Topic:     topic,
		Partition: int32(hedgePartition(p, tp.lastResult, tp.pending, now.UnixNano(), liveWindow, after/2)),
		Key:       key,
		Value:     v,
		Headers:   []kgo.RecordHeader{{Key: headerType, Value: []byte("task")}},
	}, nil
}

// hedgePartition returns the partition for the hedge of a task whose first
// attempt went to partition p of len(last), at now: the first after p that
// answers, that is whose last first-attempt result (last, unix ns) is
// within window of the newest of them all and which has had no task
// pending (pending, unix ns) for stale or longer, so that a hedge goes to
// a partition a live processor serves even when the next one's processor
// was lost; failing that, the first after p with nothing pending (an idle
// one); when none is known to be either, the one after p. Never p itself,
// unless it is the only one.
func hedgePartition(p int, last, pending []int64, now int64, window, stale time.Duration) int {
	n := len(last)
	if n <= 1 {
		return 0
	}
	var newest int64
	for _, ts := range last {
		newest = max(newest, ts)
	}
	slow := func(q int) bool { return pending[q] > 0 && now-pending[q] >= int64(stale) }
	if newest > 0 {
		for i := 1; i < n; i++ {
			q := (p + i) % n
			if last[q] > 0 && newest-last[q] <= int64(window) && !slow(q) {
				return q
			}
		}
	}
	for i := 1; i < n; i++ {
		if q := (p + i) % n; last[q] > 0 && pending[q] == 0 {
			return q
		}
	}
	return (p + 1) % n
}

// sawResult notes that a first attempt's result of a task of a hedged
// route was read at now, for the partition its part's key maps to: the
// partition answers, nothing of it is pending; a.mu is held. Routes that
// never hedged are not followed.
func (a *Aggregator) sawResult(res schemas.Result, now time.Time) {
	if res.Attempt > 1 {
		return
	}
	tp := a.routes[res.Route]
	if tp == nil {
		return
	}
	a.keyBuf.Key = append(a.keyBuf.Key[:0], res.PartID...)
	q := tp.part.Partition(&a.keyBuf, tp.n)
	tp.lastResult[q], tp.pending[q] = now.UnixNano(), 0
}

// sawManifest notes that the first attempts of mf's parts were sent, read
// at now: each partition they went to has a task pending since now, unless
// it had one already; a.mu is held. Routes that never hedged are not
// followed.
func (a *Aggregator) sawManifest(mf schemas.Manifest, now time.Time) {
	tp := a.routes[mf.Route]
	if tp == nil {
		return
	}
	for _, id := range mf.Parts {
		a.keyBuf.Key = append(a.keyBuf.Key[:0], id...)
		if q := tp.part.Partition(&a.keyBuf, tp.n); tp.pending[q] == 0 {
			tp.pending[q] = now.UnixNano()
		}
	}
}

// follow starts following the partitions of route's tasks topic when its
// first hedge template comes, so that by its first hedge the aggregator
// knows which of them answer; a.mu is held.
func (a *Aggregator) follow(ctx context.Context, route schemas.Route) {
	if a.routes[route] != nil {
		return
	}
	if _, err := a.taskPartitions(ctx, route, a.cfg.Topics.Tasks(string(route))); err != nil {
		a.log.Debug("partitions of a hedged route's tasks topic not looked up; tried again later", "route", route, "err", err)
	}
}

// taskPartitions returns what is known of the partitions of topic, the
// tasks topic of route; their count is looked up at most once per
// partitionsTTL (a failed lookup at most once per lookupRetry, a known
// count kept meanwhile), and what was seen of them is kept while it stays.
func (a *Aggregator) taskPartitions(ctx context.Context, route schemas.Route, topic string) (*taskPartitions, error) {
	tp := a.partitions[topic]
	if tp != nil && time.Since(tp.seen) < partitionsTTL {
		return tp, nil
	}
	if f, ok := a.lookupFailed[topic]; ok && time.Since(f.at) < lookupRetry {
		if tp != nil {
			return tp, nil
		}
		return nil, f.err
	}
	timeout := 5 * time.Second
	if tp != nil {
		// A count is known: a refresh holds the batch for less.
		timeout = time.Second
	}
	n, err := a.lookupCount(ctx, topic, timeout)
	if err != nil {
		a.lookupFailed[topic] = lookupFailure{at: time.Now(), err: err}
		if tp != nil {
			return tp, nil
		}
		return nil, err
	}
	delete(a.lookupFailed, topic)
	if tp == nil || tp.n != n {
		tp = &taskPartitions{n: n, part: kgo.StickyKeyPartitioner(nil).ForTopic(topic), lastResult: make([]int64, n), pending: make([]int64, n)}
		a.partitions[topic] = tp
		a.routes[route] = tp
	}
	tp.seen = time.Now()
	return tp, nil
}

// lookupPartitions asks the cluster how many partitions topic has,
// waiting at most timeout.
func (a *Aggregator) lookupPartitions(ctx context.Context, topic string, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	td, err := kadm.NewClient(a.hop.Client()).ListTopics(ctx, topic)
	if err == nil {
		err = td.Error()
	}
	if err != nil {
		return 0, err
	}
	d, ok := td[topic]
	if !ok || len(d.Partitions) == 0 {
		return 0, fmt.Errorf("topic %s has no partitions", topic)
	}
	return len(d.Partitions), nil
}
