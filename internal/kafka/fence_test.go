package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
)

// TestFenceRetries: Kafka answers an InitProducerID CONCURRENT_TRANSACTIONS
// while the holder's last transaction is being completed (a fence in
// TestBackpressureClientRestart once failed CI so), and INVALID_TXN_STATE
// between two transitions. Fence tries both again; it gives up on
// INVALID_TXN_STATE after 5s, and on the other when ctx is done.
func TestFenceRetries(t *testing.T) {
	answer := func(code int16) func(kmsg.Request) kmsg.Response {
		return func(req kmsg.Request) kmsg.Response {
			resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
			resp.ErrorCode = code
			return resp
		}
	}
	for _, tt := range []struct {
		name    string
		code    int16
		refuse  int32
		timeout time.Duration
		want    error
	}{
		{"concurrent transactions, then done", kerr.ConcurrentTransactions.Code, 5, 5 * time.Second, nil},
		{"invalid state, then done", kerr.InvalidTxnState.Code, 5, 5 * time.Second, nil},
		{"concurrent transactions until ctx is done", kerr.ConcurrentTransactions.Code, 1 << 30, time.Second, context.DeadlineExceeded},
		{"invalid state for over 5s", kerr.InvalidTxnState.Code, 1 << 30, 10 * time.Second, kerr.InvalidTxnState},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := testkafka.NewKfake(t)
			refused := refuseFirst(c, kmsg.InitProducerID, tt.refuse, answer(tt.code))
			ctx, cancel := context.WithTimeout(t.Context(), tt.timeout)
			defer cancel()
			err := kafka.Fence(ctx, c.Client(t), c.Name("txn"))
			if tt.want == nil {
				if err != nil || refused.Load() != tt.refuse {
					t.Fatalf("Fence = %v after %d refusals, want nil after %d", err, refused.Load(), tt.refuse)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Fence = %v after %d refusals, want %v", err, refused.Load(), tt.want)
			}
		})
	}
}
