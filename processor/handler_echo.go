package processor

import (
	"context"

	"github.com/scattergather/scattergather/schemas"
)

// Echo returns a handler that answers every task with its payload,
// unchanged. It never fails; it is the zero-cost handler for pipeline
// benchmarks and smoke tests.
func Echo() Handler {
	return HandlerFunc(func(_ context.Context, t schemas.Task) ([]byte, error) {
		return t.Payload, nil
	})
}
