package processor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

func TestMain(m *testing.M) { testkafka.Main(m) }

const testRoute schemas.Route = "search"

// waitFor bounds every wait of these tests for the pipeline to get
// somewhere; a healthy run takes a fraction of it.
const waitFor = 30 * time.Second

// env is one test's pipeline topics on a broker of its own prefix.
type env struct {
	c      *testkafka.Cluster
	topics kafkaconfig.Topics
	layout kafkaconfig.Layout
	prod   *kgo.Client // produces to explicit partitions
}

func newEnv(t testing.TB, taskPartitions int32) *env {
	t.Helper()
	c := testkafka.New(t)
	e := &env{
		c:      c,
		topics: kafkaconfig.Topics{Prefix: c.Prefix},
		layout: kafkaconfig.Layout{Partitions: taskPartitions, ResultPartitions: 2, ReplicationFactor: -1},
	}
	// kgo caches metadata for MetadataMinAge (5s by default): without a
	// short one, the check below would see EnsureTopics' "unknown topic"
	// answers until they age out.
	adm := kadm.NewClient(c.Client(t, kgo.MetadataMinAge(10*time.Millisecond)))
	specs := e.topics.Specs(e.layout, []string{string(testRoute)})
	if _, err := kafkaconfig.EnsureTopics(t.Context(), adm, specs); err != nil {
		t.Fatalf("ensure topics: %v", err)
	}
	e.prod = c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	return e
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %s: %s", waitFor, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) config(instance string) Config {
	return Config{
		Role: kafkaconfig.Role{
			Client:     kafkaconfig.Client{Brokers: e.c.Brokers},
			Topics:     e.topics,
			InstanceID: instance,
		},
		Route:      testRoute,
		Retries:    new(2),
		Backoff:    time.Millisecond,
		MaxBackoff: 5 * time.Millisecond,
	}
}

// running is a processor whose Run goroutine the test owns.
type running struct {
	p      *Processor
	cancel context.CancelFunc
	done   chan error
}

// start runs a processor until stop or the end of the test.
func start(t testing.TB, cfg Config, h Handler) *running {
	t.Helper()
	p, err := New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	r := &running{p: p, cancel: cancel, done: make(chan error, 1)}
	// Exits when ctx is cancelled, by stop or the cleanup below.
	go func() { r.done <- p.Run(ctx) }()
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("processor %s: %v", cfg.InstanceID, err)
		}
	})
	return r
}

// stop cancels the processor and returns what Run returned. Idempotent.
func (r *running) stop() error {
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(waitFor):
		return errors.New("run did not return after cancel")
	}
}

func task(id string, part schemas.PartID, payload string) schemas.Task {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return schemas.Task{
		CorrelationID: schemas.CorrelationID(id), PartID: part, PartCount: 4, Route: testRoute,
		Payload: []byte(payload), ContentType: "text/plain", Deadline: now.Add(time.Minute), Attempt: 1, SubmittedAt: now,
	}
}

// produce writes values to the task topic, value i to partition
// partition(i).
func (e *env) produce(t testing.TB, partition func(i int) int32, values ...[]byte) {
	t.Helper()
	recs := make([]*kgo.Record, len(values))
	for i, v := range values {
		recs[i] = &kgo.Record{Topic: e.topics.Tasks(string(testRoute)), Partition: partition(i), Value: v}
	}
	if err := e.prod.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

func encodeTasks(t testing.TB, tasks ...schemas.Task) [][]byte {
	t.Helper()
	out := make([][]byte, len(tasks))
	for i, tk := range tasks {
		b, err := schemas.EncodeTask(tk)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

func onPartition(p int32) func(int) int32 { return func(int) int32 { return p } }

// reader consumes one topic from the start, read_committed.
type reader struct {
	e     *env
	topic string
	cl    *kgo.Client
	recs  []*kgo.Record
}

func (e *env) reader(t testing.TB, topic string) *reader {
	return &reader{e: e, topic: topic, cl: e.c.Client(t,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(100*time.Millisecond),
	)}
}

// poll reads what is there, waiting at most d.
func (r *reader) poll(t testing.TB, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	fs := r.cl.PollFetches(ctx)
	fs.EachError(func(topic string, p int32, err error) {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("fetch %s/%d: %v", topic, p, err)
		}
	})
	r.recs = append(r.recs, fs.Records()...)
}

// until polls until done says the records read so far are enough.
func (r *reader) until(t testing.TB, what string, done func([]*kgo.Record) bool) []*kgo.Record {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !done(r.recs) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still waiting after %s, read %d records", what, waitFor, len(r.recs))
		}
		r.poll(t, 200*time.Millisecond)
	}
	return r.recs
}

// drain reads everything committed to the topic so far: it appends a
// marker to every partition and reads until it has seen them all. Call it
// once no processor writes any more.
func (r *reader) drain(t testing.TB, partitions int32) []*kgo.Record {
	t.Helper()
	marker := []byte("marker-" + strconv.FormatInt(time.Now().UnixNano(), 36))
	var recs []*kgo.Record
	for p := range partitions {
		recs = append(recs, &kgo.Record{Topic: r.topic, Partition: p, Value: marker})
	}
	if err := r.e.prod.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatalf("produce markers: %v", err)
	}
	seen := map[int32]bool{}
	r.until(t, "markers", func(rs []*kgo.Record) bool {
		for _, rec := range rs {
			if string(rec.Value) == string(marker) {
				seen[rec.Partition] = true
			}
		}
		return len(seen) == int(partitions)
	})
	var out []*kgo.Record
	for _, rec := range r.recs {
		if string(rec.Value) != string(marker) {
			out = append(out, rec)
		}
	}
	return out
}

// results decodes result records, checking key and header.
func results(t testing.TB, recs []*kgo.Record) []schemas.Result {
	t.Helper()
	var out []schemas.Result
	for _, rec := range recs {
		res, err := schemas.DecodeResult(rec.Value)
		if err != nil {
			t.Fatalf("results topic %d/%d holds %q: %v", rec.Partition, rec.Offset, rec.Value, err)
		}
		if string(rec.Key) != string(res.CorrelationID) {
			t.Fatalf("result %s keyed %q", res.CorrelationID, rec.Key)
		}
		if got := kafka.Header(rec, HeaderType); got != "result" {
			t.Fatalf("result %s has %s header %q", res.CorrelationID, HeaderType, got)
		}
		out = append(out, res)
	}
	return out
}

func waitResults(t testing.TB, r *reader, n int) []schemas.Result {
	t.Helper()
	return results(t, r.until(t, fmt.Sprintf("%d results", n), func(rs []*kgo.Record) bool { return len(rs) >= n }))
}

func byID(rs []schemas.Result) map[schemas.CorrelationID][]schemas.Result {
	m := map[schemas.CorrelationID][]schemas.Result{}
	for _, r := range rs {
		m[r.CorrelationID] = append(m[r.CorrelationID], r)
	}
	return m
}

// modes are the guarantees crossed with batch-at-a-time processing
// (concurrency 1) and the pipeline (concurrency 4).
var modes = []struct {
	g           kafkaconfig.Guarantee
	concurrency int
}{{kafkaconfig.ExactlyOnce, 1}, {kafkaconfig.AtLeastOnce, 1}, {kafkaconfig.ExactlyOnce, 4}, {kafkaconfig.AtLeastOnce, 4}}

func modeName(g kafkaconfig.Guarantee, concurrency int) string {
	return fmt.Sprintf("%s/concurrency-%d", g, concurrency)
}

