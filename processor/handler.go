package processor

import (
	"context"
	"errors"

	"github.com/scattergather/scattergather/schemas"
)

// Handler handles one task and returns the part's result payload.
//
// Handle is called concurrently for tasks of different partitions, and of
// one partition when Config.Concurrency is above 1, so it must be safe for
// concurrent use. Its ctx carries the task's deadline and is
// cancelled when the processor shuts down and its drain timeout has passed;
// a handler that honours ctx lets the processor tell an expired task
// (EXPIRED result) and a shutdown (the task is consumed again) from a failure.
//
// The task's PartID is the part the processor answers as: the shard of a
// split task, or the processor's Recipient for a broadcast task.
//
// A returned error is retried with backoff unless it is [Permanent]; when
// the retries are spent, the error's text goes into an ERROR result. A panic
// is recovered and reported as a permanent error.
type Handler interface {
	Handle(ctx context.Context, t schemas.Task) ([]byte, error)
}

// HandlerFunc adapts a function to a [Handler].
type HandlerFunc func(ctx context.Context, t schemas.Task) ([]byte, error)

// Handle calls f(ctx, t).
func (f HandlerFunc) Handle(ctx context.Context, t schemas.Task) ([]byte, error) {
	return f(ctx, t)
}

// Permanent marks err as one that retrying cannot fix, such as a payload the
// handler cannot parse: the task is answered with an ERROR result at once.
// Permanent(nil) is nil. errors.Is and errors.As see through the mark.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked by
// [Permanent].
func IsPermanent(err error) bool {
	var pe *permanentError
	return errors.As(err, &pe)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }
