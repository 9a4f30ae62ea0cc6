package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// testRunner returns a runner over h with the given retries, backoff 100ms
// and max backoff 2s, whose jitter always picks the longest delay so that
// the schedule is exact.
func testRunner(h Handler, retries int) *runner {
	cfg := Config{Role: kafkaconfig.Role{InstanceID: "proc-1"}, Retries: new(retries), Backoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second}
	r := newRunner(&cfg, h, slog.New(slog.DiscardHandler))
	r.retry.jitter = func(n int64) int64 { return n - 1 }
	return r
}

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, n := range v {
		out[i] = time.Duration(n) * time.Millisecond
	}
	return out
}

func testTask(deadline time.Time) schemas.Task {
	return schemas.Task{
		CorrelationID: "c-1", PartID: "shard-0", PartCount: 1, Route: "search",
		Payload: []byte("ping"), Deadline: deadline, Attempt: 2, SubmittedAt: time.Now(),
	}
}

// recorder is a handler that records when it is called and fails its first
// `fail` calls with err (forever when fail < 0).
type recorder struct {
	fail  int
	err   error
	calls []time.Time
}

func (h *recorder) Handle(_ context.Context, t schemas.Task) ([]byte, error) {
	h.calls = append(h.calls, time.Now())
	if h.fail < 0 || len(h.calls) <= h.fail {
		return nil, h.err
	}
	return append([]byte("pong:"), t.Payload...), nil
}

func TestRunResults(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name      string
		h         *recorder
		retries   int
		status    schemas.ResultStatus
		tries     int
		errSubstr string
		// wantGaps are the delays between consecutive calls.
		wantGaps []time.Duration
	}{
		{name: "ok first try", h: &recorder{}, retries: 3, status: schemas.ResultOK, tries: 1},
		{name: "ok after two failures", h: &recorder{fail: 2, err: boom}, retries: 3, status: schemas.ResultOK, tries: 3,
			wantGaps: ms(100, 200)},
		{name: "error after all retries", h: &recorder{fail: -1, err: boom}, retries: 3, status: schemas.ResultError, tries: 4,
			errSubstr: "failed on try 4 of 4: boom",
			wantGaps:  ms(100, 200, 400)},
		{name: "no retries", h: &recorder{fail: -1, err: boom}, retries: 0, status: schemas.ResultError, tries: 1, errSubstr: "boom"},
		{name: "permanent is not retried", h: &recorder{fail: -1, err: fmt.Errorf("parse: %w", Permanent(boom))}, retries: 3,
			status: schemas.ResultError, tries: 1, errSubstr: "parse: boom"},
		{name: "backoff is capped", h: &recorder{fail: -1, err: boom}, retries: 7, status: schemas.ResultError, tries: 8,
			errSubstr: "failed on try 8 of 8",
			wantGaps:  ms(100, 200, 400, 800, 1600, 2000, 2000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := testRunner(tc.h, tc.retries)
				start := time.Now()
				task := testTask(start.Add(time.Minute))
				res, err := r.run(t.Context(), task)
				if err != nil {
					t.Fatalf("run: %v", err)
				}
				if res.Status != tc.status || res.Tries != tc.tries || len(tc.h.calls) != tc.tries {
					t.Fatalf("status %s after %d tries (%d calls), want %s after %d", res.Status, res.Tries, len(tc.h.calls), tc.status, tc.tries)
				}
				if !strings.Contains(res.Error, tc.errSubstr) || (tc.errSubstr == "") != (res.Error == "") {
					t.Fatalf("error %q, want it to contain %q", res.Error, tc.errSubstr)
				}
				if tc.status == schemas.ResultOK && string(res.Payload) != "pong:ping" {
					t.Fatalf("payload %q", res.Payload)
				}
				if tc.status != schemas.ResultOK && res.Payload != nil {
					t.Fatalf("payload %q on a failed result", res.Payload)
				}
				for i, want := range tc.wantGaps {
					if got := tc.h.calls[i+1].Sub(tc.h.calls[i]); got != want {
						t.Errorf("gap before try %d: %s, want %s", i+2, got, want)
					}
				}
				if got := r.nRetries.Load(); got != uint64(tc.tries-1) {
					t.Errorf("retries counted %d, want %d", got, tc.tries-1)
				}
				want := schemas.Result{
					CorrelationID: task.CorrelationID, PartID: task.PartID, Route: task.Route, ProcessorID: "proc-1",
					Attempt: 2, Deadline: task.Deadline, StartedAt: start, FinishedAt: tc.h.calls[len(tc.h.calls)-1],
				}
				if res.CorrelationID != want.CorrelationID || res.PartID != want.PartID || res.Route != want.Route ||
					res.ProcessorID != want.ProcessorID || res.Attempt != want.Attempt || !res.Deadline.Equal(want.Deadline) ||
					!res.StartedAt.Equal(want.StartedAt) || !res.FinishedAt.Equal(want.FinishedAt) {
					t.Fatalf("result %+v, want fields of %+v", res, want)
				}
			})
		})
	}
}