func TestProcessorAnswersTasks(t *testing.T) {
	for _, m := range modes {
		g := m.g
		t.Run(modeName(g, m.concurrency), func(t *testing.T) {
			e := newEnv(t, 4)
			cfg := e.config("proc-" + string(g))
			cfg.Guarantee = g
			cfg.Concurrency = m.concurrency
			run := start(t, cfg, Echo())

			const n = 20
			var tasks []schemas.Task
			for i := range n {
				tasks = append(tasks, task(fmt.Sprintf("req-%02d", i), scatterer.ShardID(i%4), fmt.Sprintf("payload %d", i)))
			}
			e.produce(t, func(i int) int32 { return int32(i % 4) }, encodeTasks(t, tasks...)...)

			got := byID(waitResults(t, e.reader(t, e.topics.Results()), n))
			for _, tk := range tasks {
				rs := got[tk.CorrelationID]
				if len(rs) != 1 {
					t.Fatalf("task %s has %d results", tk.CorrelationID, len(rs))
				}
				r := rs[0]
				if r.Status != schemas.ResultOK || string(r.Payload) != string(tk.Payload) || r.Error != "" ||
					r.PartID != tk.PartID || r.Route != testRoute || r.ProcessorID != cfg.InstanceID ||
					r.Attempt != 1 || r.Tries != 1 || !r.Deadline.Equal(tk.Deadline) ||
					r.StartedAt.Before(tk.SubmittedAt) || r.FinishedAt.Before(r.StartedAt) {
					t.Fatalf("task %+v\nanswered %+v", tk, r)
				}
			}
			eventually(t, "stats count 20 OK", func() bool { return run.p.Stats().OK == n })
			if s := run.p.Stats(); s.Processed() != n || s.Retries != 0 || s.DeadLettered != 0 {
				t.Fatalf("stats %+v", s)
			}
			if err := run.stop(); err != nil {
				t.Fatalf("run: %v", err)
			}
		})
	}
}

// countingHandler fails, panics or sleeps as the payload says and counts
// its calls per task.
type countingHandler struct {
	mu    sync.Mutex
	calls map[schemas.CorrelationID]int
}

func (h *countingHandler) count(id schemas.CorrelationID) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[id]
}

