package processor

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"

	"github.com/scattergather/scattergather/schemas"
)

// Middleware wraps a [Handler] with behaviour of its own: a timeout, a
// retry, a recovery, a metric, an authorisation check. Compose them with
// [Chain]:
//
//	h := processor.Chain(lookup,
//		processor.Retry(processor.RetryConfig{Retries: 2}),
//		processor.Timeout(200*time.Millisecond),
//	)
//
// The processor wraps every handler it is given in its own chain: the
// task's deadline, then [Retry] (Config.Retries, Backoff, MaxBackoff), then
// [Recover]. A handler may bring its own middlewares inside that chain.
type Middleware func(Handler) Handler

// Chain returns h wrapped by mws, the first outermost: Chain(h, a, b)
// calls a, which calls b, which calls h.
func Chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// Timeout bounds each call of the handler to d, within the task's own
// deadline. A call it cuts off fails with the handler's error, which wraps
// context.DeadlineExceeded when the handler honours its ctx; under [Retry]
// (outside Timeout) the task is tried again while time is left.
func Timeout(d time.Duration) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, t schemas.Task) ([]byte, error) {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next.Handle(ctx, t)
		})
	}
}

// Recover turns a panic of the handler into a [Permanent] error, "handler
// panicked: <value>": it is a bug that a retry would hit again. onPanic,
// when not nil, gets the task, the value and the stack; the processor's own
// Recover logs them and counts scattergather_processor_panics_total.
func Recover(onPanic func(t schemas.Task, v any, stack []byte)) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, t schemas.Task) (payload []byte, err error) {
			defer func() {
				if v := recover(); v != nil {
					if onPanic != nil {
						onPanic(t, v, debug.Stack())
					}
					payload, err = nil, Permanent(fmt.Errorf("handler panicked: %v", v))
				}
			}()
			return next.Handle(ctx, t)
		})
	}
}

// RetryConfig configures [Retry].
type RetryConfig struct {
	// Retries is how many times a failed call is tried again after the
	// first; 0 means none.
	Retries int
	// Backoff is the delay before the first retry, default DefaultBackoff.
	// It doubles with each retry up to MaxBackoff (default the larger of
	// DefaultMaxBackoff and Backoff); each delay is drawn uniformly from
	// its upper half, [d/2, d], so that tasks failing together do not
	// retry together.
	Backoff, MaxBackoff time.Duration
	// OnRetry, when not nil, is called before the backoff of each retry
	// with the number of the try that failed and its error.
	OnRetry func(t schemas.Task, try int, err error)

	// jitter returns a uniform value in [0, n); rand.Int64N unless a test
	// pins it.
	jitter func(n int64) int64
}

// Retry calls the handler again after an error that is not [Permanent], up
// to cfg.Retries more times, with exponential backoff and jitter. It gives
// up early, returning the last error, when ctx ends during a backoff or
// when the next try could not start before ctx's deadline (the task's):
//
//   - retries spent: "failed on try 4 of 4: <err>";
//   - no time left: "failed on try 2, no time left for a retry before the
//     deadline: <err>";
//   - a Permanent error is returned as it is, after one try.
func Retry(cfg RetryConfig) Middleware {
	p := newRetryPolicy(cfg)
	return p.middleware
}

// retryPolicy is Retry's configuration with its defaults filled in.
type retryPolicy struct {
	RetryConfig
}

func newRetryPolicy(cfg RetryConfig) *retryPolicy {
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.Backoff)
	}
	if cfg.jitter == nil {
		cfg.jitter = rand.Int64N
	}
	return &retryPolicy{cfg}
}

// triesKey carries a *int in the context of a call that the processor's
// own Retry sets to the number of tries made (Result.Tries).
type triesKey struct{}

func (p *retryPolicy) middleware(next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, t schemas.Task) ([]byte, error) {
		tries, _ := ctx.Value(triesKey{}).(*int)
		for try := 1; ; try++ {
			if tries != nil {
				*tries = try
			}
			payload, err := next.Handle(ctx, t)
			switch {
			case err == nil:
				return payload, nil
			case IsPermanent(err):
				return nil, err
			case try > p.Retries:
				if p.Retries == 0 {
					return nil, err
				}
				return nil, fmt.Errorf("failed on try %d of %d: %w", try, p.Retries+1, err)
			}
			if ctx.Err() != nil {
				return nil, err // the deadline or a shutdown ended it: the caller says which
			}
			delay := p.delay(try)
			if deadline, ok := ctx.Deadline(); ok && !time.Now().Add(delay).Before(deadline) {
				return nil, fmt.Errorf("failed on try %d, no time left for a retry before the deadline: %w", try, err)
			}
			if p.OnRetry != nil {
				p.OnRetry(t, try, err)
			}
			timer := time.NewTimer(delay)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return nil, fmt.Errorf("stopped after try %d (%w): %w", try, err, context.Cause(ctx))
			}
		}
	})
}

// delay returns the backoff before retry number try (1 for the first
// retry): Backoff doubled try-1 times, capped at MaxBackoff, then drawn from
// its upper half.
func (p *retryPolicy) delay(try int) time.Duration {
	d := p.Backoff
	for i := 1; i < try && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	if d <= 1 {
		return d
	}
	half := d / 2
	return d - half + time.Duration(p.jitter(int64(half)+1))
}
