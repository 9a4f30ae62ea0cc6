package processor

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

func TestDoneSetEncoding(t *testing.T) {
	for _, tc := range []struct {
		name string
		base int64
		done []int64
		md   string
	}{
		{"empty", 100, nil, "sg-done1:"},
		{"one", 100, []int64{101}, "sg-done1:1"},
		{"at the base", 100, []int64{100}, "sg-done1:0"},
		{"runs", 100, []int64{101, 102, 103, 110}, "sg-done1:1+3,6"},
		{"base 36", 0, []int64{36, 37, 100}, "sg-done1:10+2,1q"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md := encodeDone(tc.base, tc.done)
			if md != tc.md {
				t.Fatalf("encodeDone = %q, want %q", md, tc.md)
			}
			got, ok := decodeDone(tc.base, md)
			if !ok || !slices.Equal(got, tc.done) {
				t.Fatalf("decodeDone(%q) = %v, %v; want %v", md, got, ok, tc.done)
			}
		})
	}
	t.Run("not ours or malformed", func(t *testing.T) {
		for _, md := range []string{"", "consumer-1-abc", "sg-done1:x!", "sg-done1:1+0", "sg-done1:-1", "sg-done1:1,,2"} {
			if done, ok := decodeDone(5, md); ok {
				t.Errorf("decodeDone(%q) = %v, want not ok", md, done)
			}
		}
	})
	t.Run("random round trips", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for range 200 {
			base := rng.Int64N(1 << 40)
			var done []int64
			for o := base + rng.Int64N(3); len(done) < 50; o += 1 + rng.Int64N(4) {
				done = append(done, o)
			}
			got, ok := decodeDone(base, encodeDone(base, done))
			if !ok || !slices.Equal(got, done) {
				t.Fatalf("base %d done %v: round trip gave %v, %v", base, done, got, ok)
			}
		}
	})
	t.Run("fit", func(t *testing.T) {
		var done []int64
		for o := int64(1); o < 20_000; o += 2 { // no runs: the longest encoding
			done = append(done, o)
		}
		fit := fitDone(0, done)
		if n := len(encodeDone(0, fit)); n > maxDoneMetadata || len(fit) == 0 {
			t.Fatalf("fitted %d offsets into %d bytes", len(fit), n)
		}
		if n := len(encodeDone(0, done[:len(fit)+1])); n <= maxDoneMetadata {
			t.Fatalf("one more offset still fits (%d bytes): the cut is too short", n)
		}
	})
}

