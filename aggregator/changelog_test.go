package aggregator

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/scattergather/scattergather/schemas"
)

// Every harness step writes its batch's changelog into h.log, as a
// compacted topic keeps it, and checks that rebuilding each partition from
// h.log gives back the machine's state: so every state machine test is also
// a test of the changelog.

// writeChangelog writes the changelog of the batch in flight into h.log.
func (h *harness) writeChangelog() {
	h.t.Helper()
	h.writeWith(h.m.changelog)
}

// writeWith writes into h.log what write puts in the batch's changelog.
func (h *harness) writeWith(write func() error) {
	h.t.Helper()
	if err := write(); err != nil {
		h.t.Fatalf("changelog: %v", err)
	}
	for _, r := range h.m.log.recs {
		if len(r.key) == 0 {
			h.t.Fatalf("a changelog record without a key: %+v", r)
		}
		if h.m.parts[r.partition] == nil {
			h.t.Fatalf("a changelog record for partition %d, which is not assigned", r.partition)
		}
		log := h.log[r.partition]
		if log == nil {
			log = map[string][]byte{}
			h.log[r.partition] = log
		}
		if r.value == nil {
			delete(log, string(r.key))
			continue
		}
		// The record's bytes are reused by the next batch.
		log[string(r.key)] = slices.Clone(r.value)
	}
}

// listed returns the line of request id in the done-lists of partition p
// in h.log.
func (h *harness) listed(p int32, id schemas.CorrelationID) (schemas.DoneRequest, bool) {
	h.t.Helper()
	for k, v := range h.log[p] {
		if _, ok := schemas.ParseDoneListKey([]byte(k)); !ok {
			continue
		}
		s, err := schemas.DecodeAggregationState(v)
		if err != nil {
			h.t.Fatal(err)
		}
		for _, q := range s.Done.Requests {
			if q.CorrelationID == id {
				return q, true
			}
		}
	}
	return schemas.DoneRequest{}, false
}

// checkChangelog rebuilds every partition from h.log and compares.
func (h *harness) checkChangelog() {
	h.t.Helper()
	for p, ps := range h.m.parts {
		got, n, problems := h.m.rebuild(p, h.log[p], "results")
		if problems != nil || n.skipped != 0 {
			h.t.Fatalf("partition %d: rebuild skipped %d entries: %v", p, n.skipped, problems)
		}
		// A done-list is deleted with the last request it lists, not
		// rewritten as each is forgotten: a restore brings back the
		// others, done until a time that has passed, and forgets them at
		// its first tick.
		for id, r := range got.reqs {
			if _, ok := ps.reqs[id]; !ok && r.phase == phaseDone && r.list != 0 && r.due <= h.now.UnixNano() {
				delete(got.reqs, id)
				if got.lists[r.list]--; got.lists[r.list] == 0 {
					delete(got.lists, r.list)
				}
			}
		}
		if want, have := view(ps), view(got); want != have {
			h.t.Fatalf("partition %d rebuilt from its changelog differs:\n machine:\n%s\n rebuilt:\n%s", p, want, have)
		}
		checkTimers(h.t, &machine{parts: map[int32]*partitionState{p: got}})
	}
}

// checkCompletions checks, between the ends of intervals
// (machine.perInterval), that every request done in memory is done in the
// changelog: a restore must not answer it again.
func (h *harness) checkCompletions() {
	h.t.Helper()
	for p, ps := range h.m.parts {
		got, _, problems := h.m.rebuild(p, h.log[p], "results")
		if problems != nil {
			h.t.Fatalf("partition %d: rebuild: %v", p, problems)
		}
		for id, r := range ps.reqs {
			if g := got.reqs[id]; r.phase == phaseDone && (g == nil || g.phase != phaseDone) {
				h.t.Fatalf("partition %d: %s is done, but not in its changelog (%v)", p, id, g)
			}
		}
	}
}

