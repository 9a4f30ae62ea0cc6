package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

// scripted returns a handler that answers each part as the request's
// payload says: a JSON object from part id to "ok" (answer {"part":id}),
// "error" (a permanent failure) or "hang" (no answer until release is
// closed, whatever the deadline: the part stays without a result).
func scripted(release <-chan struct{}) processor.Handler {
	return processor.HandlerFunc(func(ctx context.Context, t schemas.Task) ([]byte, error) {
		var script map[string]string
		if err := json.Unmarshal(t.Payload, &script); err != nil {
			return nil, processor.Permanent(err)
		}
		switch script[string(t.PartID)] {
		case "ok":
			return json.Marshal(map[string]string{"part": string(t.PartID)})
		case "error":
			return nil, processor.Permanent(errors.New("scripted failure of " + string(t.PartID)))
		case "hang":
			<-release
			return []byte(`"too late"`), nil
		}
		return nil, processor.Permanent(fmt.Errorf("no script for part %s", t.PartID))
	})
}

// policyPipeline runs the routes of the policy tests. Processors pipeline
// (concurrency 4, any order) so that a hanging part holds back no other.
func policyPipeline(t *testing.T) *pipeline {
	t.Helper()
	c := testkafka.New(t)
	release := make(chan struct{})
	h := scripted(release)
	tune := func(cfg *processor.Config) {
		cfg.Concurrency, cfg.Ordering = 4, processor.OrderNone
		cfg.DrainTimeout = time.Second
	}
	p := startPipeline(t, c, stack.Config{
		Routes: table(t, `{"routes":[
			{"name":"all","mode":"split","fanout":3,"timeout":"5s"},
			{"name":"quorum","mode":"split","fanout":4,"timeout":"20s","policy":"quorum:2"},
			{"name":"first","mode":"broadcast","recipients":["a","b","c"],"timeout":"20s","policy":"first"},
			{"name":"deadline","mode":"split","fanout":3,"timeout":"5s","policy":"deadline"}
		]}`),
		Processors: []stack.ProcessorSpec{
			{Route: "all", Handler: h, Tune: tune},
			{Route: "quorum", Handler: h, Tune: tune},
			{Route: "first", Recipient: "a", Handler: h, Tune: tune},
			{Route: "first", Recipient: "b", Handler: h, Tune: tune},
			{Route: "first", Recipient: "c", Handler: h, Tune: tune},
			{Route: "deadline", Handler: h, Tune: tune},
		},
	})
	// Registered after the pipeline's cleanup, so it runs first: hanging
	// handlers answer (late) and the processors can drain.
	t.Cleanup(func() { close(release) })
	return p
}

// partWant is what a reply must say of one part.
type partWant struct {
	id      schemas.PartID
	status  schemas.PartStatus
	attempt int // checked when not 0
}

func checkReply(t *testing.T, r schemas.Reply, status schemas.ReplyStatus, parts []partWant, okParts []string, errorHas string) {
	t.Helper()
	if r.Status != status {
		t.Errorf("status %s, want %s (error %q)", r.Status, status, r.Error)
	}
	if len(r.Parts) != len(parts) {
		t.Fatalf("%d part markers, want %d: %+v", len(r.Parts), len(parts), r.Parts)
	}
	for i, w := range parts {
		got := r.Parts[i]
		if got.PartID != w.id || got.Status != w.status || (w.attempt != 0 && got.Attempt != w.attempt) {
			t.Errorf("part %d: %s %s attempt %d, want %s %s attempt %d", i, got.PartID, got.Status, got.Attempt, w.id, w.status, w.attempt)
		}
		switch got.Status {
		case schemas.PartOK, schemas.PartError:
			if got.ProcessorID == "" || got.Latency <= 0 {
				t.Errorf("part %s: processor %q, latency %s; want both set", got.PartID, got.ProcessorID, got.Latency)
			}
		case schemas.PartSkipped, schemas.PartMissing:
			if got.ProcessorID != "" || got.Latency != 0 || got.Error != "" {
				t.Errorf("part %s %s carries a result: %+v", got.PartID, got.Status, got)
			}
		}
	}
	// The default merge (collect) is a JSON array of the OK parts in part
	// order.
	var merged []map[string]string
	if len(okParts) > 0 {
		if err := json.Unmarshal(r.Payload, &merged); err != nil {
			t.Fatalf("payload %q: %v", r.Payload, err)
		}
	}
	var gotParts []string
	for _, m := range merged {
		gotParts = append(gotParts, m["part"])
	}
	if strings.Join(gotParts, ",") != strings.Join(okParts, ",") {
		t.Errorf("merged payload has parts %v, want %v", gotParts, okParts)
	}
	if errorHas == "" && r.Error != "" {
		t.Errorf("error %q, want none", r.Error)
	}
	if errorHas != "" && !strings.Contains(r.Error, errorHas) {
		t.Errorf("error %q, want it to contain %q", r.Error, errorHas)
	}
}

