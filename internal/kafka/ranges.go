package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/kafkaconfig"
)

// Reading bounded ranges of a topic, without a consumer group: for the
// tools that read what a topic holds now and stop (replay, dlq).

// Watermark is what a partition holds now: offsets Start (the log start)
// up to, not including, Stable (the last stable offset: records of open
// transactions and later are not readable by read_committed consumers yet).
type Watermark struct {
	Start, Stable int64
}

// MissingTopicError: the topic does not exist.
type MissingTopicError struct{ Topic string }

func (e *MissingTopicError) Error() string { return fmt.Sprintf("topic %s does not exist", e.Topic) }

// Watermarks lists the log start and last stable offsets of every
// partition of topic. A topic that does not exist is a *MissingTopicError.
func Watermarks(ctx context.Context, adm *kadm.Client, topic string) (map[int32]Watermark, error) {
	starts, err := Listed(adm.ListStartOffsets(ctx, topic))
	if err != nil {
		return nil, fmt.Errorf("start offsets of %s: %w", topic, err)
	}
	stables, err := Listed(adm.ListCommittedOffsets(ctx, topic))
	if err != nil {
		return nil, fmt.Errorf("stable offsets of %s: %w", topic, err)
	}
	out := make(map[int32]Watermark, len(starts[topic]))
	for p, s := range starts[topic] {
		out[p] = Watermark{Start: s.Offset, Stable: max(s.Offset, stables[topic][p].Offset)}
	}
	if len(out) == 0 {
		return nil, &MissingTopicError{Topic: topic}
	}
	return out, nil
}

// Listed turns the partial failures of a kadm listing into one error; an
// unknown topic is a *MissingTopicError.
func Listed(l kadm.ListedOffsets, err error) (kadm.ListedOffsets, error) {
	if err != nil {
		return nil, err
	}
	var errs []error
	l.Each(func(o kadm.ListedOffset) {
		switch {
		case o.Err == nil:
		case errors.Is(o.Err, kerr.UnknownTopicOrPartition):
			errs = append(errs, &MissingTopicError{Topic: o.Topic})
		default:
			errs = append(errs, fmt.Errorf("partition %d of %s: %w", o.Partition, o.Topic, o.Err))
		}
	})
	return l, errors.Join(errs...)
}

// Range is the offsets [From, To) of one partition of a topic.
type Range struct {
	Partition int32
	From, To  int64
}

// RangeReader reads offset ranges of one topic's partitions, read_committed,
// without a consumer group.
//
// It keeps control records (transaction markers) and hands them over, so
// the caller can advance its position past them: otherwise a range whose
// last offset is a marker would never be seen to end. Aborted records are
// not handed over, but their abort marker follows them, so a range ending
// inside an aborted transaction ends at the marker. A range's end must not
// be past the partition's last stable offset when it was listed
// (Watermarks), or reading could wait for records that never come.
type RangeReader struct {
	cl    *kgo.Client
	topic string
	next  map[int32]int64
	end   map[int32]int64
	open  int // partitions not done
}

// NewRangeReader starts reading ranges at their From offsets.
func NewRangeReader(cc kafkaconfig.Client, topic string, ranges []Range) (*RangeReader, error) {
	r := &RangeReader{topic: topic, next: map[int32]int64{}, end: map[int32]int64{}}
	start := map[int32]kgo.Offset{}
	for _, pr := range ranges {
		r.next[pr.Partition], r.end[pr.Partition] = pr.From, pr.To
		if pr.From < pr.To {
			start[pr.Partition] = kgo.NewOffset().At(pr.From)
			r.open++
		}
	}
	if r.open == 0 {
		return r, nil
	}
	cl, err := NewClient(cc,
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

// Done reports whether every range was read to its end.
func (r *RangeReader) Done() bool { return r.open == 0 }

// Poll returns the next records in the ranges, in offset order per
// partition, control records included. It returns ctx.Err() when ctx ends
// first.
func (r *RangeReader) Poll(ctx context.Context) ([]*kgo.Record, error) {
	for !r.Done() {
		fs := r.cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var errs []error
		fs.EachError(func(t string, p int32, err error) {
			switch {
			case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			case errors.Is(err, kerr.OffsetOutOfRange):
				errs = append(errs, fmt.Errorf("partition %d of %s: offset %d is gone (deleted by retention while reading?): %w", p, t, r.next[p], err))
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
		if len(out) > 0 || r.Done() {
			return out, nil
		}
	}
	return nil, nil
}

// Close closes the reader's client.
func (r *RangeReader) Close() {
	if r.cl != nil {
		r.cl.Close()
	}
}

// ReadRanges calls fn for every record in ranges of topic (control records
// included), until every range is read or fn fails.
func ReadRanges(ctx context.Context, cc kafkaconfig.Client, topic string, ranges []Range, fn func(*kgo.Record) error) error {
	r, err := NewRangeReader(cc, topic, ranges)
	if err != nil {
		return err
	}
	defer r.Close()
	for !r.Done() {
		recs, err := r.Poll(ctx)
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
