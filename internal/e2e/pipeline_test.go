package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/catalog"
	"github.com/scattergather/scattergather/internal/demo"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

// searchQueries returns n queries built from the catalogue's vocabulary, so
// most of them hit something in several shards.
func searchQueries(n int) []string {
	colours := []string{"red", "blue", "black", "green", "white", "yellow", "silver", "brown"}
	things := []string{"shoes", "shirt", "lamp", "bottle", "hat", "boots", "backpack", "watch", "jacket", "table", "wallet", "socks"}
	materials := []string{"leather", "cotton", "wool", "steel", "wooden", "canvas", ""}
	out := make([]string, n)
	for i := range out {
		q := []string{colours[i%len(colours)], things[(i/len(colours))%len(things)]}
		if m := materials[i%len(materials)]; m != "" {
			q = append([]string{m}, q...)
		}
		out[i] = strings.Join(q, " ")
	}
	return out
}

// TestSplitThousandRequests: the seed's example at volume. 1,000 searches,
// each split across 8 shards, every merged top-k checked against a direct
// search of the whole catalogue.
func TestSplitThousandRequests(t *testing.T) {
	c := testkafka.New(t)
	cat := catalog.New(5000, 7)
	p := startPipeline(t, c, stack.Config{
		Routes: table(t, `{"routes":[{"name":"search","mode":"split","fanout":8,"timeout":"20s",
			"merge":{"kind":"topk","field":"score","k":10,"tiebreak":"id"}}]}`),
		Processors: []stack.ProcessorSpec{{Route: "search", Handler: demo.Search(cat), Instances: 2}},
	})
	const n = 1000
	queries := searchQueries(n)
	pending := make([]*client.Pending, n)
	for i, q := range queries {
		payload, _ := json.Marshal(map[string]any{"query": q, "k": 10})
		pp, err := p.client.Submit(t.Context(), "search", payload, client.Options{Timeout: 20 * time.Second})
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		pending[i] = pp
	}
	var hitsSeen int
	for i, pp := range pending {
		reply, err := pp.Await(t.Context())
		if err != nil {
			t.Fatalf("request %d (%q): %v", i, queries[i], err)
		}
		if reply.Status != schemas.ReplyComplete || len(reply.Parts) != 8 {
			t.Fatalf("request %d: status %s with %d parts, want COMPLETE with 8: %s", i, reply.Status, len(reply.Parts), reply.Error)
		}
		var got []catalog.Hit
		if err := json.Unmarshal(reply.Payload, &got); err != nil {
			t.Fatalf("request %d: payload: %v", i, err)
		}
		want := cat.Search(queries[i], 10, 0, 1)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("request %d (%q): merged hits differ from a direct search\n got %v\nwant %v", i, queries[i], got, want)
		}
		hitsSeen += len(got)
	}
	if hitsSeen == 0 {
		t.Fatal("no query matched anything: the comparison proved nothing")
	}
	all := p.replies(t, n, time.Second)
	if len(all) != n {
		t.Fatalf("%d distinct replies on the topic, want %d", len(all), n)
	}
	for id, rs := range all {
		if len(rs) != 1 {
			t.Fatalf("request %s has %d replies, want exactly 1", id, len(rs))
		}
	}
}

