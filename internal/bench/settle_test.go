package bench

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// TestSettle: a chain that is slow for its first 5 seconds (a fresh broker)
// is settled once two rounds agree, and the measured phase after it sees
// only the steady rate; a chain that never steadies is given up on at the
// limit.
func TestSettle(t *testing.T) {
	t.Run("ramp", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			pr := phaseRun{name: "test", load: Load{Concurrency: 8, Duration: 2 * time.Second, Warmup: time.Second},
				send: func(context.Context) Outcome {
					work := 10 * time.Millisecond
					if time.Since(start) < 5*time.Second {
						work = 40 * time.Millisecond
					}
					time.Sleep(work)
					return Outcome{Status: Complete, Tasks: 1}
				}}
			s, err := pr.settle(t.Context(), 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			// Rounds: 0-2s and 2-4s at 200/s (two that agree: a plateau),
			// 4-6s mixed, then 800/s three times.
			if !s.Steady || len(s.Rounds) != 6 || s.Rounds[len(s.Rounds)-1] < 790 || s.Seconds > 12.5 {
				t.Fatalf("settled %+v; want steady at 800 req/s after the ramp", s)
			}
			p, err := pr.run(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if p.RequestsPerS < 790 {
				t.Fatalf("measured %.0f req/s after settling, want the steady 800", p.RequestsPerS)
			}
		})
	})
	t.Run("never steady", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			pr := phaseRun{name: "test", load: Load{Concurrency: 4, Duration: time.Second},
				send: func(context.Context) Outcome {
					// Twice as fast every 2s: no two rounds agree.
					time.Sleep(64 * time.Millisecond >> (time.Since(start) / (2 * time.Second)))
					return Outcome{Status: Complete, Tasks: 1}
				}}
			s, err := pr.settle(t.Context(), 8*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if s.Steady || len(s.Rounds) != 4 {
				t.Fatalf("settled %+v; want 4 rounds, not steady", s)
			}
		})
	})
}

func TestAgree(t *testing.T) {
	for _, tc := range []struct {
		a, b, slack float64
		want        bool
	}{
		{100, 95, 0, true}, {100, 89, 0, false}, {3.0, 3.9, 1, true}, {3, 5, 1, false}, {0, 0, 0, true},
	} {
		if got := agree(tc.a, tc.b, tc.slack); got != tc.want {
			t.Errorf("agree(%v, %v, %v) = %v", tc.a, tc.b, tc.slack, got)
		}
	}
}