// view renders a partition's state as it matters for what the aggregator
// will do, times to the microsecond (the changelog's precision).
func view(ps *partitionState) string {
	us := func(ns int64) int64 { return ns / 1000 }
	var b strings.Builder
	fmt.Fprintf(&b, "gauges %+v\n", ps.g)
	for _, seq := range slices.Sorted(maps.Keys(ps.lists)) {
		fmt.Fprintf(&b, "done-list %d: %d requests\n", seq, ps.lists[seq])
	}
	for _, id := range slices.Sorted(maps.Keys(ps.reqs)) {
		r := ps.reqs[id]
		fmt.Fprintf(&b, "%q phase %d due %d logged %t legacy %t list %d", id, r.phase, us(r.due), r.logged, r.legacy, r.list)
		switch r.phase {
		case phaseOpen:
			mf := r.plan.mf
			replay := "-"
			if mf.ReplayOf != nil {
				replay = string(*mf.ReplayOf)
			}
			fmt.Fprintf(&b, " manifest %s %v %d %s %d %q %v %s policy %s got %d ok %d\n", mf.Route, mf.Parts,
				mf.Deadline.UnixMicro(), mf.Policy, us(nanos(mf.SubmittedAt)), mf.ReplyTo, mf.Headers, replay, r.plan.policy, r.got, r.ok)
			for i, s := range r.slots {
				fmt.Fprintf(&b, "  slot %d %q %q %q %q %d %d\n", i, s.status, s.payload, s.err, s.processor, s.attempt, us(s.arrived))
			}
			if h := r.hedge; h != nil {
				fmt.Fprintf(&b, "  hedge %+v at %d fired %v hedged %v shared %v parts %d\n", h.spec, us(h.at), h.fired, h.hedged, h.shared != nil, len(h.perPart))
				for _, src := range h.srcs {
					fmt.Fprintf(&b, "  template @%d %q headers %v\n", src.Offset, src.Value, src.Headers)
				}
			}
		case phaseOrphan:
			b.WriteString("\n")
			for _, hr := range r.held {
				fmt.Fprintf(&b, "  held @%d %q %s %q %q arrived %d headers %v\n", hr.src.Offset, hr.res.PartID, hr.res.Status,
					hr.res.Payload, hr.res.Error, us(hr.arrived), hr.src.Headers)
			}
		default:
			b.WriteString("\n")
		}
	}
	return b.String()
}

// describeLog renders the records of the batch in flight: a done-list's
// key as "list <seq>" and its value as "done <ids>", other keys as they
// are, a tombstone's value as "".
func describeLog(t *testing.T, h *harness) []rec {
	t.Helper()
	var out []rec
	for _, r := range h.m.log.recs {
		key := string(r.key)
		seq, isList := schemas.ParseDoneListKey(r.key)
		if isList {
			key = fmt.Sprintf("list %d", seq)
		}
		e := ""
		if r.value != nil {
			s, err := schemas.DecodeAggregationState(r.value)
			if err != nil {
				t.Fatal(err)
			}
			e = s.Entry.String()
			switch {
			case isList:
				var ids []string
				for _, q := range s.Done.Requests {
					ids = append(ids, string(q.CorrelationID))
				}
				e += " " + strings.Join(ids, ",")
			case s.Entry == schemas.EntryOpen:
				var parts []string
				for _, p := range s.Results {
					parts = append(parts, string(p.PartID))
				}
				e += " [" + strings.Join(parts, ",") + "]"
			}
		}
		out = append(out, rec{key, e})
	}
	return out
}

type rec struct {
	key   string
	entry string // "" for a tombstone
}