// TestPartialAtDeadline: a recipient that never answers is named MISSING in
// a PARTIAL reply emitted at the deadline, although no record arrives then.
func TestPartialAtDeadline(t *testing.T) {
	c := testkafka.New(t)
	p := startPipeline(t, c, stack.Config{
		Routes: table(t, `{"routes":[{"name":"quotes","mode":"broadcast","recipients":["a","b","c"],"timeout":"1s"}]}`),
		Processors: []stack.ProcessorSpec{
			{Route: "quotes", Recipient: "a", Handler: processor.Echo()},
			{Route: "quotes", Recipient: "b", Handler: processor.Echo()},
			// c has no processor at all.
		},
	})
	const timeout = 1500 * time.Millisecond
	// The tolerance for emitting at the deadline: the aggregator checks
	// deadlines every 50ms, then commits a transaction.
	const tolerance = 750 * time.Millisecond
	for i := range 3 {
		reply, err := p.client.Do(t.Context(), "quotes", []byte(fmt.Sprintf(`{"n":%d}`, i)), client.Options{Timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		if reply.Status != schemas.ReplyPartial {
			t.Fatalf("status %s, want PARTIAL", reply.Status)
		}
		want := map[schemas.PartID]schemas.PartStatus{"a": schemas.PartOK, "b": schemas.PartOK, "c": schemas.PartMissing}
		if len(reply.Parts) != len(want) {
			t.Fatalf("%d parts, want %d", len(reply.Parts), len(want))
		}
		for _, po := range reply.Parts {
			if want[po.PartID] != po.Status {
				t.Errorf("part %s: %s, want %s", po.PartID, po.Status, want[po.PartID])
			}
		}
		deadline := reply.SubmittedAt.Add(timeout)
		late := reply.CompletedAt.Sub(deadline)
		if late < 0 || late > tolerance {
			t.Errorf("reply completed %s after the deadline, want within [0, %s]", late, tolerance)
		}
		if !strings.Contains(reply.Error, "c") {
			t.Errorf("reply error %q does not name the missing part", reply.Error)
		}
	}
}

// TestFailingHandlerMarksError: a handler that keeps failing is retried the
// configured number of times, then its part is reported ERROR with the error.
func TestFailingHandlerMarksError(t *testing.T) {
	c := testkafka.New(t)
	var mu sync.Mutex
	tries := map[schemas.CorrelationID]int{}
	flaky := processor.HandlerFunc(func(ctx context.Context, task schemas.Task) ([]byte, error) {
		if task.PartID == "shard-2" {
			mu.Lock()
			tries[task.CorrelationID]++
			mu.Unlock()
			return nil, errors.New("index shard-2 is corrupt")
		}
		return []byte(`"ok"`), nil
	})
	retries := 2
	p := startPipeline(t, c, stack.Config{
		Routes: table(t, `{"routes":[{"name":"flaky","mode":"split","fanout":4,"timeout":"10s"}]}`),
		Processors: []stack.ProcessorSpec{{Route: "flaky", Handler: flaky, Tune: func(pc *processor.Config) {
			pc.Retries = &retries
			pc.Backoff = 10 * time.Millisecond
		}}},
	})
	reply, err := p.client.Do(t.Context(), "flaky", []byte(`{}`), client.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if reply.Status != schemas.ReplyPartial {
		t.Fatalf("status %s, want PARTIAL", reply.Status)
	}
	for _, po := range reply.Parts {
		want := schemas.PartOK
		if po.PartID == "shard-2" {
			want = schemas.PartError
			if !strings.Contains(po.Error, "index shard-2 is corrupt") {
				t.Errorf("shard-2 error %q does not carry the handler's error", po.Error)
			}
		}
		if po.Status != want {
			t.Errorf("part %s: %s, want %s", po.PartID, po.Status, want)
		}
	}
	mu.Lock()
	got := tries[reply.CorrelationID]
	mu.Unlock()
	if got != retries+1 {
		t.Errorf("shard-2 handled %d times, want %d (1 try + %d retries)", got, retries+1, retries)
	}
}

// TestExpiredTaskMarkedExpired: a task whose handler runs past the deadline
// is answered EXPIRED, and the reply says EXPIRED for it, not MISSING, when
// the result reaches the aggregator together with the manifest.
func TestExpiredTaskMarkedExpired(t *testing.T) {
	c := testkafka.New(t)
	slow := processor.HandlerFunc(func(ctx context.Context, task schemas.Task) ([]byte, error) {
		if task.PartID == "shard-1" {
			<-ctx.Done() // runs into the task's deadline
			return nil, ctx.Err()
		}
		return []byte(`"ok"`), nil
	})
	p := startPipeline(t, c, stack.Config{
		Routes: table(t, `{"routes":[{"name":"slow","mode":"split","fanout":3,"timeout":"10s"}]}`),
		// Pipelined, so that the slow task holds back no other: with
		// Concurrency 1 a polled batch is as slow as its slowest task, and
		// a fast part fetched in the next poll would expire behind it.
		Processors: []stack.ProcessorSpec{{Route: "slow", Handler: slow, Tune: func(pc *processor.Config) {
			pc.Concurrency = 4
		}}},
		Aggregators: -1, // started below, once the results are in
	})
	// 2s: long enough that the fast parts are handled in time on a loaded
	// 2-core box (a task past its deadline is answered EXPIRED unhandled).
	pp, err := p.client.Submit(t.Context(), "slow", []byte(`{}`), client.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Manifest + 3 results.
	recs := readAll(t, c, p.topics.Results(), 4, 20*time.Second)
	if len(recs) < 4 {
		t.Fatalf("%d records on results, want the manifest and 3 results", len(recs))
	}
	var expired int
	for _, r := range recs {
		if k, _ := schemas.KindOf(r.Value); k == schemas.KindResult {
			res, _ := schemas.DecodeResult(r.Value)
			if res.Status == schemas.ResultExpired {
				expired++
			}
		}
	}
	if expired != 1 {
		t.Fatalf("%d EXPIRED results, want 1", expired)
	}
	a, err := aggregator.New(aggregator.Config{Role: kafkaconfig.Role{Client: p.cc, Topics: p.topics, InstanceID: "late", Logger: testLogger(t)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	reply, err := pp.Await(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if reply.Status != schemas.ReplyPartial {
		t.Fatalf("status %s, want PARTIAL", reply.Status)
	}
	if po, _ := reply.Part("shard-1"); po.Status != schemas.PartExpired {
		t.Errorf("shard-1: %s, want EXPIRED", po.Status)
	}
	for _, id := range []schemas.PartID{"shard-0", "shard-2"} {
		if po, _ := reply.Part(id); po.Status != schemas.PartOK {
			t.Errorf("%s: %s, want OK", id, po.Status)
		}
	}
}

// TestBroadcastThreeGroups: the same task to three different processor
// groups (publish-subscribe); one reply with three parts.
func TestBroadcastThreeGroups(t *testing.T) {
	c := testkafka.New(t)
	answer := func(name string) processor.Handler {
		return processor.HandlerFunc(func(ctx context.Context, task schemas.Task) ([]byte, error) {
			return json.Marshal(map[string]any{"provider": name, "echo": json.RawMessage(task.Payload)})
		})
	}
	p := startPipeline(t, c, stack.Config{
		Routes: table(t, `{"routes":[{"name":"fanout","mode":"broadcast","recipients":["x","y","z"],"timeout":"10s"}]}`),
		Processors: []stack.ProcessorSpec{
			{Route: "fanout", Recipient: "x", Handler: answer("x")},
			{Route: "fanout", Recipient: "y", Handler: answer("y")},
			{Route: "fanout", Recipient: "z", Handler: answer("z")},
		},
	})
	reply, err := p.client.Do(t.Context(), "fanout", []byte(`{"q":1}`), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if reply.Status != schemas.ReplyComplete || len(reply.Parts) != 3 {
		t.Fatalf("status %s with %d parts, want COMPLETE with 3", reply.Status, len(reply.Parts))
	}
	var merged []struct {
		Provider string          `json:"provider"`
		Echo     json.RawMessage `json:"echo"`
	}
	if err := json.Unmarshal(reply.Payload, &merged); err != nil {
		t.Fatalf("merged payload %s: %v", reply.Payload, err)
	}
	var got []string
	for _, m := range merged {
		got = append(got, m.Provider+":"+string(m.Echo))
	}
	if want := `x:{"q":1} y:{"q":1} z:{"q":1}`; strings.Join(got, " ") != want {
		t.Fatalf("merged %q, want %q", strings.Join(got, " "), want)
	}
}

// TestProcessorFailover: two processors in one group share the task
// partitions; stopping one in the middle of the load loses no request.
func TestProcessorFailover(t *testing.T) {
	c := testkafka.New(t)
	p := startPipeline(t, c, stack.Config{
		Routes: table(t, `{"routes":[{"name":"work","mode":"split","fanout":8,"timeout":"60s"}]}`),
	})
	sleep, err := processor.Sleep(processor.SleepConfig{Delay: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var procs [2]*processor.Processor
	var stops [2]context.CancelFunc
	var dones [2]chan error
	for i := range procs {
		procs[i], err = processor.New(processor.Config{
			Role: kafkaconfig.Role{
				Client:     p.cc,
				Topics:     p.topics,
				InstanceID: fmt.Sprintf("p%d", i),
				Logger:     testLogger(t),
			},
			Route: "work",
		}, sleep)
		if err != nil {
			t.Fatal(err)
		}
		var ctx context.Context
		ctx, stops[i] = context.WithCancel(context.WithoutCancel(t.Context()))
		dones[i] = make(chan error, 1)
		go func() { dones[i] <- procs[i].Run(ctx) }()
		t.Cleanup(func() { stops[i](); <-dones[i] })
	}
	const n = 300
	var pending []*client.Pending
	submit := func(k int) {
		for range k {
			pp, err := p.client.Submit(t.Context(), "work", []byte(`"x"`), client.Options{Timeout: 60 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			pending = append(pending, pp)
		}
	}
	submit(n / 2)
	// Wait until both instances have done work, then stop one mid-load.
	deadline := time.Now().Add(30 * time.Second)
	for procs[0].Stats().Processed() == 0 || procs[1].Stats().Processed() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("both processors should get partitions: processed %d and %d", procs[0].Stats().Processed(), procs[1].Stats().Processed())
		}
		time.Sleep(20 * time.Millisecond)
	}
	submit(n / 2)
	stops[1]()
	if err := <-dones[1]; err != nil {
		t.Errorf("stopped processor: %v", err)
	}
	dones[1] <- nil // for the cleanup
	for i, pp := range pending {
		reply, err := pp.Await(t.Context())
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if reply.Status != schemas.ReplyComplete {
			t.Fatalf("request %d: %s (%s), want COMPLETE", i, reply.Status, reply.Error)
		}
	}
	all := p.replies(t, n, time.Second)
	if len(all) != n {
		t.Fatalf("%d distinct replies, want %d", len(all), n)
	}
	for id, rs := range all {
		if len(rs) != 1 {
			t.Fatalf("request %s: %d replies, want 1", id, len(rs))
		}
	}
	t.Logf("processed: p0=%d p1=%d", procs[0].Stats().Processed(), procs[1].Stats().Processed())
}

// TestDuplicateAndLateResults drives the aggregator with hand-written
// records: a duplicate part counts once, and results after completion are
// counted as late, never answered again.
func TestDuplicateAndLateResults(t *testing.T) {
	c := testkafka.New(t)
	p := startPipeline(t, c, stack.Config{
		Routes: table(t, `{"routes":[{"name":"dup","mode":"split","fanout":2,"timeout":"30s"}]}`),
	})
	agg := p.stack.Aggregators[0]
	prod := c.Client(t)
	now := time.Now()
	id := schemas.CorrelationID("dup-1")
	produce := func(v []byte) {
		t.Helper()
		if err := prod.ProduceSync(t.Context(), &kgo.Record{Topic: p.topics.Results(), Key: []byte(id), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	mf, _ := schemas.EncodeManifest(schemas.Manifest{CorrelationID: id, Route: "dup", Parts: []schemas.PartID{"p1", "p2"},
		Deadline: now.Add(30 * time.Second), Policy: "all", SubmittedAt: now})
	result := func(part schemas.PartID, payload string) []byte {
		b, _ := schemas.EncodeResult(schemas.Result{CorrelationID: id, PartID: part, Route: "dup", Status: schemas.ResultOK,
			Payload: []byte(payload), Attempt: 1, Tries: 1, StartedAt: now, FinishedAt: now, Deadline: now.Add(30 * time.Second)})
		return b
	}
	produce(mf)
	produce(result("p1", `"first"`))
	produce(result("p1", `"second"`)) // duplicate of p1
	produce(result("p2", `"other"`))
	got := p.replies(t, 1, 0)[id]
	if len(got) != 1 {
		t.Fatalf("%d replies, want 1", len(got))
	}
	if got[0].Status != schemas.ReplyComplete || string(got[0].Payload) != `["first","other"]` {
		t.Fatalf("reply %s %s, want COMPLETE [\"first\",\"other\"]", got[0].Status, got[0].Payload)
	}
	// Counters are published when the batch's transaction has ended, a
	// moment after the reply becomes visible.
	waitFor(t, func() bool { return agg.Stats().Duplicates >= 1 })
	if d := agg.Stats().Duplicates; d != 1 {
		t.Errorf("duplicates counted: %d, want 1", d)
	}
	produce(result("p2", `"late"`))
	produce(result("p1", `"later"`))
	waitFor(t, func() bool { return agg.Stats().Late >= 2 })
	if l := agg.Stats().Late; l != 2 {
		t.Errorf("late results counted: %d, want 2", l)
	}
	if rs := p.replies(t, 1, time.Second)[id]; len(rs) != 1 {
		t.Fatalf("%d replies after late results, want still 1", len(rs))
	}
}

// TestGuarantees runs a small split load under both guarantees.
func TestGuarantees(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			c := testkafka.New(t)
			p := startPipeline(t, c, stack.Config{
				Guarantee:  g,
				Routes:     table(t, `{"routes":[{"name":"echo","mode":"split","fanout":4,"timeout":"20s"}]}`),
				Processors: []stack.ProcessorSpec{{Route: "echo", Handler: processor.Echo(), Instances: 2}},
			})
			for i := range 50 {
				reply, err := p.client.Do(t.Context(), "echo", []byte(fmt.Sprint(i)), client.Options{})
				if err != nil {
					t.Fatal(err)
				}
				want := fmt.Sprintf("[%d,%d,%d,%d]", i, i, i, i)
				if reply.Status != schemas.ReplyComplete || string(reply.Payload) != want {
					t.Fatalf("request %d: %s %s, want COMPLETE %s", i, reply.Status, reply.Payload, want)
				}
			}
		})
	}
}
