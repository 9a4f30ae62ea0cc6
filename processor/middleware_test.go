package processor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/scattergather/scattergather/schemas"
)

func TestChainOrder(t *testing.T) {
	var order []string
	mark := func(name string) Middleware {
		return func(next Handler) Handler {
			return HandlerFunc(func(ctx context.Context, t schemas.Task) ([]byte, error) {
				order = append(order, name)
				return next.Handle(ctx, t)
			})
		}
	}
	h := Chain(HandlerFunc(func(context.Context, schemas.Task) ([]byte, error) {
		order = append(order, "handler")
		return nil, nil
	}), mark("a"), mark("b"))
	if _, err := h.Handle(t.Context(), schemas.Task{}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, ","); got != "a,b,handler" {
		t.Fatalf("calls in order %s, want a,b,handler", got)
	}
}

// TestTimeoutUnderRetry: a call that hangs is cut off by Timeout and tried
// again by Retry; the second call answers.
func TestTimeoutUnderRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		slowOnce := HandlerFunc(func(ctx context.Context, _ schemas.Task) ([]byte, error) {
			calls++
			if calls == 1 {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return []byte("ok"), nil
		})
		h := Chain(slowOnce, Retry(RetryConfig{Retries: 2, Backoff: 10 * time.Millisecond}), Timeout(50*time.Millisecond))
		start := time.Now()
		payload, err := h.Handle(t.Context(), schemas.Task{})
		if err != nil || string(payload) != "ok" || calls != 2 {
			t.Fatalf("%q, %v after %d calls; want ok after 2", payload, err, calls)
		}
		if took := time.Since(start); took < 50*time.Millisecond || took > 60*time.Millisecond {
			t.Fatalf("took %s, want the 50ms timeout plus at most the 10ms backoff", took)
		}
	})
}

func TestTimeoutAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := Chain(HandlerFunc(func(ctx context.Context, _ schemas.Task) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}), Timeout(time.Second))
		if _, err := h.Handle(t.Context(), schemas.Task{}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want deadline exceeded", err)
		}
	})
}

func TestRecover(t *testing.T) {
	var seen any
	var stack []byte
	h := Chain(HandlerFunc(func(context.Context, schemas.Task) ([]byte, error) {
		panic("index out of range")
	}), Recover(func(_ schemas.Task, v any, s []byte) { seen, stack = v, s }))
	payload, err := h.Handle(t.Context(), schemas.Task{})
	if payload != nil || !IsPermanent(err) || err.Error() != "handler panicked: index out of range" {
		t.Fatalf("%q, %v; want a permanent error naming the panic", payload, err)
	}
	if seen != "index out of range" || !strings.Contains(string(stack), "TestRecover") {
		t.Fatalf("onPanic got %v and a stack of %d bytes", seen, len(stack))
	}
	// Without a callback it recovers all the same.
	h = Chain(HandlerFunc(func(context.Context, schemas.Task) ([]byte, error) { panic(errors.New("x")) }), Recover(nil))
	if _, err := h.Handle(t.Context(), schemas.Task{}); !IsPermanent(err) {
		t.Fatalf("err %v", err)
	}
}

// TestRetryStandalone: Retry as a user composes it, without the
// processor's runner: its errors say what happened.
func TestRetryStandalone(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		h       *recorder
		cfg     RetryConfig
		ctx     func(context.Context) (context.Context, context.CancelFunc)
		calls   int
		wantErr string
	}{
		{"spent", &recorder{fail: -1, err: boom}, RetryConfig{Retries: 2}, nil, 3, "failed on try 3 of 3: boom"},
		{"permanent", &recorder{fail: -1, err: Permanent(boom)}, RetryConfig{Retries: 2}, nil, 1, "boom"},
		{"heals", &recorder{fail: 1, err: boom}, RetryConfig{Retries: 2}, nil, 2, ""},
		{"no time left", &recorder{fail: -1, err: boom}, RetryConfig{Retries: 5, Backoff: time.Second},
			func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, 500*time.Millisecond)
			}, 1, "failed on try 1, no time left for a retry before the deadline: boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				retried := 0
				tc.cfg.OnRetry = func(_ schemas.Task, try int, err error) {
					retried++
					if try != retried || !errors.Is(err, boom) {
						t.Errorf("OnRetry(%d, %v) on retry %d", try, err, retried)
					}
				}
				ctx := t.Context()
				if tc.ctx != nil {
					var cancel context.CancelFunc
					ctx, cancel = tc.ctx(ctx)
					defer cancel()
				}
				_, err := Chain(tc.h, Retry(tc.cfg)).Handle(ctx, schemas.Task{})
				if len(tc.h.calls) != tc.calls || retried != tc.calls-1 {
					t.Fatalf("%d calls, %d retries; want %d calls", len(tc.h.calls), retried, tc.calls)
				}
				if (err == nil) != (tc.wantErr == "") || (err != nil && err.Error() != tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				if err != nil && !errors.Is(err, boom) {
					t.Fatalf("err %v does not wrap the handler's", err)
				}
			})
		})
	}
}
