package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Ending a batch under exactly-once.
//
// Invariant: a batch's output records and its consumed offsets (or the
// role's own commit offsets, Batch.Commit) are committed in one Kafka
// transaction, or none of them is. An aborted batch is consumed again:
// GroupTransactSession.End rewinds the client to the committed offsets.
// The only abort that does not rewind is that of one attempt at writing a
// batch whose record Kafka refused for good (reject.go): the same batch is
// written again at once, without that record.

func (h *Hop) endTransaction(ctx, bctx context.Context, b *Batch, perr error, end EndFunc) error {
	if perr != nil {
		// Nothing was produced yet: there is no transaction to abort, but the
		// polled records must be consumed again.
		h.rewind(b)
		end(false)
		return h.batchError(ctx, perr)
	}
	held := b.holding()
	nothing := len(b.out) == 0 && len(b.state) == 0
	if nothing && !h.sessFlagged.Load() && (held || len(h.cl.UncommittedOffsets()) == 0) {
		// Nothing to write and nothing to commit (a role's own commit
		// offsets equal the committed ones, or the role holds their
		// state): franz-go would end no transaction, yet hold its
		// session's lock for 500ms, since no TxnOffsetCommit response
		// told it the broker has KIP-447.
		end(true)
		return nil
	}
	var rp resumePoint
	if h.cfg.HoldsState {
		rp = h.resumeAt(b)
	}
	failed, prodErr, err := h.produceInTransaction(bctx, slices.Concat(b.out, b.state))
	if err != nil {
		end(false)
		return err
	}
	try := kgo.TryCommit
	if prodErr != nil {
		try = kgo.TryAbort
	}
	// End resets the session's revocation flags: a revocation after this
	// point flags the hop again.
	revoked := h.sessFlagged.Swap(false)
	bound := h.endTimeout()
	cctx := b.commitContext(bctx)
	if held {
		cctx = heldContext(bctx, h.cl.CommittedOffsets())
	}
	// What the transaction commits, unless it holds (then it moves no
	// offset): End sets the client back when it fails, and settledAborted
	// needs it.
	var uncommitted map[string]map[int32]kgo.EpochOffset
	if !held {
		uncommitted = h.cl.UncommittedOffsets()
	}
	ectx, cancel := context.WithTimeout(cctx, bound)
	committed, err := h.sess.End(ectx, try)
	endedInTime := ectx.Err() == nil
	cancel()
	h.lastEnd = time.Now()
	var commitErr, endErr error
	switch {
	case committed:
		h.commitFails = 0
	case err == nil || !endedInTime || !restartable(err) || h.commitFails >= maxCommitFails:
	case offsetCommitAborted(err):
		// The transaction is aborted and the client set back: go on as
		// after any abort, with this client.
		h.commitFails++
		commitErr, err = err, nil
	case h.settledAborted(bctx, b, uncommitted, err):
		h.commitFails++
		endErr, err = err, nil
	}
	switch {
	case committed && held:
		// The interval runs on: lastCommit is the last full commit's.
	case committed:
		h.ackedMu.Lock()
		h.lastCommit = h.lastEnd
		h.ackedMu.Unlock()
	case err == nil:
		// End set the client back to the committed offsets.
		h.markAgain(b.Fetches)
		h.resume(rp)
	}
	end(committed)
	switch {
	case err != nil && errors.Is(ectx.Err(), context.DeadlineExceeded) && bctx.Err() == nil:
		// The client is in no state to go on after a cancelled End: Run
		// builds a new one, whose InitProducerID aborts the transaction.
		return fmt.Errorf("end transaction: not ended within %s (the group's session timeout), the client is rebuilt: %w", bound, errors.Join(err, prodErr))
	case err != nil:
		return fmt.Errorf("end transaction: %w", errors.Join(err, prodErr))
	case allRejected(failed):
		// Even the dead letters were refused: retrying cannot help.
		return fmt.Errorf("write dead letters to %q: %w", h.cfg.DeadLetters, prodErr)
	case prodErr != nil:
		h.log.Warn("transaction aborted", "group", h.cfg.Group, "err", prodErr, "read", readRanges(b.Fetches))
	case commitErr != nil:
		h.log.Info("transaction aborted: its offset commit failed; records will be consumed again", "group", h.cfg.Group, "err", commitErr, "in_a_row", h.commitFails, "read", readRanges(b.Fetches))
	case endErr != nil:
		h.log.Info("transaction aborted: its end failed, and the group's offsets show it did not commit; records will be consumed again", "group", h.cfg.Group, "err", endErr, "in_a_row", h.commitFails, "read", readRanges(b.Fetches))
	case !committed && (revoked || h.sessFlagged.Load()):
		h.log.Info("transaction aborted by a rebalance; records will be consumed again", "group", h.cfg.Group, "read", readRanges(b.Fetches))
	case !committed:
		// GroupTransactSession.End aborts without an error, and without
		// retrying, when its TxnOffsetCommit fails with an error it
		// counts as abortable (franz-go v1.22.3: CONCURRENT_TRANSACTIONS,
		// NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, ...) or its
		// heartbeat fails. On 3 Kafka 4.4 nodes about one in ten of a busy
		// aggregator's transactions gets CONCURRENT_TRANSACTIONS: it comes
		// right after the previous one, whose commit marker the offsets
		// partition has not got yet (docs/DESIGN.md).
		h.log.Info("transaction aborted: its offset commit failed (CONCURRENT_TRANSACTIONS right after the previous commit, or a coordinator moving); records will be consumed again", "group", h.cfg.Group, "read", readRanges(b.Fetches))
	}
	return nil
}

