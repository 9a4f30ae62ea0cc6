package replay

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// checkExactlyOnce checks that run replayed every original in want exactly
// once into topic (read_committed), and nothing else.
func checkExactlyOnce(t *testing.T, c *testkafka.Cluster, topic, runID string, want []original) {
	t.Helper()
	got, total := replayedRequests(t, c, topic, runID)
	if total != len(got) {
		t.Errorf("%d replayed records for %d replay ids: some were submitted twice", total, len(got))
	}
	byOrig := map[schemas.CorrelationID]int{}
	for _, r := range got {
		byOrig[*r.ReplayOf]++
	}
	for _, o := range want {
		if n := byOrig[o.req.CorrelationID]; n != 1 {
			t.Errorf("original %s (partition %d offset %d) replayed %d times, want once", o.req.CorrelationID, o.partition, o.offset, n)
		}
		delete(byOrig, o.req.CorrelationID)
	}
	for id, n := range byOrig {
		t.Errorf("replayed %s %d times, which is outside the range", id, n)
	}
}

// TestResumeAfterInterruption kills a replay half-way and resumes it: no
// request is submitted twice, none is skipped. Two ways to die: the
// context ends (Ctrl-C: the batch in flight is finished), and a crash that
// leaves a transaction open with its records on the broker (the resumed
// session must fence and abort it).
func TestResumeAfterInterruption(t *testing.T) {
	for _, tc := range []struct {
		name  string
		crash bool
	}{
		{"cancel", false},
		{"open transaction", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testkafka.New(t)
			source := kafkaconfig.Topics{Prefix: c.Prefix}
			target := kafkaconfig.Topics{Prefix: c.Prefix + "shadow."}
			ensureTopics(t, c, source, "echo")
			ensureTopics(t, c, target, "echo")
			const n = 2000
			origs := produceOriginals(t, c, source.Requests(), n, time.Now().Add(-time.Hour), time.Millisecond, func(int) schemas.Route { return "echo" })

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			cfg := Config{Client: clientConfig(c), Source: source, Target: target, RunID: "resume-1",
				From: mustBound(t, "earliest"), BatchSize: 100, Logger: testLogger(t)}
			if !tc.crash {
				cfg.Progress = func(p Progress) {
					if p.Submitted >= n/2 {
						cancel()
					}
				}
			}
			r, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if tc.crash {
				r.crashAfter = 7
			}
			err = r.Run(ctx)
			var abandoned *kgo.Client
			switch {
			case tc.crash:
				if !errors.Is(err, errCrashed) || r.abandoned == nil {
					t.Fatalf("crash run: %v (abandoned client %v)", err, r.abandoned != nil)
				}
				abandoned = r.abandoned
				t.Cleanup(abandoned.Close)
				// The open transaction's records are in the log: the
				// resumed run must not let them count.
				if got := countUncommitted(t, c, target.Requests()); got != 8*100 {
					t.Fatalf("log holds %d replayed records after the crash, want 7 committed batches + 1 open = 800", got)
				}
			case err != nil:
				t.Fatalf("interrupted run: %v", err)
			}
			first := r.State()
			if first.Done || first.Submitted == 0 || first.Submitted >= n {
				t.Fatalf("first session: done %v, submitted %d of %d; want it stopped half-way", first.Done, first.Submitted, n)
			}
			_, before := replayedRequests(t, c, target.Requests(), "resume-1")
			if tc.crash && before != 700 {
				t.Fatalf("%d replayed requests committed before the resume, want 700", before)
			}

			// Resume: only the run id is needed; the range is stored.
			r2, err := New(Config{Client: clientConfig(c), Source: source, Target: target, RunID: "resume-1", BatchSize: 100, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if err := r2.Run(t.Context()); err != nil {
				t.Fatalf("resume: %v", err)
			}
			st := r2.State()
			if !st.Done || st.Submitted != n || st.Sessions != 2 {
				t.Errorf("resumed run: done %v, submitted %d, sessions %d; want done, %d, 2", st.Done, st.Submitted, st.Sessions, n)
			}
			checkExactlyOnce(t, c, target.Requests(), "resume-1", origs)

			if tc.crash {
				// The zombie was fenced: its transaction cannot commit now.
				if err := abandoned.EndTransaction(t.Context(), kgo.TryCommit); err == nil {
					t.Errorf("the abandoned session committed its transaction after the resume; want it fenced")
				}
				checkExactlyOnce(t, c, target.Requests(), "resume-1", origs)
			}

			// A finished run started again does nothing.
			r3, err := New(Config{Client: clientConfig(c), Source: source, Target: target, RunID: "resume-1", Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if err := r3.Run(t.Context()); err != nil {
				t.Fatal(err)
			}
			if _, total := replayedRequests(t, c, target.Requests(), "resume-1"); total != n {
				t.Errorf("after re-running a finished run: %d replayed requests, want %d", total, n)
			}
		})
	}
}

// TestNewRunNeedsFrom: a run id that does not exist needs a range.
func TestNewRunNeedsFrom(t *testing.T) {
	c := testkafka.New(t)
	source := kafkaconfig.Topics{Prefix: c.Prefix}
	ensureTopics(t, c, source, "echo")
	r, err := New(Config{Client: clientConfig(c), Source: source, RunID: "nope"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(t.Context()); err == nil || !contains(err.Error(), "needs a --from") {
		t.Errorf("run without --from: %v", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestRate: a replay at 1,000 requests per second takes as long as that
// pace says, in batches of a tenth of a second's worth.
func TestRate(t *testing.T) {
	c := testkafka.New(t)
	source := kafkaconfig.Topics{Prefix: c.Prefix}
	ensureTopics(t, c, source, "echo")
	const n = 500
	produceOriginals(t, c, source.Requests(), n, time.Now().Add(-time.Hour), time.Millisecond, func(int) schemas.Route { return "echo" })
	var updates []Progress
	r, err := New(Config{Client: clientConfig(c), Source: source, Target: kafkaconfig.Topics{Prefix: c.Prefix + "shadow."},
		From: mustBound(t, "earliest"), Rate: 1000, Progress: func(p Progress) { updates = append(updates, p) }})
	if err != nil {
		t.Fatal(err)
	}
	ensureTopics(t, c, kafkaconfig.Topics{Prefix: c.Prefix + "shadow."}, "echo")
	start := time.Now()
	if err := r.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 450*time.Millisecond {
		t.Errorf("%d requests at 1000/s took %s, want about 500ms", n, took)
	}
	last := updates[len(updates)-1]
	if !last.Done || last.Submitted != n || last.Rate > 1100 || last.ETA != 0 {
		t.Errorf("last progress: %+v", last)
	}
	for i := 1; i < len(updates); i++ {
		if step := updates[i].Submitted - updates[i-1].Submitted; step > 100 {
			t.Fatalf("a batch of %d requests at 1000/s, want at most 100", step)
		}
	}
}
