package kafka

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Ending a batch under at-least-once.
//
// Invariant: offsets are committed only after every record the batch
// produced is acknowledged, output before state (Batch.ProduceState), so a
// crash may repeat output, never lose it. A batch that fails is rewound to
// its first polled records (or the committed offsets, for a role that
// commits its own) and consumed again. With HopConfig.CommitInterval the
// acknowledged offsets wait in Hop.acked for the next commit; the client
// polls with BlockRebalanceOnPoll, so a revocation comes between batches,
// when everything polled is acknowledged, and commits them first.

func (h *Hop) commitAfterProduce(ctx, bctx context.Context, b *Batch, perr error, end EndFunc) error {
	if perr != nil {
		h.rewind(b)
		end(false)
		return h.batchError(ctx, perr)
	}
	// Output first, then state: see Batch.ProduceState.
	for _, out := range [][]*kgo.Record{b.out, b.state} {
		// What was written stays written; a record Kafka refuses for good
		// is replaced by its dead letter (see reject.go).
		for round := 0; len(out) > 0; round++ {
			failed, err := h.produceAll(bctx, out)
			if err == nil {
				break
			}
			var ok bool
			if round < maxRejectRounds {
				out, ok = h.replaceRejected(nil, failed)
			}
			if !ok {
				// Some records may have been written: they will be written
				// again when the batch is consumed again, which is what
				// at-least-once allows.
				end(false)
				return fmt.Errorf("produce: %w", err)
			}
		}
	}
	if h.cfg.CommitInterval > 0 && !b.committing() {
		if b.holding() {
			// The role's state for these records is not written yet: their
			// offsets wait for the batch that writes it.
			h.holding.Store(true)
			end(true)
			return nil
		}
		h.ackedMu.Lock()
		h.acked = mergeOffsets(h.acked, h.cl.UncommittedOffsets())
		due := b.stateDue || time.Since(h.lastCommit) >= h.cfg.CommitInterval
		h.ackedMu.Unlock()
		h.holding.Store(false)
		if due {
			if err := h.commitAcked(bctx); err != nil {
				end(false)
				return fmt.Errorf("commit offsets: %w", err)
			}
		}
		end(true)
		return nil
	}
	if err := h.commitOffsets(bctx, b); err != nil {
		end(false)
		return fmt.Errorf("commit offsets: %w", err)
	}
	end(true)
	return nil
}

// commitAcked commits the acknowledged offsets that wait for the commit
// interval; on an error they are kept for the next try. Safe for
// concurrent use: Run's goroutine and a revocation call it.
func (h *Hop) commitAcked(ctx context.Context) error {
	h.ackedMu.Lock()
	defer h.ackedMu.Unlock()
	if len(h.acked) == 0 {
		h.lastCommit = time.Now()
		return nil
	}
	if err := commitSync(ctx, h.cl, h.acked); err != nil {
		return err
	}
	h.acked, h.lastCommit = nil, time.Now()
	return nil
}

// stateDue reports whether a batch about to run is followed by an offset
// commit (Batch.StateDue); final: Run's last. Under exactly-once every
// batch of a role that does not hold state commits, and a batch may hold
// only if every partition it would commit has a committed offset
// (hop_hold.go).
func (h *Hop) stateDue(final bool) bool {
	if h.cfg.CommitInterval <= 0 || final || (h.sess != nil && !h.cfg.HoldsState) {
		return true
	}
	h.ackedMu.Lock()
	due := time.Since(h.lastCommit) >= h.cfg.CommitInterval
	h.ackedMu.Unlock()
	if h.sess != nil && !due {
		return !h.holdable()
	}
	return due
}

// flushHeld runs a batch with no records and StateDue, for a role that
// holds state (Batch.HoldState) since the last commit, so that it writes
// that state before the offsets are committed at a revocation or at Run's
// end. It runs only between batches (Run's goroutine, or a revocation,
// which BlockRebalanceOnPoll keeps out of batches). A flush that fails
// leaves the offsets uncommitted: the next owner consumes them again.
func (h *Hop) flushHeld(ctx context.Context) {
	if !h.holding.Load() || h.process == nil {
		return
	}
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeCommitTimeout)
	defer cancel()
	b := &Batch{stateDue: true}
	if err := h.commitAfterProduce(ctx, bctx, b, h.process(bctx, b), h.ended); err != nil {
		h.log.Warn("writing the held state before a commit failed; the next owner consumes those records again", "group", h.cfg.Group, "err", err)
	}
}