func (h *countingHandler) Handle(ctx context.Context, t schemas.Task) ([]byte, error) {
	h.mu.Lock()
	h.calls[t.CorrelationID]++
	h.mu.Unlock()
	switch string(t.Payload) {
	case "fail":
		return nil, errors.New("backend down")
	case "permanent":
		return nil, Permanent(errors.New("bad payload"))
	case "panic":
		panic("handler bug")
	case "block":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return []byte("ok"), nil
}

func TestProcessorReportsFailures(t *testing.T) {
	e := newEnv(t, 1)
	h := &countingHandler{calls: map[schemas.CorrelationID]int{}}
	run := start(t, e.config("proc-1"), h) // 2 retries

	expired := task("expired", "shard-0", "ok")
	expired.Deadline = time.Now().Add(-time.Second).Truncate(time.Millisecond)
	slow := task("slow", "shard-1", "block")
	slow.Deadline = time.Now().Add(300 * time.Millisecond).Truncate(time.Millisecond)
	tasks := []schemas.Task{
		task("panic", "shard-0", "panic"), // first: the role must survive it
		task("fail", "shard-1", "fail"),
		task("permanent", "shard-2", "permanent"),
		expired,
		slow,
		task("ok", "shard-3", "fine"),
	}
	e.produce(t, onPartition(0), encodeTasks(t, tasks...)...)

	got := byID(waitResults(t, e.reader(t, e.topics.Results()), len(tasks)))
	for _, tc := range []struct {
		id     schemas.CorrelationID
		status schemas.ResultStatus
		tries  int
		calls  int
		err    string
	}{
		{"panic", schemas.ResultError, 1, 1, "handler panicked: handler bug"},
		{"fail", schemas.ResultError, 3, 3, "failed on try 3 of 3: backend down"},
		{"permanent", schemas.ResultError, 1, 1, "bad payload"},
		{"expired", schemas.ResultExpired, 0, 0, "before the task was picked up"},
		{"slow", schemas.ResultExpired, 1, 1, "deadline passed on try 1"},
		{"ok", schemas.ResultOK, 1, 1, ""},
	} {
		t.Run(string(tc.id), func(t *testing.T) {
			rs := got[tc.id]
			if len(rs) != 1 {
				t.Fatalf("%d results", len(rs))
			}
			r := rs[0]
			if r.Status != tc.status || r.Tries != tc.tries || h.count(tc.id) != tc.calls {
				t.Fatalf("status %s after %d tries and %d calls, want %s after %d tries and %d calls (error %q)",
					r.Status, r.Tries, h.count(tc.id), tc.status, tc.tries, tc.calls, r.Error)
			}
			if (tc.err == "") != (r.Error == "") || !strings.Contains(r.Error, tc.err) {
				t.Fatalf("error %q, want %q", r.Error, tc.err)
			}
		})
	}
	eventually(t, "stats", func() bool { return run.p.Stats().Processed() == uint64(len(tasks)) })
	if s := run.p.Stats(); s.OK != 1 || s.Error != 3 || s.Expired != 2 || s.Retries != 2 || s.Panics != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestProcessorDeadLetters(t *testing.T) {
	e := newEnv(t, 1)
	run := start(t, e.config("proc-1"), Echo())

	unknown := []byte{0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0}
	if _, err := schemas.KindOf(unknown); err == nil {
		t.Fatal("the made-up fingerprint is a real one")
	}
	result, err := schemas.EncodeResult(schemas.Result{CorrelationID: "r", PartID: "p", Status: schemas.ResultOK})
	if err != nil {
		t.Fatal(err)
	}
	values := encodeTasks(t, task("before", "shard-0", "a"))
	bad := []struct {
		value  []byte
		reason string
	}{
		{[]byte("garbage"), "not-avro"},
		{unknown, "unknown-schema"},
		{result, "wrong-schema"},
		{encodeTasks(t, task("broadcast", "", "b"))[0], "no-part-id"},
	}
	for _, b := range bad {
		values = append(values, b.value)
	}
	values = append(values, encodeTasks(t, task("after", "shard-1", "c"))...)
	e.produce(t, onPartition(0), values...)

	got := byID(waitResults(t, e.reader(t, e.topics.Results()), 2))
	for _, id := range []schemas.CorrelationID{"before", "after"} {
		if rs := got[id]; len(rs) != 1 || rs[0].Status != schemas.ResultOK {
			t.Fatalf("task %s: %+v", id, rs)
		}
	}
	dlq := e.reader(t, e.topics.DLQ()).until(t, "dead letters", func(rs []*kgo.Record) bool { return len(rs) >= len(bad) })
	if len(dlq) != len(bad) {
		t.Fatalf("%d dead letters, want %d", len(dlq), len(bad))
	}
	slices.SortFunc(dlq, func(a, b *kgo.Record) int {
		x, _ := strconv.Atoi(kafka.Header(a, kafka.HeaderDLQOffset))
		y, _ := strconv.Atoi(kafka.Header(b, kafka.HeaderDLQOffset))
		return x - y
	})
	for i, rec := range dlq {
		want := bad[i]
		if string(rec.Value) != string(want.value) ||
			kafka.Header(rec, kafka.HeaderDLQReason) != want.reason ||
			kafka.Header(rec, kafka.HeaderDLQRole) != "processor" ||
			kafka.Header(rec, kafka.HeaderDLQTopic) != e.topics.Tasks(string(testRoute)) ||
			kafka.Header(rec, kafka.HeaderDLQOffset) != strconv.Itoa(i+1) ||
			kafka.Header(rec, kafka.HeaderDLQError) == "" {
			t.Errorf("dead letter %d: value %q, headers %v; want reason %s from offset %d", i, rec.Value, rec.Headers, want.reason, i+1)
		}
	}
	eventually(t, "stats", func() bool { return run.p.Stats().DeadLettered == uint64(len(bad)) })
}

func TestProcessorBroadcast(t *testing.T) {
	e := newEnv(t, 2)
	partHandler := HandlerFunc(func(_ context.Context, t schemas.Task) ([]byte, error) {
		return []byte("answered as " + string(t.PartID)), nil
	})
	for _, recipient := range []schemas.PartID{"alpha", "beta"} {
		cfg := e.config("proc-" + string(recipient))
		cfg.Recipient = recipient
		start(t, cfg, partHandler)
	}
	quote := task("quote-1", "", "quote please")
	quote.PartCount = 2
	split := task("split-1", "shard-1", "for one shard")
	e.produce(t, onPartition(1), encodeTasks(t, quote, split)...)

	got := byID(waitResults(t, e.reader(t, e.topics.Results()), 4))
	parts := map[schemas.PartID]string{}
	for _, r := range got["quote-1"] {
		parts[r.PartID] = r.ProcessorID + ": " + string(r.Payload)
	}
	want := map[schemas.PartID]string{"alpha": "proc-alpha: answered as alpha", "beta": "proc-beta: answered as beta"}
	if !maps.Equal(parts, want) {
		t.Fatalf("broadcast answered %v, want %v", parts, want)
	}
	// A split task on the same topic keeps its part id in both groups.
	for _, r := range got["split-1"] {
		if r.PartID != "shard-1" {
			t.Fatalf("split task answered as %s by %s", r.PartID, r.ProcessorID)
		}
	}
}

// TestProcessorGroupFailover runs two instances in one group over a
// 4-partition task topic and stops one while its handler is busy: both do
// work, the survivor takes over the partitions of the one that left, and
// every task is answered, exactly once under exactly-once.
func TestProcessorGroupFailover(t *testing.T) {
	for _, m := range modes {
		g := m.g
		t.Run(modeName(g, m.concurrency), func(t *testing.T) {
			e := newEnv(t, 4)
			sleep, err := Sleep(SleepConfig{Delay: 2 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			// aBusy is closed when "a" starts a task of the second phase.
			aBusy := make(chan struct{})
			var once sync.Once
			runs := map[string]*running{}
			for _, name := range []string{"a", "b"} {
				h := HandlerFunc(func(ctx context.Context, tk schemas.Task) ([]byte, error) {
					if name == "a" && strings.HasPrefix(string(tk.CorrelationID), "p2-") {
						once.Do(func() { close(aBusy) })
					}
					return sleep.Handle(ctx, tk)
				})
				cfg := e.config(name)
				cfg.Guarantee = g
				cfg.Concurrency = m.concurrency
				cfg.DrainTimeout = 100 * time.Millisecond
				runs[name] = start(t, cfg, h)
			}
			waitGroupShared(t, e, e.config("a").groupName(), 2)

			var all []schemas.Task
			phase := func(name string, n int) {
				var tasks []schemas.Task
				for i := range n {
					tasks = append(tasks, task(fmt.Sprintf("%s-%03d", name, i), scatterer.ShardID(i%4), "x"))
				}
				e.produce(t, func(i int) int32 { return int32(i % 4) }, encodeTasks(t, tasks...)...)
				all = append(all, tasks...)
			}
			rd := e.reader(t, e.topics.Results())
			answered := func(prefix string, n int) func([]*kgo.Record) bool {
				return func(rs []*kgo.Record) bool {
					c := 0
					for id := range byID(results(t, rs)) {
						if strings.HasPrefix(string(id), prefix) {
							c++
						}
					}
					return c == n
				}
			}

			// Phase 1: each instance answers the tasks of its partitions.
			phase("p1", 40)
			rd.until(t, "phase 1 answered", answered("p1-", 40))
			// Phase 2: "a" stops while its handler is running.
			phase("p2", 400)
			select {
			case <-aBusy:
			case <-time.After(waitFor):
				t.Fatal("a got no task of phase 2")
			}
			if err := runs["a"].stop(); err != nil {
				t.Fatalf("stop a: %v", err)
			}
			// Phase 3: only "b" is left to answer, on every partition.
			phase("p3", 40)
			rd.until(t, "every task answered", func(rs []*kgo.Record) bool { return len(byID(results(t, rs))) == len(all) })
			if err := runs["b"].stop(); err != nil {
				t.Fatalf("stop b: %v", err)
			}

			got := byID(results(t, rd.drain(t, e.layout.ResultPartitions)))
			dups := 0
			answeredBy := map[string]map[string]bool{} // phase -> processor ids
			bParts := map[schemas.PartID]bool{}        // parts b answered in phase 3
			for _, tk := range all {
				rs := got[tk.CorrelationID]
				if len(rs) == 0 {
					t.Fatalf("task %s lost", tk.CorrelationID)
				}
				dups += len(rs) - 1
				ph := string(tk.CorrelationID[:2])
				for _, r := range rs {
					if r.Status != schemas.ResultOK {
						t.Fatalf("task %s answered %s: %s", tk.CorrelationID, r.Status, r.Error)
					}
					if answeredBy[ph] == nil {
						answeredBy[ph] = map[string]bool{}
					}
					answeredBy[ph][r.ProcessorID] = true
					if ph == "p3" && r.ProcessorID == "b" {
						bParts[r.PartID] = true
					}
				}
			}
			sa, sb := runs["a"].p.Stats(), runs["b"].p.Stats()
			t.Logf("%d tasks, %d duplicate results; answered by %v; a: %+v; b: %+v", len(all), dups, answeredBy, sa, sb)
			if !answeredBy["p1"]["a"] || !answeredBy["p1"]["b"] {
				t.Fatalf("phase 1 answered by %v, want both", answeredBy["p1"])
			}
			if answeredBy["p3"]["a"] || len(bParts) != 4 {
				t.Fatalf("phase 3 answered by %v, b on parts %v; want b alone on all 4", answeredBy["p3"], slices.Sorted(maps.Keys(bParts)))
			}
			if g == kafkaconfig.ExactlyOnce && dups > 0 {
				t.Fatalf("%d duplicate results under exactly-once", dups)
			}
			if g == kafkaconfig.ExactlyOnce && sa.OK+sb.OK != uint64(len(all)) {
				t.Fatalf("committed OK counts %d + %d, want %d", sa.OK, sb.OK, len(all))
			}
		})
	}
}

func (c Config) groupName() string { return c.setDefaults().Group }

// waitGroupShared waits until the group has members stable members that
// each own partitions.
func waitGroupShared(t *testing.T, e *env, group string, members int) {
	t.Helper()
	adm := e.c.Admin(t)
	eventually(t, fmt.Sprintf("group %s shared by %d members", group, members), func() bool {
		gs, err := adm.DescribeGroups(t.Context(), group)
		if err != nil {
			return false
		}
		g := gs[group]
		if g.Err != nil || g.State != "Stable" || len(g.Members) != members {
			return false
		}
		for _, m := range g.Members {
			a, ok := m.Assigned.AsConsumer()
			if !ok || len(a.Topics) == 0 || len(a.Topics[0].Partitions) == 0 {
				return false
			}
		}
		return true
	})
}

func TestProcessorShutdown(t *testing.T) {
	for _, m := range modes {
		t.Run(modeName(m.g, m.concurrency)+"/drains the tasks in flight", func(t *testing.T) {
			e := newEnv(t, 1)
			started := make(chan struct{}, 1)
			h := HandlerFunc(func(ctx context.Context, tk schemas.Task) ([]byte, error) {
				started <- struct{}{}
				select {
				case <-time.After(300 * time.Millisecond):
					return []byte("done"), nil
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			})
			cfg := e.config("proc-1")
			cfg.Guarantee = m.g
			cfg.Concurrency = m.concurrency
			run := start(t, cfg, h)
			e.produce(t, onPartition(0), encodeTasks(t, task("req-1", "shard-0", "x"))...)
			<-started
			if err := run.stop(); err != nil {
				t.Fatalf("run: %v", err)
			}
			rs := results(t, e.reader(t, e.topics.Results()).drain(t, e.layout.ResultPartitions))
			if len(rs) != 1 || rs[0].Status != schemas.ResultOK || string(rs[0].Payload) != "done" {
				t.Fatalf("results after a drained shutdown: %+v", rs)
			}
		})
	}
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		for _, tc := range []struct {
			name string
			// late: the handler ignores the cancellation and answers OK
			// after the drain timeout; else it returns ctx.Err().
			late  bool
			tasks int
		}{
			{"handler cut off", false, 2},
			{"late answer, more tasks", true, 2},
			{"late answer to the last task", true, 1},
		} {
			t.Run(string(g)+"/aborts past the drain timeout/"+tc.name, func(t *testing.T) {
				e := newEnv(t, 1)
				started := make(chan struct{}, 1)
				var calls atomic.Int32
				blocking := HandlerFunc(func(ctx context.Context, tk schemas.Task) ([]byte, error) {
					calls.Add(1)
					select {
					case started <- struct{}{}:
					default:
					}
					<-ctx.Done()
					if tc.late {
						return []byte("too late"), nil
					}
					return nil, ctx.Err()
				})
				cfg := e.config("first")
				cfg.Guarantee = g
				cfg.DrainTimeout = 100 * time.Millisecond
				cfg.Retries = new(0) // no backoff wait to notice the shutdown for the handler
				first := start(t, cfg, blocking)
				var tasks []schemas.Task
				for i := range tc.tasks {
					tasks = append(tasks, task(fmt.Sprintf("req-%d", i), "shard-0", "x"))
				}
				e.produce(t, onPartition(0), encodeTasks(t, tasks...)...)
				<-started
				if err := first.stop(); err != nil {
					t.Fatalf("first run: %v", err)
				}
				// The batch is cut off at its first task: any answer is
				// thrown away with the batch, and no further task is
				// started with a dead context.
				if n := calls.Load(); n != 1 {
					t.Fatalf("blocking handler called %d times, want 1", n)
				}
				if s := first.p.Stats(); s.Processed() != 0 || s.AbortedBatches == 0 {
					t.Fatalf("first instance stats %+v, want no result and an aborted batch", s)
				}

				cfg.InstanceID = "second"
				second := start(t, cfg, Echo())
				rd := e.reader(t, e.topics.Results())
				waitResults(t, rd, tc.tasks)
				if err := second.stop(); err != nil {
					t.Fatalf("second run: %v", err)
				}
				rs := results(t, rd.drain(t, e.layout.ResultPartitions))
				if len(rs) != tc.tasks {
					t.Fatalf("%d results, want %d: %+v", len(rs), tc.tasks, rs)
				}
				for _, r := range rs {
					if r.Status != schemas.ResultOK || r.ProcessorID != "second" {
						t.Fatalf("result %+v; want OK from the second instance", r)
					}
				}
			})
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		return Config{Role: kafkaconfig.Role{Client: kafkaconfig.Client{Brokers: []string{"localhost:9092"}}}, Route: "search"}
	}
	t.Run("defaults", func(t *testing.T) {
		given := good()
		if err := given.Validate(); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(given, good()) {
			t.Fatalf("Validate changed the config: %+v", given)
		}
		c := given.setDefaults()
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if c.Topics.Prefix != "sg." || c.Group != "sg.processor.search" || c.InstanceID == "" ||
			c.Guarantee != kafkaconfig.ExactlyOnce || *c.Retries != 3 || c.Backoff != 100*time.Millisecond ||
			c.MaxBackoff != 2*time.Second || c.DrainTimeout != 10*time.Second {
			t.Fatalf("defaults: %+v", c)
		}
		if hc := c.hopConfig(); hc.TransactionalID != c.Group+"-"+c.InstanceID || hc.Topics[0] != "sg.tasks.search" {
			t.Fatalf("hop config: %+v", hc)
		}
	})
	t.Run("broadcast group", func(t *testing.T) {
		c := good()
		c.Topics.Prefix = "x."
		c.Recipient = "alpha"
		c.Retries = new(0)
		if c = c.setDefaults(); c.Validate() != nil || c.Group != "x.processor.search.alpha" || *c.Retries != 0 {
			t.Fatalf("%v, %+v", c.Validate(), c)
		}
	})
	t.Run("every problem at once", func(t *testing.T) {
		c := Config{Role: kafkaconfig.Role{Guarantee: "maybe-once"}, Route: "bad route", Retries: new(-1), Backoff: -1, MaxBackoff: -1, DrainTimeout: -1}
		err := c.Validate()
		if err == nil {
			t.Fatal("accepted")
		}
		for _, want := range []string{"brokers", "route", "guarantee", "retries: -1", "backoff: -1ns", "max backoff: -1ns", "drain timeout"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q:\n%v", want, err)
			}
		}
	})
	t.Run("max backoff below backoff", func(t *testing.T) {
		c := good()
		c.Backoff, c.MaxBackoff = time.Second, time.Millisecond
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "max backoff: 1ms is below backoff 1s") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("New leaves the caller's config alone", func(t *testing.T) {
		given := good()
		p, err := New(given, Echo())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(given, good()) {
			t.Fatalf("New changed the config: %+v", given)
		}
		if p.cfg.Group != "sg.processor.search" {
			t.Fatalf("the processor's own config has group %q", p.cfg.Group)
		}
		done, cancel := context.WithCancel(t.Context())
		cancel()
		if err := p.Run(done); err != nil {
			t.Fatalf("first Run: %v", err)
		}
		if err := p.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "Run called twice") {
			t.Fatalf("second Run: %v, want an error", err)
		}
	})
	t.Run("nil handler", func(t *testing.T) {
		if _, err := New(good(), nil); err == nil || !strings.Contains(err.Error(), "handler: nil") {
			t.Fatalf("err %v", err)
		}
	})
}
