package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

// versioned is a handler that answers {"n": n, "v": version, "at": now},
// keys in the order given, for a task whose payload is {"n": n}.
func versioned(answer func(n int, t schemas.Task) (string, error)) processor.Handler {
	return processor.HandlerFunc(func(_ context.Context, t schemas.Task) ([]byte, error) {
		var in struct{ N int }
		if err := json.Unmarshal(t.Payload, &in); err != nil {
			return nil, processor.Permanent(err)
		}
		s, err := answer(in.N, t)
		if err != nil {
			return nil, err
		}
		return []byte(s), nil
	})
}

// TestCompareChangedHandler runs requests through a pipeline, replays them
// through a shadow pipeline whose handler changed for some of them, and
// checks that compare reports exactly those: a changed payload for every
// tenth request, a part failing (COMPLETE→PARTIAL) for every 25th; the
// rest the same once a timestamp field is ignored and key order is not
// held against the new version.
func TestCompareChangedHandler(t *testing.T) {
	c := testkafka.New(t)
	source := kafkaconfig.Topics{Prefix: c.Prefix}
	shadow := kafkaconfig.Topics{Prefix: c.Prefix + "shadow."}
	routes := `{"routes":[{"name":"echo","mode":"split","fanout":2,"timeout":"10s"}]}`
	v1 := versioned(func(n int, _ schemas.Task) (string, error) {
		return fmt.Sprintf(`{"n":%d,"v":1,"at":%d}`, n, time.Now().UnixNano()), nil
	})
	changed := func(n int) bool { return n%10 == 3 }
	failing := func(n int) bool { return n%25 == 7 }
	v2 := versioned(func(n int, t schemas.Task) (string, error) {
		switch {
		case failing(n) && t.PartID == "shard-1":
			return "", processor.Permanent(errors.New("v2 cannot answer this shard"))
		case changed(n):
			return fmt.Sprintf(`{"at":%d,"n":%d,"v":2}`, time.Now().UnixNano(), n), nil
		}
		return fmt.Sprintf(`{"at":%d, "v":1.0, "n":%d}`, time.Now().UnixNano(), n), nil
	})
	startStack(t, c, source, stack.Config{Routes: table(t, routes), Processors: []stack.ProcessorSpec{{Route: "echo", Handler: v1}}})
	shadowStack := startStack(t, c, shadow, stack.Config{Routes: table(t, routes), Processors: []stack.ProcessorSpec{{Route: "echo", Handler: v2}}})

	cl, err := client.New(t.Context(), client.Config{Client: clientConfig(c), Topics: source, DefaultTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	const n = 300
	idOf := map[schemas.CorrelationID]int{}
	var pending []*client.Pending
	for i := range n {
		p, err := cl.Submit(t.Context(), "echo", fmt.Appendf(nil, `{"n":%d}`, i), client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		idOf[p.ID] = i
		pending = append(pending, p)
	}
	for _, p := range pending {
		awaitComplete(t, p)
	}

	r := replayAll(t, c, source, shadow)
	agg := shadowStack.Aggregators[0]
	waitFor(30*time.Second, func() bool {
		s := agg.Stats()
		return s.RepliesComplete+s.RepliesPartial+s.RepliesFailed >= n
	})

	var wantChanged, wantStatus []int
	for i := range n {
		switch {
		case failing(i):
			wantStatus = append(wantStatus, i)
		case changed(i):
			wantChanged = append(wantChanged, i)
		}
	}
	for _, tc := range []struct {
		name        string
		cfg         CompareConfig
		wantChanged int
		exact       bool
	}{
		// Wait: the aggregator counts a reply once its transaction
		// committed, but Kafka writes the commit markers to the replies
		// partitions after EndTxn returns, and until then the replies are
		// past the last stable offset Compare reads up to (seen on Kafka
		// 4.4: 73-205 of 300 replies missing in 1 run of 8 without it).
		{"bytes", CompareConfig{Wait: 10 * time.Second}, n - len(wantStatus), false},
		{"json ignoring at", CompareConfig{JSON: true, IgnoreFields: []FieldPath{{"at"}}, Wait: 10 * time.Second}, len(wantChanged), true},
		{"ignore implies json", CompareConfig{IgnoreFields: []FieldPath{{"at"}}, Wait: time.Second}, len(wantChanged), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Client, cfg.Source, cfg.Target, cfg.RunID = clientConfig(c), source, shadow, r.RunID()
			rep, err := Compare(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Requests != n || rep.Missing() != 0 || rep.DuplicateReplies != 0 || !rep.RunComplete {
				t.Fatalf("report: %d requests, counts %v, %d duplicates", rep.Requests, rep.Counts, rep.DuplicateReplies)
			}
			if rep.Counts[StatusChanged] != len(wantStatus) || rep.Transitions["COMPLETE→PARTIAL"] != len(wantStatus) {
				t.Errorf("status changed %d %v, want %d COMPLETE→PARTIAL", rep.Counts[StatusChanged], rep.Transitions, len(wantStatus))
			}
			if rep.Counts[Changed] != tc.wantChanged || rep.Counts[Same] != n-tc.wantChanged-len(wantStatus) {
				t.Errorf("changed %d, same %d; want %d, %d", rep.Counts[Changed], rep.Counts[Same], tc.wantChanged, n-tc.wantChanged-len(wantStatus))
			}
			if len(rep.Examples[Changed]) != DefaultExamples || rep.Examples[Changed][0].ReplayPayload == "" {
				t.Errorf("examples of changed: %s", asJSON(rep.Examples[Changed]))
			}
			if l := rep.Latency; l.Pairs != n || l.OriginalP99Ms < l.OriginalP50Ms || l.ReplayP99Ms < l.ReplayP50Ms || l.ReplayP99Ms > 10_000 {
				t.Errorf("latency: %+v", l)
			}
			var text strings.Builder
			if err := rep.Print(&text); err != nil || !strings.Contains(text.String(), "COMPLETE→PARTIAL") || !strings.Contains(text.String(), "latency") {
				t.Errorf("printed report:\n%s", text.String())
			}
			if !tc.exact {
				return
			}
			var gotChanged, gotStatus []int
			for _, d := range rep.Differences {
				i := idOf[schemas.CorrelationID(d.OriginalID)]
				switch d.Category {
				case Changed:
					gotChanged = append(gotChanged, i)
					if !slices.Equal(d.Paths, []string{"$[0].v", "$[1].v"}) {
						t.Errorf("%d changed at %v, want $[0].v and $[1].v", i, d.Paths)
					}
				case StatusChanged:
					gotStatus = append(gotStatus, i)
				}
			}
			slices.Sort(gotChanged)
			slices.Sort(gotStatus)
			if !slices.Equal(gotChanged, wantChanged) || !slices.Equal(gotStatus, wantStatus) {
				t.Errorf("changed %v\nwant    %v\nstatus changed %v\nwant           %v", gotChanged, wantChanged, gotStatus, wantStatus)
			}
		})
	}
}

// TestCompareWaitsUntilDue compares right after a replay whose handler
// takes 500ms a task: read at once, the replies are missing; with UntilDue, compare
// waits for them until the run's last replies are due, and finds them.
func TestCompareWaitsUntilDue(t *testing.T) {
	c := testkafka.New(t)
	source := kafkaconfig.Topics{Prefix: c.Prefix}
	shadow := kafkaconfig.Topics{Prefix: c.Prefix + "shadow."}
	routes := `{"routes":[{"name":"echo","mode":"split","fanout":2,"timeout":"10s"}]}`
	fast := versioned(func(n int, _ schemas.Task) (string, error) { return fmt.Sprintf(`{"n":%d}`, n), nil })
	slow := versioned(func(n int, _ schemas.Task) (string, error) {
		time.Sleep(500 * time.Millisecond)
		return fmt.Sprintf(`{"n":%d}`, n), nil
	})
	startStack(t, c, source, stack.Config{Routes: table(t, routes), Processors: []stack.ProcessorSpec{{Route: "echo", Handler: fast}}})
	startStack(t, c, shadow, stack.Config{Routes: table(t, routes), Processors: []stack.ProcessorSpec{{Route: "echo", Handler: slow}}})

	cl, err := client.New(t.Context(), client.Config{Client: clientConfig(c), Topics: source, DefaultTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	const n = 6 // 12 tasks of 500ms: within the 10s timeout even one at a time
	for i := range n {
		p, err := cl.Submit(t.Context(), "echo", fmt.Appendf(nil, `{"n":%d}`, i), client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		awaitComplete(t, p)
	}
	r := replayAll(t, c, source, shadow)
	st, err := LoadRun(t.Context(), clientConfig(c), shadow, r.RunID())
	if err != nil {
		t.Fatal(err)
	}
	if due := RunDue(st); due.Before(time.Now().Add(10 * time.Second)) {
		t.Fatalf("run due at %s, want at least 10s (the route's timeout) from now", due.Format(time.RFC3339Nano))
	}
	cfg := CompareConfig{Client: clientConfig(c), Source: source, Target: shadow, RunID: r.RunID()}
	rep, err := Compare(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Counts[MissingReplay] == 0 {
		t.Fatalf("compare at once found every replay reply (counts %v): the handler's 500ms tasks should still be running", rep.Counts)
	}
	cfg.UntilDue = true
	start := time.Now()
	if rep, err = Compare(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if rep.Requests != n || rep.Missing() != 0 || rep.Counts[Same] != n {
		t.Fatalf("compare until due: %d requests, counts %v, transitions %v", rep.Requests, rep.Counts, rep.Transitions)
	}
	t.Logf("compare until due took %s", time.Since(start).Round(time.Millisecond))
}

// awaitComplete waits for p's reply, which must be COMPLETE.
func awaitComplete(t *testing.T, p *client.Pending) {
	t.Helper()
	if r, err := p.Await(t.Context()); err != nil || r.Status != schemas.ReplyComplete {
		t.Fatalf("original %s: %v %s %s", p.ID, err, r.Status, r.Error)
	}
}

// replayAll replays the last hour of source's requests into shadow, to
// the end.
func replayAll(t *testing.T, c *testkafka.Cluster, source, shadow kafkaconfig.Topics) *Replayer {
	t.Helper()
	r, err := New(Config{Client: clientConfig(c), Source: source, Target: shadow, From: mustBound(t, "1h"), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	return r
}
