package aggregator

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/schemas"
	"github.com/twmb/franz-go/pkg/kgo"
)

var epoch = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const testLateWindow = time.Minute

// harness drives the state machine of one partition with a fake clock. Each
// step is one committed batch unless the test manages batches itself.
type harness struct {
	t      *testing.T
	m      *machine
	ps     *partitionState
	now    time.Time
	merges map[schemas.Route]Merge
	total  counters
	offset int64
	out    []output
	// log is the changelog as a compacted topic would keep it: the latest
	// value of each key, per partition.
	log map[int32]map[string][]byte
	// silent: the partition's leader answers no fetch (a broker that
	// died); else each poll has it answer one sent then (see poll).
	silent bool
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, now: epoch, merges: map[schemas.Route]Merge{}, log: map[int32]map[string][]byte{}}
	h.m = newMachine(testLateWindow, func(r schemas.Route) Merge {
		if m, ok := h.merges[r]; ok {
			return m
		}
		return Collect()
	})
	h.ps = h.m.assign(0)
	return h
}

func (h *harness) src(id string) *kgo.Record {
	h.offset++
	return &kgo.Record{Key: []byte(id), Offset: h.offset}
}

type manifestOpt func(*schemas.Manifest)

func withPolicy(p string) manifestOpt { return func(m *schemas.Manifest) { m.Policy = p } }
func withRoute(r string) manifestOpt  { return func(m *schemas.Manifest) { m.Route = schemas.Route(r) } }

// mf builds a manifest of parts, due in deadline from now, submitted now.
func (h *harness) mf(id string, deadline time.Duration, parts []string, opts ...manifestOpt) schemas.Manifest {
	m := schemas.Manifest{
		CorrelationID: schemas.CorrelationID(id),
		Route:         "r",
		Deadline:      h.now.Add(deadline),
		Policy:        "all",
		SubmittedAt:   h.now,
	}
	for _, p := range parts {
		m.Parts = append(m.Parts, schemas.PartID(p))
	}
	for _, o := range opts {
		o(&m)
	}
	return m
}

func res(id, part string, status schemas.ResultStatus, payload, errText string) schemas.Result {
	return schemas.Result{
		CorrelationID: schemas.CorrelationID(id),
		PartID:        schemas.PartID(part),
		Status:        status,
		Payload:       []byte(payload),
		Error:         errText,
		ProcessorID:   "proc-" + part,
		Attempt:       1,
		Deadline:      epoch.Add(10 * time.Second),
	}
}

func ok(id, part, payload string) schemas.Result {
	return res(id, part, schemas.ResultOK, payload, "")
}

// Batch steps: apply and commit.

func (h *harness) manifest(m schemas.Manifest) {
	h.m.manifest(h.ps, h.now, m, h.src(string(m.CorrelationID)))
	h.commit()
}

func (h *harness) result(r schemas.Result) {
	h.feed(r)
	h.commit()
}

// feed applies result r, consumed now, to the batch in flight.
func (h *harness) feed(r schemas.Result) {
	h.m.result(h.ps, h.now, r, h.resultSrc(r))
}

// resultSrc is the record r was consumed from.
func (h *harness) resultSrc(r schemas.Result) *kgo.Record {
	src := h.src(string(r.CorrelationID))
	v, err := schemas.EncodeResult(r)
	if err != nil {
		h.t.Fatal(err)
	}
	src.Value = v
	src.Headers = []kgo.RecordHeader{{Key: "sg-type", Value: []byte("result")}}
	return src
}

// advance moves the clock and fires what is due, as a tick does.
func (h *harness) advance(d time.Duration) {
	h.now = h.now.Add(d)
	h.m.tick(h.now)
	h.commit()
}

func (h *harness) commit() {
	h.writeChangelog()
	c := h.m.commit()
	h.total.add(c)
	h.out = append(h.out, h.m.out...)
	h.m.out = h.m.out[:0]
	h.checkChangelog()
}

func (c *counters) add(d counters) {
	c.manifests += d.manifests
	c.results += d.results
	c.duplicates += d.duplicates
	c.late += d.late
	c.orphansExpired += d.orphansExpired
	c.deadLettered += d.deadLettered
	c.complete += d.complete
	c.partial += d.partial
	c.failed += d.failed
	c.changelog += d.changelog
	c.hedgesIssued += d.hedgesIssued
	c.hedgesDenied += d.hedgesDenied
	c.hedgesWon += d.hedgesWon
	c.manifestsExpired += d.manifestsExpired
	c.catchUpsExpired += d.catchUpsExpired
}

