package chaos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/bits"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// partKey names one part of one request.
type partKey struct {
	id   schemas.CorrelationID
	part schemas.PartID
}

// submission is what the harness sent.
type submission struct {
	at      time.Time
	timeout time.Duration
	fanout  int
}

// resultFact is one committed record of the results topic that is a Result.
type resultFact struct {
	res       schemas.Result
	partition int32
	offset    int64
	// visible is when the live observer first read it (read_committed);
	// zero when it never did.
	visible time.Time
}

// replyFact is one committed reply, in log order.
type replyFact struct {
	reply     schemas.Reply
	partition int32
	visible   time.Time
}

// offsetSample says that the aggregator group's committed offset of a
// results partition was offset at time at (sampled by the observer).
type offsetSample struct {
	at     time.Time
	offset int64
}

// facts is everything the verdict is drawn from: what was sent, and what
// the topics hold once the pipeline has drained (read from the start with
// read_committed), with the times the observer saw records appear.
type facts struct {
	route     schemas.Route
	submitted map[schemas.CorrelationID]submission
	manifests map[schemas.CorrelationID][]schemas.Manifest
	tasks     map[partKey]int
	// attempts has bit 1<<attempt set for each attempt of a part that has
	// a task record: a hedged part has two tasks, neither a duplicate.
	attempts map[partKey]uint64
	results  map[partKey][]resultFact
	replies  map[schemas.CorrelationID][]replyFact
	// commits are the aggregator group's committed offsets over time, per
	// partition of results, in time order.
	commits map[int32][]offsetSample
}

func newFacts(route schemas.Route) *facts {
	return &facts{
		route:     route,
		submitted: map[schemas.CorrelationID]submission{},
		manifests: map[schemas.CorrelationID][]schemas.Manifest{},
		tasks:     map[partKey]int{},
		attempts:  map[partKey]uint64{},
		results:   map[partKey][]resultFact{},
		replies:   map[schemas.CorrelationID][]replyFact{},
		commits:   map[int32][]offsetSample{},
	}
}

// Why a part that is not OK in a reply is not OK. Each is a defensible
// reason for a PARTIAL or FAILED reply; anything else is wrong.
const (
	// whyVerdict: the reply carries the processor's own ERROR or EXPIRED
	// result (a straggler cut at its deadline, a task picked up too late).
	whyVerdict = "verdict"
	// whyLate: no result for the part was committed before the deadline
	// (minus the slack): it truly missed it.
	whyLate = "late"
	// whyOutage: a result was committed in time, but the reply itself
	// came later than onTime after the deadline: no aggregator was serving
	// the request's partition at its deadline (killed, the partition
	// between owners or being restored, or the aggregator behind), and
	// the request timed out before its backlog was read.
	whyOutage = "outage"
	// whyNever: no result for the part was ever committed (counted as a
	// lost part as well).
	whyNever = "never"
)

// checkOptions tunes the verdict.
type checkOptions struct {
	guarantee kafkaconfig.Guarantee
	// slack is how long before the deadline a result must have been
	// committed for its part to count as in time: observer lag, the
	// aggregator's tick, scheduling on a loaded machine.
	slack time.Duration
	// onTime is how long after the deadline a reply may come and still be
	// on time, i.e. from an aggregator that was serving the request.
	onTime time.Duration
	// maxExamples bounds the problems listed in the report.
	maxExamples int
}

