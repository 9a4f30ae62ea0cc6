package kafka

import (
	"context"
	"fmt"
	"maps"

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
// commits its own) and consumed again.

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
	if err := h.commitOffsets(bctx, b); err != nil {
		end(false)
		return fmt.Errorf("commit offsets: %w", err)
	}
	end(true)
	return nil
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
	var err error
	h.cl.CommitOffsetsSync(b.commitContext(ctx), offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, cerr error) {
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
