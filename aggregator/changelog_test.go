package aggregator

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/schemas"
)

// Every harness step writes its batch's changelog into h.log, as a
// compacted topic keeps it, and checks that rebuilding each partition from
// h.log gives back the machine's state: so every state machine test is also
// a test of the changelog.

// writeChangelog writes the changelog of the batch in flight into h.log.
func (h *harness) writeChangelog() {
	h.t.Helper()
	if err := h.m.changelog(); err != nil {
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

// checkChangelog rebuilds every partition from h.log and compares.
func (h *harness) checkChangelog() {
	h.t.Helper()
	for p, ps := range h.m.parts {
		got, n, problems := h.m.rebuild(p, h.log[p], "results")
		if problems != nil || n.skipped != 0 {
			h.t.Fatalf("partition %d: rebuild skipped %d entries: %v", p, n.skipped, problems)
		}
		if want, have := view(ps), view(got); want != have {
			h.t.Fatalf("partition %d rebuilt from its changelog differs:\n machine:\n%s\n rebuilt:\n%s", p, want, have)
		}
		checkTimers(h.t, &machine{parts: map[int32]*partitionState{p: got}})
	}
}

// view renders a partition's state as it matters for what the aggregator
// will do, times to the microsecond (the changelog's precision).
func view(ps *partitionState) string {
	us := func(ns int64) int64 { return ns / 1000 }
	var b strings.Builder
	fmt.Fprintf(&b, "gauges %+v\n", ps.g)
	for _, id := range slices.Sorted(maps.Keys(ps.reqs)) {
		r := ps.reqs[id]
		fmt.Fprintf(&b, "%q phase %d due %d", id, r.phase, us(r.due))
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

// TestChangelogRecords checks the records themselves: what a request's
// life writes, in order, and that nothing of it stays once it is
// forgotten.
func TestChangelogRecords(t *testing.T) {
	type rec struct {
		key   string
		entry string // "" for a tombstone
	}
	describeLog := func(h *harness) []rec {
		var out []rec
		for _, r := range h.m.log.recs {
			e := ""
			if r.value != nil {
				s, err := schemas.DecodeAggregationState(r.value)
				if err != nil {
					t.Fatal(err)
				}
				e = s.Entry.String()
			}
			out = append(out, rec{string(r.key), e})
		}
		return out
	}
	part := func(id, p string) string {
		return string(schemas.AppendPartKey(nil, schemas.CorrelationID(id), schemas.PartID(p)))
	}
	held := func(id string, off int64) string {
		return string(schemas.AppendHeldKey(nil, schemas.CorrelationID(id), off))
	}
	tests := []struct {
		name  string
		steps []func(h *harness)
		want  [][]rec // the records of each step's batch
	}{
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
				{{"x", "open"}},
				{{part("x", "a"), "part"}},
				nil,
				{{part("x", "a"), ""}, {part("x", "b"), ""}, {"x", "done"}},
				{{"x", ""}},
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
				// The held results are deleted, the open entry written,
				// then the parts the held results filled.
				{{held("y", 1), ""}, {"y", "open"}, {part("y", "a"), "part"}, {part("y", "b"), "part"}},
				{{part("y", "a"), ""}, {part("y", "b"), ""}, {"y", "done"}},
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
			name: "a whole life in one batch writes only the done entry",
			steps: []func(h *harness){
				func(h *harness) {
					h.m.manifest(h.ps, h.now, h.mf("w", time.Second, []string{"a"}), h.src("w"))
					h.feed(ok("w", "a", "1"))
				},
			},
			want: [][]rec{{{"w", "done"}}},
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
			want: [][]rec{{{"v", "done"}}, {{"v", ""}, {"v", "open"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			for i, step := range tt.steps {
				step(h)
				h.writeChangelog()
				if got := describeLog(h); !slices.Equal(got, tt.want[i]) {
					t.Fatalf("step %d wrote\n %q\nwant\n %q", i, got, tt.want[i])
				}
				h.m.commit()
				h.m.out = h.m.out[:0]
				h.checkChangelog()
			}
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
	// open: its part deleted, done written; done: forgotten; orphan:
	// its held result deleted.
	if len(m.log.recs) != 4 {
		t.Fatalf("%d changelog records after the tick, want 4", len(m.log.recs))
	}
}
