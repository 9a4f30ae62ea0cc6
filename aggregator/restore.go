package aggregator

import (
	"context"
	"fmt"
	"time"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// restoreAttempts is how often restoring a set of partitions is tried
// before Run fails; restoreBackoff is the wait after the first failure,
// doubled after each.
const (
	restoreAttempts = 5
	restoreBackoff  = 250 * time.Millisecond
)

// restore reads the changelog partitions parts and rebuilds their state,
// trying again after an error (a broker moving, a timeout) until
// restoreAttempts have failed or ctx is done.
func (a *Aggregator) restore(ctx context.Context, parts []int32) (map[int32]*partitionState, restored, error) {
	backoff := restoreBackoff
	for attempt := 1; ; attempt++ {
		entries, err := a.readChangelog(ctx, parts)
		if err == nil {
			return a.rebuildAll(entries)
		}
		if ctx.Err() != nil || attempt == restoreAttempts {
			return nil, restored{}, err
		}
		a.log.Warn("restore failed; trying again", "partitions", parts, "attempt", attempt, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return nil, restored{}, ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

func (a *Aggregator) rebuildAll(entries map[int32]map[string][]byte) (map[int32]*partitionState, restored, error) {
	states := make(map[int32]*partitionState, len(entries))
	var total restored
	// rebuild only reads the machine's configuration (merges, late
	// window); no lock is needed.
	for p, es := range entries {
		ps, n, problems := a.m.rebuild(p, es, a.cfg.Topics.Results())
		if problems != nil {
			a.log.Warn("changelog entries skipped", "partition", p, "skipped", n.skipped, "first", problems)
		}
		states[p] = ps
		total.add(n)
	}
	return states, total, nil
}

// readChangelog reads changelog partitions parts from the start to their
// end, read_committed, and returns each key's latest value per partition.
//
// The end is marked, not measured: it first writes a tombstone with an
// empty key (no entry has one: correlation ids are never empty) to each
// partition and reads up to it. That is at or past the high watermark at
// assignment, and it is a record: a high watermark may fall on a
// transaction marker or a compacted gap that a consumer never sees. Reading
// read_committed up to it also waits out a transaction still open on the
// partition, e.g. one of the previous owner that crashed: until it is
// aborted (by the transaction timeout, or at once when the owner restarts
// with its transactional id), it might still commit.
func (a *Aggregator) readChangelog(ctx context.Context, parts []int32) (map[int32]map[string][]byte, error) {
	topic := a.cfg.Topics.State()
	start := make(map[int32]kgo.Offset, len(parts))
	for _, p := range parts {
		start[p] = kgo.NewOffset().AtStart()
	}
	cl, err := kafka.NewClient(a.cfg.Client,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()

	marks := make([]*kgo.Record, len(parts))
	for i, p := range parts {
		marks[i] = &kgo.Record{Topic: topic, Partition: p, Key: []byte{}}
	}
	if err := cl.ProduceSync(ctx, marks...).FirstErr(); err != nil {
		return nil, fmt.Errorf("mark the end of %s: %w", topic, err)
	}
	end := make(map[int32]int64, len(parts))
	entries := make(map[int32]map[string][]byte, len(parts))
	type progress struct{ first, last, records int64 }
	read := make(map[int32]*progress, len(parts))
	for _, m := range marks {
		end[m.Partition] = m.Offset
		entries[m.Partition] = map[string][]byte{}
		read[m.Partition] = &progress{first: -1, last: -1}
	}
	defer func() {
		for _, m := range marks {
			r := read[m.Partition]
			a.log.Debug("changelog read", "partition", m.Partition, "end", m.Offset,
				"first", r.first, "last", r.last, "records", r.records, "keys", len(entries[m.Partition]))
		}
	}()

	for len(end) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("read %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return nil, ferr
		}
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			last, ok := end[fp.Partition]
			if !ok {
				return // read to its end already
			}
			es := entries[fp.Partition]
			pr := read[fp.Partition]
			for _, r := range fp.Records {
				if pr.first < 0 {
					pr.first = r.Offset
				}
				pr.last = r.Offset
				pr.records++
				if r.Offset >= last {
					delete(end, fp.Partition)
					return
				}
				switch {
				case len(r.Key) == 0: // an earlier restore's mark
				case r.Value == nil:
					delete(es, string(r.Key))
				default:
					es[string(r.Key)] = r.Value
				}
			}
		})
	}
	return entries, nil
}

// restoreContext returns a context for a restore run from a rebalance
// callback: it ends with parent or when Run stops (a.quit). stop releases
// it; its goroutine has exited when stop returns.
func (a *Aggregator) restoreContext(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	done := make(chan struct{})
	go func() { // exits when Run stops or stop is called
		defer close(done)
		select {
		case <-a.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		cancel()
		<-done
	}
}
