package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Fence initialises txnID from cl as a new producer would (a restarted
// instance, or a transaction timeout): the broker aborts the transaction
// open under it and bumps its epoch, so the producer that holds it is
// refused its next transactional request (PRODUCER_FENCED). It is how the
// chaos harness and the tests fence a live role.
//
// While that producer's last transaction is being completed the broker
// answers CONCURRENT_TRANSACTIONS, and a producer tries again: so does
// Fence, every 20ms until ctx is done. Kafka 4.4 also answered
// INVALID_TXN_STATE once, for an aggregator that was itself initialising
// after a kick (its transaction state between two transitions); Fence
// tries that again for at most 5s.
func Fence(ctx context.Context, cl *kgo.Client, txnID string) error {
	invalidUntil := time.Now().Add(5 * time.Second)
	for {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID = &txnID
		req.TransactionTimeoutMillis = 30000
		req.ProducerID, req.ProducerEpoch = -1, -1
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return err
		}
		err = kerr.ErrorForCode(resp.ErrorCode)
		retry := errors.Is(err, kerr.ConcurrentTransactions) ||
			errors.Is(err, kerr.InvalidTxnState) && time.Now().Before(invalidUntil)
		if !retry {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (still, when %w)", err, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