// check draws the verdict from f.
func check(f *facts, o checkOptions) Report {
	r := Report{Guarantee: o.guarantee, NotOK: map[string]int{}}
	add := func(format string, args ...any) {
		if len(r.Problems) < o.maxExamples {
			r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
		}
	}
	ids := make([]schemas.CorrelationID, 0, len(f.submitted))
	for id := range f.submitted {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return f.submitted[ids[i]].at.Before(f.submitted[ids[j]].at) })
	r.Requests = len(ids)
	r.LongestStall, r.LongestStallAt = longestStall(f, ids)

	for _, id := range ids {
		sub := f.submitted[id]
		mfs := f.manifests[id]
		r.Manifests += len(mfs)
		if len(mfs) > 1 {
			r.HopDuplicates.Manifests += len(mfs) - 1
		}
		parts := expectedParts(sub.fanout)
		deadline := sub.at.Add(sub.timeout)
		if len(mfs) > 0 {
			deadline = mfs[0].Deadline
			if !slices.Equal(mfs[0].Parts, parts) {
				add("%s: the manifest lists parts %v, want %v", id, mfs[0].Parts, parts)
				r.Wrong++
			}
		}
		// Every part of a scattered request must have reached a processor
		// and come back with some result.
		if len(mfs) > 0 {
			for _, p := range parts {
				k := partKey{id, p}
				// A hedge is a second attempt, not a duplicate: one task
				// and one result per attempt.
				n := f.tasks[k]
				r.Tasks += n
				if a := bits.OnesCount64(f.attempts[k]); n > a {
					r.HopDuplicates.Tasks += n - max(a, 1)
				}
				m := len(f.results[k])
				r.Results += m
				if a := resultAttempts(f.results[k]); m > a {
					r.HopDuplicates.Results += m - max(a, 1)
				}
				if n == 0 || m == 0 {
					r.LostParts++
					add("%s part %s: %d task records, %d results: a part of a scattered request was lost", id, p, n, m)
				}
			}
		}

		reps := f.replies[id]
		r.Replies += len(reps)
		switch {
		case len(reps) == 0:
			r.LostReplies++
			add("%s: no reply (submitted %s, deadline %s)", id, sub.at.Format(time.TimeOnly), deadline.Format(time.TimeOnly))
			continue
		case len(reps) > 1:
			r.DuplicateReplies += len(reps) - 1
			if !sameReply(reps) {
				r.ConflictingDuplicates++
			}
			var seen []string
			for _, rf := range reps {
				seen = append(seen, fmt.Sprintf("%s at %s (completed %s)", rf.reply.Status,
					rf.visible.Format("15:04:05.000"), rf.reply.CompletedAt.Format("15:04:05.000")))
			}
			add("%s: %d replies: %s; %d manifests; deadline %s", id, len(reps), strings.Join(seen, ", "),
				len(mfs), deadline.Format("15:04:05.000"))
		}
		for i, rf := range reps {
			if c := rf.reply.CompletedAt; !c.IsZero() && !rf.visible.IsZero() {
				lag := rf.visible.Sub(c)
				r.ReplyLagMax = max(r.ReplyLagMax, lag)
				if lag > time.Second {
					r.RepliesVisibleLate++
				}
			}
			problems := checkReply(f, id, parts, deadline, rf, o, &r, i == 0)
			if len(problems) > 0 {
				r.Wrong++
				for _, p := range problems {
					add("%s reply %d: %s", id, i+1, p)
				}
			}
		}
	}
	r.Lost = r.LostReplies + r.LostParts
	r.Duplicated = r.DuplicateReplies
	if o.guarantee == kafkaconfig.ExactlyOnce {
		r.Duplicated += r.HopDuplicates.Manifests + r.HopDuplicates.Tasks + r.HopDuplicates.Results
	}
	return r
}

// resultAttempts returns how many attempts the results rs answer.
func resultAttempts(rs []resultFact) int {
	var seen uint64
	for _, rf := range rs {
		seen |= 1 << min(uint(max(rf.res.Attempt, 1)), 63)
	}
	return bits.OnesCount64(seen)
}