// maxCommitFails is how many batches in a row may fail their offset commit
// (or their EndTxn, see settledAborted) and be consumed again with the same
// client; the next such failure rebuilds the client, as any other error of
// End does.
const maxCommitFails = 3

// settledAborted settles a transaction whose End failed with an error that
// leaves its outcome unknown (franz-go v1.22.3: an EndTxn that fails to
// dial, times out or gets a retriable error; End then sets the client back
// to the committed offsets and flags its producer ID for reloading), and
// reports whether it aborted. Then the batch is consumed again with this
// client, as after any abort; otherwise (it committed, or cannot be told)
// the hop builds a new client as before, which reads the committed offsets
// and, for the aggregator, restores its state.
//
// Settling: the producer ID is loaded again (InitProducerID at the same
// epoch aborts the transaction if it is still open, or waits for the end
// it was given), and EndTransaction(TryAbort) clears the client's
// transaction without a request. The group's committed offsets, fetched
// with RequireStable, then tell: a transaction commits all its offsets or
// none, so a partition it would have moved (moves) that still has its
// offset from before says aborted. A batch that moves no offset (one that
// holds state, uncommitted nil) cannot be told so. uncommitted is the
// client's uncommitted offsets before End: End's failure sets the client
// back to the committed ones, which it leaves as they were.
//
// Seen on Kafka 4.4 when a broker is SIGKILLed: a role's EndTxn goes to the
// transaction coordinator on the dead node, and franz-go gives up after two
// lookups of the coordinator that fail to dial. The new client cost a
// rejoin and, for the aggregator, a restore: 1.5s of a 5.1s stall once.
func (h *Hop) settledAborted(ctx context.Context, b *Batch, uncommitted map[string]map[int32]kgo.EpochOffset, endErr error) bool {
	moves := offsetMoves(h.cl.CommittedOffsets(), uncommitted, b.commitOffsets())
	if len(moves) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, h.endTimeout())
	defer cancel()
	why := func() error {
		if _, _, err := h.cl.ProducerID(ctx); err != nil {
			return fmt.Errorf("load the producer ID again: %w", err)
		}
		if err := h.cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
			return fmt.Errorf("end the transaction: %w", err)
		}
		offs, err := kadm.NewClient(h.cl).FetchOffsets(kadm.RequireStable(ctx), h.cfg.Group)
		if err != nil {
			return fmt.Errorf("fetch the group's committed offsets: %w", err)
		}
		for _, m := range moves {
			at := int64(-1)
			if o, ok := offs.Lookup(m.topic, m.partition); ok {
				if o.Err != nil {
					return fmt.Errorf("fetch the committed offset of %s[%d]: %w", m.topic, m.partition, o.Err)
				}
				at = o.At
			}
			if at != m.from {
				return fmt.Errorf("%s[%d] committed at %d (was %d, the transaction's is %d): it may have committed", m.topic, m.partition, at, m.from, m.to)
			}
		}
		return nil
	}()
	if why != nil {
		h.log.Info("transaction end failed and its outcome is not known to be an abort; building a new client", "group", h.cfg.Group, "err", endErr, "why", why)
		return false
	}
	return true
}

// offsetMove is a partition whose committed offset a transaction moves.
type offsetMove struct {
	topic     string
	partition int32
	from, to  int64
}

// offsetMoves lists the partitions whose committed offset (committed) a
// transaction committing the client's uncommitted offsets, or the role's
// own (commits, Batch.Commit), would move.
func offsetMoves(committed, uncommitted map[string]map[int32]kgo.EpochOffset, commits map[string]map[int32]CommitOffset) []offsetMove {
	var moves []offsetMove
	for t, ps := range uncommitted {
		for p, o := range ps {
			to := o.Offset
			if c, ok := commits[t][p]; ok {
				to = c.Offset
			}
			from := int64(-1)
			if c, ok := committed[t][p]; ok {
				from = c.Offset
			}
			if to != from {
				moves = append(moves, offsetMove{t, p, from, to})
			}
		}
	}
	return moves
}

