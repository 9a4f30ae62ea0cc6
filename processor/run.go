package processor

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/schemas"
)

// maxErrorLen bounds the error text of a result, so that a handler quoting
// a whole response body cannot bloat the results topic.
const maxErrorLen = 1024

// runner turns one task into one result: the deadline check, then the
// handler wrapped in the processor's own middlewares (the task's deadline,
// Retry, Recover; see Middleware), then the status. It knows nothing of
// Kafka, so its policy is unit-tested on its own.
type runner struct {
	h           Handler // the user's handler in the processor's chain
	processorID string
	retry       *retryPolicy
	log         *slog.Logger

	// Retries and panics counted as they happen.
	nRetries atomic.Uint64
	nPanics  atomic.Uint64
}

func newRunner(cfg *Config, h Handler, log *slog.Logger) *runner {
	r := &runner{processorID: cfg.InstanceID, log: log}
	r.retry = newRetryPolicy(RetryConfig{
		Retries: *cfg.Retries, Backoff: cfg.Backoff, MaxBackoff: cfg.MaxBackoff,
		OnRetry: func(schemas.Task, int, error) { r.nRetries.Add(1) },
	})
	r.h = Chain(h, taskDeadline, r.retry.middleware, Recover(r.panicked))
	return r
}

// panicked logs a handler's panic with its stack; the result carries only
// the value.
func (r *runner) panicked(t schemas.Task, v any, stack []byte) {
	r.nPanics.Add(1)
	r.log.Error("handler panicked", "correlation_id", t.CorrelationID, "part_id", t.PartID,
		"panic", fmt.Sprint(v), "stack", string(stack))
}

// taskDeadline bounds the call, all its tries included, by the task's
// deadline; a task without one runs until the batch's context ends.
func taskDeadline(next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, t schemas.Task) ([]byte, error) {
		if t.Deadline.IsZero() {
			return next.Handle(ctx, t)
		}
		ctx, cancel := context.WithDeadline(ctx, t.Deadline)
		defer cancel()
		return next.Handle(ctx, t)
	})
}

// run handles t and returns its result. ctx is the batch's context: when it
// is cancelled (a shutdown past its drain timeout) before t is answered, run
// returns an error wrapping kafka.ErrAbort and no result, so that t is
// consumed again rather than answered as failed.
func (r *runner) run(ctx context.Context, t schemas.Task) (schemas.Result, error) {
	res := schemas.Result{
		CorrelationID: t.CorrelationID,
		PartID:        t.PartID,
		Route:         t.Route,
		ProcessorID:   r.processorID,
		Attempt:       t.Attempt,
		StartedAt:     time.Now(),
		Deadline:      t.Deadline,
	}
	finish := func(status schemas.ResultStatus, payload []byte, errText string) (schemas.Result, error) {
		res.Status, res.Payload, res.Error = status, payload, truncate(errText, maxErrorLen)
		res.FinishedAt = time.Now()
		return res, nil
	}
	if expired(t.Deadline) {
		return finish(schemas.ResultExpired, nil, fmt.Sprintf("deadline %s passed before the task was picked up", t.Deadline.Format(time.RFC3339Nano)))
	}
	var tries int
	payload, err := r.h.Handle(context.WithValue(ctx, triesKey{}, &tries), t)
	res.Tries = tries
	switch {
	case err == nil:
		return finish(schemas.ResultOK, payload, "")
	case expired(t.Deadline):
		// Past the deadline the answer is no longer awaited: that the
		// handler gave up is the deadline's doing, not a failure.
		return finish(schemas.ResultExpired, nil, fmt.Sprintf("deadline passed on try %d: %v", tries, err))
	case ctx.Err() != nil:
		return schemas.Result{}, fmt.Errorf("task %s part %s cut off by shutdown on try %d (%v): %w", t.CorrelationID, t.PartID, tries, err, kafka.ErrAbort)
	default:
		return finish(schemas.ResultError, nil, err.Error())
	}
}

// expired reports whether deadline is set and has passed.
func expired(deadline time.Time) bool {
	return !deadline.IsZero() && !time.Now().Before(deadline)
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = " …(truncated)"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.ToValidUTF8(s[:cut], "") + mark
}