// checkReply returns what is wrong with one reply of request id, and counts
// its status and the reasons of its parts that are not OK (for the first
// reply of a request only, so that duplicates do not skew the breakdown).
func checkReply(f *facts, id schemas.CorrelationID, parts []schemas.PartID, deadline time.Time, rf replyFact, o checkOptions, r *Report, count bool) []string {
	rep := rf.reply
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	if rep.CorrelationID != id {
		bad("correlation id %q", rep.CorrelationID)
	}
	if rep.Route != f.route {
		bad("route %q, want %q", rep.Route, f.route)
	}
	got := make([]schemas.PartID, len(rep.Parts))
	for i, p := range rep.Parts {
		got[i] = p.PartID
	}
	if !slices.Equal(got, parts) {
		bad("parts %v, want %v", got, parts)
		return probs
	}
	var okParts []schemas.PartID
	for _, p := range rep.Parts {
		if p.Status == schemas.PartOK {
			okParts = append(okParts, p.PartID)
		}
	}
	want := schemas.ReplyPartial
	switch len(okParts) {
	case len(parts):
		want = schemas.ReplyComplete
	case 0:
		want = schemas.ReplyFailed
	}
	if rep.Status != want {
		bad("status %s with %d of %d parts OK, want %s", rep.Status, len(okParts), len(parts), want)
	}
	if count {
		switch rep.Status {
		case schemas.ReplyComplete:
			r.Complete++
		case schemas.ReplyPartial:
			r.Partial++
		case schemas.ReplyFailed:
			r.Failed++
		}
	}

	// The merged payload: the collect merge's JSON array of the OK parts'
	// payloads, in part order; each must be a committed OK result of this
	// very part (the sleep handler answers {"part": <part id>, ...}).
	var elems []json.RawMessage
	if len(okParts) == 0 && len(rep.Payload) == 0 {
		// A FAILED reply carries no payload: there is nothing to merge.
	} else if err := json.Unmarshal(rep.Payload, &elems); err != nil {
		bad("payload %q is not a JSON array: %v", truncate(rep.Payload), err)
	} else if len(elems) != len(okParts) {
		bad("payload has %d elements for %d OK parts", len(elems), len(okParts))
	} else {
		for i, p := range okParts {
			var sr processor.SleepResult
			if err := json.Unmarshal(elems[i], &sr); err != nil || sr.Part != p {
				bad("payload element %d is %s, want the sleep result of part %s", i, truncate(elems[i]), p)
				continue
			}
			if !hasOKPayload(f.results[partKey{id, p}], elems[i]) {
				bad("payload element %d (%s) is no committed OK result of part %s", i, truncate(elems[i]), p)
			}
		}
	}

	for _, p := range rep.Parts {
		k := partKey{id, p.PartID}
		res := f.results[k]
		switch p.Status {
		case schemas.PartOK:
			if !hasResult(res, schemas.ResultOK, p.ProcessorID) {
				bad("part %s is OK from %q, but no such OK result was committed", p.PartID, p.ProcessorID)
			}
		case schemas.PartError, schemas.PartExpired:
			if !hasResult(res, schemas.ResultStatus(p.Status), "") {
				bad("part %s is %s, but no %s result was committed", p.PartID, p.Status, p.Status)
			} else if count {
				r.NotOK[whyVerdict]++
			}
		case schemas.PartMissing:
			why, problem := whyMissing(f, res, deadline, rf, o)
			if problem != "" {
				bad("part %s is MISSING: %s", p.PartID, problem)
			} else if count {
				r.NotOK[why]++
			}
		default:
			bad("part %s is %s: the route's policy is all, nothing may be skipped", p.PartID, p.Status)
		}
	}
	return probs
}

// decidedAt is when the aggregator decided the reply: its CompletedAt, or
// when the reply became visible if that was earlier (clock skew) or the
// reply has none. A reply can become visible long after it was decided:
// the transaction that carries it, or the commit markers that end it, may
// wait out a broker crash (3-node broker-kill chaos: a batch stalled in its
// transaction's end for about 14s while a node was down).
func (rf replyFact) decidedAt() time.Time {
	c := rf.reply.CompletedAt
	if c.IsZero() || (!rf.visible.IsZero() && rf.visible.Before(c)) {
		return rf.visible
	}
	return c
}