// keyedTask is a task record with a key, for the ordering tests.
func (e *env) produceKeyed(t *testing.T, recs ...*kgo.Record) {
	t.Helper()
	for _, r := range recs {
		r.Topic = e.topics.Tasks(string(testRoute))
	}
	if err := e.prod.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// orderRecorder records, per key, the order in which tasks are handled,
// and how many tasks of one key and in all ran at once.
type orderRecorder struct {
	mu        sync.Mutex
	order     map[string][]int
	inKey     map[string]int
	maxInKey  int
	inAll     int
	maxInAll  int
	calls     map[schemas.CorrelationID]int
	sleepUpTo time.Duration
	rng       *rand.Rand
}

func newOrderRecorder(sleepUpTo time.Duration) *orderRecorder {
	return &orderRecorder{order: map[string][]int{}, inKey: map[string]int{}, calls: map[schemas.CorrelationID]int{},
		sleepUpTo: sleepUpTo, rng: rand.New(rand.NewPCG(7, 7))}
}

// Handle expects payloads "<key>/<seq>".
func (h *orderRecorder) Handle(ctx context.Context, t schemas.Task) ([]byte, error) {
	key, seqS, _ := strings.Cut(string(t.Payload), "/")
	seq, err := strconv.Atoi(seqS)
	if err != nil {
		return nil, Permanent(err)
	}
	h.mu.Lock()
	h.order[key] = append(h.order[key], seq)
	h.calls[t.CorrelationID]++
	h.inKey[key]++
	h.maxInKey = max(h.maxInKey, h.inKey[key])
	h.inAll++
	h.maxInAll = max(h.maxInAll, h.inAll)
	d := time.Duration(h.rng.Int64N(int64(h.sleepUpTo) + 1))
	h.mu.Unlock()
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	h.mu.Lock()
	h.inKey[key]--
	h.inAll--
	h.mu.Unlock()
	return t.Payload, ctx.Err()
}

// TestPipelineKeepsKeyOrder handles interleaved tasks of 12 keys on two
// partitions with 8 tasks of a partition at once, and records the order in
// which each key's tasks are handled: in offset order, one at a time per
// key, while different keys run in parallel. Every task is answered once.
func TestPipelineKeepsKeyOrder(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			e := newEnv(t, 2)
			h := newOrderRecorder(3 * time.Millisecond)
			cfg := e.config("proc-" + string(g))
			cfg.Guarantee = g
			cfg.Concurrency = 8
			run := start(t, cfg, h)

			const keys, perKey = 12, 15
			var recs []*kgo.Record
			for seq := range perKey {
				for k := range keys {
					key := fmt.Sprintf("k%02d", k)
					tk := task(fmt.Sprintf("%s-%02d", key, seq), scatterer.ShardID(k), fmt.Sprintf("%s/%d", key, seq))
					recs = append(recs, &kgo.Record{Key: []byte(key), Partition: int32(k % 2), Value: encodeTasks(t, tk)[0]})
				}
			}
			// Two halves, so that a key's tasks span polls.
			e.produceKeyed(t, recs[:len(recs)/2]...)
			rd := e.reader(t, e.topics.Results())
			waitResults(t, rd, 1)
			e.produceKeyed(t, recs[len(recs)/2:]...)
			waitResults(t, rd, keys*perKey)
			if err := run.stop(); err != nil {
				t.Fatal(err)
			}

			got := byID(results(t, rd.drain(t, e.layout.ResultPartitions)))
			h.mu.Lock()
			defer h.mu.Unlock()
			for k := range keys {
				key := fmt.Sprintf("k%02d", k)
				want := make([]int, perKey)
				for i := range want {
					want[i] = i
				}
				if !slices.Equal(h.order[key], want) {
					t.Errorf("key %s handled in order %v, want %v", key, h.order[key], want)
				}
			}
			if h.maxInKey != 1 {
				t.Errorf("%d tasks of one key ran at once, want 1", h.maxInKey)
			}
			if h.maxInAll < 4 {
				t.Errorf("at most %d tasks ran at once: the keys were not handled in parallel", h.maxInAll)
			}
			for id, rs := range got {
				if len(rs) != 1 || rs[0].Status != schemas.ResultOK || h.calls[id] != 1 {
					t.Errorf("task %s: %d results (%+v), %d calls; want one OK after one call", id, len(rs), rs, h.calls[id])
				}
			}
			if len(got) != keys*perKey {
				t.Errorf("%d tasks answered, want %d", len(got), keys*perKey)
			}
			t.Logf("at most %d tasks at once", h.maxInAll)
		})
	}
}