// TestChangelogRecords checks the records themselves: what a request's
// life writes, in order, and that nothing of it stays once it is
// forgotten.
func TestChangelogRecords(t *testing.T) {
	held := func(id string, off int64) string {
		return string(schemas.AppendHeldKey(nil, schemas.CorrelationID(id), off))
	}
	part := func(id, p string) string {
		return string(schemas.AppendPartKey(nil, schemas.CorrelationID(id), schemas.PartID(p)))
	}
	big := strings.Repeat("x", foldMax*3/5) // two of them pass foldMax
	tests := []struct {
		name  string
		steps []func(h *harness)
		want  [][]rec // the records of each step's batch
	}{
		{
			// A request whose results would make its entry too large for
			// Kafka writes them as part entries, and deletes them at the end.
			name: "too wide to fold",
			steps: []func(h *harness){
				func(h *harness) {
					h.m.manifest(h.ps, h.now, h.mf("x", time.Second, []string{"a", "b", "c", "d"}), h.src("x"))
				},
				func(h *harness) { h.feed(ok("x", "a", big)) },
				func(h *harness) { h.feed(ok("x", "b", big)) },
				func(h *harness) { h.feed(ok("x", "c", "3")) },
				func(h *harness) { h.feed(ok("x", "d", "4")) },
				func(h *harness) { h.now = h.now.Add(time.Second + testLateWindow); h.m.tick(h.now) },
			},
			want: [][]rec{
				{{"x", "open []"}},
				{{"x", "open [a]"}},
				{{"x", "open []"}, {part("x", "a"), "part"}, {part("x", "b"), "part"}},
				{{part("x", "c"), "part"}},
				{{"list 1", "done x"}, {"x", ""}, {part("x", "a"), ""}, {part("x", "b"), ""}, {part("x", "c"), ""}, {part("x", "d"), ""}},
				{{"list 1", ""}},
			},
		},
		{
			name: "open, parts, complete, forget",
			steps: []func(h *harness){
				func(h *harness) { h.m.manifest(h.ps, h.now, h.mf("x", time.Second, []string{"a", "b"}), h.src("x")) },
				func(h *harness) { h.feed(ok("x", "a", "1")) },
				func(h *harness) { h.feed(ok("x", "a", "1")) }, // a duplicate writes nothing
				func(h *harness) { h.feed(ok("x", "b", "2")) },
				// Forgotten at its deadline (1s) plus the late window.
				func(h *harness) { h.now = h.now.Add(time.Second + testLateWindow); h.m.tick(h.now) },
			},
			want: [][]rec{
				{{"x", "open []"}},
				{{"x", "open [a]"}},
				nil,
				{{"list 1", "done x"}, {"x", ""}},
				{{"list 1", ""}},
			},
		},
		{
			name: "held, then the manifest, then the deadline",
			steps: []func(h *harness){
				func(h *harness) { h.feed(ok("y", "a", "1")) },
				func(h *harness) {
					h.feed(res("y", "b", schemas.ResultError, "", "boom"))
					h.m.manifest(h.ps, h.now, h.mf("y", time.Second, []string{"a", "b", "c"}), h.src("y"))
				},
				func(h *harness) { h.now = h.now.Add(time.Second); h.m.tick(h.now) },
			},
			want: [][]rec{
				{{held("y", 1), "held"}},
				// The held results are deleted, the open entry written
				// with the parts they filled.
				{{held("y", 1), ""}, {"y", "open [a,b]"}},
				{{"list 1", "done y"}, {"y", ""}},
			},
		},
		{
			name: "an orphan that expires",
			steps: []func(h *harness){
				func(h *harness) { h.feed(ok("z", "a", "1")) },
				func(h *harness) { h.now = h.now.Add(time.Hour); h.m.tick(h.now) },
			},
			want: [][]rec{
				{{held("z", 1), "held"}},
				{{held("z", 1), ""}},
			},
		},
		{
			name: "a whole life in one batch writes only its line in the done-list",
			steps: []func(h *harness){
				func(h *harness) {
					h.m.manifest(h.ps, h.now, h.mf("w", time.Second, []string{"a"}), h.src("w"))
					h.feed(ok("w", "a", "1"))
				},
				func(h *harness) { h.now = h.now.Add(time.Second + testLateWindow); h.m.tick(h.now) },
			},
			want: [][]rec{{{"list 1", "done w"}}, {{"list 1", ""}}},
		},
		{
			name: "forgotten and opened again in one batch",
			steps: []func(h *harness){
				func(h *harness) {
					h.m.manifest(h.ps, h.now, h.mf("v", time.Second, []string{"a"}), h.src("v"))
					h.feed(ok("v", "a", "1"))
				},
				func(h *harness) {
					h.now = h.now.Add(time.Second + testLateWindow)
					h.m.tick(h.now)
					h.m.manifest(h.ps, h.now, h.mf("v", time.Second, []string{"a"}), h.src("v"))
				},
			},
			want: [][]rec{{{"list 1", "done v"}}, {{"list 1", ""}, {"v", "open []"}}},
		},
		{
			name: "one done-list per batch, deleted with its last request",
			steps: []func(h *harness){
				func(h *harness) {
					h.m.manifest(h.ps, h.now, h.mf("s", time.Second, []string{"a"}), h.src("s"))
					h.m.manifest(h.ps, h.now, h.mf("l", time.Hour, []string{"a", "b"}), h.src("l"))
					h.m.manifest(h.ps, h.now, h.mf("o", time.Hour, []string{"a", "b"}), h.src("o"))
				},
				func(h *harness) {
					h.feed(ok("s", "a", "1"))
					h.feed(ok("l", "a", "1"))
					h.feed(ok("l", "b", "2"))
					h.feed(ok("o", "a", "3"))
				},
				// s is forgotten, l (its deadline an hour away) is not.
				func(h *harness) { h.now = h.now.Add(time.Second + testLateWindow); h.m.tick(h.now) },
				func(h *harness) { h.now = h.now.Add(time.Hour); h.m.tick(h.now) },
			},
			want: [][]rec{
				{{"s", "open []"}, {"l", "open []"}, {"o", "open []"}},
				{{"list 1", "done s,l"}, {"s", ""}, {"l", ""}, {"o", "open [a]"}},
				nil,
				// o times out; l is forgotten with list 1.
				{{"list 2", "done o"}, {"o", ""}, {"list 1", ""}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			for i, step := range tt.steps {
				step(h)
				h.writeChangelog()
				if got := describeLog(t, h); !slices.Equal(got, tt.want[i]) {
					t.Fatalf("step %d wrote\n %q\nwant\n %q", i, got, tt.want[i])
				}
				h.m.commit()
				h.m.out = h.m.out[:0]
				h.checkChangelog()
			}
			if n := len(h.log[0]); n != 0 && len(h.ps.reqs) == 0 {
				t.Fatalf("%d entries left of forgotten requests: %q", n, slices.Collect(maps.Keys(h.log[0])))
			}
		})
	}
}

// TestChangelogRecordsPerRequest counts the records a request costs the
// changelog over its whole life (the tombstones of its forget included),
// in the shapes of issue #15: the target is at most one on average.
func TestChangelogRecordsPerRequest(t *testing.T) {
	const n = 50
	parts := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	id := func(i int) string { return fmt.Sprintf("r%d", i) }
	tests := []struct {
		name string
		// batches applies the requests' records, one func per batch.
		batches []func(h *harness)
		want    float64
	}{
		{"open and complete in one batch", []func(h *harness){func(h *harness) {
			for i := range n {
				h.m.manifest(h.ps, h.now, h.mf(id(i), time.Second, parts), h.src(id(i)))
				for _, p := range parts {
					h.feed(ok(id(i), p, "1"))
				}
			}
		}}, 2.0 / n}, // the done-list and its tombstone
		{"open in one batch, complete in the next", []func(h *harness){
			func(h *harness) {
				for i := range n {
					h.m.manifest(h.ps, h.now, h.mf(id(i), time.Second, parts), h.src(id(i)))
				}
			},
			func(h *harness) {
				for i := range n {
					for _, p := range parts {
						h.feed(ok(id(i), p, "1"))
					}
				}
			},
		}, 2 + 2.0/n}, // the open entry, its tombstone
		{"parts over four batches", partsOverFourBatches(n, parts, id), 4 + 2.0/n}, // three versions of the open entry, its tombstone
		{"expire at the deadline", []func(h *harness){
			func(h *harness) {
				for i := range n {
					h.m.manifest(h.ps, h.now, h.mf(id(i), time.Second, parts), h.src(id(i)))
					h.feed(ok(id(i), parts[0], "1"))
				}
			},
			func(h *harness) { h.now = h.now.Add(time.Second); h.m.tick(h.now) },
		}, 2 + 2.0/n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			records := 0
			step := func(f func(h *harness)) {
				f(h)
				h.writeChangelog()
				records += len(h.m.log.recs)
				h.m.commit()
				h.m.out = h.m.out[:0]
				h.checkChangelog()
			}
			for _, b := range tt.batches {
				step(b)
			}
			// Forget them all.
			step(func(h *harness) { h.now = h.now.Add(time.Hour); h.m.tick(h.now) })
			if len(h.ps.reqs) != 0 || len(h.log[0]) != 0 {
				t.Fatalf("%d requests, %d changelog entries left", len(h.ps.reqs), len(h.log[0]))
			}
			if got := float64(records) / n; got != tt.want {
				t.Fatalf("%.2f changelog records per request, want %.2f", got, tt.want)
			}
			t.Logf("%.2f changelog records per request", float64(records)/n)
		})
	}
}