// replies takes the replies produced so far.
func (h *harness) replies() []schemas.Reply {
	var rs []schemas.Reply
	var rest []output
	for _, o := range h.out {
		if o.src == nil && o.task == nil {
			rs = append(rs, o.reply)
		} else {
			rest = append(rest, o)
		}
	}
	h.out = rest
	return rs
}

// deadLetters takes the dead letters produced so far.
func (h *harness) deadLetters() []output {
	var ds, rest []output
	for _, o := range h.out {
		if o.src != nil {
			ds = append(ds, o)
		} else {
			rest = append(rest, o)
		}
	}
	h.out = rest
	return ds
}

// one takes the single reply produced so far.
func (h *harness) one() schemas.Reply {
	h.t.Helper()
	rs := h.replies()
	if len(rs) != 1 {
		h.t.Fatalf("got %d replies, want 1: %+v", len(rs), rs)
	}
	return rs[0]
}

// oneWith checks that exactly one reply came, with status want.
func (h *harness) oneWith(want schemas.ReplyStatus) {
	h.t.Helper()
	if r := h.one(); r.Status != want {
		h.t.Errorf("status %s, want %s", r.Status, want)
	}
}

func (h *harness) none() {
	h.t.Helper()
	if rs := h.replies(); len(rs) != 0 {
		h.t.Fatalf("got %d replies, want none yet: %+v", len(rs), rs)
	}
}

type marker struct {
	part   string
	status schemas.PartStatus
	err    string
}

func markers(r schemas.Reply) []marker {
	var ms []marker
	for _, p := range r.Parts {
		ms = append(ms, marker{string(p.PartID), p.Status, p.Error})
	}
	return ms
}