// commitBeforeRevoke commits the acknowledged offsets before partitions go
// to another member, so that it does not consume them again; a lost
// session cannot commit, and its offsets are dropped (consumed again).
func (h *Hop) commitBeforeRevoke(ctx context.Context, lost bool) {
	if !lost {
		h.flushHeld(ctx)
		// Bounded: a commit can hang while the group rejoins (seen at the
		// close of a member the coordinator had removed), and the close
		// must end within the stop bound.
		cctx, cancel := context.WithTimeout(ctx, revokeCommitTimeout)
		err := h.commitAcked(cctx)
		cancel()
		if err == nil {
			return
		}
		h.log.Warn("commit before a revocation failed; the next owner consumes those records again", "group", h.cfg.Group, "err", err)
	}
	h.ackedMu.Lock()
	h.acked = nil
	h.ackedMu.Unlock()
}

// revokeCommitTimeout bounds the commit before a revocation.
const revokeCommitTimeout = 3 * time.Second

// mergeOffsets adds add to to (a nil to is made), the later offset winning.
func mergeOffsets(to, add map[string]map[int32]kgo.EpochOffset) map[string]map[int32]kgo.EpochOffset {
	if to == nil {
		to = make(map[string]map[int32]kgo.EpochOffset, len(add))
	}
	for t, ps := range add {
		if to[t] == nil {
			to[t] = make(map[int32]kgo.EpochOffset, len(ps))
		}
		for p, o := range ps {
			if cur, ok := to[t][p]; !ok || o.Offset > cur.Offset {
				to[t][p] = o
			}
		}
	}
	return to
}

// commitOffsets commits what b consumed (at-least-once): the polled
// position of every partition, except where b set its own (Batch.Commit).
func (h *Hop) commitOffsets(ctx context.Context, b *Batch) error {
	if !b.committing() {
		return h.cl.CommitUncommittedOffsets(ctx)
	}
	offsets := h.cl.UncommittedOffsets()
	b.mu.Lock()
	for t, ps := range b.commits {
		for p, o := range ps {
			if _, ok := offsets[t][p]; ok {
				offsets[t][p] = kgo.EpochOffset{Epoch: o.Epoch, Offset: o.Offset}
			}
		}
	}
	b.mu.Unlock()
	return commitSync(b.commitContext(ctx), h.cl, offsets)
}

// commitSync commits offsets and reports the first error, of the request
// or of a partition.
func commitSync(ctx context.Context, cl *kgo.Client, offsets map[string]map[int32]kgo.EpochOffset) error {
	var err error
	cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, cerr error) {
		if cerr != nil {
			err = cerr
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil && err == nil {
					err = fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, perr)
				}
			}
		}
	})
	return err
}

// rewind sets each partition of fetches back to its first polled record, so
// that an aborted batch is consumed again. A batch that set its own commit
// offsets (Batch.Commit) may have records in flight from earlier polls:
// every partition goes back to its committed offset instead.
func (h *Hop) rewind(b *Batch) {
	h.markAgain(b.Fetches)
	if b.committing() {
		to := map[string]map[int32]kgo.EpochOffset{}
		for t, ps := range h.cl.CommittedOffsets() {
			to[t] = maps.Clone(ps)
		}
		if len(to) > 0 {
			h.cl.SetOffsets(to)
		}
		return
	}
	h.rewindFetches(b.Fetches)
}

func (h *Hop) rewindFetches(fetches kgo.Fetches) {
	to := map[string]map[int32]kgo.EpochOffset{}
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		r := p.Records[0]
		if to[p.Topic] == nil {
			to[p.Topic] = map[int32]kgo.EpochOffset{}
		}
		to[p.Topic][p.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
	})
	if len(to) > 0 {
		h.cl.SetOffsets(to)
	}
}