func elapsed(r schemas.Reply) time.Duration { return r.CompletedAt.Sub(r.SubmittedAt) }

// TestCompletionPolicies sends requests through the whole pipeline on a
// route of each completion policy and checks each reply's status, part
// markers, merged payload, error summary and when it was completed.
func TestCompletionPolicies(t *testing.T) {
	p := policyPipeline(t)
	do := func(t *testing.T, route schemas.Route, script string, opts client.Options) schemas.Reply {
		t.Helper()
		r, err := p.client.Do(t.Context(), route, []byte(script), opts)
		if err != nil {
			t.Fatalf("%s: %v", route, err)
		}
		return r
	}
	const s0, s1, s2, s3 = schemas.PartID("shard-0"), schemas.PartID("shard-1"), schemas.PartID("shard-2"), schemas.PartID("shard-3")
	ok, er, sk, mi := schemas.PartOK, schemas.PartError, schemas.PartSkipped, schemas.PartMissing

	t.Run("all/every part answers", func(t *testing.T) {
		r := do(t, "all", `{"shard-0":"ok","shard-1":"error","shard-2":"ok"}`, client.Options{})
		checkReply(t, r, schemas.ReplyPartial, []partWant{{s0, ok, 1}, {s1, er, 1}, {s2, ok, 1}},
			[]string{"shard-0", "shard-2"}, "1 of 3 parts not OK: shard-1 ERROR (scripted failure of shard-1)")
		if elapsed(r) >= 5*time.Second {
			t.Errorf("completed after %s: every part had answered long before the deadline", elapsed(r))
		}
	})
	t.Run("all/a part hangs", func(t *testing.T) {
		r := do(t, "all", `{"shard-0":"ok","shard-1":"hang","shard-2":"ok"}`, client.Options{Timeout: 2 * time.Second})
		checkReply(t, r, schemas.ReplyPartial, []partWant{{s0, ok, 1}, {s1, mi, 0}, {s2, ok, 1}},
			[]string{"shard-0", "shard-2"}, "1 of 3 parts not OK: shard-1 MISSING")
		if elapsed(r) < 2*time.Second {
			t.Errorf("completed after %s, before the 2s deadline", elapsed(r))
		}
	})
	t.Run("quorum:2/met early", func(t *testing.T) {
		r := do(t, "quorum", `{"shard-0":"ok","shard-1":"ok","shard-2":"hang","shard-3":"hang"}`, client.Options{})
		checkReply(t, r, schemas.ReplyComplete, []partWant{{s0, ok, 1}, {s1, ok, 1}, {s2, sk, 0}, {s3, sk, 0}},
			[]string{"shard-0", "shard-1"}, "")
		if elapsed(r) > 10*time.Second {
			t.Errorf("completed after %s: the quorum was met long before the 20s deadline", elapsed(r))
		}
	})
	t.Run("quorum:2/not met", func(t *testing.T) {
		r := do(t, "quorum", `{"shard-0":"ok","shard-1":"error","shard-2":"error","shard-3":"hang"}`, client.Options{Timeout: 2 * time.Second})
		checkReply(t, r, schemas.ReplyPartial, []partWant{{s0, ok, 1}, {s1, er, 1}, {s2, er, 1}, {s3, mi, 0}},
			[]string{"shard-0"}, "3 of 4 parts not OK")
	})
	t.Run("quorum:2/every part answers", func(t *testing.T) {
		// The quorum cannot be met, but every part has a result: no
		// reason to wait for the deadline.
		r := do(t, "quorum", `{"shard-0":"ok","shard-1":"error","shard-2":"error","shard-3":"error"}`, client.Options{})
		checkReply(t, r, schemas.ReplyPartial, []partWant{{s0, ok, 1}, {s1, er, 1}, {s2, er, 1}, {s3, er, 1}},
			[]string{"shard-0"}, "3 of 4 parts not OK")
		if elapsed(r) > 10*time.Second {
			t.Errorf("completed after %s, want before the deadline", elapsed(r))
		}
	})
	t.Run("first/one provider answers", func(t *testing.T) {
		r := do(t, "first", `{"a":"hang","b":"ok","c":"hang"}`, client.Options{})
		checkReply(t, r, schemas.ReplyComplete, []partWant{{"a", sk, 0}, {"b", ok, 1}, {"c", sk, 0}}, []string{"b"}, "")
		if elapsed(r) > 10*time.Second {
			t.Errorf("completed after %s: the first answer came long before the 20s deadline", elapsed(r))
		}
	})
	t.Run("first/every provider fails", func(t *testing.T) {
		r := do(t, "first", `{"a":"error","b":"error","c":"error"}`, client.Options{})
		checkReply(t, r, schemas.ReplyFailed, []partWant{{"a", er, 1}, {"b", er, 1}, {"c", er, 1}}, nil, "3 of 3 parts not OK")
		if elapsed(r) > 10*time.Second {
			t.Errorf("completed after %s, want before the deadline", elapsed(r))
		}
	})
	t.Run("deadline/every part OK completes early", func(t *testing.T) {
		r := do(t, "deadline", `{"shard-0":"ok","shard-1":"ok","shard-2":"ok"}`, client.Options{Timeout: 3 * time.Second})
		checkReply(t, r, schemas.ReplyComplete, []partWant{{s0, ok, 1}, {s1, ok, 1}, {s2, ok, 1}},
			[]string{"shard-0", "shard-1", "shard-2"}, "")
		if elapsed(r) >= 3*time.Second {
			t.Errorf("completed after %s: with every part OK there is nothing to wait for", elapsed(r))
		}
	})
	t.Run("deadline/waits for the deadline after a failure", func(t *testing.T) {
		r := do(t, "deadline", `{"shard-0":"ok","shard-1":"error","shard-2":"ok"}`, client.Options{Timeout: 3 * time.Second})
		checkReply(t, r, schemas.ReplyPartial, []partWant{{s0, ok, 1}, {s1, er, 1}, {s2, ok, 1}},
			[]string{"shard-0", "shard-2"}, "1 of 3 parts not OK: shard-1 ERROR")
		if elapsed(r) < 3*time.Second {
			t.Errorf("completed after %s, before the 3s deadline", elapsed(r))
		}
	})
	t.Run("deadline/a later attempt replaces a failure", func(t *testing.T) {
		// A second attempt at shard-1 (a hedge, or a retry from outside)
		// answers OK after the first failed: under the deadline policy the
		// reply takes it, counted once.
		agg := p.stack.Aggregators[0]
		before := agg.Stats()
		const id = "deadline-retried"
		pend, err := p.client.Submit(t.Context(), "deadline", []byte(`{"shard-0":"ok","shard-1":"error","shard-2":"ok"}`),
			client.Options{CorrelationID: id, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		// Wait for the three first attempts to be recorded, then send the
		// second attempt.
		waitFor(t, func() bool { return agg.Stats().ResultsReceived >= before.ResultsReceived+3 })
		if got := agg.Stats().ResultsReceived - before.ResultsReceived; got != 3 {
			t.Fatalf("%d results received, want 3", got)
		}
		now := time.Now()
		v, err := schemas.EncodeResult(schemas.Result{CorrelationID: id, PartID: s1, Route: "deadline", Status: schemas.ResultOK,
			Payload: []byte(`{"part":"shard-1"}`), ProcessorID: "outside", Attempt: 2, Tries: 1, StartedAt: now, FinishedAt: now,
			Deadline: now.Add(5 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		cl := p.cluster.Client(t)
		if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: p.topics.Results(), Key: []byte(id), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		r, err := pend.Await(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		checkReply(t, r, schemas.ReplyComplete, []partWant{{s0, ok, 1}, {s1, ok, 2}, {s2, ok, 1}},
			[]string{"shard-0", "shard-1", "shard-2"}, "")
		if got, _ := r.Part(s1); got.ProcessorID != "outside" {
			t.Errorf("shard-1 answered by %q, want the second attempt's processor", got.ProcessorID)
		}
		if elapsed(r) >= 5*time.Second {
			t.Errorf("completed after %s: once every part was OK there was nothing to wait for", elapsed(r))
		}
		waitFor(t, func() bool { return agg.Stats().Duplicates > before.Duplicates })
		if d := agg.Stats().Duplicates - before.Duplicates; d != 1 {
			t.Errorf("%d duplicates counted, want 1 (the OK that replaced the error)", d)
		}
	})
	// Every request got exactly one reply, whatever its policy.
	for id, rs := range p.replies(t, 1, time.Second) {
		if len(rs) != 1 {
			t.Errorf("request %s has %d replies", id, len(rs))
		}
	}
}