// TestRebuildDueAndSkipped covers what only a restore meets: requests due
// while nobody owned the partition fire at the first tick, and entries that
// do not fit are skipped, not fatal.
func TestRebuildDueAndSkipped(t *testing.T) {
	h := newHarness(t)
	h.manifest(h.mf("open", time.Second, []string{"a", "b"}))
	h.result(ok("open", "a", `1`))
	h.manifest(h.mf("done", time.Second, []string{"a"}))
	h.result(ok("done", "a", `1`))
	h.result(ok("orphan", "a", `1`))
	h.replies()

	log := maps.Clone(h.log[0])
	log["junk"] = []byte("not avro")
	stray := schemas.AggregationState{CorrelationID: "gone", Entry: schemas.EntryPart, Part: schemas.PartState{PartID: "a", Status: schemas.ResultOK}}
	b, err := schemas.EncodeAggregationState(&stray)
	if err != nil {
		t.Fatal(err)
	}
	log[string(schemas.AppendPartKey(nil, "gone", "a"))] = b

	// A new owner, an hour later.
	m := newMachine(testLateWindow, func(schemas.Route) Merge { return Collect() })
	ps, n, problems := m.rebuild(0, log, "results")
	if n != (restored{open: 1, done: 1, orphans: 1, held: 1, skipped: 2}) || problems == nil || !strings.Contains(problems.Error(), `entry "junk"`) {
		t.Fatalf("rebuild: %+v, %v", n, problems)
	}
	m.install(ps)
	m.tick(h.now.Add(time.Hour))
	var got []string
	for _, o := range m.out {
		if o.src != nil {
			got = append(got, "dlq "+o.reason+" "+string(o.src.Key)+"@"+o.src.Topic)
			continue
		}
		got = append(got, fmt.Sprintf("reply %s %s %v", o.reply.CorrelationID, o.reply.Status, markers(o.reply)))
	}
	slices.Sort(got)
	want := []string{
		"dlq orphan-result orphan@results",
		`reply open PARTIAL [{a OK } {b MISSING }]`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("the first tick after the restore produced\n %q\nwant\n %q", got, want)
	}
	if err := m.changelog(); err != nil {
		t.Fatal(err)
	}
	// open: in a done-list, its entry deleted; done: forgotten, its
	// done-list deleted; orphan: its held result deleted.
	if len(m.log.recs) != 4 {
		t.Fatalf("%d changelog records after the tick, want 4", len(m.log.recs))
	}
}