func TestBackoffJitter(t *testing.T) {
	r := testRunner(&recorder{}, 3)
	r.retry.jitter = rand.Int64N
	for try, base := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 6: 2 * time.Second, 60: 2 * time.Second} {
		for range 100 {
			if d := r.retry.delay(try); d < base/2 || d > base {
				t.Fatalf("delay before retry %d: %s, want in [%s, %s]", try, d, base/2, base)
			}
		}
	}
	r.retry.jitter = func(int64) int64 { return 0 }
	if d := r.retry.delay(1); d != 50*time.Millisecond {
		t.Fatalf("lowest jitter gives %s, want 50ms", d)
	}
}

func TestRunDeadlines(t *testing.T) {
	boom := errors.New("boom")
	t.Run("expired before pickup", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := &recorder{}
			res, err := testRunner(h, 3).run(t.Context(), testTask(time.Now().Add(-time.Second)))
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != schemas.ResultExpired || res.Tries != 0 || len(h.calls) != 0 {
				t.Fatalf("status %s, tries %d, calls %d; want EXPIRED without a call", res.Status, res.Tries, len(h.calls))
			}
			if !strings.Contains(res.Error, "before the task was picked up") {
				t.Fatalf("error %q", res.Error)
			}
		})
	})
	t.Run("handler runs past the deadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			deadline := time.Now().Add(300 * time.Millisecond)
			var gotDeadline time.Time
			h := HandlerFunc(func(ctx context.Context, _ schemas.Task) ([]byte, error) {
				gotDeadline, _ = ctx.Deadline()
				<-ctx.Done()
				return nil, fmt.Errorf("slow backend: %w", ctx.Err())
			})
			res, err := testRunner(h, 3).run(t.Context(), testTask(deadline))
			if err != nil {
				t.Fatal(err)
			}
			if !gotDeadline.Equal(deadline) {
				t.Fatalf("handler ctx deadline %s, want the task's %s", gotDeadline, deadline)
			}
			if res.Status != schemas.ResultExpired || res.Tries != 1 || !res.FinishedAt.Equal(deadline) {
				t.Fatalf("status %s after %d tries at %s; want EXPIRED after 1 try at the deadline", res.Status, res.Tries, res.FinishedAt)
			}
		})
	})
	t.Run("no retry past the deadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			// Tries at 0 and 100ms; the next retry would start at 300ms,
			// past the deadline at 250ms.
			h := &recorder{fail: -1, err: boom}
			res, err := testRunner(h, 5).run(t.Context(), testTask(time.Now().Add(250*time.Millisecond)))
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != schemas.ResultError || res.Tries != 2 || !strings.Contains(res.Error, "no time left") {
				t.Fatalf("status %s after %d tries (%q); want ERROR after 2", res.Status, res.Tries, res.Error)
			}
		})
	})
	t.Run("no deadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := HandlerFunc(func(ctx context.Context, _ schemas.Task) ([]byte, error) {
				if _, ok := ctx.Deadline(); ok {
					return nil, errors.New("unexpected deadline")
				}
				return []byte("ok"), nil
			})
			res, err := testRunner(h, 0).run(t.Context(), testTask(time.Time{}))
			if err != nil || res.Status != schemas.ResultOK {
				t.Fatalf("status %s, err %v", res.Status, err)
			}
		})
	})
}

func TestRunPanicIsAnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		h := HandlerFunc(func(context.Context, schemas.Task) ([]byte, error) {
			calls.Add(1)
			var m map[string]int
			m["x"] = 1 // nil map write
			return nil, nil
		})
		r := testRunner(h, 3)
		res, err := r.run(t.Context(), testTask(time.Now().Add(time.Minute)))
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != schemas.ResultError || res.Tries != 1 || calls.Load() != 1 || !strings.Contains(res.Error, "handler panicked: assignment to entry in nil map") {
			t.Fatalf("status %s after %d tries: %q", res.Status, res.Tries, res.Error)
		}
		if r.nPanics.Load() != 1 {
			t.Fatalf("panics counted %d", r.nPanics.Load())
		}
	})
}

func TestRunShutdownAborts(t *testing.T) {
	boom := errors.New("boom")
	blocking := func(wrap func(error) error) Handler {
		return HandlerFunc(func(ctx context.Context, _ schemas.Task) ([]byte, error) {
			<-ctx.Done()
			return nil, wrap(ctx.Err())
		})
	}
	for _, tc := range []struct {
		name    string
		h       Handler
		retries int
	}{
		{"cut off in the handler", blocking(func(err error) error { return err }), 3},
		{"cut off in the handler without retries", blocking(func(err error) error { return err }), 0},
		{"cut off in a handler that calls every error permanent", blocking(Permanent), 3},
		{"cut off in the backoff", &recorder{fail: -1, err: boom}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				time.AfterFunc(50*time.Millisecond, cancel)
				res, err := testRunner(tc.h, tc.retries).run(ctx, testTask(time.Now().Add(time.Minute)))
				if !errors.Is(err, kafka.ErrAbort) {
					t.Fatalf("err %v, want ErrAbort", err)
				}
				if res.Status != "" {
					t.Fatalf("got a %s result on shutdown", res.Status)
				}
			})
		})
	}
	t.Run("deadline wins over shutdown", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			deadline := time.Now().Add(50 * time.Millisecond)
			h := HandlerFunc(func(ctx context.Context, _ schemas.Task) ([]byte, error) {
				time.Sleep(100 * time.Millisecond) // ignores ctx
				cancel()
				return nil, errors.New("late")
			})
			res, err := testRunner(h, 3).run(ctx, testTask(deadline))
			if err != nil || res.Status != schemas.ResultExpired {
				t.Fatalf("status %s, err %v; want EXPIRED", res.Status, err)
			}
		})
	})
}

func TestTruncate(t *testing.T) {
	long := strings.Repeat("é", 2000) // 2 bytes each
	for _, tc := range []struct {
		in   string
		max  int
		same bool
	}{
		{"short", 1024, true},
		{strings.Repeat("a", 1024), 1024, true},
		{strings.Repeat("a", 1025), 1024, false},
		{long, 1024, false},
		{"x" + long, 1024, false},
	} {
		got := truncate(tc.in, tc.max)
		if len(got) > tc.max || !utf8.ValidString(got) || (got == tc.in) != tc.same {
			t.Fatalf("truncate(%d bytes) = %d bytes, valid %v, same %v", len(tc.in), len(got), utf8.ValidString(got), got == tc.in)
		}
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("bad payload")
	if Permanent(nil) != nil {
		t.Fatal("Permanent(nil) is not nil")
	}
	p := fmt.Errorf("handle: %w", Permanent(base))
	if !IsPermanent(p) || !errors.Is(p, base) || p.Error() != "handle: bad payload" {
		t.Fatalf("Permanent does not wrap: %v", p)
	}
	if IsPermanent(base) || IsPermanent(nil) {
		t.Fatal("plain error is permanent")
	}
}