func TestMachineReplies(t *testing.T) {
	abc := []string{"a", "b", "c"}
	tests := []struct {
		name    string
		run     func(h *harness)
		status  schemas.ReplyStatus
		markers []marker
		payload string
		err     string
	}{
		{
			name: "all parts OK",
			run: func(h *harness) {
				h.manifest(h.mf("x", 5*time.Second, abc))
				h.result(ok("x", "c", `"three"`))
				h.result(ok("x", "a", `{"n": 1}`))
				h.none()
				h.result(ok("x", "b", `2`))
			},
			status:  schemas.ReplyComplete,
			markers: []marker{{"a", "OK", ""}, {"b", "OK", ""}, {"c", "OK", ""}},
			payload: `[{"n":1},2,"three"]`,
		},
		{
			name: "a part that never answers is MISSING at the deadline",
			run: func(h *harness) {
				h.manifest(h.mf("x", 2*time.Second, abc))
				h.result(ok("x", "a", `1`))
				h.result(ok("x", "b", `2`))
				h.advance(2*time.Second - time.Nanosecond)
				h.none()
				h.advance(time.Nanosecond)
			},
			status:  schemas.ReplyPartial,
			markers: []marker{{"a", "OK", ""}, {"b", "OK", ""}, {"c", "MISSING", ""}},
			payload: `[1,2]`,
			err:     "1 of 3 parts not OK: c MISSING",
		},
		{
			name: "an ERROR result is an ERROR marker with its text",
			run: func(h *harness) {
				h.manifest(h.mf("x", 5*time.Second, []string{"a", "b"}))
				h.result(ok("x", "a", `1`))
				h.result(res("x", "b", schemas.ResultError, "", "connection refused"))
			},
			status:  schemas.ReplyPartial,
			markers: []marker{{"a", "OK", ""}, {"b", "ERROR", "connection refused"}},
			payload: `[1]`,
			err:     "1 of 2 parts not OK: b ERROR (connection refused)",
		},
		{
			name: "an EXPIRED result is an EXPIRED marker",
			run: func(h *harness) {
				h.manifest(h.mf("x", 5*time.Second, []string{"a", "b"}))
				h.result(res("x", "a", schemas.ResultExpired, "", "task deadline passed"))
				h.result(ok("x", "b", `1`))
			},
			status:  schemas.ReplyPartial,
			markers: []marker{{"a", "EXPIRED", "task deadline passed"}, {"b", "OK", ""}},
			payload: `[1]`,
			err:     "1 of 2 parts not OK: a EXPIRED (task deadline passed)",
		},
		{
			name: "every part ERROR is FAILED",
			run: func(h *harness) {
				h.manifest(h.mf("x", 5*time.Second, []string{"a", "b"}))
				h.result(res("x", "a", schemas.ResultError, "", "x"))
				h.result(res("x", "b", schemas.ResultError, "", "y"))
			},
			status:  schemas.ReplyFailed,
			markers: []marker{{"a", "ERROR", "x"}, {"b", "ERROR", "y"}},
			err:     "2 of 2 parts not OK: a ERROR (x), b ERROR (y)",
		},
		{
			name: "a manifest past its deadline completes at the next tick",
			run: func(h *harness) {
				h.manifest(h.mf("x", -time.Second, []string{"a"}))
				h.advance(0)
			},
			status:  schemas.ReplyFailed,
			markers: []marker{{"a", "MISSING", ""}},
			err:     "1 of 1 parts not OK: a MISSING",
		},
		{
			name: "a duplicate OK does not change the reply: the first OK wins",
			run: func(h *harness) {
				h.manifest(h.mf("x", 5*time.Second, []string{"a", "b"}))
				h.result(ok("x", "a", `"first"`))
				h.result(ok("x", "a", `"second"`))
				h.none()
				h.result(ok("x", "b", `"b"`))
				if h.total.duplicates != 1 {
					h.t.Errorf("duplicates: %d, want 1", h.total.duplicates)
				}
			},
			status:  schemas.ReplyComplete,
			markers: []marker{{"a", "OK", ""}, {"b", "OK", ""}},
			payload: `["first","b"]`,
		},
		{
			name: "an OK after an ERROR for the same part replaces it",
			run: func(h *harness) {
				h.manifest(h.mf("x", 5*time.Second, []string{"a", "b"}, withPolicy("deadline")))
				h.result(res("x", "a", schemas.ResultError, "", "flaky"))
				h.result(res("x", "a", schemas.ResultError, "", "flakier"))
				h.result(ok("x", "a", `"retried"`))
				h.result(ok("x", "b", `"b"`))
			},
			status:  schemas.ReplyComplete,
			markers: []marker{{"a", "OK", ""}, {"b", "OK", ""}},
			payload: `["retried","b"]`,
		},
		{
			name: "an ERROR after an OK is dropped",
			run: func(h *harness) {
				h.manifest(h.mf("x", 5*time.Second, []string{"a", "b"}))
				h.result(ok("x", "a", `1`))
				h.result(res("x", "a", schemas.ResultError, "", "late failure"))
				h.result(ok("x", "b", `2`))
			},
			status:  schemas.ReplyComplete,
			markers: []marker{{"a", "OK", ""}, {"b", "OK", ""}},
			payload: `[1,2]`,
		},
		{
			name: "quorum completes at K OK parts and skips the rest",
			run: func(h *harness) {
				h.manifest(h.mf("x", 5*time.Second, abc, withPolicy("quorum:2")))
				h.result(ok("x", "c", `3`))
				h.none()
				h.result(ok("x", "a", `1`))
			},
			status:  schemas.ReplyComplete,
			markers: []marker{{"a", "OK", ""}, {"b", "SKIPPED", ""}, {"c", "OK", ""}},
			payload: `[1,3]`,
		},
		{
			name: "quorum with a failed part is PARTIAL",
			run: func(h *harness) {
				h.manifest(h.mf("x", 5*time.Second, []string{"a", "b", "c", "d"}, withPolicy("quorum:2")))
				h.result(res("x", "a", schemas.ResultError, "", "down"))
				h.result(ok("x", "b", `2`))
				h.none()
				h.result(ok("x", "c", `3`))
			},
			status:  schemas.ReplyPartial,
			markers: []marker{{"a", "ERROR", "down"}, {"b", "OK", ""}, {"c", "OK", ""}, {"d", "SKIPPED", ""}},
			payload: `[2,3]`,
			err:     "1 of 4 parts not OK: a ERROR (down)",
		},
		{
			name: "quorum that cannot be met completes when every part answered",
			run: func(h *harness) {
				h.manifest(h.mf("x", 5*time.Second, []string{"a", "b"}, withPolicy("quorum:2")))
				h.result(res("x", "a", schemas.ResultError, "", "down"))
				h.result(ok("x", "b", `2`))
			},
			status:  schemas.ReplyPartial,
			markers: []marker{{"a", "ERROR", "down"}, {"b", "OK", ""}},
			payload: `[2]`,
			err:     "1 of 2 parts not OK: a ERROR (down)",
		},
		{
			name: "first completes at the first OK",
			run: func(h *harness) {
				h.manifest(h.mf("x", 5*time.Second, abc, withPolicy("first")))
				h.result(ok("x", "b", `{"price": 3}`))
			},
			status:  schemas.ReplyComplete,
			markers: []marker{{"a", "SKIPPED", ""}, {"b", "OK", ""}, {"c", "SKIPPED", ""}},
			payload: `[{"price":3}]`,
		},
		{
			name: "deadline waits for the deadline while a part is not OK",
			run: func(h *harness) {
				h.manifest(h.mf("x", 5*time.Second, []string{"a", "b"}, withPolicy("deadline")))
				h.result(res("x", "a", schemas.ResultError, "", "down"))
				h.result(ok("x", "b", `2`))
				h.advance(5*time.Second - time.Millisecond)
				h.none()
				h.advance(time.Millisecond)
			},
			status:  schemas.ReplyPartial,
			markers: []marker{{"a", "ERROR", "down"}, {"b", "OK", ""}},
			payload: `[2]`,
			err:     "1 of 2 parts not OK: a ERROR (down)",
		},
		{
			name: "a merge error makes the reply FAILED",
			run: func(h *harness) {
				topk, err := TopK("score", 3, "")
				if err != nil {
					h.t.Fatal(err)
				}
				h.merges["search"] = topk
				h.manifest(h.mf("x", 5*time.Second, []string{"a"}, withRoute("search")))
				h.result(ok("x", "a", `{"score": 1}`))
			},
			status:  schemas.ReplyFailed,
			markers: []marker{{"a", "OK", ""}},
			err:     "merge: topk: part a: payload is not a JSON array",
		},
		{
			name: "a merge that panics makes the reply FAILED",
			run: func(h *harness) {
				h.merges["boom"] = func([]Part) ([]byte, error) { panic("boom") }
				h.manifest(h.mf("x", 5*time.Second, []string{"a", "b"}, withRoute("boom")))
				h.result(ok("x", "a", `1`))
				h.advance(5 * time.Second)
			},
			status:  schemas.ReplyFailed,
			markers: []marker{{"a", "OK", ""}, {"b", "MISSING", ""}},
			err:     "merge: panic: boom; 1 of 2 parts not OK: b MISSING",
		},
		{
			name: "a result before its manifest is held and used",
			run: func(h *harness) {
				h.result(ok("x", "b", `2`))
				if h.ps.g.held != 1 {
					h.t.Errorf("held: %d, want 1", h.ps.g.held)
				}
				h.manifest(h.mf("x", 5*time.Second, []string{"a", "b"}))
				if h.ps.g.held != 0 || h.ps.g.open != 1 {
					h.t.Errorf("gauges after manifest: %+v, want 0 held, 1 open", h.ps.g)
				}
				h.none()
				h.result(ok("x", "a", `1`))
			},
			status:  schemas.ReplyComplete,
			markers: []marker{{"a", "OK", ""}, {"b", "OK", ""}},
			payload: `[1,2]`,
		},
		{
			name: "all held results complete the request when the manifest comes",
			run: func(h *harness) {
				h.result(ok("x", "a", `1`))
				h.result(ok("x", "b", `2`))
				h.none()
				h.manifest(h.mf("x", 5*time.Second, []string{"a", "b"}))
			},
			status:  schemas.ReplyComplete,
			markers: []marker{{"a", "OK", ""}, {"b", "OK", ""}},
			payload: `[1,2]`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.run(h)
			r := h.one()
			if r.Status != tt.status {
				t.Errorf("status: %s, want %s", r.Status, tt.status)
			}
			if got := markers(r); !slices.Equal(got, tt.markers) {
				t.Errorf("markers:\n got  %v\n want %v", got, tt.markers)
			}
			if string(r.Payload) != tt.payload {
				t.Errorf("payload: %s, want %s", r.Payload, tt.payload)
			}
			if r.Error != tt.err {
				t.Errorf("error: %q, want %q", r.Error, tt.err)
			}
			if r.CorrelationID != "x" || r.ContentType != "application/json" || !r.CompletedAt.Equal(h.now) {
				t.Errorf("reply header: id %s, content type %s, completed at %s (now %s)", r.CorrelationID, r.ContentType, r.CompletedAt, h.now)
			}
			if h.ps.g.open != 0 {
				t.Errorf("open: %d after the reply", h.ps.g.open)
			}
			if ds := h.deadLetters(); len(ds) != 0 {
				t.Errorf("dead letters: %+v", ds)
			}
			checkTimers(t, h.m)
		})
	}
}

