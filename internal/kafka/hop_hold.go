package kafka

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Held state under exactly-once.
//
// Invariant: the offsets a transaction commits never pass what the
// changelog of a role that holds its state (Batch.HoldState) has written.
// A transaction of a held batch writes the batch's output (and whatever
// state the role did write, such as completions) and commits each polled
// partition at its committed offset again: the offsets do not move, and the
// TxnOffsetCommit still carries the member's generation, so a zombie member
// is fenced as in every other transaction (KIP-447). The first batch past
// HopConfig.CommitInterval (StateDue) writes the held state and commits
// everything polled, in one transaction. A crash so consumes the held
// batches' records again, against a changelog of the state as of their
// first one. A partition with no committed offset yet cannot be held (its
// batch is StateDue). Any batch that does not hold, idle or with nothing
// to write, commits the offsets the held ones left (HopConfig.HoldsState),
// and so does Run before the client leaves.
//
// A held batch that aborts is consumed again from its own first records:
// End sets the client back to the committed offsets, which would consume
// again the records of the earlier held batches, whose transactions
// committed. The hop sets it forward to where the batch began (Hop.resume),
// unless the group's generation or what the role owns changed meanwhile:
// then the role's state of a partition may be the restored one, which
// agrees with the committed offset. Consuming a held batch's records again
// is harmless to a role that holds (its state of them is idempotent, as
// after a crash); setting forward spares the work.

// commitsHeld reports whether, under exactly-once, the role holds state
// (HopConfig.HoldsState) and offsets it polled are not committed: a batch
// that does not hold must commit them.
func (h *Hop) commitsHeld() bool {
	return h.sess != nil && h.cfg.HoldsState && len(h.cl.UncommittedOffsets()) > 0
}

// holdable reports whether every partition the client polled past its
// committed offset has one, so that a held transaction can commit it again.
func (h *Hop) holdable() bool {
	committed := h.cl.CommittedOffsets()
	for t, ps := range h.cl.UncommittedOffsets() {
		for p := range ps {
			if _, ok := committed[t][p]; !ok {
				return false
			}
		}
	}
	return true
}

// heldContext returns ctx with the hook that commits every partition of
// the transaction at its committed offset (committed, read before End), and
// leaves out a partition with none.
func heldContext(ctx context.Context, committed map[string]map[int32]kgo.EpochOffset) context.Context {
	return kgo.PreTxnCommitFnContext(ctx, func(req *kmsg.TxnOffsetCommitRequest) error {
		topics := req.Topics[:0]
		for _, t := range req.Topics {
			parts := t.Partitions[:0]
			for _, p := range t.Partitions {
				if o, ok := committed[t.Topic][p.Partition]; ok {
					p.Offset, p.LeaderEpoch = o.Offset, o.Epoch
					parts = append(parts, p)
				}
			}
			if len(parts) > 0 {
				t.Partitions = parts
				topics = append(topics, t)
			}
		}
		req.Topics = topics
		return nil
	})
}

// resumePoint is where a batch that aborts is consumed again from, when
// earlier held batches committed: each partition's first record of the
// batch, or for a partition the batch did not read, the client's position.
// gen and owns say what the group and the role held when it was taken.
type resumePoint struct {
	at   map[string]map[int32]kgo.EpochOffset
	gen  int32
	owns uint64
}

// resumeAt takes b's resume point; call it before ending b.
func (h *Hop) resumeAt(b *Batch) resumePoint {
	at := h.cl.UncommittedOffsets()
	if at == nil {
		at = map[string]map[int32]kgo.EpochOffset{}
	}
	b.Fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		if at[p.Topic] == nil {
			at[p.Topic] = map[int32]kgo.EpochOffset{}
		}
		r := p.Records[0]
		at[p.Topic][p.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
	})
	_, gen := h.cl.GroupMetadata()
	h.ownMu.Lock()
	owns := h.ownGen
	h.ownMu.Unlock()
	return resumePoint{at: at, gen: gen, owns: owns}
}

// resume sets the client forward to rp after End aborted a batch and set it
// back to the committed offsets, if the group's generation and what the
// role owns are what they were when rp was taken; it reports whether it
// did. The ownership lock is held while the offsets are set, so that a
// revocation comes before (and is seen) or after (and drops the set
// partitions' positions with them).
func (h *Hop) resume(rp resumePoint) bool {
	if len(rp.at) == 0 {
		return false
	}
	if _, gen := h.cl.GroupMetadata(); gen != rp.gen {
		return false
	}
	h.ownMu.Lock()
	defer h.ownMu.Unlock()
	if h.ownGen != rp.owns {
		return false
	}
	h.cl.SetOffsets(rp.at)
	return true
}
