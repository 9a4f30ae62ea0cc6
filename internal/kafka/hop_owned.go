package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// What the role owns, and revocations franz-go does not pass on.
//
// Invariant: the role's OnAssigned and OnRevoked see every partition it
// gains and loses, exactly once each, so that per-partition state is never
// kept for a partition another member owns. franz-go's
// GroupTransactSession passes on only the first revocation until End runs,
// and drops one that arrives while End runs (v1.22.3, txn.go; see
// docs/DESIGN.md), so the hop also learns each sync's whole assignment
// through its group balancer and revokes what the role owns beyond it.

// syncTracker is the group balancer (cooperative-sticky, kgo's default),
// noting the whole assignment of each sync: OnPartitionsAssigned is passed
// only what was added.
type syncTracker struct {
	kgo.GroupBalancer
	last atomic.Pointer[map[string][]int32]
}

func (t *syncTracker) ParseSyncAssignment(b []byte) (map[string][]int32, error) {
	m, err := t.GroupBalancer.ParseSyncAssignment(b)
	if err == nil {
		c := make(map[string][]int32, len(m))
		for topic, ps := range m {
			c[topic] = slices.Clone(ps)
		}
		t.last.Store(&c)
	}
	return m, err
}

// own adds (or removes) partitions to what the role owns.
func (h *Hop) own(m map[string][]int32, add bool) {
	h.ownMu.Lock()
	defer h.ownMu.Unlock()
	h.ownGen++
	for topic, ps := range m {
		for _, p := range ps {
			if add {
				if h.owned[topic] == nil {
					h.owned[topic] = map[int32]bool{}
				}
				h.owned[topic][p] = true
			} else {
				delete(h.owned[topic], p)
			}
		}
	}
}

// unowned returns what the role owns beyond keep (all it owns when keep
// is nil).
func (h *Hop) unowned(keep map[string][]int32) map[string][]int32 {
	h.ownMu.Lock()
	defer h.ownMu.Unlock()
	var out map[string][]int32
	for topic, ps := range h.owned {
		for p := range ps {
			if keep == nil || !slices.Contains(keep[topic], p) {
				if out == nil {
					out = map[string][]int32{}
				}
				out[topic] = append(out[topic], p)
			}
		}
	}
	for _, ps := range out {
		slices.Sort(ps)
	}
	return out
}

// assigned hands as to the role's OnAssigned, after revoking what the role
// owns beyond the sync's whole assignment (see Hop.synced).
func (h *Hop) assigned(ctx context.Context, cl *kgo.Client, as map[string][]int32) {
	if last := h.synced.last.Load(); last != nil {
		if stale := h.unowned(*last); len(stale) > 0 {
			h.log.Warn("revoking partitions whose revocation the transaction session did not pass on", "group", h.cfg.Group, "partitions", stale)
			h.revoke(ctx, cl, stale, false)
		}
	}
	if h.cfg.OnAssigned != nil {
		h.cfg.OnAssigned(ctx, cl, as)
	}
	h.own(as, true)
	h.forgetAgain(as)
	h.partitions.Add(countPartitions(as))
	h.joined.Store(true)
	h.rebalanceAt.Store(time.Now().UnixNano())
}

// offsetsFetched logs the committed offsets the client will consume newly
// assigned partitions from, with their topic: where a partition starts
// after a rebalance is the first thing to know when a record is consumed
// twice or skipped.
func (h *Hop) offsetsFetched(_ context.Context, _ *kgo.Client, resp *kmsg.OffsetFetchResponse) error {
	for _, t := range fetchedOffsets(resp) {
		h.log.Info("committed offsets fetched for assigned partitions", "group", h.cfg.Group, "topic", t.topic, "offsets", t.offsets)
	}
	return nil
}

type topicOffsets struct {
	topic   string
	offsets string // "partition:offset ...", -1 where none is committed
}

