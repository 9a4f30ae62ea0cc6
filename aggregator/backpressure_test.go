package aggregator

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The limits of these tests: at most bpLimit open requests, bpPoll records a
// batch, so an instance holds at most bpBound open requests (plus what a
// restore brings).
const (
	bpLimit  = 50
	bpPoll   = 10
	bpBound  = bpLimit - 1 + bpPoll
	bpResume = bpLimit * 9 / 10
)

func limited(c *Config) { c.MaxOpenRequests, c.MaxPollRecords = bpLimit, bpPoll }

// burst writes n requests of one part each, spread over the fixture's
// partitions: every manifest first, then every result. It returns their
// ids.
func (f *fixture) burst(prefix string, n int, deadline time.Time) []schemas.CorrelationID {
	f.t.Helper()
	manifests := make([][]*kgo.Record, f.parts)
	results := make([][]*kgo.Record, f.parts)
	ids := make([]schemas.CorrelationID, n)
	for i := range n {
		id, p := fmt.Sprintf("%s%03d", prefix, i), int32(i)%f.parts
		ids[i] = schemas.CorrelationID(id)
		manifests[p] = append(manifests[p], f.w.manifest(id, deadline, "", "a"))
		results[p] = append(results[p], f.w.result(id, "a", schemas.ResultOK, `1`, "", deadline))
	}
	for p := range f.parts {
		f.w.send(p, manifests[p]...)
	}
	for p := range f.parts {
		f.w.send(p, results[p]...)
	}
	return ids
}

// onceEach checks that each of ids got exactly one reply, with one of
// statuses, and returns how many got each.
func (l *replyLog) onceEach(ids []schemas.CorrelationID, statuses ...schemas.ReplyStatus) map[schemas.ReplyStatus]int {
	l.t.Helper()
	bad := 0
	got := map[schemas.ReplyStatus]int{}
	for _, id := range ids {
		rs := l.replies[id]
		if len(rs) != 1 || !slices.Contains(statuses, rs[0].Status) {
			if bad++; bad <= 5 {
				l.t.Errorf("%s: %d replies (first: %+v), want one %v", id, len(rs), rs[:min(len(rs), 1)], statuses)
			}
			continue
		}
		got[rs[0].Status]++
	}
	if bad > 0 {
		l.t.Errorf("%d of %d requests without exactly one %v reply", bad, len(ids), statuses)
	}
	return got
}

func (l *replyLog) all(ids []schemas.CorrelationID) func() bool {
	return func() bool {
		for _, id := range ids {
			if len(l.replies[id]) == 0 {
				return false
			}
		}
		return true
	}
}

// TestBackpressure: an aggregator limited to 50 open requests, 10 records a
// batch, is given 500 requests at once, their manifests first and their
// results after them. It must hold at most 59 open requests, pause
// fetching, fire the deadlines of what it holds while paused, resume, and
// answer every request exactly once. The manifests read after the pause are
// past their deadline: each request waits, at most behindMax, until its
// partition is read up to its deadline (the deadline rule: its result, behind
// the manifests, was written in time), and is COMPLETE when its result came
// within that wait, else FAILED (its result late); most are FAILED: the limit
// bounds memory, it does not make an overload succeed. Then requests that
// complete by their results go through as usual.
func TestBackpressure(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			t.Parallel()
			testBackpressure(t, g)
		})
	}
}