// offsetCommitAborted reports whether err, returned by
// GroupTransactSession.End with committed=false, is the failure of its
// TxnOffsetCommit after which End aborted the transaction and set the
// client back to the committed offsets: the state of any abort, which needs
// no new client. franz-go v1.22.3 returns such an error, prefixed "unable
// to commit transaction offsets", only when that abort succeeded (an error
// of the EndTxn itself is returned bare, and then the transaction's fate
// is unknown: see settledAborted).
//
// Seen on Kafka 4.4 when a broker is SIGKILLed: a role's TxnOffsetCommit
// goes to the group coordinator on the dead node, and franz-go gives up
// after two lookups of the coordinator that fail to dial. Building a new
// client cost the role a rejoin (and the aggregator a restore) on top of
// the broker's failover, 6 times in 76 node kills on 7 Dec 2026.
// TestTxnOffsetCommitFailureAborts pins the message.
func offsetCommitAborted(err error) bool {
	return strings.Contains(err.Error(), "unable to commit transaction offsets")
}

// endTimeout bounds GroupTransactSession.End. End waits for a heartbeat
// after its offset commit, and without a deadline it waits for ever when
// the heartbeat loop cannot take it: seen on kfake when the member was
// removed from its group (LeaveGroup) while it rejoined, and its JoinGroup
// was never answered; End hung 37s, and its open transaction held the other
// instance's restore (read_committed) until the broker's transaction
// timeout, a 21s stall of every reply. A member that cannot end a
// transaction within its session timeout has lost its partitions anyway.
func (h *Hop) endTimeout() time.Duration {
	return cmp.Or(h.cfg.SessionTimeout, kafkaconfig.DefaultSessionTimeout)
}

// endProduceOnly runs the transaction of a batch that consumed nothing (a
// tick's timers fired) with the client's own EndTransaction. With no offsets
// to commit it needs no group generation check, and GroupTransactSession.End
// would cost 500ms: without a TxnOffsetCommit response it cannot tell that
// the broker supports KIP-447 and holds the session's lock that long
// (franz-go v1.22.3). A revocation waits for it (see Hop.idle).
func (h *Hop) endProduceOnly(ctx, bctx context.Context, b *Batch, perr error, end EndFunc) error {
	if perr != nil {
		end(false)
		return h.batchError(ctx, perr)
	}
	failed, prodErr, err := h.produceInTransaction(bctx, slices.Concat(b.out, b.state))
	if err != nil {
		end(false)
		return err
	}
	try := kgo.TryCommit
	if prodErr != nil {
		try = kgo.TryAbort
		if err := h.cl.AbortBufferedRecords(bctx); err != nil {
			prodErr = errors.Join(prodErr, err)
		}
	}
	err = h.cl.EndTransaction(bctx, try)
	h.lastEnd = time.Now()
	if err != nil {
		end(false)
		return fmt.Errorf("end transaction: %w", errors.Join(err, prodErr))
	}
	end(try == kgo.TryCommit)
	if allRejected(failed) {
		return fmt.Errorf("write dead letters to %q: %w", h.cfg.DeadLetters, prodErr)
	}
	if prodErr != nil {
		h.log.Warn("transaction aborted", "group", h.cfg.Group, "err", prodErr)
	}
	return nil
}

// produceInTransaction begins a transaction and writes out in it. A record
// Kafka refuses for good aborts that attempt only: the transaction is ended
// without the session (which would rewind the consumer to the committed
// offsets) and begun again with a dead letter in the record's place (see
// reject.go), at most maxRejectRounds times. It returns the records of the
// last attempt that failed and the first produce error, with the
// transaction still open for the caller to end; err is an error beginning
// or aborting a transaction, after which there is none open.
func (h *Hop) produceInTransaction(ctx context.Context, out []*kgo.Record) (failed []failedRecord, prodErr, err error) {
	for round := 0; ; round++ {
		if err := h.sess.Begin(); err != nil {
			return nil, nil, fmt.Errorf("begin transaction: %w", err)
		}
		failed, prodErr = h.produceAll(ctx, out)
		if prodErr == nil || round == maxRejectRounds {
			return failed, prodErr, nil
		}
		next, ok := h.replaceRejected(out, failed)
		if !ok {
			return failed, prodErr, nil
		}
		if err := h.abortAttempt(ctx); err != nil {
			return nil, nil, fmt.Errorf("end transaction: %w", errors.Join(err, prodErr))
		}
		out = next
	}
}