func TestMachinePartOutcomeDetails(t *testing.T) {
	h := newHarness(t)
	h.manifest(h.mf("x", 5*time.Second, []string{"a", "b"}))
	h.now = h.now.Add(300 * time.Millisecond)
	r := res("x", "a", schemas.ResultError, "", "boom")
	r.ProcessorID, r.Attempt = "p-7", 2
	h.result(r)
	h.now = h.now.Add(200 * time.Millisecond)
	h.result(ok("x", "b", `1`))
	reply := h.one()
	a, _ := reply.Part("a")
	b, _ := reply.Part("b")
	if a.ProcessorID != "p-7" || a.Attempt != 2 || a.Latency != 300*time.Millisecond {
		t.Errorf("part a: %+v, want processor p-7, attempt 2, latency 300ms", a)
	}
	if b.ProcessorID != "proc-b" || b.Latency != 500*time.Millisecond {
		t.Errorf("part b: %+v, want processor proc-b, latency 500ms", b)
	}
	if !reply.SubmittedAt.Equal(epoch) || reply.Route != "r" {
		t.Errorf("reply: submitted %s route %s", reply.SubmittedAt, reply.Route)
	}
}

func TestMachineLateAndDuplicateRecords(t *testing.T) {
	h := newHarness(t)
	h.manifest(h.mf("x", 5*time.Second, []string{"a"}))
	h.result(ok("x", "a", `1`))
	h.one()

	h.result(ok("x", "a", `2`))
	h.result(res("x", "a", schemas.ResultError, "", "late"))
	h.manifest(h.mf("x", 5*time.Second, []string{"a"}))
	h.advance(10 * time.Second) // past the deadline: nothing is open
	h.none()
	if h.total.late != 2 || h.total.duplicates != 1 {
		t.Errorf("late %d, duplicates %d; want 2 late, 1 duplicate (the manifest)", h.total.late, h.total.duplicates)
	}
	if h.total.complete != 1 || h.total.results != 3 || h.total.manifests != 2 {
		t.Errorf("counts: %+v", h.total)
	}

	// After the late window the id is forgotten: a result for it is an
	// orphan again, and the memory is freed.
	h.advance(testLateWindow)
	if len(h.ps.reqs) != 0 {
		t.Fatalf("%d requests remembered after the late window, want 0", len(h.ps.reqs))
	}
	h.result(ok("x", "a", `3`))
	if h.ps.g.held != 1 {
		t.Errorf("held: %d, want 1", h.ps.g.held)
	}
	h.none()
}