// whyMissing tells why a part marked MISSING was missing, or, when it was
// not, what is wrong. The reply counts from when the aggregator decided it
// (decidedAt), not from when it became visible.
func whyMissing(f *facts, res []resultFact, deadline time.Time, rf replyFact, o checkOptions) (why, problem string) {
	slack := o.slack
	replyVisible := rf.decidedAt()
	shown := clock(replyVisible)
	if !rf.visible.IsZero() && rf.visible.Sub(replyVisible) > slack {
		shown += ", visible " + clock(rf.visible)
	}
	if len(res) == 0 {
		return whyNever, ""
	}
	// The first result of the part that became visible, whatever its
	// status: had the aggregator read it before the deadline, the part
	// would be OK, ERROR or EXPIRED, not MISSING.
	var first *resultFact
	for i := range res {
		rf := &res[i]
		if rf.visible.IsZero() {
			continue
		}
		if first == nil || rf.visible.Before(first.visible) {
			first = rf
		}
	}
	if first == nil || !first.visible.Before(deadline.Add(-slack)) {
		return whyLate, ""
	}
	// A result was committed in time. If the aggregator group had
	// committed its consumption (with the request's state) well before
	// the reply appeared, the part had reached the aggregator and a
	// restored state must still hold it.
	if at, ok := consumedAt(f.commits[first.partition], first.offset); ok && !replyVisible.IsZero() && at.Add(slack).Before(replyVisible) {
		return "", fmt.Sprintf("its %s result (results/%d@%d, committed %s) was consumed by the aggregator group by %s, before the reply (%s): state lost",
			first.res.Status, first.partition, first.offset, clock(first.visible), clock(at), shown)
	}
	if replyVisible.IsZero() || replyVisible.After(deadline.Add(o.onTime)) {
		return whyOutage, ""
	}
	return "", fmt.Sprintf("its %s result was committed at %s, %s before the deadline %s, and the reply came on time (%s)",
		first.res.Status, clock(first.visible), deadline.Sub(first.visible).Round(time.Millisecond), clock(deadline), shown)
}

// consumedAt returns the first sample at which the group's committed offset
// was past offset.
func consumedAt(samples []offsetSample, offset int64) (time.Time, bool) {
	i := sort.Search(len(samples), func(i int) bool { return samples[i].offset > offset })
	// Samples are in time order and committed offsets only grow, except
	// when a group is reset, which the harness never does.
	if i == len(samples) {
		return time.Time{}, false
	}
	return samples[i].at, true
}

func hasResult(res []resultFact, st schemas.ResultStatus, processorID string) bool {
	for _, r := range res {
		if r.res.Status == st && (processorID == "" || r.res.ProcessorID == processorID) {
			return true
		}
	}
	return false
}

func hasOKPayload(res []resultFact, elem json.RawMessage) bool {
	for _, r := range res {
		if r.res.Status != schemas.ResultOK {
			continue
		}
		var b bytes.Buffer
		if json.Compact(&b, r.res.Payload) == nil && bytes.Equal(b.Bytes(), elem) {
			return true
		}
	}
	return false
}

// sameReply reports whether duplicate replies say the same thing.
func sameReply(reps []replyFact) bool {
	a := reps[0].reply
	for _, rf := range reps[1:] {
		b := rf.reply
		if a.Status != b.Status || !bytes.Equal(a.Payload, b.Payload) || len(a.Parts) != len(b.Parts) {
			return false
		}
		for i := range a.Parts {
			if a.Parts[i].Status != b.Parts[i].Status {
				return false
			}
		}
	}
	return true
}

func expectedParts(fanout int) []schemas.PartID {
	out := make([]schemas.PartID, fanout)
	for i := range out {
		out[i] = scatterer.ShardID(i)
	}
	return out
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}

func clock(t time.Time) string { return t.Format("15:04:05.000") }

