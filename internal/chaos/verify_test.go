package chaos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

// scenario builds the facts of one request with fanout 2 (shard-0, shard-1)
// whose deadline is t0+3s; the results are OK and visible at t0+100ms and
// the reply is COMPLETE and visible at t0+200ms, unless a case changes it.
type scenario struct {
	f        *facts
	id       schemas.CorrelationID
	t0       time.Time
	deadline time.Time
}

func newScenario() *scenario {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := &scenario{f: newFacts(Route), id: "req-1", t0: t0, deadline: t0.Add(3 * time.Second)}
	parts := expectedParts(2)
	s.f.submitted[s.id] = submission{at: t0, timeout: 3 * time.Second, fanout: 2}
	s.f.manifests[s.id] = []schemas.Manifest{{CorrelationID: s.id, Route: Route, Parts: parts, Deadline: s.deadline}}
	for i, p := range parts {
		s.f.tasks[partKey{s.id, p}] = 1
		s.f.results[partKey{s.id, p}] = []resultFact{{
			res:       schemas.Result{CorrelationID: s.id, PartID: p, Status: schemas.ResultOK, Payload: sleepPayload(p), ProcessorID: "processor-0"},
			partition: 0, offset: int64(10 + i), visible: t0.Add(100 * time.Millisecond),
		}}
	}
	s.f.replies[s.id] = []replyFact{{reply: s.reply(schemas.PartOK, schemas.PartOK), visible: t0.Add(200 * time.Millisecond)}}
	return s
}

func sleepPayload(p schemas.PartID) []byte {
	b, _ := json.Marshal(processor.SleepResult{Part: p, SleptMS: 3})
	return b
}

// reply builds a reply with the given part statuses and the collect merge of
// the OK ones.
func (s *scenario) reply(st ...schemas.PartStatus) schemas.Reply {
	r := schemas.Reply{CorrelationID: s.id, Route: Route}
	var elems []json.RawMessage
	ok := 0
	for i, status := range st {
		p := schemas.PartID("shard-" + string(rune('0'+i)))
		out := schemas.PartOutcome{PartID: p, Status: status}
		if status == schemas.PartOK {
			ok++
			out.ProcessorID = "processor-0"
			elems = append(elems, sleepPayload(p))
		}
		r.Parts = append(r.Parts, out)
	}
	r.Payload, _ = json.Marshal(elems)
	if elems == nil {
		r.Payload = []byte("[]")
	}
	switch ok {
	case len(st):
		r.Status = schemas.ReplyComplete
	case 0:
		r.Status = schemas.ReplyFailed
	default:
		r.Status = schemas.ReplyPartial
	}
	return r
}

