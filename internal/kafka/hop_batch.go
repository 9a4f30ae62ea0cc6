package kafka

import (
	"context"
	"maps"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A Batch is the records of one poll and what processing them produced.
//
// Invariant: nothing a batch produced is visible to a read_committed
// reader, nor are its offsets committed, before the hop ends it
// (hop_txn.go, hop_commit.go); the role learns which way it ended through
// its EndFunc. A Batch is safe for concurrent use by the role's goroutines
// while its ProcessFunc runs, and is not used after it returns.

// Batch is what one poll returned, and what processing it produced.
type Batch struct {
	Fetches kgo.Fetches

	mu       sync.Mutex
	out      []*kgo.Record
	state    []*kgo.Record
	commits  map[string]map[int32]CommitOffset
	deferred bool
	// stateDue: the hop commits offsets after this batch (StateDue); held:
	// the role kept its state changes (HoldState).
	stateDue, held bool
}

// StateDue reports whether the hop commits offsets after this batch, if the
// role does not hold its state (HoldState): with HopConfig.CommitInterval
// the first batch past the interval, and under at-least-once the batch the
// hop runs before a revocation or when Run ends (a flush: no records);
// without an interval, and under exactly-once without
// HopConfig.HoldsState, every batch. A role that holds its state changes
// between commits writes them all in such a batch.
func (b *Batch) StateDue() bool { return b.stateDue }

// HoldState says the role kept this batch's state changes in memory
// instead of writing them (ProduceState): they go out with a later batch
// that does not hold, which the role writes when StateDue is true. Until
// then the hop commits none of the offsets polled since the last commit,
// so that after a crash the next owner consumes again everything whose
// state was not written. Under at-least-once the hop also runs a flush
// batch (no records, StateDue true) before it commits at a revocation and
// when Run ends. Under exactly-once the batch's output is still written in
// a transaction of its own, which commits the offsets where they were
// (hop_hold.go); at a revocation or Run's end the held records are left to
// be consumed again. A batch that holds must not call Commit. Safe for
// concurrent use.
func (b *Batch) HoldState() {
	b.mu.Lock()
	b.held = true
	b.mu.Unlock()
}

func (b *Batch) holding() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held
}

// Defer says the batch has nothing to commit now: its records stay in
// flight with the role, which commits them (Batch.Commit) with a later
// batch. The hop ends a deferred batch that produced nothing without a
// transaction or an offset commit, and without calling the EndFunc; a
// deferred batch that produced records is committed as usual. Safe for
// concurrent use.
func (b *Batch) Defer() {
	b.mu.Lock()
	b.deferred = true
	b.mu.Unlock()
}

// CommitOffset is where a batch commits one partition when the role does
// not commit everything it polled: the role keeps records in flight across
// batches and commits only up to the first one it has not finished (see
// [Batch.Commit]).
type CommitOffset struct {
	// Offset is the next record to consume from the partition.
	Offset int64
	// Epoch is the leader epoch of the record at Offset, or -1.
	Epoch int32
	// Metadata is stored with the committed offset, and read back with
	// kadm's FetchOffsets. Kafka caps it (offset.metadata.max.bytes,
	// default 4096 bytes).
	Metadata string
}

// Commit makes the batch commit topic/partition at o instead of after the
// last record polled from it. It applies only to a partition the hop's
// group consumes and has polled; other partitions commit as usual. Offsets
// must not move backwards from a batch to the next. Under exactly-once the
// offset and metadata are in the batch's transaction; when it aborts, the
// client goes back to the last committed offsets, so every record polled
// since is consumed again. Safe for concurrent use.
func (b *Batch) Commit(topic string, partition int32, o CommitOffset) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.commits == nil {
		b.commits = map[string]map[int32]CommitOffset{}
	}
	if b.commits[topic] == nil {
		b.commits[topic] = map[int32]CommitOffset{}
	}
	b.commits[topic][partition] = o
}

// commitOffsets returns a copy of the offsets given to Commit.
func (b *Batch) commitOffsets() map[string]map[int32]CommitOffset {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]map[int32]CommitOffset, len(b.commits))
	for t, ps := range b.commits {
		out[t] = maps.Clone(ps)
	}
	return out
}

// committing reports whether Commit was called.
func (b *Batch) committing() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.commits) > 0
}

// Produce adds r to the records to write with this batch: in one transaction
// with the batch's offsets under exactly-once, before the offsets are
// committed under at-least-once. Safe for concurrent use.
func (b *Batch) Produce(r *kgo.Record) {
	b.mu.Lock()
	b.out = append(b.out, r)
	b.mu.Unlock()
}

// ProduceState adds r, a record of the role's state (a changelog), to the
// records to write with this batch. Under exactly-once it is in the batch's
// transaction like any other. Under at-least-once it is written only after
// every record added with Produce is acknowledged, and before the offsets
// are committed: a crash may lose the state record of output that was
// written, never keep one whose output was lost. Safe for concurrent use.
func (b *Batch) ProduceState(r *kgo.Record) {
	b.mu.Lock()
	b.state = append(b.state, r)
	b.mu.Unlock()
}

// Len returns the number of records produced so far, state records
// included.
func (b *Batch) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.out) + len(b.state)
}

// commitContext returns ctx with the hooks that put b's own commit offsets
// (Batch.Commit) into the offset commit request, transactional or not.
func (b *Batch) commitContext(ctx context.Context) context.Context {
	b.mu.Lock()
	commits := b.commits
	b.mu.Unlock()
	if len(commits) == 0 {
		return ctx
	}
	ctx = kgo.PreTxnCommitFnContext(ctx, func(req *kmsg.TxnOffsetCommitRequest) error {
		for i := range req.Topics {
			t := &req.Topics[i]
			for j := range t.Partitions {
				p := &t.Partitions[j]
				if o, ok := commits[t.Topic][p.Partition]; ok {
					p.Offset, p.LeaderEpoch, p.Metadata = o.Offset, o.Epoch, &o.Metadata
				}
			}
		}
		return nil
	})
	return kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			t := &req.Topics[i]
			for j := range t.Partitions {
				p := &t.Partitions[j]
				if o, ok := commits[t.Topic][p.Partition]; ok {
					p.Offset, p.LeaderEpoch, p.Metadata = o.Offset, o.Epoch, &o.Metadata
				}
			}
		}
		return nil
	})
}