func TestMachineOrphanExpires(t *testing.T) {
	h := newHarness(t)
	r := ok("x", "a", `1`)
	r.Deadline = h.now.Add(2 * time.Second)
	h.result(r)
	h.advance(2*time.Second + orphanGrace - time.Nanosecond)
	if ds := h.deadLetters(); len(ds) != 0 {
		t.Fatalf("dead-lettered before deadline + grace: %+v", ds)
	}
	h.advance(time.Nanosecond)
	ds := h.deadLetters()
	if len(ds) != 1 || ds[0].reason != "orphan-result" || ds[0].src.Offset != 1 {
		t.Fatalf("dead letters: %+v, want the one result as orphan-result", ds)
	}
	if h.ps.g.held != 0 || len(h.ps.reqs) != 0 || h.total.orphansExpired != 1 {
		t.Errorf("after expiry: gauges %+v, %d requests, %d expired", h.ps.g, len(h.ps.reqs), h.total.orphansExpired)
	}
	// A manifest that comes after all is a new request.
	h.manifest(h.mf("x", time.Second, []string{"a"}))
	h.advance(time.Second)
	if r := h.one(); r.Status != schemas.ReplyFailed {
		t.Errorf("status %s, want FAILED", r.Status)
	}
}

func TestMachineDeadLetters(t *testing.T) {
	many := make([]string, indexAbove+2)
	for i := range many {
		many[i] = string(rune('a' + i))
	}
	manyDup := append(slices.Clone(many), "c")
	tests := []struct {
		name   string
		run    func(h *harness)
		reason string
		err    string
	}{
		{
			name: "result for a part the manifest does not list",
			run: func(h *harness) {
				h.manifest(h.mf("x", time.Second, []string{"a"}))
				h.result(ok("x", "z", `1`))
			},
			reason: "unknown-part",
			err:    `result for part "z" of x, which its manifest does not list`,
		},
		{
			name: "held result for a part the manifest does not list",
			run: func(h *harness) {
				h.result(ok("x", "z", `1`))
				h.manifest(h.mf("x", time.Second, []string{"a"}))
			},
			reason: "unknown-part",
			err:    `result for part "z" of x, which its manifest does not list`,
		},
		{
			name:   "manifest without parts",
			run:    func(h *harness) { h.manifest(h.mf("x", time.Second, nil)) },
			reason: "bad-manifest",
			err:    "manifest x: no parts",
		},
		{
			name:   "manifest with a part twice",
			run:    func(h *harness) { h.manifest(h.mf("x", time.Second, []string{"a", "b", "a"})) },
			reason: "bad-manifest",
			err:    `manifest x: part "a" is listed twice`,
		},
		{
			name:   "manifest of many parts with a part twice",
			run:    func(h *harness) { h.manifest(h.mf("x", time.Second, manyDup)) },
			reason: "bad-manifest",
			err:    `manifest x: part "c" is listed twice`,
		},
		{
			name:   "manifest with an empty part id",
			run:    func(h *harness) { h.manifest(h.mf("x", time.Second, []string{"a", ""})) },
			reason: "bad-manifest",
			err:    "manifest x: part 1 has an empty id",
		},
		{
			name:   "manifest with a garbage policy",
			run:    func(h *harness) { h.manifest(h.mf("x", time.Second, []string{"a"}, withPolicy("most"))) },
			reason: "bad-manifest",
			err:    `manifest x: policy "most": want all, first, deadline or quorum:K`,
		},
		{
			name: "manifest with a deadline past what the state holds",
			run: func(h *harness) {
				mf := h.mf("x", time.Second, []string{"a"})
				mf.Deadline = time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC)
				h.manifest(mf)
			},
			reason: "bad-manifest",
			err:    "manifest x: deadline 300000-01-01T00:00:00Z is out of range (1677 to 2262)",
		},
		{
			name:   "manifest with a quorum larger than its parts",
			run:    func(h *harness) { h.manifest(h.mf("x", time.Second, []string{"a"}, withPolicy("quorum:2"))) },
			reason: "bad-manifest",
			err:    "manifest x: policy quorum:2: quorum exceeds the 1 parts",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.run(h)
			ds := h.deadLetters()
			if len(ds) != 1 {
				t.Fatalf("got %d dead letters, want 1: %+v", len(ds), ds)
			}
			if ds[0].reason != tt.reason || ds[0].err.Error() != tt.err {
				t.Errorf("dead letter: %s %q, want %s %q", ds[0].reason, ds[0].err, tt.reason, tt.err)
			}
			if h.total.deadLettered != 1 {
				t.Errorf("dead-lettered count: %d", h.total.deadLettered)
			}
		})
	}

	t.Run("many parts are found by id", func(t *testing.T) {
		h := newHarness(t)
		h.manifest(h.mf("x", time.Second, many))
		for i := len(many) - 1; i >= 0; i-- {
			h.result(ok("x", many[i], `0`))
		}
		if r := h.one(); r.Status != schemas.ReplyComplete {
			t.Errorf("status %s: %s", r.Status, r.Error)
		}
	})
}

