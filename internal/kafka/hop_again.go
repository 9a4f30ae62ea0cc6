package kafka

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Records consumed again after an aborted batch, checked.
//
// Invariant: after a batch that did not commit, the next records the hop
// polls of each partition the batch read start at or before the first
// record the batch read of it. The client was set back to the committed
// offsets (GroupTransactSession.End, or Hop.rewind) or to those first
// records, and a read_committed consumer reads the same committed records
// again in the same order. A partition whose next records start later was
// not set back: the records between would never be handled, and their
// output never written, while the role had undone its state of them. Issue
// #13 saw four replies lost so (the aggregator read results past their
// manifests without the manifests' state), once, without learning how the
// rewind was missed. The hop so checks each poll: a partition past its
// mark is set back to it, with the rest of the poll, before the role sees
// any of it, and the skip is logged at error level and counted
// (Hop.RewindsRepaired, scattergather_hop_rewinds_repaired_total).
//
// A mark is forgotten once the partition is polled again, when the
// partition is revoked or assigned (its next owner starts from the
// committed offset, possibly past the mark), and when the client is built
// again.

// markAgain notes the first record of each partition of fetches, whose
// batch did not commit: where the partition is consumed again from.
func (h *Hop) markAgain(fetches kgo.Fetches) {
	h.ownMu.Lock()
	defer h.ownMu.Unlock()
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		if h.again == nil {
			h.again = map[string]map[int32]kgo.EpochOffset{}
		}
		if h.again[p.Topic] == nil {
			h.again[p.Topic] = map[int32]kgo.EpochOffset{}
		}
		r := p.Records[0]
		if cur, ok := h.again[p.Topic][p.Partition]; !ok || r.Offset < cur.Offset {
			h.again[p.Topic][p.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
		}
	})
}

// forgetAgain forgets the marks of m's partitions (all marks when m is
// nil).
func (h *Hop) forgetAgain(m map[string][]int32) {
	h.ownMu.Lock()
	defer h.ownMu.Unlock()
	if m == nil {
		h.again = nil
		return
	}
	for topic, ps := range m {
		for _, p := range ps {
			h.forgetMark(topic, p)
		}
	}
}

// forgetMark forgets the mark of topic/p, and the topic once it has none,
// so that a hop with no marks left skips the check of each poll. h.ownMu
// is held.
func (h *Hop) forgetMark(topic string, p int32) {
	delete(h.again[topic], p)
	if len(h.again[topic]) == 0 {
		delete(h.again, topic)
	}
}

// skippedAgain returns the partitions of fetches whose first record is past
// their mark, with the mark, and forgets the marks of every partition of
// fetches with records.
func (h *Hop) skippedAgain(fetches kgo.Fetches) map[string]map[int32]kgo.EpochOffset {
	h.ownMu.Lock()
	defer h.ownMu.Unlock()
	if len(h.again) == 0 {
		return nil
	}
	var out map[string]map[int32]kgo.EpochOffset
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		mark, ok := h.again[p.Topic][p.Partition]
		if len(p.Records) == 0 || !ok {
			return
		}
		h.forgetMark(p.Topic, p.Partition)
		if p.Records[0].Offset > mark.Offset {
			if out == nil {
				out = map[string]map[int32]kgo.EpochOffset{}
			}
			if out[p.Topic] == nil {
				out[p.Topic] = map[int32]kgo.EpochOffset{}
			}
			out[p.Topic][p.Partition] = mark
		}
	})
	return out
}

// repairSkip sets fetches back, the partitions of skipped to their marks
// and the others to their first polled records, so that the next poll has
// the records the skip would have lost. It reports whether it did.
func (h *Hop) repairSkip(fetches kgo.Fetches) bool {
	skipped := h.skippedAgain(fetches)
	if skipped == nil {
		return false
	}
	var desc []string
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if mark, ok := skipped[p.Topic][p.Partition]; ok && len(p.Records) > 0 {
			desc = append(desc, fmt.Sprintf("%s/%d: from %d, polled from %d", p.Topic, p.Partition, mark.Offset, p.Records[0].Offset))
		}
	})
	slices.Sort(desc)
	n := h.rewindsRepaired.Add(1)
	if h.repairedVec != nil {
		h.repairedVec.Inc()
	}
	h.log.Error("records of an aborted batch were not consumed again: the client was not set back; set back now",
		"group", h.cfg.Group, "partitions", strings.Join(desc, "; "), "repaired", n)
	h.rewindFetches(fetches)
	h.cl.SetOffsets(maps.Clone(skipped))
	if h.sess == nil {
		h.cl.AllowRebalance()
	}
	return true
}

// readRanges describes the records of fetches by partition, "topic/p:first-last"
// separated by spaces, for the log line of an aborted batch: where a
// record consumed twice or skipped came from is the first thing to know.
func readRanges(fetches kgo.Fetches) string {
	var parts []string
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if n := len(p.Records); n > 0 {
			parts = append(parts, fmt.Sprintf("%s/%d:%d-%d", p.Topic, p.Partition, p.Records[0].Offset, p.Records[n-1].Offset))
		}
	})
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// RewindsRepaired counts the polls whose records started past where an
// aborted batch left a partition, set back (see hop_again.go). Safe for
// concurrent use.
func (h *Hop) RewindsRepaired() int64 { return h.rewindsRepaired.Load() }