func TestCheck(t *testing.T) {
	slack := 500 * time.Millisecond
	tests := []struct {
		name      string
		guarantee kafkaconfig.Guarantee
		change    func(s *scenario)
		// want
		lost, duplicated, wrong int
		notOK                   map[string]int
		problem                 string // a substring of the first problem
		ok                      bool
	}{
		{name: "complete", ok: true},
		{
			name:   "no reply",
			change: func(s *scenario) { delete(s.f.replies, s.id) },
			lost:   1, problem: "no reply",
		},
		{
			name: "duplicate reply under exactly-once",
			change: func(s *scenario) {
				s.f.replies[s.id] = append(s.f.replies[s.id], s.f.replies[s.id][0])
			},
			duplicated: 1, problem: "2 replies: COMPLETE at",
		},
		{
			name:      "duplicate reply under at-least-once is reported, not failed",
			guarantee: kafkaconfig.AtLeastOnce,
			change: func(s *scenario) {
				s.f.replies[s.id] = append(s.f.replies[s.id], s.f.replies[s.id][0])
			},
			duplicated: 1, ok: true, problem: "2 replies: COMPLETE at",
		},
		{
			name: "a result committed twice breaks exactly-once",
			change: func(s *scenario) {
				k := partKey{s.id, "shard-1"}
				s.f.results[k] = append(s.f.results[k], s.f.results[k][0])
			},
			duplicated: 1,
		},
		{
			name:      "a result committed twice is fine under at-least-once",
			guarantee: kafkaconfig.AtLeastOnce,
			change: func(s *scenario) {
				k := partKey{s.id, "shard-1"}
				s.f.results[k] = append(s.f.results[k], s.f.results[k][0])
			},
			ok: true,
		},
		{
			name: "a hedged part's second attempt is not a duplicate",
			change: func(s *scenario) {
				k := partKey{s.id, "shard-1"}
				s.f.tasks[k], s.f.attempts[k] = 2, 1<<1|1<<2
				hedge := s.f.results[k][0]
				hedge.res.Attempt = 2
				s.f.results[k] = append(s.f.results[k], hedge)
			},
			ok: true,
		},
		{
			name: "a hedge's task and result committed twice break exactly-once",
			change: func(s *scenario) {
				k := partKey{s.id, "shard-1"}
				s.f.tasks[k], s.f.attempts[k] = 3, 1<<1|1<<2
				hedge := s.f.results[k][0]
				hedge.res.Attempt = 2
				s.f.results[k] = append(s.f.results[k], hedge, hedge)
			},
			duplicated: 2,
		},
		{
			name: "a part that never got a result is lost",
			change: func(s *scenario) {
				delete(s.f.results, partKey{s.id, "shard-1"})
				s.f.replies[s.id][0].reply = s.reply(schemas.PartOK, schemas.PartMissing)
			},
			lost: 1, notOK: map[string]int{whyNever: 1}, problem: "was lost",
		},
		{
			name: "COMPLETE with the payload of another part",
			change: func(s *scenario) {
				s.f.replies[s.id][0].reply.Payload = []byte(`[{"part":"shard-1","slept_ms":3},{"part":"shard-1","slept_ms":3}]`)
			},
			wrong: 1, problem: "want the sleep result of part shard-0",
		},
		{
			name: "COMPLETE with a payload no result carried",
			change: func(s *scenario) {
				s.f.replies[s.id][0].reply.Payload = []byte(`[{"part":"shard-0","slept_ms":4},{"part":"shard-1","slept_ms":3}]`)
			},
			wrong: 1, problem: "no committed OK result",
		},
		{
			name: "COMPLETE although a part is MISSING",
			change: func(s *scenario) {
				r := s.reply(schemas.PartOK, schemas.PartMissing)
				r.Status = schemas.ReplyComplete
				s.f.replies[s.id][0].reply = r
				s.f.results[partKey{s.id, "shard-1"}][0].visible = s.deadline.Add(time.Second)
			},
			wrong: 1, problem: "status COMPLETE",
		},
		{
			name: "OK from a processor that sent no such result",
			change: func(s *scenario) {
				s.f.replies[s.id][0].reply.Parts[1].ProcessorID = "processor-9"
			},
			wrong: 1, problem: "no such OK result",
		},
		{
			name: "MISSING: the result was committed after the deadline",
			change: func(s *scenario) {
				s.f.replies[s.id][0].reply = s.reply(schemas.PartOK, schemas.PartMissing)
				s.f.results[partKey{s.id, "shard-1"}][0].visible = s.deadline.Add(time.Second)
			},
			notOK: map[string]int{whyLate: 1}, ok: true,
		},
		{
			name: "MISSING: committed within the slack of the deadline",
			change: func(s *scenario) {
				s.f.replies[s.id][0].reply = s.reply(schemas.PartOK, schemas.PartMissing)
				s.f.results[partKey{s.id, "shard-1"}][0].visible = s.deadline.Add(-slack / 2)
				s.f.replies[s.id][0].visible = s.deadline.Add(50 * time.Millisecond)
			},
			notOK: map[string]int{whyLate: 1}, ok: true,
		},
		{
			name: "MISSING although committed in time and replied on time",
			change: func(s *scenario) {
				s.f.replies[s.id][0].reply = s.reply(schemas.PartOK, schemas.PartMissing)
				s.f.replies[s.id][0].visible = s.deadline.Add(50 * time.Millisecond)
			},
			wrong: 1, problem: "reply came on time",
		},
		{
			name: "MISSING: committed in time, the reply came late",
			change: func(s *scenario) {
				s.f.replies[s.id][0].reply = s.reply(schemas.PartOK, schemas.PartMissing)
				s.f.replies[s.id][0].visible = s.deadline.Add(400 * time.Millisecond)
			},
			notOK: map[string]int{whyOutage: 1}, ok: true,
		},
		{
			name: "MISSING: committed in time but no aggregator at the deadline",
			change: func(s *scenario) {
				s.f.replies[s.id][0].reply = s.reply(schemas.PartOK, schemas.PartMissing)
				s.f.replies[s.id][0].visible = s.deadline.Add(10 * time.Second)
			},
			notOK: map[string]int{whyOutage: 1}, ok: true,
		},
		{
			name: "MISSING although the aggregator group had consumed it: state lost",
			change: func(s *scenario) {
				s.f.replies[s.id][0].reply = s.reply(schemas.PartOK, schemas.PartMissing)
				s.f.replies[s.id][0].visible = s.deadline.Add(10 * time.Second)
				s.f.commits[0] = []offsetSample{{at: s.t0.Add(50 * time.Millisecond), offset: 5}, {at: s.t0.Add(time.Second), offset: 12}}
			},
			wrong: 1, problem: "state lost",
		},
		{
			name: "MISSING: decided on time, visible only after the group consumed the result (its transaction stalled)",
			change: func(s *scenario) {
				r := s.reply(schemas.PartOK, schemas.PartMissing)
				r.CompletedAt = s.deadline.Add(50 * time.Millisecond)
				s.f.replies[s.id][0].reply = r
				s.f.replies[s.id][0].visible = s.deadline.Add(10 * time.Second)
				s.f.commits[0] = []offsetSample{{at: s.deadline.Add(5 * time.Second), offset: 12}}
			},
			wrong: 1, problem: "reply came on time",
		},
		{
			name: "MISSING: decided after the group consumed the result: state lost",
			change: func(s *scenario) {
				r := s.reply(schemas.PartOK, schemas.PartMissing)
				r.CompletedAt = s.deadline.Add(7 * time.Second)
				s.f.replies[s.id][0].reply = r
				s.f.replies[s.id][0].visible = s.deadline.Add(10 * time.Second)
				s.f.commits[0] = []offsetSample{{at: s.deadline.Add(5 * time.Second), offset: 12}}
			},
			wrong: 1, problem: "state lost",
		},
		{
			name: "MISSING, consumed only after the reply: a late result",
			change: func(s *scenario) {
				s.f.replies[s.id][0].reply = s.reply(schemas.PartOK, schemas.PartMissing)
				s.f.replies[s.id][0].visible = s.deadline.Add(10 * time.Second)
				s.f.commits[0] = []offsetSample{{at: s.deadline.Add(10 * time.Second), offset: 12}}
			},
			notOK: map[string]int{whyOutage: 1}, ok: true,
		},
		{
			name: "EXPIRED carried from the processor's result",
			change: func(s *scenario) {
				k := partKey{s.id, "shard-1"}
				s.f.results[k][0].res.Status = schemas.ResultExpired
				s.f.results[k][0].res.Payload = nil
				s.f.replies[s.id][0].reply = s.reply(schemas.PartOK, schemas.PartExpired)
			},
			notOK: map[string]int{whyVerdict: 1}, ok: true,
		},
		{
			name: "EXPIRED with no such result",
			change: func(s *scenario) {
				s.f.replies[s.id][0].reply = s.reply(schemas.PartOK, schemas.PartExpired)
			},
			wrong: 1, problem: "no EXPIRED result",
		},
		{
			name: "FAILED: no part OK, no payload",
			change: func(s *scenario) {
				for _, p := range expectedParts(2) {
					s.f.results[partKey{s.id, p}][0].visible = s.deadline.Add(time.Second)
				}
				r := s.reply(schemas.PartMissing, schemas.PartMissing)
				r.Payload = nil
				s.f.replies[s.id][0].reply = r
			},
			notOK: map[string]int{whyLate: 2}, ok: true,
		},
		{
			name: "parts that are not the manifest's",
			change: func(s *scenario) {
				s.f.replies[s.id][0].reply.Parts = s.f.replies[s.id][0].reply.Parts[:1]
			},
			wrong: 1, problem: "parts [shard-0]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScenario()
			if tt.change != nil {
				tt.change(s)
			}
			g := tt.guarantee
			if g == "" {
				g = kafkaconfig.ExactlyOnce
			}
			r := check(s.f, checkOptions{guarantee: g, slack: slack, onTime: 300 * time.Millisecond, maxExamples: 5})
			if r.Lost != tt.lost || r.Duplicated != tt.duplicated || r.Wrong != tt.wrong {
				t.Errorf("lost=%d duplicated=%d wrong=%d, want %d %d %d; problems %q", r.Lost, r.Duplicated, r.Wrong,
					tt.lost, tt.duplicated, tt.wrong, r.Problems)
			}
			if r.OK() != tt.ok {
				t.Errorf("OK() = %v, want %v", r.OK(), tt.ok)
			}
			for why, n := range tt.notOK {
				if r.NotOK[why] != n {
					t.Errorf("not OK for %s: %d, want %d (all: %v)", why, r.NotOK[why], n, r.NotOK)
				}
			}
			if tt.problem != "" && (len(r.Problems) == 0 || !strings.Contains(r.Problems[0], tt.problem)) {
				t.Errorf("problems %q, want the first to mention %q", r.Problems, tt.problem)
			}
			if tt.problem == "" && tt.wrong == 0 && tt.lost == 0 && len(r.Problems) > 0 {
				t.Errorf("unexpected problems %q", r.Problems)
			}
		})
	}
}