func TestMachineRevokeDropsState(t *testing.T) {
	h := newHarness(t)
	h.manifest(h.mf("x", time.Second, []string{"a"}))
	if g := h.m.gauges(); g.open != 1 {
		t.Fatalf("open: %d", g.open)
	}
	h.m.revoke(0)
	if g := h.m.gauges(); g.open != 0 {
		t.Errorf("open after revoke: %d", g.open)
	}
	h.m.tick(h.now.Add(time.Hour))
	if len(h.m.out) != 0 {
		t.Errorf("a revoked partition's timers fired: %+v", h.m.out)
	}
	if ps := h.m.assign(0); len(ps.reqs) != 0 {
		t.Errorf("a re-assigned partition has %d requests, want a fresh state", len(ps.reqs))
	}
}

// TestMachineAbortRestoresState applies a batch, aborts it and checks the
// state is what it was; then applies the same batch again, commits, and
// checks it produced the same records as the first time.
func TestMachineAbortRestoresState(t *testing.T) {
	ab := []string{"a", "b"}
	tests := []struct {
		name  string
		setup func(h *harness) // committed
		batch func(h *harness) // aborted, then committed
	}{
		{
			name:  "a new request",
			batch: func(h *harness) { h.m.manifest(h.ps, h.now, h.mf("x", time.Second, ab), h.src("x")) },
		},
		{
			name:  "results that complete a request",
			setup: func(h *harness) { h.manifest(h.mf("x", time.Second, ab)); h.result(ok("x", "a", `1`)) },
			batch: func(h *harness) {
				h.feed(ok("x", "b", `2`))
				h.feed(ok("x", "b", `3`)) // late, counted
			},
		},
		{
			name: "an OK that replaces an ERROR",
			setup: func(h *harness) {
				h.manifest(h.mf("x", time.Second, ab, withPolicy("deadline")))
				h.result(res("x", "a", schemas.ResultError, "", "e"))
			},
			batch: func(h *harness) {
				h.feed(ok("x", "a", `1`))
				h.feed(ok("x", "b", `2`))
			},
		},
		{
			name:  "a held result and its manifest",
			setup: func(h *harness) { h.result(ok("x", "a", `1`)) },
			batch: func(h *harness) {
				h.feed(ok("x", "b", `2`))
				h.m.manifest(h.ps, h.now, h.mf("x", time.Second, []string{"a", "b", "c"}), h.src("x"))
				h.feed(ok("x", "z", `2`)) // unknown part
			},
		},
		{
			name:  "a deadline that fires",
			setup: func(h *harness) { h.manifest(h.mf("x", time.Second, ab)); h.result(ok("x", "a", `1`)) },
			batch: func(h *harness) { h.now = h.now.Add(time.Second); h.m.tick(h.now) },
		},
		{
			name: "an orphan that expires and a request forgotten",
			setup: func(h *harness) {
				h.manifest(h.mf("done", time.Second, []string{"a"}))
				h.result(ok("done", "a", `1`))
				h.result(ok("x", "a", `1`))
			},
			batch: func(h *harness) { h.now = h.now.Add(time.Hour); h.m.tick(h.now) },
		},
		{
			name: "several requests, each changed several times",
			setup: func(h *harness) {
				h.manifest(h.mf("x", time.Second, []string{"a", "b", "c"}))
				h.manifest(h.mf("y", 3*time.Second, ab))
				h.result(ok("z", "a", `1`))
			},
			batch: func(h *harness) {
				h.feed(ok("x", "a", `1`))
				h.feed(ok("y", "a", `1`))
				h.feed(ok("x", "b", `1`))
				h.feed(ok("z", "b", `2`))
				h.m.manifest(h.ps, h.now, h.mf("z", time.Second, ab), h.src("z"))
				h.feed(ok("w", "a", `2`))
				h.now = h.now.Add(time.Second)
				h.m.tick(h.now)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.setup != nil {
				tt.setup(h)
			}
			h.out = nil
			before := snapshot(h.m)
			start, offset := h.now, h.offset

			tt.batch(h)
			first := slices.Clone(h.m.out)
			h.m.out = h.m.out[:0]
			if len(first) == 0 && !h.m.dirty() {
				t.Fatal("the batch changed nothing; the test proves nothing")
			}
			h.m.abort(0)
			if after := snapshot(h.m); !reflect.DeepEqual(before, after) {
				t.Fatalf("state after abort differs:\n before %+v\n after  %+v", before, after)
			}
			checkTimers(t, h.m)

			h.now, h.offset = start, offset
			tt.batch(h)
			second := slices.Clone(h.m.out)
			h.m.out = h.m.out[:0]
			h.writeChangelog()
			c := h.m.commit()
			h.checkChangelog()
			if !reflect.DeepEqual(describe(first), describe(second)) {
				t.Errorf("records differ after abort and retry:\n first  %v\n second %v", describe(first), describe(second))
			}
			if c.results+c.manifests+c.complete+c.partial+c.failed+c.deadLettered == 0 && len(first) > 0 {
				t.Errorf("retried batch counted nothing: %+v", c)
			}
			checkTimers(t, h.m)
		})
	}
}

