package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestHedgedStraggler: on a hedged split route, one shard's first attempt
// hangs (a straggler). After the hedge delay the aggregator re-issues that
// part to another partition of tasks.<route>; the hedge answers and the
// reply is COMPLETE before the deadline, with the part marked as answered
// by attempt 2, counted once, and the reply's sg-hedged header naming it.
func TestHedgedStraggler(t *testing.T) {
	c := testkafka.New(t)
	release := make(chan struct{})
	h := processor.HandlerFunc(func(ctx context.Context, tk schemas.Task) ([]byte, error) {
		if tk.PartID == "shard-2" && tk.Attempt == 1 {
			<-release // the straggler: answers only at the end of the test
		}
		return json.Marshal(map[string]any{"part": tk.PartID, "attempt": tk.Attempt})
	})
	p := startPipeline(t, c, stack.Config{
		Routes: table(t, `{"routes":[{"name":"lookup","mode":"split","fanout":4,"timeout":"10s",
			"hedge_delay":"1s","hedge_budget":1}]}`),
		Processors: []stack.ProcessorSpec{{Route: "lookup", Handler: h, Tune: func(cfg *processor.Config) {
			cfg.Concurrency, cfg.Ordering = 4, processor.OrderNone
			cfg.DrainTimeout = time.Second
		}}},
	})
	t.Cleanup(func() { close(release) })

	const n = 3
	for i := range n {
		id := schemas.CorrelationID(fmt.Sprintf("hedged-%d", i))
		r, err := p.client.Do(t.Context(), "lookup", []byte(`{}`), client.Options{CorrelationID: id, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != schemas.ReplyComplete {
			t.Fatalf("%s: status %s (%s), want COMPLETE", id, r.Status, r.Error)
		}
		// The straggler's part is answered by its hedge; another part
		// slower than the delay (a loaded machine) may be too.
		for _, part := range r.Parts {
			if part.Status != schemas.PartOK || (part.PartID == "shard-2" && part.Attempt != 2) {
				t.Errorf("%s: part %s %s attempt %d, want OK (attempt 2 for shard-2)", id, part.PartID, part.Status, part.Attempt)
			}
		}
		if el := r.CompletedAt.Sub(r.SubmittedAt); el < time.Second || el > 8*time.Second {
			t.Errorf("%s: completed after %s, want after the 1s hedge delay and before the 10s deadline", id, el)
		}
	}
	agg := p.stack.Aggregators[0]
	waitFor(t, func() bool { return agg.Stats().HedgesWon >= n })
	if s := agg.Stats(); s.HedgesIssued < n || s.HedgesWon < n || s.HedgesDenied != 0 || s.RepliesComplete != n {
		t.Errorf("aggregator stats %+v, want at least %d hedges issued and won, %d complete replies", s, n, n)
	}

	// The reply names the hedged part.
	for _, rec := range readAll(t, c, p.topics.Replies(), n, 10*time.Second) {
		if got := kafka.Header(rec, aggregator.HeaderHedged); !slices.Contains(strings.Split(got, ","), "shard-2") {
			t.Errorf("reply %s: %s header %q, want it to name shard-2", rec.Key, aggregator.HeaderHedged, got)
		}
	}
	// The hedge went to another partition than the first attempt.
	type attemptAt struct {
		attempt   int
		partition int32
	}
	seen := map[schemas.CorrelationID][]attemptAt{}
	for _, rec := range readAll(t, c, p.topics.Tasks("lookup"), 5*n, 10*time.Second) {
		tk, err := schemas.DecodeTask(rec.Value)
		if err != nil {
			t.Fatal(err)
		}
		if tk.PartID == "shard-2" {
			if string(rec.Key) != "shard-2" {
				t.Errorf("task of shard-2 attempt %d keyed %q", tk.Attempt, rec.Key)
			}
			seen[tk.CorrelationID] = append(seen[tk.CorrelationID], attemptAt{tk.Attempt, rec.Partition})
		}
	}
	for id, as := range seen {
		if len(as) != 2 || as[0].attempt+as[1].attempt != 3 || as[0].partition == as[1].partition {
			t.Errorf("%s: shard-2 tasks %+v, want attempts 1 and 2 on different partitions", id, as)
		}
	}
	if len(seen) != n {
		t.Errorf("shard-2 tasks of %d requests, want %d", len(seen), n)
	}
}

// TestHedgesAvoidLostPartitions: the processor of two partitions of a
// hedged route's tasks topic is lost (it stops answering, as after a
// SIGKILL, and its group keeps its partitions until its session times
// out). Requests sent right after the loss still complete: their hedges
// go to a partition that answers, not to the lost processor's other one,
// though it answered less than a second before (the aggregator sees its
// tasks pending), and not by chance when no hedge was sent before the loss
// (the aggregator follows the partitions from the route's first hedge
// template on). The test plays the processor itself, a plain client that
// answers the tasks of the partitions it is told to.
func TestHedgesAvoidLostPartitions(t *testing.T) {
	for _, tc := range []struct {
		name string
		// hedgeBefore: a straggler before the loss, so a hedge was sent
		// and the partitions' results followed already.
		hedgeBefore bool
	}{{"no hedge before", false}, {"hedged before", true}} {
		t.Run(tc.name, func(t *testing.T) { testHedgesAvoidLostPartitions(t, tc.hedgeBefore) })
	}
}

func testHedgesAvoidLostPartitions(t *testing.T, hedgeBefore bool) {
	c := testkafka.New(t)
	const partitions, fanout = 4, 4
	p := startPipeline(t, c, stack.Config{
		Routes: table(t, `{"routes":[{"name":"lookup","mode":"split","fanout":4,"timeout":"3s",
			"hedge_delay":"300ms","hedge_budget":1}]}`),
		Layout: kafkaconfig.Layout{Partitions: partitions, ResultPartitions: partitions, ReplicationFactor: -1},
	})
	// Where the first attempts go: the tasks are keyed by part id.
	part := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	partOf := func(id schemas.PartID) int32 { return int32(part.Partition(&kgo.Record{Key: []byte(id)}, partitions)) }
	// The lost processor's partitions: two side by side, each with a
	// part on it, the first's next one being the second.
	var lost [partitions]bool
	for q := range int32(partitions) {
		var here, next bool
		for i := range fanout {
			here = here || partOf(scatterer.ShardID(i)) == q
			next = next || partOf(scatterer.ShardID(i)) == (q+1)%partitions
		}
		if here && next {
			lost[q], lost[(q+1)%partitions] = true, true
			break
		}
	}
	if lost == [partitions]bool{} {
		t.Fatalf("no two partitions side by side both get a part of fan-out %d", fanout)
	}
	var gone atomic.Bool // the processor of the lost partitions is gone
	straggle := "warm-0"
	if !hedgeBefore {
		straggle = ""
	}
	serve(t, c, p.topics, func(rec *kgo.Record, tk schemas.Task) (answer bool, after time.Duration) {
		if gone.Load() && lost[rec.Partition] {
			return false, 0
		}
		if string(tk.CorrelationID) == straggle && tk.Attempt == 1 && tk.PartID == scatterer.ShardID(0) {
			return true, time.Second // slower than the hedge delay
		}
		return true, 0
	})

	do := func(id string) *client.Pending {
		pp, err := p.client.Submit(t.Context(), "lookup", []byte(`{}`), client.Options{CorrelationID: schemas.CorrelationID(id), Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return pp
	}
	complete := func(pending []*client.Pending) {
		t.Helper()
		for _, pp := range pending {
			r, err := pp.Await(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != schemas.ReplyComplete {
				var missing []string
				for _, part := range r.Parts {
					if part.Status != schemas.PartOK {
						missing = append(missing, fmt.Sprintf("%s (partition %d) %s", part.PartID, partOf(part.PartID), part.Status))
					}
				}
				t.Errorf("%s: %s, parts %v; lost partitions %v", r.CorrelationID, r.Status, missing, lost)
			}
		}
	}
	for i := range 5 {
		complete([]*client.Pending{do(fmt.Sprintf("warm-%d", i))})
	}
	agg := p.stack.Aggregators[0]
	if hedged := agg.Stats().HedgesIssued; hedgeBefore != (hedged > 0) {
		t.Fatalf("%d hedges before the loss, want them only with the straggler", hedged)
	}
	// The loss, and at once 20 requests at 50/s: all sent within the
	// first second after it, their hedges due before the lost
	// partitions' last results are a second old.
	gone.Store(true)
	var pending []*client.Pending
	for i := range 20 {
		pending = append(pending, do(fmt.Sprintf("after-%d", i)))
		time.Sleep(20 * time.Millisecond)
	}
	complete(pending)
}

// serve answers the tasks of every partition of the lookup route's tasks
// topic with OK results, from the start, as a processor in another
// language would: answer says whether to answer a task, after how long.
func serve(t *testing.T, c *testkafka.Cluster, topics kafkaconfig.Topics, answer func(*kgo.Record, schemas.Task) (bool, time.Duration)) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.ConsumeTopics(topics.Tasks("lookup")),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(100*time.Millisecond), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	reply := func(tk schemas.Task) {
		v, err := schemas.EncodeResult(schemas.Result{CorrelationID: tk.CorrelationID, PartID: tk.PartID, Route: tk.Route,
			Status: schemas.ResultOK, Payload: []byte(`{}`), ProcessorID: "test", Attempt: tk.Attempt, Tries: 1,
			StartedAt: time.Now(), FinishedAt: time.Now(), Deadline: tk.Deadline})
		if err != nil {
			t.Error(err)
			return
		}
		cl.Produce(ctx, &kgo.Record{Topic: topics.Results(), Key: []byte(tk.CorrelationID), Value: v,
			Headers: []kgo.RecordHeader{{Key: processor.HeaderType, Value: []byte("result")}}}, func(_ *kgo.Record, err error) {
			if err != nil && ctx.Err() == nil {
				t.Errorf("result of %s/%s: %v", tk.CorrelationID, tk.PartID, err)
			}
		})
	}
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(rec *kgo.Record) {
				tk, err := schemas.DecodeTask(rec.Value)
				if err != nil {
					t.Errorf("task at %d/%d: %v", rec.Partition, rec.Offset, err)
					return
				}
				ok, after := answer(rec, tk)
				switch {
				case !ok:
				case after > 0:
					time.AfterFunc(after, func() { reply(tk) })
				default:
					reply(tk)
				}
			})
		}
	}()
}
