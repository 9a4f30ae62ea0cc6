package processor

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
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

// runner turns one task into one result: deadline checks, the handler with
// retries and backoff, panic recovery. It knows nothing of Kafka, so its
// policy is unit-tested on its own.
type runner struct {
	h           Handler
	processorID string
	retries     int
	backoff     time.Duration
	maxBackoff  time.Duration
	// jitter returns a uniform value in [0, n); rand.Int64N unless a test
	// pins it.
	jitter func(n int64) int64
	log    *slog.Logger

	// Retries and panics counted as they happen.
	nRetries atomic.Uint64
	nPanics  atomic.Uint64
}

func newRunner(cfg *Config, h Handler, log *slog.Logger) *runner {
	return &runner{
		h:           h,
		processorID: cfg.InstanceID,
		retries:     *cfg.Retries,
		backoff:     cfg.Backoff,
		maxBackoff:  cfg.MaxBackoff,
		jitter:      rand.Int64N,
		log:         log,
	}
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
	for try := 1; ; try++ {
		res.Tries = try
		payload, cutByDeadline, err := r.try(ctx, t)
		switch {
		case err == nil:
			return finish(schemas.ResultOK, payload, "")
		case cutByDeadline:
			// Past the deadline the answer is no longer awaited: that the
			// handler gave up is the deadline's doing, not a failure.
			return finish(schemas.ResultExpired, nil, fmt.Sprintf("deadline passed on try %d: %v", try, err))
		case ctx.Err() != nil:
			return schemas.Result{}, r.cutOff(t, try, err)
		case IsPermanent(err):
			return finish(schemas.ResultError, nil, err.Error())
		case try > r.retries:
			return finish(schemas.ResultError, nil, fmt.Sprintf("failed on try %d of %d: %v", try, r.retries+1, err))
		}
		delay := r.delay(try)
		if !t.Deadline.IsZero() && !time.Now().Add(delay).Before(t.Deadline) {
			return finish(schemas.ResultError, nil, fmt.Sprintf("failed on try %d, no time left for a retry before the deadline: %v", try, err))
		}
		r.nRetries.Add(1)
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return schemas.Result{}, r.cutOff(t, try, err)
		}
	}
}

func (r *runner) cutOff(t schemas.Task, try int, err error) error {
	return fmt.Errorf("task %s part %s cut off by shutdown on try %d (%v): %w", t.CorrelationID, t.PartID, try, err, kafka.ErrAbort)
}

// try calls the handler once, with the task's deadline on its context, and
// reports whether that deadline is what ended it. A panic becomes a
// permanent error: it is a bug that a retry would hit again.
func (r *runner) try(ctx context.Context, t schemas.Task) (payload []byte, cutByDeadline bool, err error) {
	var (
		hctx   context.Context
		cancel context.CancelFunc
	)
	if t.Deadline.IsZero() {
		hctx, cancel = context.WithCancel(ctx)
	} else {
		hctx, cancel = context.WithDeadline(ctx, t.Deadline)
	}
	defer cancel()
	defer func() {
		if v := recover(); v != nil {
			r.nPanics.Add(1)
			// The result carries the panic value; the stack is only here.
			r.log.Error("handler panicked", "correlation_id", t.CorrelationID, "part_id", t.PartID,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			payload, err = nil, Permanent(fmt.Errorf("handler panicked: %v", v))
		}
		cutByDeadline = err != nil && hctx.Err() == context.DeadlineExceeded
	}()
	payload, err = r.h.Handle(hctx, t)
	return payload, false, err
}

// delay returns the backoff before retry number try (1 for the first
// retry): Backoff doubled try-1 times, capped at MaxBackoff, then drawn from
// its upper half.
func (r *runner) delay(try int) time.Duration {
	d := r.backoff
	for i := 1; i < try && d < r.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.maxBackoff)
	if d <= 1 {
		return d
	}
	half := d / 2
	return d - half + time.Duration(r.jitter(int64(half)+1))
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