// TestMachineAbortRestoresCounts checks that an aborted batch's counts are
// dropped.
func TestMachineAbortRestoresCounts(t *testing.T) {
	h := newHarness(t)
	h.m.manifest(h.ps, h.now, h.mf("x", time.Second, []string{"a"}), h.src("x"))
	h.feed(ok("x", "a", `1`))
	h.m.abort(0)
	if c := h.m.commit(); c != (counters{}) {
		t.Errorf("counts after abort: %+v", c)
	}
}

// TestMachineAbortHoldsTimersUntilReread: the results an aborted batch read
// come back when the client re-reads from the committed offset; a deadline
// that passes before they do waits for them (at most until the hold ends),
// so that the reply is COMPLETE rather than missing them.
func TestMachineAbortHoldsTimersUntilReread(t *testing.T) {
	h := newHarness(t)
	h.manifest(h.mf("x", time.Second, []string{"a", "b"}))
	ra, rb := ok("x", "a", `1`), ok("x", "b", `2`)
	h.feed(ra)
	h.feed(rb)
	h.m.readTo(0, h.offset)
	h.m.abort(h.now.Add(5 * time.Second).UnixNano())
	h.m.out = h.m.out[:0] // the hop aborts the batch's records
	h.offset -= 2         // the client goes back to the committed offset

	h.advance(2 * time.Second) // past the deadline, before the re-read
	h.none()
	h.feed(ra)
	h.feed(rb)
	h.ps.read(h.offset, 0, 0)
	h.advance(time.Millisecond)
	if r := h.one(); r.Status != schemas.ReplyComplete {
		t.Errorf("status %s, want COMPLETE: %s", r.Status, r.Error)
	}

	// Without the re-read, the timers fire when the hold ends.
	h = newHarness(t)
	h.manifest(h.mf("y", time.Second, []string{"a"}))
	h.feed(ok("y", "a", `1`))
	h.m.readTo(0, h.offset)
	h.m.abort(h.now.Add(3 * time.Second).UnixNano())
	h.m.out = h.m.out[:0]
	h.advance(2 * time.Second)
	h.none()
	h.advance(2 * time.Second)
	if r := h.one(); r.Status != schemas.ReplyFailed {
		t.Errorf("status %s, want FAILED once the hold ended", r.Status)
	}
}