func TestScheduleKillsEveryAggregator(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 42, 1 << 40} {
		h, err := New(Config{Exe: "/bin/true", Requests: 1000, Rate: 50, Kills: 5, Terms: 3, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		roles := h.roles([]string{"127.0.0.1:1"}, "routes.json", t.TempDir())
		evs := h.schedule(roles, nil)
		if len(evs) != 8 {
			t.Fatalf("seed %d: %d events, want 8", seed, len(evs))
		}
		killed := map[string]int{}
		termed := map[string]int{}
		load := 20 * time.Second
		for i, ev := range evs {
			if ev.at < load/10 || ev.at > load*9/10 {
				t.Errorf("seed %d: event %d at %s, outside [10%%, 90%%] of the %s load", seed, i, ev.at, load)
			}
			if i > 0 && ev.at < evs[i-1].at {
				t.Errorf("seed %d: events out of order", seed)
			}
			if ev.pause < DefaultPauseMin || ev.pause > DefaultPauseMax {
				t.Errorf("seed %d: pause %s", seed, ev.pause)
			}
			if ev.sig.String() == "killed" {
				killed[ev.victim.name]++
			} else {
				termed[ev.victim.role]++
			}
		}
		for _, want := range []string{"aggregator-0", "aggregator-1", "scatterer-0"} {
			if killed[want] == 0 {
				t.Errorf("seed %d: %s never killed: %v", seed, want, killed)
			}
		}
		if killed["processor-0"]+killed["processor-1"] == 0 {
			t.Errorf("seed %d: no processor killed: %v", seed, killed)
		}
		for _, role := range []string{"aggregator", "processor", "scatterer"} {
			if termed[role] != 1 {
				t.Errorf("seed %d: %d SIGTERMs to a %s, want 1: %v", seed, termed[role], role, termed)
			}
		}
		// The same seed gives the same schedule.
		h2, _ := New(Config{Exe: "/bin/true", Requests: 1000, Rate: 50, Kills: 5, Terms: 3, Seed: seed})
		evs2 := h2.schedule(h2.roles([]string{"127.0.0.1:1"}, "routes.json", t.TempDir()), nil)
		for i := range evs {
			if evs[i].at != evs2[i].at || evs[i].victim.name != evs2[i].victim.name || evs[i].pause != evs2[i].pause {
				t.Errorf("seed %d: event %d differs between two schedules of the same seed", seed, i)
			}
		}
	}
}

// TestLongestStall: the longest gap between records of one partition of
// results or replies, within the window of the requests sent, counting a
// partition silent from the start or to the end.
func TestLongestStall(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 14, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	f := newFacts("r")
	var ids []schemas.CorrelationID
	for i := range 11 { // sent at 0s..10s
		id := schemas.CorrelationID(fmt.Sprintf("c%02d", i))
		f.submitted[id] = submission{at: at(float64(i))}
		ids = append(ids, id)
	}
	// results/0 every second but a gap from 2s to 6.5s; results/1 every
	// second; replies/0 from 1s on, with one record seen after the window
	// and one never seen by the observer (zero time).
	for i := range 11 {
		if i < 3 || i > 6 {
			f.results[partKey{ids[i], "a"}] = append(f.results[partKey{ids[i], "a"}], resultFact{partition: 0, visible: at(float64(i))})
		}
		f.results[partKey{ids[i], "b"}] = append(f.results[partKey{ids[i], "b"}], resultFact{partition: 1, visible: at(float64(i) + 0.1)})
	}
	f.results[partKey{ids[6], "a"}] = append(f.results[partKey{ids[6], "a"}], resultFact{partition: 0, visible: at(6.5)})
	for i := 1; i < 11; i++ {
		f.replies[ids[i]] = append(f.replies[ids[i]], replyFact{partition: 0, visible: at(float64(i) + 0.5)})
	}
	f.replies[ids[0]] = append(f.replies[ids[0]], replyFact{partition: 0})
	d, where := longestStall(f, ids)
	if d != 4500*time.Millisecond || !strings.HasPrefix(where, "results/0 after 14:00:02.000") {
		t.Fatalf("longest stall %s at %q; want 4.5s on results/0 after 14:00:02.000", d, where)
	}
	// A partition silent the whole window stalls the whole window.
	f.replies[ids[3]] = append(f.replies[ids[3]], replyFact{partition: 5, visible: at(12)})
	if d, where := longestStall(f, ids); d != 10*time.Second || !strings.HasPrefix(where, "replies/5") {
		t.Fatalf("longest stall %s at %q; want 10s on replies/5", d, where)
	}
	if pct := (Report{Requests: 2000, Complete: 1948}).CompletePct(); pct != 97.4 {
		t.Fatalf("complete_pct %v, want 97.4", pct)
	}
}

// TestFaultStalls: a broker fault's stall is the longest gap that ends
// between its signal and the node's restart, its return stall the longest
// that ends between the restart and the fault's end; a longer gap before
// it (a slow start) is not the fault's, nor is one that ends after the
// fault (the next fault's), and a node never restarted counts to the end
// of the load.
func TestFaultStalls(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	f := newFacts("r")
	// Sent at 0s..30s; results/0 sees a record every 0.5s but for gaps
	// 1s-6s (5s, the start), 12s-15.5s (3.5s), 19.5s-23.5s (4s, across
	// the first fault's end and the second's start) and 25s-27s (2s).
	for i := 0; i <= 30; i++ {
		f.submitted[schemas.CorrelationID(fmt.Sprintf("c%02d", i))] = submission{at: at(float64(i))}
	}
	gap := func(s float64) bool {
		return (s > 1 && s < 6) || (s > 12 && s < 15.5) || (s > 19.5 && s < 23.5) || (s > 25 && s < 27)
	}
	for s := 0.0; s <= 30; s += 0.5 {
		if !gap(s) {
			k := partKey{schemas.CorrelationID(fmt.Sprintf("c%02d", int(s))), schemas.PartID(fmt.Sprint(s))}
			f.results[k] = append(f.results[k], resultFact{partition: 0, visible: at(s)})
		}
	}
	faults := []BrokerFault{
		// Killed at 11s, restarted at 16s, settled at 20s: the 3.5s gap
		// is its death's, a 0.5s one its return's; not the 4s gap that
		// ends after it.
		{Signal: "SIGKILL", Stopped: true, When: at(11), Restarted: at(16), Settled: at(20)},
		// Killed at 21s, never restarted: the 4s gap, which began before
		// and counts from 21s (2.5s).
		{Signal: "SIGKILL", Stopped: true, When: at(21)},
		// Not stopped: no stall.
		{Signal: "SIGTERM", When: at(2)},
	}
	faultStalls(f, faults)
	if faults[0].Stall != 3500*time.Millisecond || !strings.HasPrefix(faults[0].StallAt, "results/0 after 12:00:12.000") {
		t.Errorf("first fault: stall %s at %q; want 3.5s on results/0 after 12:00:12.000", faults[0].Stall, faults[0].StallAt)
	}
	if faults[0].ReturnStall != 500*time.Millisecond || !strings.HasPrefix(faults[0].ReturnStallAt, "results/0 after 12:00:16.000") {
		t.Errorf("first fault's return: stall %s at %q; want 0.5s on results/0 after 12:00:16.000", faults[0].ReturnStall, faults[0].ReturnStallAt)
	}
	if faults[1].Stall != 2500*time.Millisecond || !strings.HasPrefix(faults[1].StallAt, "results/0 after 12:00:21.000") {
		t.Errorf("second fault: stall %s at %q; want 2.5s on results/0 after 12:00:21.000", faults[1].Stall, faults[1].StallAt)
	}
	if faults[1].ReturnStallAt != "" {
		t.Errorf("a node never restarted has a return stall %s at %q", faults[1].ReturnStall, faults[1].ReturnStallAt)
	}
	if faults[2].Stall != 0 || faults[2].StallAt != "" {
		t.Errorf("a fault that stopped nothing has stall %s at %q", faults[2].Stall, faults[2].StallAt)
	}
	ids := make([]schemas.CorrelationID, 0, len(f.submitted))
	for i := 0; i <= 30; i++ {
		ids = append(ids, schemas.CorrelationID(fmt.Sprintf("c%02d", i)))
	}
	if d, _ := longestStall(f, ids); d != 5*time.Second {
		t.Errorf("whole run's longest stall %s, want the start's 5s", d)
	}
	// The summary gives each fault its stall, and how it settled.
	faults[0].Node, faults[0].At, faults[0].Pause, faults[0].Restart = 2, 11*time.Second, 5*time.Second, 2*time.Second
	faults[0].Healed, faults[0].Moved, faults[0].Rebalanced, faults[0].Settle = 0, 20, 600*time.Millisecond, time.Second
	faults[0].Flowing = 1200 * time.Millisecond
	faults[1].Healed, faults[1].Rebalanced = -1, -1
	var out bytes.Buffer
	h := &Harness{cfg: Config{Out: &out}}
	h.summary(Report{BrokerFaults: faults[:2]}, 0)
	want := "chaos: broker faults: SIGKILL node 2 at 11s (12:00:11.000), down 5s, restart 2s, in sync +0s, 20 leaders back +600ms (after 1s), flowing +1.2s, settled 1s, longest stall 3.5s (results/0 after 12:00:12.000), on its return 500ms (results/0 after 12:00:16.000); " +
		"SIGKILL node 0 at 0s (12:00:21.000), down 0s, restart 0s, not in sync within 2m0s, longest stall 2.5s (results/0 after 12:00:21.000)\n"
	if !strings.Contains(out.String(), want) {
		t.Errorf("summary:\n%s\nwant the line\n%s", out.String(), want)
	}
}

func TestLastNotComplete(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 14, 0, 0, 0, time.UTC)
	f := newFacts("r")
	for i, st := range []schemas.ReplyStatus{schemas.ReplyPartial, schemas.ReplyComplete, schemas.ReplyPartial, schemas.ReplyComplete} {
		id := schemas.CorrelationID(fmt.Sprint(i))
		f.submitted[id] = submission{at: t0.Add(time.Duration(i) * time.Second)}
		f.replies[id] = []replyFact{{reply: schemas.Reply{Status: st}}}
	}
	if d := lastNotComplete(f, t0.Add(500*time.Millisecond)); d != 1500*time.Millisecond {
		t.Fatalf("last not COMPLETE %s after, want 1.5s (request 2)", d)
	}
	if d := lastNotComplete(f, t0.Add(3*time.Second)); d != 0 {
		t.Fatalf("last not COMPLETE %s after, want 0", d)
	}
}

// TestSummaryOfLostProcessor: the summary says when the lost processor's
// gap closed, and that none was seen when every request after the loss
// was COMPLETE (not "0s after it").
func TestSummaryOfLostProcessor(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 14, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		after time.Duration
		want  string
	}{
		{0, "lost for good at 14:00:00.000; every request sent after it was answered COMPLETE\n"},
		{1500 * time.Millisecond, "lost for good at 14:00:00.000; the last request answered not COMPLETE was sent 1.5s after it\n"},
	} {
		var out strings.Builder
		h := &Harness{cfg: Config{Out: &out}}
		h.summary(Report{LostAt: t0, LastNotCompleteAfter: tc.after}, 0)
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("summary\n%s\nwant a line ending %q", out.String(), tc.want)
		}
	}
}
