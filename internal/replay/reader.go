package replay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// rangeReader reads offset ranges of one topic's partitions, read_committed,
// without a consumer group.
//
// It keeps control records (transaction markers) and hands them over, so
// the caller can advance its position past them: otherwise a range whose
// last offset is a marker would never be seen to end. Aborted records are
// not handed over, but their abort marker follows them, so a range ending
// inside an aborted transaction ends at the marker. A range's end must not
// be past the partition's last stable offset when it was resolved (Resolve
// clamps it), or reading could wait for records that never come.
type rangeReader struct {
	cl    *kgo.Client
	topic string
	next  map[int32]int64
	end   map[int32]int64
	open  int // partitions not done
}

// newRangeReader starts reading ranges at their Next offsets.
func newRangeReader(cc kafkaconfig.Client, topic string, ranges []PartitionRange) (*rangeReader, error) {
	r := &rangeReader{topic: topic, next: map[int32]int64{}, end: map[int32]int64{}}
	start := map[int32]kgo.Offset{}
	for _, pr := range ranges {
		r.next[pr.Partition], r.end[pr.Partition] = pr.Next, pr.End
		if !pr.Done() {
			start[pr.Partition] = kgo.NewOffset().At(pr.Next)
			r.open++
		}
	}
	if r.open == 0 {
		return r, nil
	}
	cl, err := kafka.NewClient(cc,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		// Records deleted by retention while we read must be an error,
		// not a silent jump to the new log start.
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.FetchMaxWait(250*time.Millisecond),
	)
	if err != nil {
		return nil, err
	}
	r.cl = cl
	return r, nil
}

// done reports whether every range was read to its end.
func (r *rangeReader) done() bool { return r.open == 0 }

// poll returns the next records in the ranges, in offset order per
// partition, control records included. It returns ctx.Err() when ctx ends
// first.
func (r *rangeReader) poll(ctx context.Context) ([]*kgo.Record, error) {
	for !r.done() {
		fs := r.cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var errs []error
		fs.EachError(func(t string, p int32, err error) {
			switch {
			case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			case errors.Is(err, kerr.OffsetOutOfRange):
				errs = append(errs, fmt.Errorf("partition %d of %s: offset %d is gone (deleted by retention while replaying?): %w", p, t, r.next[p], err))
			default:
				errs = append(errs, fmt.Errorf("fetch partition %d of %s: %w", p, t, err))
			}
		})
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		var out []*kgo.Record
		var finished map[string][]int32
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			p := fp.Partition
			end, ok := r.end[p]
			if !ok || r.next[p] >= end {
				return
			}
			for _, rec := range fp.Records {
				if rec.Offset < r.next[p] {
					continue
				}
				if rec.Offset >= end {
					r.next[p] = end
					break
				}
				out = append(out, rec)
				r.next[p] = rec.Offset + 1
			}
			if r.next[p] >= end {
				r.open--
				if finished == nil {
					finished = map[string][]int32{}
				}
				finished[r.topic] = append(finished[r.topic], p)
			}
		})
		if finished != nil {
			r.cl.PauseFetchPartitions(finished)
		}
		if len(out) > 0 || r.done() {
			return out, nil
		}
	}
	return nil, nil
}

func (r *rangeReader) close() {
	if r.cl != nil {
		r.cl.Close()
	}
}

// readRange calls fn for every record in ranges of topic (control records
// included), until every range is read or fn fails.
func readRange(ctx context.Context, cc kafkaconfig.Client, topic string, ranges []PartitionRange, fn func(*kgo.Record) error) error {
	r, err := newRangeReader(cc, topic, ranges)
	if err != nil {
		return err
	}
	defer r.close()
	for !r.done() {
		recs, err := r.poll(ctx)
		if err != nil {
			return fmt.Errorf("read %s: %w", topic, err)
		}
		for _, rec := range recs {
			if err := fn(rec); err != nil {
				return err
			}
		}
	}
	return nil
}