type reqSnap struct {
	Phase phase
	Due   int64
	Plan  *plan
	Slots []slot
	Got   int
	OK    int
	Held  []heldResult
}

type partSnap struct {
	Reqs map[schemas.CorrelationID]reqSnap
	G    gauges
}

func snapshot(m *machine) map[int32]partSnap {
	out := map[int32]partSnap{}
	for p, ps := range m.parts {
		s := partSnap{Reqs: map[schemas.CorrelationID]reqSnap{}, G: ps.g}
		for id, r := range ps.reqs {
			s.Reqs[id] = reqSnap{r.phase, r.due, r.plan, slices.Clone(r.slots), r.got, r.ok, slices.Clone(r.held)}
		}
		out[p] = s
	}
	return out
}

// checkTimers checks that every request has a timer at its due time, so
// that nothing waits forever.
func checkTimers(t *testing.T, m *machine) {
	t.Helper()
	for p, ps := range m.parts {
		have := map[timer]bool{}
		for _, tm := range ps.timers {
			have[tm] = true
		}
		for _, id := range slices.Sorted(maps.Keys(ps.reqs)) {
			r := ps.reqs[id]
			if !have[timer{at: r.due, id: id}] {
				t.Errorf("partition %d: request %s (phase %d) has no timer at its due time", p, id, r.phase)
			}
			if h := r.hedge; h != nil && h.at > 0 && !h.fired && !have[timer{at: h.at, id: id}] {
				t.Errorf("partition %d: request %s has no timer at its hedge time", p, id)
			}
		}
	}
}

// describe renders outputs for comparison.
func describe(out []output) []string {
	var ds []string
	for _, o := range out {
		if o.src != nil {
			ds = append(ds, "dlq "+o.reason+" "+string(o.src.Key)+" "+o.err.Error())
			continue
		}
		if o.task != nil {
			ds = append(ds, fmt.Sprintf("hedge %s %s attempt %d", o.task.CorrelationID, o.task.PartID, o.task.Attempt))
			continue
		}
		r := o.reply
		var parts []string
		for _, p := range r.Parts {
			parts = append(parts, string(p.PartID)+"="+string(p.Status))
		}
		ds = append(ds, strings.Join([]string{"reply", string(r.CorrelationID), string(r.Status), string(r.Payload), r.Error, strings.Join(parts, ","), r.CompletedAt.String()}, " "))
	}
	return ds
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		in   string
		want Policy
		err  string
	}{
		{in: "", want: Policy{Kind: PolicyAll}},
		{in: "all", want: Policy{Kind: PolicyAll}},
		{in: "first", want: Policy{Kind: PolicyFirst, Quorum: 1}},
		{in: "deadline", want: Policy{Kind: PolicyDeadline}},
		{in: "quorum:3", want: Policy{Kind: PolicyQuorum, Quorum: 3}},
		{in: "quorum:0", err: `policy "quorum:0": quorum needs a count of at least 1 (quorum:K)`},
		{in: "quorum:-1", err: `policy "quorum:-1": quorum needs a count of at least 1 (quorum:K)`},
		{in: "quorum:+2", err: `policy "quorum:+2": quorum needs a count of at least 1 (quorum:K)`},
		{in: "quorum:", err: `policy "quorum:": quorum needs a count of at least 1 (quorum:K)`},
		{in: "quorum:2x", err: `policy "quorum:2x": quorum needs a count of at least 1 (quorum:K)`},
		{in: "ALL", err: `policy "ALL": want all, first, deadline or quorum:K`},
		{in: "most", err: `policy "most": want all, first, deadline or quorum:K`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePolicy(tt.in)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
			if tt.in != "" && got.String() != tt.in {
				t.Errorf("String: %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestSummaryIsBounded(t *testing.T) {
	var outcomes []schemas.PartOutcome
	for i := range 25 {
		outcomes = append(outcomes, schemas.PartOutcome{PartID: schemas.PartID("p" + string(rune('a'+i))), Status: schemas.PartError, Error: strings.Repeat("x", 500)})
	}
	s := summary(outcomes, 25)
	if !strings.HasPrefix(s, "25 of 25 parts not OK: pa ERROR (") || !strings.HasSuffix(s, ", and 15 more") {
		t.Errorf("summary: %s", s)
	}
	if len(s) > 1500 {
		t.Errorf("summary is %d bytes", len(s))
	}
}
