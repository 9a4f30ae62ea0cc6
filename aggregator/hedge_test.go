package aggregator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

func TestParseHedge(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    HedgeSpec
		wantErr string
	}{
		{"delay=20ms;percentile=95;min-delay=10ms;min-samples=100;budget=0.05",
			HedgeSpec{Delay: 20 * time.Millisecond, Percentile: 95, MinDelay: 10 * time.Millisecond, MinSamples: 100, Budget: 0.05}, ""},
		{"delay=1s;budget=1", HedgeSpec{Delay: time.Second, Budget: 1}, ""},
		{"percentile=99.9;budget=0.01", HedgeSpec{Percentile: 99.9, Budget: 0.01}, ""},
		{"budget=0.05", HedgeSpec{}, "neither a delay nor a percentile"},
		{"delay=1s", HedgeSpec{}, "budget"},
		{"delay=1s;budget=0.05;colour=red", HedgeSpec{}, "unknown setting"},
		{"delay=soon;budget=0.05", HedgeSpec{}, "delay=soon"},
		{"percentile=100;budget=0.05", HedgeSpec{}, "percentile"},
		{"delay=-1s;budget=0.05", HedgeSpec{}, "negative"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseHedge(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseHedge = %+v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseHedge = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	t.Run("reads what the scatterer writes", func(t *testing.T) {
		h := scatterer.Hedge{Delay: 50 * time.Millisecond, Percentile: 97.5, MinDelay: 3 * time.Millisecond, MinSamples: 7, Budget: 0.02}
		got, err := ParseHedge(h.String())
		want := HedgeSpec{Delay: h.Delay, Percentile: h.Percentile, MinDelay: h.MinDelay, MinSamples: h.MinSamples, Budget: h.Budget}
		if err != nil || got != want {
			t.Fatalf("ParseHedge(%q) = %+v, %v; want %+v", h.String(), got, err, want)
		}
	})
}

const fixedHedge = "delay=100ms;percentile=0;min-delay=10ms;min-samples=100;budget=1"

// feedTemplate feeds request id's hedge template (for every part when part
// is empty) with the settings spec.
func (h *harness) feedTemplate(id, part, spec string) {
	h.t.Helper()
	t := schemas.Task{CorrelationID: schemas.CorrelationID(id), PartID: schemas.PartID(part), PartCount: 3, Route: "r",
		Payload: []byte(`{"q":"` + id + `"}`), ContentType: "application/json", Deadline: h.now.Add(10 * time.Second),
		Attempt: 1, SubmittedAt: h.now}
	src := h.src(id)
	v, err := schemas.EncodeTask(t)
	if err != nil {
		h.t.Fatal(err)
	}
	src.Value = v
	src.Headers = []kgo.RecordHeader{{Key: "sg-type", Value: []byte(typeHedgeTemplate)}, {Key: headerHedge, Value: []byte(spec)}}
	h.m.template(h.ps, h.now, t, src)
}

func (h *harness) template(id, part, spec string) {
	h.t.Helper()
	h.feedTemplate(id, part, spec)
	h.commit()
}

// hedges takes the hedged tasks produced so far.
func (h *harness) hedges() []schemas.Task {
	var ts []schemas.Task
	var rest []output
	for _, o := range h.out {
		if o.task != nil {
			ts = append(ts, *o.task)
		} else {
			rest = append(rest, o)
		}
	}
	h.out = rest
	return ts
}

func attempt(r schemas.Result, n int) schemas.Result {
	r.Attempt = n
	return r
}

func partIDs(ts []schemas.Task) []string {
	var out []string
	for _, t := range ts {
		out = append(out, fmt.Sprintf("%s/%s#%d", t.CorrelationID, t.PartID, t.Attempt))
	}
	return out
}

func TestMachineHedges(t *testing.T) {
	abc := []string{"a", "b", "c"}
	t.Run("a hedged part is counted once: the hedge wins, the first attempt is late", func(t *testing.T) {
		h := newHarness(t)
		h.manifest(h.mf("x", 5*time.Second, abc))
		h.template("x", "", fixedHedge)
		h.result(ok("x", "a", `1`))
		h.advance(100*time.Millisecond - time.Nanosecond)
		if ts := h.hedges(); len(ts) != 0 {
			t.Fatalf("hedged before the delay: %v", partIDs(ts))
		}
		h.advance(time.Nanosecond)
		ts := h.hedges()
		if got := partIDs(ts); !slices.Equal(got, []string{"x/b#2", "x/c#2"}) {
			t.Fatalf("hedged %v, want b and c at attempt 2", got)
		}
		if string(ts[0].Payload) != `{"q":"x"}` || ts[0].Route != "r" || !ts[0].Deadline.Equal(epoch.Add(10*time.Second)) {
			t.Fatalf("hedged task %+v is not the template", ts[0])
		}
		h.result(attempt(ok("x", "b", `"hedge b"`), 2))
		h.result(ok("x", "b", `"first b"`)) // the first attempt, later: a duplicate
		h.none()
		h.result(attempt(ok("x", "c", `"hedge c"`), 2))
		r := h.one()
		if r.Status != schemas.ReplyComplete || string(r.Payload) != `[1,"hedge b","hedge c"]` {
			t.Fatalf("reply %s %s", r.Status, r.Payload)
		}
		for i, want := range []int{1, 2, 2} {
			if r.Parts[i].Attempt != want {
				t.Errorf("part %s answered by attempt %d, want %d", r.Parts[i].PartID, r.Parts[i].Attempt, want)
			}
		}
		h.result(ok("x", "c", `"first c"`)) // after the reply: late
		if h.total.hedgesIssued != 2 || h.total.hedgesWon != 2 || h.total.duplicates != 1 || h.total.late != 1 || h.total.results != 5 {
			t.Fatalf("counters %+v", h.total)
		}
	})
	t.Run("the first attempt wins after the hedge was sent", func(t *testing.T) {
		h := newHarness(t)
		h.manifest(h.mf("x", 5*time.Second, abc))
		h.template("x", "", fixedHedge)
		h.result(ok("x", "a", `1`))
		h.result(ok("x", "b", `2`))
		h.advance(100 * time.Millisecond)
		if got := partIDs(h.hedges()); !slices.Equal(got, []string{"x/c#2"}) {
			t.Fatalf("hedged %v", got)
		}
		h.result(ok("x", "c", `3`))
		r := h.one()
		if r.Status != schemas.ReplyComplete || r.Parts[2].Attempt != 1 {
			t.Fatalf("reply %s, part c attempt %d", r.Status, r.Parts[2].Attempt)
		}
		h.result(attempt(ok("x", "c", `"hedge"`), 2))
		if h.total.hedgesIssued != 1 || h.total.hedgesWon != 0 || h.total.late != 1 {
			t.Fatalf("counters %+v", h.total)
		}
	})
	t.Run("the reply names the hedged parts", func(t *testing.T) {
		h := newHarness(t)
		h.manifest(h.mf("x", 5*time.Second, abc))
		h.template("x", "", fixedHedge)
		h.result(ok("x", "a", `1`))
		h.advance(100 * time.Millisecond)
		h.hedges()
		h.result(ok("x", "b", `2`))
		h.result(attempt(ok("x", "c", `3`), 2))
		var hedged []schemas.PartID
		for _, o := range h.out {
			if o.task == nil && o.src == nil {
				hedged = o.hedged
			}
		}
		if !slices.Equal(hedged, []schemas.PartID{"b", "c"}) {
			t.Fatalf("reply's hedged parts %v, want b and c", hedged)
		}
	})
	t.Run("no hedge once every part answered or the request completed", func(t *testing.T) {
		h := newHarness(t)
		h.manifest(h.mf("x", 5*time.Second, abc, withPolicy("quorum:2")))
		h.template("x", "", fixedHedge)
		h.result(ok("x", "a", `1`))
		h.result(ok("x", "b", `2`))
		h.one()
		h.advance(time.Second)
		if ts := h.hedges(); len(ts) != 0 || h.total.hedgesIssued != 0 {
			t.Fatalf("a completed request was hedged: %v", partIDs(ts))
		}
	})
	t.Run("per-part templates", func(t *testing.T) {
		h := newHarness(t)
		h.manifest(h.mf("x", 5*time.Second, abc))
		h.template("x", "a", fixedHedge)
		h.template("x", "b", fixedHedge)
		// No template for c: it cannot be hedged.
		h.advance(100 * time.Millisecond)
		ts := h.hedges()
		if got := partIDs(ts); !slices.Equal(got, []string{"x/a#2", "x/b#2"}) {
			t.Fatalf("hedged %v", got)
		}
	})
	t.Run("a hedge delay past the deadline is no hedge", func(t *testing.T) {
		h := newHarness(t)
		h.manifest(h.mf("x", 50*time.Millisecond, abc))
		h.template("x", "", fixedHedge)
		h.advance(time.Second)
		if ts := h.hedges(); len(ts) != 0 {
			t.Fatalf("hedged %v", partIDs(ts))
		}
		if r := h.one(); r.Status != schemas.ReplyFailed {
			t.Fatalf("reply %s", r.Status)
		}
	})
	t.Run("templates that cannot be used", func(t *testing.T) {
		h := newHarness(t)
		h.template("nobody", "", fixedHedge) // no such request: dropped
		h.manifest(h.mf("x", 5*time.Second, abc))
		h.template("x", "z", fixedHedge)
		h.template("x", "", "delay=fast")
		got := describe(h.deadLetters())
		if len(got) != 2 || !strings.HasPrefix(got[0], "dlq unknown-part x") || !strings.HasPrefix(got[1], "dlq bad-hedge x") {
			t.Fatalf("dead letters %q", got)
		}
		if h.total.deadLettered != 2 {
			t.Fatalf("counters %+v", h.total)
		}
	})
	t.Run("an aborted hedge is sent again by the next batch", func(t *testing.T) {
		h := newHarness(t)
		h.manifest(h.mf("x", 5*time.Second, abc))
		h.template("x", "", fixedHedge)
		h.now = h.now.Add(100 * time.Millisecond)
		h.m.tick(h.now)
		if n := len(h.m.out); n != 3 {
			t.Fatalf("%d outputs, want 3 hedges", n)
		}
		h.m.out = h.m.out[:0]
		h.m.abort(0)
		h.checkChangelog()
		h.advance(0)
		if got := partIDs(h.hedges()); !slices.Equal(got, []string{"x/a#2", "x/b#2", "x/c#2"}) {
			t.Fatalf("hedged %v after the abort, want every part again", got)
		}
		if h.total.hedgesIssued != 3 {
			t.Fatalf("counters %+v: the aborted batch's hedges counted", h.total)
		}
	})
}

// TestHedgeBudget offers 100 requests of 4 parts whose parts all miss the
// hedge delay: with a budget of 5% the aggregator hedges 20 parts, 5% of
// the 400 tasks, however often it tries the refused ones again; each part
// counts once as denied (a request earns 0.2 tokens, so every first try is
// refused).
func TestHedgeBudget(t *testing.T) {
	h := newHarness(t)
	const spec = "delay=10ms;budget=0.05"
	parts := []string{"a", "b", "c", "d"}
	issued := 0
	for i := range 100 {
		id := fmt.Sprintf("r%03d", i)
		h.manifest(h.mf(id, time.Minute, parts))
		h.template(id, "", spec)
		h.advance(10 * time.Millisecond)
		issued += len(h.hedges())
		// Never more than the budget earned so far.
		if tasks := 4 * (i + 1); float64(issued) > 0.05*float64(tasks) {
			t.Fatalf("after %d tasks, %d hedges: over 5%%", tasks, issued)
		}
	}
	h.advance(time.Second)
	issued += len(h.hedges())
	if issued != 20 || h.total.hedgesIssued != 20 || h.total.hedgesDenied != 400 {
		t.Fatalf("%d hedges issued (counters %+v), want 20 issued and 400 denied", issued, h.total)
	}
}

// TestHedgeRetriesRefusedParts: a part the budget refused at the hedge
// time is tried again every hedge delay while it is missing, so the budget
// goes to the part that stays missing (a straggler), not only to the parts
// that happened to come first; also after the partition moves (restore).
func TestHedgeRetriesRefusedParts(t *testing.T) {
	for _, moved := range []bool{false, true} {
		t.Run(fmt.Sprintf("moved=%v", moved), func(t *testing.T) {
			h := newHarness(t)
			// Each request of 4 parts earns 1 token.
			const spec = "delay=10ms;budget=0.25"
			h.manifest(h.mf("w", time.Minute, []string{"a", "b", "c", "d"}))
			h.template("w", "", spec)
			h.advance(10 * time.Millisecond)
			if got := partIDs(h.hedges()); !slices.Equal(got, []string{"w/a#2"}) {
				t.Fatalf("hedged %v at the hedge time with one token, want w/a#2", got)
			}
			if h.total.hedgesDenied != 3 {
				t.Fatalf("%d denied, want 3 (b, c, d)", h.total.hedgesDenied)
			}
			h.result(ok("w", "b", `2`))
			h.result(ok("w", "c", `3`))
			if moved {
				// The new owner gets w's earned token back and tries d
				// at once.
				m := newMachine(testLateWindow, h.m.mergeFor)
				ps, _, problems := m.rebuild(0, h.log[0], "results")
				if problems != nil {
					t.Fatal(problems)
				}
				m.install(ps)
				h.m, h.ps = m, ps
				h.advance(time.Microsecond)
			} else {
				// No token: d is refused again, and not counted twice.
				h.advance(10 * time.Millisecond)
				if ts := h.hedges(); len(ts) != 0 {
					t.Fatalf("hedged %v without a token", partIDs(ts))
				}
				// x earns a token; it answers before its own hedge time.
				h.manifest(h.mf("x", time.Minute, []string{"a", "b", "c", "d"}))
				h.template("x", "", spec)
				for _, p := range []string{"a", "b", "c", "d"} {
					h.result(ok("x", p, `0`))
				}
				h.one()
				h.advance(10 * time.Millisecond)
			}
			if got := partIDs(h.hedges()); !slices.Equal(got, []string{"w/d#2"}) {
				t.Fatalf("hedged %v on the next try with a token, want w/d#2 (the part still missing)", got)
			}
			if !moved && (h.total.hedgesIssued != 2 || h.total.hedgesDenied != 3) {
				t.Fatalf("counters %+v, want 2 issued, 3 denied", h.total)
			}
			h.advance(time.Second)
			if ts := h.hedges(); len(ts) != 0 {
				t.Fatalf("hedged %v with nothing refused left", partIDs(ts))
			}
			h.result(attempt(ok("w", "a", `1`), 2))
			h.result(attempt(ok("w", "d", `4`), 2))
			if r := h.one(); r.Status != schemas.ReplyComplete || string(r.Payload) != `[1,2,3,4]` {
				t.Fatalf("reply %s %s", r.Status, r.Payload)
			}
		})
	}
}

// TestHedgeAdaptiveDelay: with a percentile and no fixed delay, requests
// are not hedged until min-samples latencies are known; then the hedge
// time is the submission plus the percentile of the latencies seen.
func TestHedgeAdaptiveDelay(t *testing.T) {
	h := newHarness(t)
	const spec = "percentile=50;min-delay=5ms;min-samples=4;budget=1"
	for i, d := range []time.Duration{40, 10, 30, 20} {
		id := fmt.Sprintf("w%d", i)
		h.manifest(h.mf(id, time.Minute, []string{"a"}))
		h.template(id, "", spec)
		h.advance(d * time.Millisecond)
		if ts := h.hedges(); len(ts) != 0 {
			t.Fatalf("hedged %v with %d latencies known", partIDs(ts), i)
		}
		h.result(ok(id, "a", `1`))
		h.one()
	}
	// p50 of {10, 20, 30, 40}ms (nearest rank) is 20ms.
	h.manifest(h.mf("y", time.Minute, []string{"a", "b"}))
	h.template("y", "", spec)
	h.advance(20*time.Millisecond - time.Microsecond)
	if ts := h.hedges(); len(ts) != 0 {
		t.Fatalf("hedged %v before the p50 of 20ms", partIDs(ts))
	}
	h.advance(time.Microsecond)
	if got := partIDs(h.hedges()); !slices.Equal(got, []string{"y/a#2", "y/b#2"}) {
		t.Fatalf("hedged %v at the p50 of 20ms", got)
	}
	// The floor: latencies of 1ms make a p50 of 1ms, hedged at 5ms.
	for i := range 8 {
		id := fmt.Sprintf("f%d", i)
		h.manifest(h.mf(id, time.Minute, []string{"a"}))
		h.template(id, "", spec)
		h.advance(time.Millisecond)
		h.result(ok(id, "a", `1`))
		h.one()
	}
	h.manifest(h.mf("z", time.Minute, []string{"a"}))
	h.template("z", "", spec)
	h.advance(5*time.Millisecond - time.Microsecond)
	if ts := h.hedges(); len(ts) != 0 {
		t.Fatalf("hedged %v before the 5ms floor", partIDs(ts))
	}
	h.advance(time.Microsecond)
	if got := partIDs(h.hedges()); !slices.Equal(got, []string{"z/a#2"}) {
		t.Fatalf("hedged %v at the floor", got)
	}
}

func TestLatencyPercentile(t *testing.T) {
	var l latencies
	for i := 1; i <= 100; i++ {
		l.add(int64(i))
	}
	for _, tc := range []struct {
		p    float64
		want int64
	}{{50, 50}, {95, 95}, {99, 99}, {99.9, 100}, {1, 1}} {
		if got := l.percentile(tc.p); got != tc.want {
			t.Errorf("p%v = %d, want %d", tc.p, got, tc.want)
		}
	}
	// The ring keeps the last latencySamples.
	for range latencySamples {
		l.add(1000)
	}
	if got := l.percentile(1); got != 1000 {
		t.Errorf("after a ring of 1000s, p1 = %d", got)
	}
}

// TestHedgeSurvivesRestore: the hedge state is in the changelog: a
// partition rebuilt from it before the hedge time hedges at that time, and
// one rebuilt after the hedge does not hedge again.
func TestHedgeSurvivesRestore(t *testing.T) {
	abc := []string{"a", "b", "c"}
	h := newHarness(t)
	h.manifest(h.mf("x", 5*time.Second, abc))
	h.template("x", "", fixedHedge)
	h.manifest(h.mf("y", 5*time.Second, abc))
	h.template("y", "", fixedHedge)
	h.result(ok("y", "a", `1`))
	// Move the partition: a new machine rebuilds it from the changelog.
	restart := func() {
		m := newMachine(testLateWindow, h.m.mergeFor)
		ps, n, problems := m.rebuild(0, h.log[0], "results")
		if problems != nil || n.skipped != 0 {
			t.Fatalf("rebuild: %d skipped: %v", n.skipped, problems)
		}
		m.install(ps)
		h.m, h.ps = m, ps
	}
	restart()
	h.advance(100 * time.Millisecond)
	if got := partIDs(h.hedges()); !slices.Equal(got, []string{"x/a#2", "x/b#2", "x/c#2", "y/b#2", "y/c#2"}) &&
		!slices.Equal(got, []string{"y/b#2", "y/c#2", "x/a#2", "x/b#2", "x/c#2"}) {
		t.Fatalf("hedged %v after a restore", got)
	}
	restart()
	h.advance(time.Second)
	if ts := h.hedges(); len(ts) != 0 {
		t.Fatalf("hedged %v again after a second restore", partIDs(ts))
	}
	h.result(attempt(ok("x", "a", `1`), 2))
	h.result(ok("x", "b", `2`))
	h.result(ok("x", "c", `3`))
	for _, o := range h.out {
		if o.task == nil && o.src == nil && o.reply.CorrelationID == "x" && !slices.Equal(o.hedged, []schemas.PartID{"a", "b", "c"}) {
			t.Fatalf("reply of x after restores names hedged parts %v", o.hedged)
		}
	}
	if r := h.one(); r.Status != schemas.ReplyComplete || r.Parts[0].Attempt != 2 {
		t.Fatalf("reply %s, part a attempt %d", r.Status, r.Parts[0].Attempt)
	}
}

// TestHedgePartition: a hedge goes to the first partition after its first
// attempt's whose processor answers (a first attempt's result read within
// the window of the newest, and no task pending there for half the hedge
// delay or more), so past a partition whose processor was lost, even in
// the first second after the loss; failing that, to an idle one; when
// nothing is known, to the next one; never to its own unless alone.
func TestHedgePartition(t *testing.T) {
	const w, stale = time.Second, 250 * time.Millisecond
	now := int64(100 * time.Second)
	old := now - int64(5*time.Second)
	recent := now - int64(300*time.Millisecond) // within the window
	for _, tc := range []struct {
		p       int
		last    []int64
		pending []int64
		want    int
	}{
		{0, []int64{now, now, now}, nil, 1},
		{0, []int64{now, old, now}, nil, 2},               // 1's processor stopped answering
		{2, []int64{old, now, now}, nil, 1},               // wraps past 0 to 1
		{0, []int64{now, 0, now}, nil, 2},                 // 1 never answered
		{1, []int64{now, now, old}, nil, 0},               // wraps
		{0, []int64{0, 0, 0}, nil, 1},                     // nothing known: the next one
		{1, []int64{old, now, old}, nil, 2},               // only its own answers: the next one
		{0, []int64{now}, nil, 0},                         // one partition
		{3, []int64{now, now - int64(w), 0, now}, nil, 0}, // exactly the window still counts
		// 1 answered 300ms ago, within the window, but has had a task
		// pending since then: its processor was lost moments ago.
		{0, []int64{now, recent, now, now}, []int64{0, recent, 0, 0}, 2},
		{0, []int64{now, recent, recent, now}, []int64{0, recent, now - int64(stale), 0}, 3}, // exactly stale counts
		{0, []int64{now, now, now}, []int64{now, now - int64(stale) + 1, 0}, 1},              // pending, but not for long
		// Everything answering is slow: an idle partition (nothing
		// pending) that answered once, though out of the window.
		{0, []int64{now, recent, old, now}, []int64{0, recent, 0, recent}, 2},
		// Everything slow and nothing idle: the next one.
		{0, []int64{now, recent, recent}, []int64{0, recent, recent}, 1},
	} {
		pending := tc.pending
		if pending == nil {
			pending = make([]int64, len(tc.last))
		}
		if got := hedgePartition(tc.p, tc.last, pending, now, w, stale); got != tc.want {
			t.Errorf("hedgePartition(%d, %v, pending %v) = %d, want %d", tc.p, tc.last, tc.pending, got, tc.want)
		}
	}
}

// TestSawResult: the aggregator notes, per partition of a hedged route's
// tasks topic, when it read a first attempt's result of a task there (the
// partition the part's key maps to), and since when a first attempt sent
// there (its manifest read) has had no result, so that hedges avoid a
// partition whose processor is gone; hedges' results and other routes are
// not noted.
func TestSawResult(t *testing.T) {
	const n = 3
	part := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	partOf := func(id string) int { return part.Partition(&kgo.Record{Key: []byte(id)}, n) }
	// A part id for each partition.
	ids := make([]schemas.PartID, n)
	for i, found := 0, 0; found < n; i++ {
		id := fmt.Sprintf("shard-%d", i)
		if p := partOf(id); ids[p] == "" {
			ids[p], found = schemas.PartID(id), found+1
		}
	}
	tp := &taskPartitions{n: n, part: part, lastResult: make([]int64, n), pending: make([]int64, n), seen: time.Now()}
	a := &Aggregator{routes: map[schemas.Route]*taskPartitions{"hedged": tp}}
	at := time.Unix(100, 0)
	a.sawResult(schemas.Result{Route: "hedged", PartID: ids[0], Attempt: 1}, at)
	a.sawResult(schemas.Result{Route: "hedged", PartID: ids[2], Attempt: 1}, at)
	a.sawResult(schemas.Result{Route: "hedged", PartID: ids[1], Attempt: 1}, at.Add(-5*time.Second))
	a.sawResult(schemas.Result{Route: "hedged", PartID: ids[1], Attempt: 2}, at) // a hedge's: not its first attempt's partition
	a.sawResult(schemas.Result{Route: "other", PartID: ids[1], Attempt: 1}, at)
	want := []int64{at.UnixNano(), at.Add(-5 * time.Second).UnixNano(), at.UnixNano()}
	if !slices.Equal(tp.lastResult, want) {
		t.Fatalf("last results %v, want %v", tp.lastResult, want)
	}
	if got := hedgePartition(0, tp.lastResult, tp.pending, at.UnixNano(), liveWindow, time.Second); got != 2 {
		t.Fatalf("the hedge of a part of partition 0 goes to %d, want 2 (1 has not answered for 5s)", got)
	}
	// A manifest: its parts' partitions have tasks pending from then on,
	// until a first attempt's result there; an earlier pending task keeps
	// its time.
	a.sawManifest(schemas.Manifest{Route: "hedged", Parts: []schemas.PartID{ids[0], ids[1]}}, at.Add(time.Second))
	a.sawManifest(schemas.Manifest{Route: "hedged", Parts: []schemas.PartID{ids[1], ids[2]}}, at.Add(2*time.Second))
	a.sawManifest(schemas.Manifest{Route: "other", Parts: []schemas.PartID{ids[0], ids[1], ids[2]}}, at)
	a.sawResult(schemas.Result{Route: "hedged", PartID: ids[2], Attempt: 1}, at.Add(3*time.Second))
	a.sawResult(schemas.Result{Route: "hedged", PartID: ids[0], Attempt: 2}, at.Add(3*time.Second))
	wantPending := []int64{at.Add(time.Second).UnixNano(), at.Add(time.Second).UnixNano(), 0}
	if !slices.Equal(tp.pending, wantPending) {
		t.Fatalf("pending since %v, want %v", tp.pending, wantPending)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		a.sawResult(schemas.Result{Route: "hedged", PartID: ids[0], Attempt: 1}, at)
	}); allocs != 0 {
		t.Errorf("sawResult allocates %.0f times per result, want 0", allocs)
	}
	mf := schemas.Manifest{Route: "hedged", Parts: ids}
	if allocs := testing.AllocsPerRun(100, func() { a.sawManifest(mf, at) }); allocs != 0 {
		t.Errorf("sawManifest allocates %.0f times per manifest, want 0", allocs)
	}
}

// TestTaskPartitionsLookup: the partition count of a hedged route's tasks
// topic is looked up once per partitionsTTL; a failed lookup is not tried
// again for lookupRetry (a broker that does not answer costs one lookup,
// not one per template or hedge), and a count known before is kept
// through a failed refresh, which waits less.
func TestTaskPartitionsLookup(t *testing.T) {
	var (
		calls    int
		fail     bool
		timeouts []time.Duration
	)
	a := &Aggregator{partitions: map[string]*taskPartitions{}, routes: map[schemas.Route]*taskPartitions{}, lookupFailed: map[string]lookupFailure{},
		lookupCount: func(_ context.Context, topic string, timeout time.Duration) (int, error) {
			calls++
			timeouts = append(timeouts, timeout)
			if fail {
				return 0, errors.New("no broker answers")
			}
			return 4, nil
		}}
	ctx := t.Context()
	fail = true
	if _, err := a.taskPartitions(ctx, "r", "tasks.r"); err == nil {
		t.Fatal("a failed lookup gave no error")
	}
	if _, err := a.taskPartitions(ctx, "r", "tasks.r"); err == nil || calls != 1 {
		t.Fatalf("right after a failed lookup: err %v, %d lookups, want the error again and 1 lookup", err, calls)
	}
	// Past lookupRetry the lookup is tried again, and succeeds.
	a.lookupFailed["tasks.r"] = lookupFailure{at: time.Now().Add(-lookupRetry), err: errors.New("old")}
	fail = false
	tp, err := a.taskPartitions(ctx, "r", "tasks.r")
	if err != nil || tp.n != 4 || calls != 2 || a.routes["r"] != tp {
		t.Fatalf("after the retry wait: %v, %+v, %d lookups", err, tp, calls)
	}
	if _, err := a.taskPartitions(ctx, "r", "tasks.r"); err != nil || calls != 2 {
		t.Fatalf("within the TTL: %v, %d lookups, want none more", err, calls)
	}
	// The TTL passes and the refresh fails: the known count stays, the
	// refresh waited a second, not five, and is not tried again at once.
	tp.seen = time.Now().Add(-partitionsTTL)
	fail = true
	for range 3 {
		if got, err := a.taskPartitions(ctx, "r", "tasks.r"); err != nil || got != tp {
			t.Fatalf("failed refresh: %v, %p, want the known %p", err, got, tp)
		}
	}
	if calls != 3 || timeouts[2] != time.Second || timeouts[0] != 5*time.Second {
		t.Fatalf("%d lookups with timeouts %v, want 3: 5s, 5s, then 1s for the refresh", calls, timeouts)
	}
}