// TestPipelineConcurrencyScales handles 240 tasks of 20ms each, with
// distinct keys, on 6 partitions: one at a time per partition they take at
// least 800ms; with 8 at a time they take well under half of that.
func TestPipelineConcurrencyScales(t *testing.T) {
	e := newEnv(t, 6)
	elapsed := map[int]time.Duration{}
	for _, c := range []int{1, 8} {
		cfg := e.config(fmt.Sprintf("proc-c%d", c))
		cfg.Group = fmt.Sprintf("%sscale-%d", e.topics.Prefix, c) // each reads every task
		cfg.Concurrency = c
		sleep, err := Sleep(SleepConfig{Delay: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		run := start(t, cfg, sleep)
		eventually(t, "assignment", func() bool { _, n := run.p.GroupAssignment(); return n == 6 })
		const n = 240
		var recs []*kgo.Record
		for i := range n {
			tk := task(fmt.Sprintf("c%d-%03d", c, i), scatterer.ShardID(i), "x")
			recs = append(recs, &kgo.Record{Key: []byte(tk.CorrelationID), Partition: int32(i % 6), Value: encodeTasks(t, tk)[0]})
		}
		began := time.Now()
		e.produceKeyed(t, recs...)
		rd := e.reader(t, e.topics.Results())
		prefix := fmt.Sprintf("c%d-", c)
		rd.until(t, fmt.Sprintf("concurrency %d answers", c), func(rs []*kgo.Record) bool {
			k := 0
			for _, r := range results(t, rs) {
				if strings.HasPrefix(string(r.CorrelationID), prefix) {
					k++
				}
			}
			return k >= n
		})
		elapsed[c] = time.Since(began)
		if err := run.stop(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("240 tasks of 20ms on 6 partitions: concurrency 1 %s, concurrency 8 %s", elapsed[1], elapsed[8])
	if elapsed[1] < 800*time.Millisecond {
		t.Fatalf("concurrency 1 took %s, less than the 800ms its handlers need", elapsed[1])
	}
	// Ideally an eighth; transactions and polling take their share.
	if elapsed[8]*2 > elapsed[1] {
		t.Fatalf("concurrency 8 took %s, not under half of concurrency 1's %s", elapsed[8], elapsed[1])
	}
}

// TestPipelineSlowTaskHoldsBackNoOther blocks the first task of a
// partition: the tasks after it are answered (and committed) meanwhile, the
// committed offset stays at the blocked task with the others in its done
// set, and an instance that takes over after a crash-like stop handles the
// blocked task only, not the finished ones again.
func TestPipelineSlowTaskHoldsBackNoOther(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			e := newEnv(t, 1)
			release := make(chan struct{})
			var mu sync.Mutex
			calls := map[string]map[schemas.CorrelationID]int{}
			handler := func(name string) Handler {
				return HandlerFunc(func(ctx context.Context, tk schemas.Task) ([]byte, error) {
					mu.Lock()
					if calls[name] == nil {
						calls[name] = map[schemas.CorrelationID]int{}
					}
					calls[name][tk.CorrelationID]++
					mu.Unlock()
					if string(tk.Payload) == "block" && name == "first" {
						select {
						case <-release:
						case <-ctx.Done():
							return nil, ctx.Err()
						}
					}
					return []byte(name), nil
				})
			}
			cfg := e.config("first")
			cfg.Guarantee = g
			cfg.Concurrency = 4
			cfg.Ordering = OrderNone
			cfg.DrainTimeout = 100 * time.Millisecond
			cfg.Retries = new(0)
			first := start(t, cfg, handler("first"))
			tasks := []schemas.Task{task("slow", "shard-0", "block")}
			for i := range 6 {
				tasks = append(tasks, task(fmt.Sprintf("fast-%d", i), "shard-0", "x"))
			}
			e.produce(t, onPartition(0), encodeTasks(t, tasks...)...)

			rd := e.reader(t, e.topics.Results())
			got := waitResults(t, rd, 6)
			for _, r := range got {
				if r.CorrelationID == "slow" {
					t.Fatalf("the blocked task was answered: %+v", r)
				}
			}
			adm := e.c.Admin(t)
			var md string
			eventually(t, "committed at the blocked task with the others done", func() bool {
				os, err := adm.FetchOffsets(t.Context(), cfg.groupName())
				if err != nil {
					return false
				}
				o, ok := os.Lookup(e.topics.Tasks(string(testRoute)), 0)
				md = o.Metadata
				return ok && o.At == 0 && md == "sg-done1:1+6"
			})
			// Stopping cuts the blocked task off: its next owner answers it.
			if err := first.stop(); err != nil {
				t.Fatal(err)
			}
			cfg.InstanceID = "second"
			second := start(t, cfg, handler("second"))
			waitResults(t, rd, 7)
			if err := second.stop(); err != nil {
				t.Fatal(err)
			}
			all := byID(results(t, rd.drain(t, e.layout.ResultPartitions)))
			for _, tk := range tasks {
				rs := all[tk.CorrelationID]
				want := "first"
				if tk.CorrelationID == "slow" {
					want = "second"
				}
				if len(rs) != 1 || string(rs[0].Payload) != want {
					t.Errorf("task %s: results %+v, want one from %s", tk.CorrelationID, rs, want)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(calls["second"]) != 1 || calls["second"]["slow"] != 1 {
				t.Errorf("the second instance handled %v, want the blocked task only", calls["second"])
			}
		})
	}
}

// TestPipelineAbortKeepsWork: a batch that does not commit (a transaction
// aborted by the broker, e.g. CONCURRENT_TRANSACTIONS) loses only its
// output: the tasks it carried are emitted again with the next batch, the
// records consumed again are not added twice, and nothing is handled
// again. A batch with nothing new to say is deferred, not committed.
func TestPipelineAbortKeepsWork(t *testing.T) {
	p, err := New(Config{
		Role: kafkaconfig.Role{
			Client: kafkaconfig.Client{Brokers: []string{"127.0.0.1:1"}},
		},
		Route:       testRoute,
		Concurrency: 4,
		Ordering:    OrderNone,
	}, Echo())
	if err != nil {
		t.Fatal(err)
	}
	pl := newPipeline(p)
	tp := topicPartition{"tasks", 0}
	pl.owned[tp] = true
	tr := pl.track(tp)
	rec := func(off int64) *kgo.Record {
		return &kgo.Record{Topic: tp.topic, Partition: tp.partition, Offset: off, Key: []byte(fmt.Sprint(off))}
	}
	for off := range int64(4) {
		pl.add(tr, rec(off))
	}
	// Offsets 1 and 2 are done; 0 and 3 still run.
	for _, e := range tr.entries[1:3] {
		e.state = entDone
		e.o = outcome{src: e.rec, out: &kgo.Record{Topic: "results", Value: []byte(fmt.Sprint(e.rec.Offset))}, n: tally{ok: 1}}
	}
	tr.entries[0].state, tr.entries[3].state = entRunning, entRunning

	b := &kafka.Batch{}
	pl.emit(b)
	if b.Len() != 2 || pl.commits[tp].offset != 0 || !slices.Equal(pl.commits[tp].done, []int64{1, 2}) {
		t.Fatalf("first batch: %d records, commit %+v", b.Len(), pl.commits[tp])
	}
	if n := pl.end(false); n != (tally{}) {
		t.Fatalf("an aborted batch counted %+v", n)
	}
	// Consumed again from the committed offset: nothing is added twice.
	for off := range int64(5) {
		pl.add(tr, rec(off))
	}
	if len(tr.entries) != 5 {
		t.Fatalf("%d entries after the records came again, want 5", len(tr.entries))
	}
	b = &kafka.Batch{}
	pl.emit(b)
	if b.Len() != 2 {
		t.Fatalf("second batch: %d records, want the 2 outcomes again", b.Len())
	}
	if n := pl.end(true); n.ok != 2 {
		t.Fatalf("committed %+v, want 2 OK", n)
	}
	if c := pl.committed[tp]; c.offset != 0 || !slices.Equal(c.done, []int64{1, 2}) {
		t.Fatalf("committed %+v", c)
	}
	// Committed entries keep their offsets only, not their records and
	// results: a slow record may hold a thousand of them.
	for _, e := range tr.entries[1:3] {
		if e.state != entCommitted || e.rec != nil || e.o.out != nil || e.o.src != nil {
			t.Fatalf("committed entry at %d keeps state %d, record %v, outcome %+v", e.offset, e.state, e.rec, e.o)
		}
	}
	// Nothing new: the next batch is deferred.
	b = &kafka.Batch{}
	pl.emit(b)
	if b.Len() != 0 || len(pl.commits) != 0 {
		t.Fatalf("a batch with nothing new has %d records and commits %+v", b.Len(), pl.commits)
	}
}

// TestPipelineResyncAfterAbort: after an aborted batch the client goes back
// to the committed offsets; until it has polled the partition's records
// again, a transaction would carry no offset for the partition, so its
// outcomes wait (nothing emitted), while its commit offset stays set.
func TestPipelineResyncAfterAbort(t *testing.T) {
	p, err := New(Config{
		Role: kafkaconfig.Role{
			Client: kafkaconfig.Client{Brokers: []string{"127.0.0.1:1"}},
		},
		Route:       testRoute,
		Concurrency: 4,
		Ordering:    OrderNone,
	}, Echo())
	if err != nil {
		t.Fatal(err)
	}
	pl := newPipeline(p)
	tp := topicPartition{"tasks", 0}
	pl.owned[tp] = true
	tr := pl.track(tp)
	rec := func(off int64) *kgo.Record {
		return &kgo.Record{Topic: tp.topic, Partition: tp.partition, Offset: off}
	}
	for off := range int64(3) {
		pl.add(tr, rec(off))
	}
	tr.entries[0].state = entRunning
	for _, e := range tr.entries[1:] {
		e.state = entDone
		e.o = outcome{src: e.rec, out: &kgo.Record{Topic: "results"}, n: tally{ok: 1}}
	}
	b := &kafka.Batch{}
	pl.emit(b)
	pl.end(false)
	// Records 0 and 1 are polled again, not yet 2.
	pl.add(tr, rec(0))
	pl.add(tr, rec(1))
	b = &kafka.Batch{}
	pl.emit(b)
	if b.Len() != 0 {
		t.Fatalf("%d records emitted before the partition was polled up to its last record again", b.Len())
	}
	pl.add(tr, rec(2))
	b = &kafka.Batch{}
	pl.emit(b)
	if b.Len() != 2 || pl.commits[tp].offset != 0 || !slices.Equal(pl.commits[tp].done, []int64{1, 2}) {
		t.Fatalf("after the resync: %d records, commit %+v", b.Len(), pl.commits[tp])
	}
}

// TestPipelineStragglerDoesNotPausePartition: a task that does not finish
// holds its partition's committed offset, and the tasks handled after it
// are held with it (in the done set); that alone does not pause fetching
// the partition below heldPerPending × the pending bound, so its new
// tasks (hedges among them) are handled meanwhile. Before, fetching paused
// at 256 held records: the second round below waited for the straggler.
func TestPipelineStragglerDoesNotPausePartition(t *testing.T) {
	e := newEnv(t, 1)
	release := make(chan struct{})
	defer close(release)
	var handled atomic.Int64
	cfg := e.config("p")
	cfg.Concurrency = 8
	cfg.Ordering = OrderNone
	cfg.DrainTimeout = 100 * time.Millisecond
	start(t, cfg, HandlerFunc(func(ctx context.Context, tk schemas.Task) ([]byte, error) {
		if string(tk.Payload) == "block" {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		handled.Add(1)
		return []byte("ok"), nil
	}))
	round := func(first int, n int) {
		t.Helper()
		var tasks []schemas.Task
		for i := range n {
			tasks = append(tasks, task(fmt.Sprintf("fast-%d", first+i), "shard-0", "x"))
		}
		e.produce(t, onPartition(0), encodeTasks(t, tasks...)...)
		eventually(t, fmt.Sprintf("%d tasks handled behind the straggler", first+n), func() bool {
			return handled.Load() == int64(first+n)
		})
	}
	e.produce(t, onPartition(0), encodeTasks(t, task("slow", "shard-0", "block"))...)
	round(0, 300)
	round(300, 300)
}

// TestFlowControl: fetching a partition pauses at maxPending records not
// yet handled, or at heldPerPending times as many held in all, and resumes
// once both are below half.
func TestFlowControl(t *testing.T) {
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	pl := newPipeline(&Processor{cfg: Config{Concurrency: 8}})
	pl.cl = cl
	if pl.maxPending != minPending {
		t.Fatalf("maxPending %d, want %d", pl.maxPending, minPending)
	}
	tp := topicPartition{"tasks", 0}
	t.Run("records handled do not pause it below the held bound", func(t *testing.T) {
		tr := pl.track(tp)
		tr.entries = make([]*entry, heldPerPending*minPending-1)
		tr.entries[0] = &entry{state: entRunning}
		for i := 1; i < len(tr.entries); i++ {
			tr.entries[i] = &entry{state: entCommitted}
		}
		pl.flowControl()
		if pl.paused[tp] {
			t.Fatal("paused")
		}
		tr.entries = append(tr.entries, &entry{state: entDone})
		pl.flowControl()
		if !pl.paused[tp] {
			t.Fatal("not paused at the held bound")
		}
		if got := cl.PauseFetchPartitions(nil); len(got["tasks"]) != 1 {
			t.Fatalf("client paused %v", got)
		}
		tr.entries = tr.entries[:heldPerPending*minPending/2-1]
		pl.flowControl()
		if pl.paused[tp] || len(cl.PauseFetchPartitions(nil)["tasks"]) != 0 {
			t.Fatal("not resumed below half the held bound")
		}
	})
	t.Run("records not handled pause it at the pending bound", func(t *testing.T) {
		tr := pl.track(tp)
		tr.entries = tr.entries[:0]
		for range minPending {
			tr.entries = append(tr.entries, &entry{state: entQueued})
		}
		pl.flowControl()
		if !pl.paused[tp] {
			t.Fatal("not paused at the pending bound")
		}
		for _, e := range tr.entries[:minPending/2+1] {
			e.state = entDone
		}
		pl.flowControl()
		if pl.paused[tp] {
			t.Fatal("not resumed below half the pending bound")
		}
	})
	t.Run("a paused partition is polled again after an aborted batch", func(t *testing.T) {
		tr := pl.track(tp)
		tr.entries, tr.next = tr.entries[:0], 0
		for off := range int64(minPending) {
			pl.add(tr, &kgo.Record{Topic: tp.topic, Partition: tp.partition, Offset: off})
		}
		pl.flowControl()
		if !pl.paused[tp] {
			t.Fatal("not paused at the pending bound")
		}
		pl.end(false)
		if tr.resync == 0 || pl.paused[tp] || len(cl.PauseFetchPartitions(nil)["tasks"]) != 0 {
			t.Fatalf("after an aborted batch: resync %d, paused %v: the partition would never be polled up to its records again", tr.resync, pl.paused[tp])
		}
		pl.add(tr, &kgo.Record{Topic: tp.topic, Partition: tp.partition, Offset: minPending - 1})
		pl.flowControl()
		if tr.resync != 0 || !pl.paused[tp] {
			t.Fatalf("polled up to its records again: resync %d, paused %v; want paused again", tr.resync, pl.paused[tp])
		}
	})
}