// v2Entry encodes s as release v2 of the schema wrote it (goavro, from
// schemas/history/v2, under goavro's fingerprint): a changelog the
// previous build left.
func v2Entry(t *testing.T, s map[string]any) []byte {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "schemas", "history", "v2", "aggregation_state.avsc"))
	if err != nil {
		t.Fatal(err)
	}
	codec, err := goavro.NewCodec(string(src))
	if err != nil {
		t.Fatal(err)
	}
	b, err := codec.SingleFromNative(nil, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRestoreV2Changelog restores a changelog written by the previous
// build (release v2: a part entry per result, a done entry per request),
// then completes and forgets its requests: the restore is exact, and the
// old entries are deleted when their request ends or is forgotten, so that
// nothing of them is left.
func TestRestoreV2Changelog(t *testing.T) {
	h := newHarness(t)
	deadline := h.now.Add(time.Second)
	open := func(id string, parts ...string) []byte {
		ps := make([]any, len(parts))
		for i, p := range parts {
			ps[i] = p
		}
		return v2Entry(t, map[string]any{"correlation_id": id, "entry": goavro.Union("io.scattergather.v1.StateOpen", map[string]any{
			"route": "r", "parts": ps, "deadline": deadline, "policy": "all", "submitted_at": h.now,
			"reply_to": "", "headers": map[string]any{}, "replay_of": nil,
		})})
	}
	part := func(id, p, status, payload string) []byte {
		return v2Entry(t, map[string]any{"correlation_id": id, "entry": goavro.Union("io.scattergather.v1.StatePart", map[string]any{
			"part_id": p, "status": status, "payload": []byte(payload), "error": "", "processor_id": "proc-" + p,
			"attempt": int32(1), "arrived_at": h.now,
		})})
	}
	key := func(id, p string) string {
		return string(schemas.AppendPartKey(nil, schemas.CorrelationID(id), schemas.PartID(p)))
	}
	log := map[string][]byte{
		// x: open, one part of two.
		"x": open("x", "a", "b"), key("x", "a"): part("x", "a", "OK", "1"),
		// y: open, one part of three, ERROR.
		"y": open("y", "a", "b", "c"), key("y", "a"): part("y", "a", "ERROR", ""),
		// d: done, remembered for the late window.
		"d": v2Entry(t, map[string]any{"correlation_id": "d", "entry": goavro.Union("io.scattergather.v1.StateDone", map[string]any{
			"completed_at": h.now, "forget_at": h.now.Add(testLateWindow),
		})}),
	}
	ps, n, problems := h.m.rebuild(0, log, "results")
	if problems != nil || n != (restored{open: 2, done: 1}) {
		t.Fatalf("rebuild: %+v, %v", n, problems)
	}
	for id, want := range map[schemas.CorrelationID]struct {
		phase      phase
		got, ok    int
		logged, v2 bool
	}{"x": {phaseOpen, 1, 1, true, true}, "y": {phaseOpen, 1, 0, true, true}, "d": {phaseDone, 0, 0, true, false}} {
		r := ps.reqs[id]
		if r == nil || r.phase != want.phase || r.got != want.got || r.ok != want.ok || r.logged != want.logged || r.legacy != want.v2 {
			t.Fatalf("%s restored as %+v, want %+v", id, r, want)
		}
	}
	h.m.install(ps)
	h.ps = ps
	h.log[0] = log

	// y changes and stays open: its entry now holds its parts; its v2
	// part entry stays until it ends. Every step checks that the mixed
	// changelog restores exactly.
	h.feed(ok("y", "b", "2"))
	h.writeChangelog()
	if got, want := describeLog(t, h), []rec{{"y", "open [a,b]"}}; !slices.Equal(got, want) {
		t.Fatalf("y changed: wrote %q, want %q", got, want)
	}
	h.m.commit()
	h.out = append(h.out, h.m.out...)
	h.m.out = h.m.out[:0]
	h.checkChangelog()

	// x completes: its entry and its v2 part entries are deleted.
	h.feed(ok("x", "b", "2"))
	h.writeChangelog()
	if got, want := describeLog(t, h), []rec{{"list 1", "done x"}, {"x", ""}, {key("x", "a"), ""}, {key("x", "b"), ""}}; !slices.Equal(got, want) {
		t.Fatalf("x completed: wrote %q, want %q", got, want)
	}
	h.m.commit()
	h.out = append(h.out, h.m.out...)
	h.m.out = h.m.out[:0]
	h.checkChangelog()
	if rs := h.replies(); len(rs) != 1 || rs[0].CorrelationID != "x" || rs[0].Status != schemas.ReplyComplete ||
		rs[0].Parts[0].Status != schemas.PartOK {
		t.Fatalf("replies %+v, want x COMPLETE with its restored part", rs)
	}

	// y times out; then everything is forgotten, d's v2 done entry
	// deleted with it.
	h.advance(time.Second)
	h.advance(time.Hour)
	if len(h.ps.reqs) != 0 || len(h.log[0]) != 0 {
		t.Fatalf("%d requests and %d changelog entries left: %q", len(h.ps.reqs), len(h.log[0]), slices.Collect(maps.Keys(h.log[0])))
	}
}

// partsOverFourBatches opens n requests of the eight parts and brings
// their results over four batches (one, three, three, one), one func per
// batch: the last completes them all.
func partsOverFourBatches(n int, parts []string, id func(int) string) []func(h *harness) {
	results := func(from, to int) func(h *harness) {
		return func(h *harness) {
			for i := range n {
				if from == 0 {
					h.m.manifest(h.ps, h.now, h.mf(id(i), time.Second, parts), h.src(id(i)))
				}
				for _, p := range parts[from:to] {
					h.feed(ok(id(i), p, "1"))
				}
			}
		}
	}
	return []func(h *harness){results(0, 1), results(1, 4), results(4, 7), results(7, 8)}
}

// TestChangelogPerInterval: with machine.perInterval (at-least-once, an
// offset commit interval) the changelog is written only in the batches
// that end an interval, and holds then what the interval's batches did,
// folded: a request opened and completed within one interval writes only
// its line of a done-list. A batch aborted within the interval is undone
// in the interval's log too. After every written interval, rebuilding from
// the changelog gives back the machine's state.
func TestChangelogPerInterval(t *testing.T) {
	const n = 50
	parts := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	id := func(i int) string { return fmt.Sprintf("r%d", i) }
	batches := partsOverFourBatches(n, parts, id)
	tests := []struct {
		name    string
		flushes []bool // after each batch of batches
		abort   int    // the batch aborted once and applied again, -1 none
		want    float64
	}{
		{"one interval", []bool{false, false, false, true}, -1, 2.0 / n},
		{"two intervals", []bool{false, true, false, true}, -1, 2 + 2.0/n},
		{"every batch", []bool{true, true, true, true}, -1, 4 + 2.0/n},
		{"a batch aborted within the interval", []bool{false, false, false, true}, 1, 2.0 / n},
		{"the first batch aborted", []bool{false, true, false, true}, 0, 2 + 2.0/n},
		// Completions are written in the batch that completes, whether or
		// not it ends an interval (a crash must not answer them again).
		{"completed between interval ends", []bool{false, true, false, false}, -1, 2 + 2.0/n},
		{"a completing batch aborted", []bool{false, true, false, false}, 3, 2 + 2.0/n},
		{"completed within one interval, not at its end", []bool{false, false, false, false}, -1, 2.0 / n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.m.perInterval = true
			records := 0
			step := func(f func(h *harness), flush bool) {
				f(h)
				if flush {
					h.writeChangelog()
				} else {
					h.writeWith(h.m.completions)
				}
				records += len(h.m.log.recs)
				h.m.commit()
				h.m.out = h.m.out[:0]
				if flush {
					h.checkChangelog()
				} else {
					h.checkCompletions()
				}
			}
			for i, b := range batches {
				if i == tt.abort {
					b(h)
					h.m.abort(0)
					h.m.out = h.m.out[:0]
				}
				step(b, tt.flushes[i])
			}
			// Forget them all.
			step(func(h *harness) { h.now = h.now.Add(time.Hour); h.m.tick(h.now) }, true)
			if len(h.ps.reqs) != 0 || len(h.log[0]) != 0 || len(h.m.ivl) != 0 {
				t.Fatalf("%d requests, %d changelog entries, %d interval log entries left", len(h.ps.reqs), len(h.log[0]), len(h.m.ivl))
			}
			if got := float64(records) / n; got != tt.want {
				t.Fatalf("%.2f changelog records per request, want %.2f", got, tt.want)
			}
		})
	}
}