// fetchedOffsets lists an OffsetFetch response's offsets by topic: of its
// group (version 8+; kgo may fill the top-level topics as well), or of its
// top-level topics (before 8).
func fetchedOffsets(resp *kmsg.OffsetFetchResponse) []topicOffsets {
	var out []topicOffsets
	add := func(topic string, parts []kmsg.OffsetFetchResponseTopicPartition) {
		slices.SortFunc(parts, func(a, b kmsg.OffsetFetchResponseTopicPartition) int { return cmp.Compare(a.Partition, b.Partition) })
		var b strings.Builder
		for i, p := range parts {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%d:%d", p.Partition, p.Offset)
		}
		out = append(out, topicOffsets{topic, b.String()})
	}
	if len(resp.Groups) == 0 {
		for _, t := range resp.Topics {
			add(t.Topic, slices.Clone(t.Partitions))
		}
	}
	for _, g := range resp.Groups {
		for _, t := range g.Topics {
			parts := make([]kmsg.OffsetFetchResponseTopicPartition, len(t.Partitions))
			for i, p := range t.Partitions {
				parts[i] = kmsg.OffsetFetchResponseTopicPartition{Partition: p.Partition, Offset: p.Offset}
			}
			add(t.Topic, parts)
		}
	}
	return out
}

// revoke hands rev to the role's OnRevoked (under exactly-once after the
// idle batch in flight, see Hop.idle) and forgets it.
func (h *Hop) revoke(ctx context.Context, cl *kgo.Client, rev map[string][]int32, lost bool) {
	rev = h.ownedOf(rev)
	if h.cfg.OnRevoked != nil && len(rev) > 0 {
		if h.cfg.Guarantee == kafkaconfig.ExactlyOnce {
			select {
			case h.idle <- struct{}{}:
				defer func() { <-h.idle }()
			case <-h.abandoned:
			}
		}
		h.cfg.OnRevoked(ctx, cl, rev)
	}
	h.own(rev, false)
	h.forgetAgain(rev)
	h.partitions.Add(-countPartitions(rev))
	h.rebalanceAt.Store(time.Now().UnixNano())
	if lost {
		h.joined.Store(false)
	}
}

// ownedOf returns the part of m the role owns.
func (h *Hop) ownedOf(m map[string][]int32) map[string][]int32 {
	h.ownMu.Lock()
	defer h.ownMu.Unlock()
	out := map[string][]int32{}
	for topic, ps := range m {
		for _, p := range ps {
			if h.owned[topic][p] {
				out[topic] = append(out[topic], p)
			}
		}
	}
	return out
}

// Membership reports whether the hop's client is a member of its group
// with an assignment (possibly empty: a group may have more members than
// partitions), and how many partitions it holds. It is false before the
// first assignment, after the session is lost and after Run returns. Safe
// for concurrent use.
func (h *Hop) Membership() (joined bool, partitions int) {
	return h.joined.Load(), int(h.partitions.Load())
}

// SettleQuiet is how long a hop's group must have been without a
// rebalance callback before Settled reports it settled: a cooperative
// rebalance comes in two rounds (revoke, then assign), and a member that
// joins a moment later starts another.
const SettleQuiet = time.Second

// Settled reports, as an error saying what is missing, whether the hop is
// settled in its group: a member with an assignment and no rebalance
// callback for SettleQuiet, so that the first request after it is not held
// up by a rebalance (an aborted transaction). Readiness checks use it.
// (It does not wait for a fetch: a role that paused its fetching, the
// aggregator at its open-request limit, sends none.) Safe for concurrent
// use.
func (h *Hop) Settled() error {
	if !h.joined.Load() {
		return errors.New("not yet a member of its consumer group with an assignment")
	}
	if quiet := time.Since(time.Unix(0, h.rebalanceAt.Load())); quiet < SettleQuiet {
		return fmt.Errorf("its group rebalanced %s ago; settled after %s without one", quiet.Round(time.Millisecond), SettleQuiet)
	}
	return nil
}

func countPartitions(m map[string][]int32) int64 {
	n := 0
	for _, ps := range m {
		n += len(ps)
	}
	return int64(n)
}