func testBackpressure(t *testing.T, g kafkaconfig.Guarantee) {
	const n = 500
	f := newFixture(t, 3)
	a := f.start("a", g, limited)
	waitFor(t, "the aggregator ready", 30*time.Second, readyOf(a.agg))
	l := f.replyLog()

	deadline := time.Now().Add(6 * time.Second)
	ids := f.burst("r", n, deadline)
	waitFor(t, "fetching paused", 20*time.Second, func() bool { return a.agg.Stats().Paused })
	// Until the deadline nothing completes: the instance stays paused and
	// reads nothing more.
	held := a.agg.Stats()
	for time.Until(deadline) > 300*time.Millisecond {
		s := a.agg.Stats()
		if !s.Paused || s.Open < bpLimit || s.Open > bpBound || s.OpenPeak > bpBound || s.Manifests > bpBound || s.ResultsReceived != 0 {
			t.Fatalf("while paused before the deadline: %+v; want paused with %d to %d open requests (peak too), at most %d manifests and no result read",
				s, bpLimit, bpBound, bpBound)
		}
		if s.Manifests != held.Manifests {
			t.Fatalf("read %d more manifests while paused", s.Manifests-held.Manifests)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("paused with %d open requests (peak %d), %d manifests read of %d", held.Open, held.OpenPeak, held.Manifests, n)

	l.until("a reply for every request", 60*time.Second, l.all(ids))
	f.fence(l, "fence")
	got := l.onceEach(ids, schemas.ReplyFailed, schemas.ReplyComplete)
	t.Logf("replies: %v", got)
	waitFor(t, "the counts settled", 10*time.Second, func() bool {
		s := a.agg.Stats()
		return s.RepliesFailed == int64(got[schemas.ReplyFailed]) && s.Late == s.RepliesFailed && s.Open == 0 && !s.Paused
	})
	// More than one pause: after the resume, the manifests read past their
	// deadline wait for their results (the deadline rule) and fill the
	// instance up again; a pause fires them at once.
	s := a.agg.Stats()
	if s.Pauses < 1 || s.OpenPeak < bpLimit || s.OpenPeak > bpBound || s.DeadLettered != 0 {
		t.Errorf("after the burst: %+v; want a pause, a peak of %d to %d open requests, no dead letter", s, bpLimit, bpBound)
	}
	t.Logf("after the burst: %d pauses", s.Pauses)
	pauses := s.Pauses

	// Resumed: requests whose results follow their manifests complete.
	far := time.Now().Add(time.Minute)
	var more []schemas.CorrelationID
	for i := range 200 {
		id, p := fmt.Sprintf("c%03d", i), int32(i)%f.parts
		more = append(more, schemas.CorrelationID(id))
		f.w.send(p, f.w.manifest(id, far, "", "a"), f.w.result(id, "a", schemas.ResultOK, `1`, "", far))
	}
	l.until("the replies after the burst", 60*time.Second, l.all(more))
	f.fence(l, "fence2")
	l.onceEach(more, schemas.ReplyComplete)
	if s := a.agg.Stats(); s.Pauses != pauses || s.Paused {
		t.Errorf("after requests that complete: %d pauses, paused %v; want %d, false", s.Pauses, s.Paused, pauses)
	}
}

// TestBackpressureRebalance: a second instance joins while the first is
// paused at its limit, holding open requests of every partition. The
// rebalance must go through (the pause blocks no group protocol); the first
// instance, left with one or two partitions and their requests (below the
// resume mark), must resume fetching them and pause again at the limit; the
// second restores the open requests of the partitions it takes over and
// fetches until its own limit. Neither holds more than the bound plus what
// it restored, and every request is answered exactly once (FAILED, or
// COMPLETE when its result was read within the deadline rule's wait).
func TestBackpressureRebalance(t *testing.T) {
	const (
		n    = 500
		each = 17 // open requests per partition before the second instance joins
	)
	f := newFixture(t, 3)
	a := f.start("a", kafkaconfig.ExactlyOnce, limited)
	waitFor(t, "the first instance ready", 30*time.Second, readyOf(a.agg))
	l := f.replyLog()

	// First some manifests of every partition, read before the next are
	// written, so that the first instance holds requests of each; then the
	// rest of the burst.
	deadline := time.Now().Add(20 * time.Second)
	var ids []schemas.CorrelationID
	manifests := make([][]*kgo.Record, f.parts)
	results := make([][]*kgo.Record, f.parts)
	for i := range n {
		id, p := fmt.Sprintf("r%03d", i), int32(i)%f.parts
		ids = append(ids, schemas.CorrelationID(id))
		manifests[p] = append(manifests[p], f.w.manifest(id, deadline, "", "a"))
		results[p] = append(results[p], f.w.result(id, "a", schemas.ResultOK, `1`, "", deadline))
	}
	for p := range f.parts {
		f.w.send(p, manifests[p][:each]...)
		want := int64(each) * int64(p+1)
		waitFor(t, fmt.Sprintf("%d manifests read", want), 20*time.Second, func() bool { return a.agg.Stats().Manifests == want })
	}
	if s := a.agg.Stats(); !s.Paused || s.Open != 3*each {
		t.Fatalf("the first instance: %+v; want it paused with %d open requests", s, 3*each)
	}
	for p := range f.parts {
		f.w.send(p, manifests[p][each:]...)
	}
	for p := range f.parts {
		f.w.send(p, results[p]...)
	}

	b := f.start("b", kafkaconfig.ExactlyOnce, limited)
	both := []*instance{a, b}
	var pb int
	waitFor(t, "the partitions shared", 30*time.Second, func() bool {
		var pa int
		_, pa = a.agg.GroupAssignment()
		_, pb = b.agg.GroupAssignment()
		return pa > 0 && pb > 0 && pa+pb == int(f.parts) && a.agg.Ready() == nil && b.agg.Ready() == nil
	})
	// Before the deadline no request completes: each instance fetches until
	// it holds the limit, then stays paused.
	waitFor(t, "both instances paused at their limit", 15*time.Second, func() bool {
		for _, in := range both {
			if s := in.agg.Stats(); !s.Paused || s.Open < bpLimit {
				return false
			}
		}
		return true
	})
	if time.Until(deadline) < time.Second {
		t.Fatalf("the instances settled %s after the deadline: the test proves nothing", -time.Until(deadline))
	}
	sa, sb := a.agg.Stats(), b.agg.Stats()
	for _, in := range both {
		s := in.agg.Stats()
		t.Logf("%s after the rebalance: open %d (peak %d, restored %d), paused %v, %d pauses", in.name, s.Open, s.OpenPeak, s.RestoredOpen, s.Paused, s.Pauses)
	}
	// b restores what the changelog has of its partitions' open requests,
	// and consumes again those the last interval created (machine.young).
	if sa.Pauses != 2 || sb.RestoredOpen > int64(each*pb) || sb.Pauses != 1 {
		t.Errorf("a paused %d times, b restored %d open requests and paused %d times; want 2 (resumed below the mark after the revocation), at most %d and 1",
			sa.Pauses, sb.RestoredOpen, sb.Pauses, each*pb)
	}

	l.until("a reply for every request", 60*time.Second, l.all(ids))
	f.fence(l, "fence")
	t.Logf("replies: %v", l.onceEach(ids, schemas.ReplyFailed, schemas.ReplyComplete))
	waitFor(t, "both instances drained and fetching", 10*time.Second, func() bool {
		for _, in := range both {
			if s := in.agg.Stats(); s.Open != 0 || s.Paused {
				return false
			}
		}
		return true
	})
	for _, in := range both {
		if s := in.agg.Stats(); s.OpenPeak > bpBound+s.RestoredOpen {
			t.Errorf("%s: peak of %d open requests, want at most %d + the %d it restored", in.name, s.OpenPeak, bpBound, s.RestoredOpen)
		}
	}
}

// TestBackpressureClientRestart: an instance paused at its limit has its
// producer fenced (another client initialises its transactional id, as a
// restarted twin would). The batch that replies at the deadline fails, the
// hop builds a new client, and the new client, which fetches unpaused,
// must be paused again once the restore (and the records it consumes
// again) brings the open requests back;
// every request is still answered exactly once (FAILED, or COMPLETE when
// its result was read within the deadline rule's wait).
func TestBackpressureClientRestart(t *testing.T) {
	const n = 200
	f := newFixture(t, 1)
	a := f.start("a", kafkaconfig.ExactlyOnce, limited)
	waitFor(t, "the aggregator ready", 30*time.Second, readyOf(a.agg))
	l := f.replyLog()
	ids := f.burst("r", n, time.Now().Add(4*time.Second))
	waitFor(t, "fetching paused", 20*time.Second, func() bool { return a.agg.Stats().Paused })

	// Kafka answers CONCURRENT_TRANSACTIONS while the aggregator's last
	// transaction is being completed; kafka.Fence tries again (a bare
	// InitProducerID once failed CI so).
	if err := kafka.Fence(t.Context(), f.c.Client(t), a.agg.cfg.Group+"-"+a.agg.cfg.InstanceID); err != nil {
		t.Fatalf("fence the aggregator's transactional id: %v", err)
	}

	l.until("a reply for every request", 60*time.Second, l.all(ids))
	f.fence(l, "fence")
	t.Logf("replies: %v", l.onceEach(ids, schemas.ReplyFailed, schemas.ReplyComplete))
	s := a.agg.Stats()
	t.Logf("after the fence: %d client restarts, %d pauses, peak %d open, restored %d", a.agg.hop.Restarts(), s.Pauses, s.OpenPeak, s.RestoredOpen)
	if a.agg.hop.Restarts() == 0 {
		t.Fatal("the hop did not restart its client: the test proves nothing")
	}
	// The changelog has the open requests as of the last offset commit
	// (once per interval, without those the interval created); the new
	// client restores those and consumes the rest again.
	if s.Pauses < 2 || s.OpenPeak > bpBound+s.RestoredOpen {
		t.Errorf("after the restart: %+v; want the restored requests and those consumed again to pause the new client again, and a peak of at most %d + restored",
			s, bpBound)
	}
}

// readyOf is a's Ready as a condition for waitFor.
func readyOf(a *Aggregator) func() bool { return func() bool { return a.Ready() == nil } }