// TestChangelogYoungRequests: under exactly-once (machine.young) an
// interval's changelog leaves out the open requests the interval created,
// and asks to commit their partition at the first record of the oldest
// (commitAt); the next interval's end writes them if they are still open.
// A request that outlives one interval end but not two so writes only its
// done-list line. After every written interval, each request in memory is
// either in the changelog or created by a record at or after the offset to
// commit: a crash loses none.
func TestChangelogYoungRequests(t *testing.T) {
	const n = 50
	parts := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	id := func(i int) string { return fmt.Sprintf("r%d", i) }
	tests := []struct {
		name    string
		flushes []bool // after each batch of partsOverFourBatches
		young   bool
		want    float64
	}{
		{"one interval end while open", []bool{false, true, false, true}, true, 2.0 / n},
		{"the same without young requests", []bool{false, true, false, true}, false, 2 + 2.0/n},
		{"every batch", []bool{true, true, true, true}, true, 3 + 2.0/n},
		{"every batch without young requests", []bool{true, true, true, true}, false, 4 + 2.0/n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.m.perInterval, h.m.young = true, tt.young
			batches := partsOverFourBatches(n, parts, id)
			records := 0
			for i, b := range batches {
				b(h)
				if !tt.flushes[i] {
					h.writeWith(h.m.completions)
					records += len(h.m.log.recs)
					h.m.commit()
					h.m.out = h.m.out[:0]
					continue
				}
				h.writeChangelog()
				records += len(h.m.log.recs)
				at, skipped := h.m.commitAt[0]
				if skipped != (tt.young && i == 0 || tt.young && i == 1 && !tt.flushes[0]) {
					t.Fatalf("after batch %d: commit at %v (%v); want young requests left out only at the first interval end", i, at, skipped)
				}
				got, _, problems := h.m.rebuild(0, h.log[0], "results")
				if problems != nil {
					t.Fatalf("rebuild: %v", problems)
				}
				for rid, r := range h.ps.reqs {
					if _, logged := got.reqs[rid]; !logged && (!skipped || r.first < at) {
						t.Fatalf("after batch %d: %s (first record %d) is neither in the changelog nor consumed again from %d", i, rid, r.first, at)
					}
				}
				h.m.commit()
				h.m.out = h.m.out[:0]
			}
			h.now = h.now.Add(time.Hour)
			h.m.tick(h.now)
			h.writeChangelog()
			records += len(h.m.log.recs)
			h.m.commit()
			if len(h.ps.reqs) != 0 || len(h.log[0]) != 0 || len(h.m.ivl) != 0 {
				t.Fatalf("%d requests, %d changelog entries, %d interval log entries left", len(h.ps.reqs), len(h.log[0]), len(h.m.ivl))
			}
			if got := float64(records) / n; got != tt.want {
				t.Fatalf("%.2f changelog records per request, want %.2f", got, tt.want)
			}
		})
	}
}
