package processor

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/scattergather/scattergather/schemas"
)

func TestSleepConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  SleepConfig
		errs []string // substrings, all expected; none means valid
	}{
		{name: "zero", cfg: SleepConfig{}},
		{name: "full", cfg: SleepConfig{Delay: time.Millisecond, MaxDelay: 2 * time.Millisecond, FailureRate: 1, StragglerRate: 0.5, StragglerDelay: time.Second}},
		{name: "fixed delay", cfg: SleepConfig{Delay: time.Millisecond, MaxDelay: time.Millisecond}},
		{name: "negative delays", cfg: SleepConfig{Delay: -1, MaxDelay: -1, StragglerDelay: -1},
			errs: []string{"delay: -1ns is negative", "max delay: -1ns is negative", "straggler delay: -1ns is negative"}},
		{name: "max below delay", cfg: SleepConfig{Delay: 2 * time.Millisecond, MaxDelay: time.Millisecond}, errs: []string{"max delay: 1ms is below delay 2ms"}},
		{name: "rates out of range", cfg: SleepConfig{FailureRate: 1.5, StragglerRate: -0.1}, errs: []string{"failure rate: 1.5", "straggler rate: -0.1"}},
		{name: "NaN rate", cfg: SleepConfig{FailureRate: math.NaN()}, errs: []string{"failure rate: NaN"}},
		{name: "straggler without delay", cfg: SleepConfig{StragglerRate: 0.1}, errs: []string{"straggler delay: zero"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Sleep(tc.cfg)
			if len(tc.errs) == 0 {
				if err != nil || h == nil {
					t.Fatalf("Sleep: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Sleep accepted an invalid config")
			}
			for _, want := range tc.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}

func TestSleepDelays(t *testing.T) {
	task := schemas.Task{PartID: "shard-3", Payload: []byte("x")}
	for _, tc := range []struct {
		name     string
		cfg      SleepConfig
		min, max time.Duration
	}{
		{"none", SleepConfig{}, 0, 0},
		{"fixed", SleepConfig{Delay: 30 * time.Millisecond}, 30 * time.Millisecond, 30 * time.Millisecond},
		{"range", SleepConfig{Delay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond, Seed: 3}, 10 * time.Millisecond, 50 * time.Millisecond},
		{"all stragglers", SleepConfig{Delay: 10 * time.Millisecond, StragglerRate: 1, StragglerDelay: time.Second}, 1010 * time.Millisecond, 1010 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h, err := Sleep(tc.cfg)
				if err != nil {
					t.Fatal(err)
				}
				distinct := map[time.Duration]bool{}
				for range 50 {
					start := time.Now()
					out, err := h.Handle(t.Context(), task)
					slept := time.Since(start)
					if err != nil {
						t.Fatal(err)
					}
					if slept < tc.min || slept > tc.max {
						t.Fatalf("slept %s, want in [%s, %s]", slept, tc.min, tc.max)
					}
					distinct[slept] = true
					var got SleepResult
					if err := json.Unmarshal(out, &got); err != nil {
						t.Fatalf("payload %q: %v", out, err)
					}
					if got != (SleepResult{Part: "shard-3", SleptMS: slept.Milliseconds()}) {
						t.Fatalf("payload %+v after %s", got, slept)
					}
				}
				if tc.max > tc.min && len(distinct) < 10 {
					t.Fatalf("only %d distinct delays in [%s, %s]", len(distinct), tc.min, tc.max)
				}
			})
		})
	}
}

func TestSleepHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, err := Sleep(SleepConfig{Delay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = h.Handle(ctx, schemas.Task{})
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 20*time.Millisecond {
			t.Fatalf("err %v after %s, want the ctx's deadline after 20ms", err, time.Since(start))
		}
	})
}

func TestSleepRates(t *testing.T) {
	const n = 20_000
	for _, tc := range []struct {
		name               string
		failure, straggler float64
		seed               int64
	}{
		{"none", 0, 0, 1},
		{"some failures", 0.3, 0, 1},
		{"both", 0.1, 0.05, 2},
		{"all fail", 1, 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h, err := Sleep(SleepConfig{FailureRate: tc.failure, StragglerRate: tc.straggler, StragglerDelay: time.Second, Seed: tc.seed})
				if err != nil {
					t.Fatal(err)
				}
				var failures, stragglers int
				for range n {
					start := time.Now()
					_, err := h.Handle(t.Context(), schemas.Task{})
					if time.Since(start) == time.Second {
						stragglers++
					}
					switch {
					case errors.Is(err, ErrInjected):
						if IsPermanent(err) {
							t.Fatal("injected failure is permanent")
						}
						failures++
					case err != nil:
						t.Fatal(err)
					}
				}
				// Four standard deviations of a binomial: a sound seed never
				// leaves it, a wrong rate always does.
				for _, c := range []struct {
					what string
					got  int
					p    float64
				}{{"failures", failures, tc.failure}, {"stragglers", stragglers, tc.straggler}} {
					tol := 4 * math.Sqrt(n*c.p*(1-c.p))
					if math.Abs(float64(c.got)-n*c.p) > tol {
						t.Errorf("%d %s in %d tries, want %v ± %.0f", c.got, c.what, n, n*c.p, tol)
					}
				}
			})
		})
	}
}

func TestSleepSeedIsReproducible(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		run := func(seed int64) []string {
			h, err := Sleep(SleepConfig{MaxDelay: 100 * time.Millisecond, FailureRate: 0.5, Seed: seed})
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for range 20 {
				b, err := h.Handle(t.Context(), schemas.Task{})
				out = append(out, string(b)+"|"+errString(err))
			}
			return out
		}
		a, b, c := run(9), run(9), run(10)
		if strings.Join(a, ",") != strings.Join(b, ",") {
			t.Fatal("same seed, different draws")
		}
		if strings.Join(a, ",") == strings.Join(c, ",") {
			t.Fatal("different seeds, same draws")
		}
	})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