// longestStall returns the longest time, while requests were being sent
// (from the first to the last submission), that a partition of results or
// of replies showed the observer no new record, and where: every request
// goes through one of each, so a stall anywhere on its path shows there.
// Partitions take records at random, so a few seconds is the noise of a
// slow run; a broker failover shows as 7-18 s. ids are in submission order.
func longestStall(f *facts, ids []schemas.CorrelationID) (time.Duration, string) {
	if len(ids) == 0 {
		return 0, ""
	}
	from, to := f.submitted[ids[0]].at, f.submitted[ids[len(ids)-1]].at
	return stallWithin(seenByPartition(f), from, to, from, to)
}

// faultStalls sets each broker fault's Stall and ReturnStall: the longest
// stalls, as in longestStall, that ended between the fault's signal and
// the node's restart, and between the restart and the fault's end (the
// load's end for a moment not reached), so that a fault's cost is told
// apart from a slow start or the fault before it, and its death from its
// return. A stall that began before the signal counts from the signal (and
// one that began before the restart, from the restart).
func faultStalls(f *facts, faults []BrokerFault) {
	var from, to time.Time
	for _, sub := range f.submitted {
		if from.IsZero() || sub.at.Before(from) {
			from = sub.at
		}
		if sub.at.After(to) {
			to = sub.at
		}
	}
	if from.IsZero() {
		return
	}
	seen := seenByPartition(f)
	or := func(t time.Time) time.Time {
		if t.IsZero() {
			return to
		}
		return t
	}
	for i := range faults {
		fa := &faults[i]
		if !fa.Stopped || fa.When.IsZero() {
			continue
		}
		fa.Stall, fa.StallAt = stallWithin(seen, from, to, fa.When, or(fa.Restarted))
		if !fa.Restarted.IsZero() {
			fa.ReturnStall, fa.ReturnStallAt = stallWithin(seen, from, to, fa.Restarted, or(fa.Settled))
		}
	}
}

type stallKey struct {
	topic     string
	partition int32
}

// seenByPartition returns, for each partition of results and replies, the
// times the observer saw its records, in order.
func seenByPartition(f *facts) map[stallKey][]time.Time {
	seen := map[stallKey][]time.Time{}
	for _, rs := range f.results {
		for _, r := range rs {
			if !r.visible.IsZero() {
				k := stallKey{"results", r.partition}
				seen[k] = append(seen[k], r.visible)
			}
		}
	}
	for _, rs := range f.replies {
		for _, r := range rs {
			if !r.visible.IsZero() {
				k := stallKey{"replies", r.partition}
				seen[k] = append(seen[k], r.visible)
			}
		}
	}
	for _, ts := range seen {
		slices.SortFunc(ts, time.Time.Compare)
	}
	return seen
}

// stallWithin returns the longest gap between two records of a partition
// in seen (or between from or to and the nearest record), counting only
// the part of the gaps within from..to and after a, among the gaps that
// end after a and no later than b.
func stallWithin(seen map[stallKey][]time.Time, from, to, a, b time.Time) (time.Duration, string) {
	var longest time.Duration
	var where string
	for k, ts := range seen {
		last := from
		for _, t := range append(slices.Clip(ts), to) {
			if t.Before(from) {
				continue
			}
			if t.After(to) {
				t = to
			}
			// A gap that began before a counts from a: what went before
			// is not the window's doing.
			start := last
			if start.Before(a) {
				start = a
			}
			if gap := t.Sub(start); gap > longest && t.After(a) && !t.After(b) {
				longest, where = gap, fmt.Sprintf("%s/%d after %s", k.topic, k.partition, start.Format("15:04:05.000"))
			}
			last = t
			if !t.Before(to) {
				break
			}
		}
	}
	return longest, where
}

// lastNotComplete returns how long after since the last request was sent
// whose first reply is not COMPLETE (0 when none was sent after since).
func lastNotComplete(f *facts, since time.Time) time.Duration {
	var last time.Duration
	for id, rs := range f.replies {
		if len(rs) == 0 || rs[0].reply.Status == schemas.ReplyComplete {
			continue
		}
		if d := f.submitted[id].at.Sub(since); d > last {
			last = d
		}
	}
	return last
}
