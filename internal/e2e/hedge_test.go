package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
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
