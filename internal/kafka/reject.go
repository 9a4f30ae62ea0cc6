package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Records Kafka refuses for good.
//
// A produce error is one of three kinds (docs/DESIGN.md, "How a hop
// classifies produce errors"):
//
//   - retriable: the client retries it itself (a leader moving, a broker
//     restarting); when it gives up the batch is aborted and consumed again
//     after a client restart (Hop.Run).
//   - fatal for the role: authentication, group authorisation, a broker
//     configuration we cannot work with (fatalErrors in hop.go): Run ends
//     with the error.
//   - fatal for one record (Rejected): the record's topic does not exist
//     or may not be written, the record is too large, the broker calls it
//     invalid. Trying again cannot heal it, so the hop writes the batch
//     again without it and a dead letter in its place, and goes on.

// MaxRecordBytes is kafkaconfig.MaxRecordBytes: roles check what they
// build against it ([Fits]) so that a too-large output becomes an answer
// that says so, not a produce error.
const MaxRecordBytes = kafkaconfig.MaxRecordBytes

// RecordSize is the size r takes in a record batch, close enough to
// franz-go's accounting (key, value, header keys and values, and their
// varint lengths) to tell whether it fits.
func RecordSize(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value) + 2*varintLen(len(r.Key)) + varintLen(len(r.Headers))
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value) + varintLen(len(h.Key)) + varintLen(len(h.Value))
	}
	return n
}

func varintLen(n int) int {
	l := 1
	for n >= 0x40 { // zig-zag doubles the value
		n >>= 7
		l++
	}
	return l
}

// Fits reports whether r can be written by a client with the default batch
// limit (see MaxRecordBytes).
func Fits(r *kgo.Record) bool { return RecordSize(r) <= MaxRecordBytes }

// Rejection reasons: what the sg-dlq-reason header says of an output record
// that Kafka refused for good.
const (
	ReasonUnknownTopic      = "unknown-topic"
	ReasonTopicUnauthorized = "topic-authorization-failed"
	ReasonRecordTooLarge    = "record-too-large"
	ReasonInvalidRecord     = "invalid-record"
)

// RejectedReason returns the dead-letter reason of a produce error that is
// fatal for its record alone, and false for any other error.
func RejectedReason(err error) (string, bool) { return rejectedReason(err) }

func rejectedReason(err error) (string, bool) {
	switch {
	case err == nil:
		return "", false
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID), errors.Is(err, kerr.InvalidTopicException):
		return ReasonUnknownTopic, true
	case errors.Is(err, kerr.TopicAuthorizationFailed):
		return ReasonTopicUnauthorized, true
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return ReasonRecordTooLarge, true
	case errors.Is(err, kerr.InvalidRecord), errors.Is(err, kerr.CorruptMessage):
		return ReasonInvalidRecord, true
	}
	return "", false
}

// Dead-letter headers of a stand-in: a dead letter that did not fit.
const (
	// HeaderDLQSize is the size of the value the stand-in replaces.
	HeaderDLQSize = "sg-dlq-size"
	// HeaderDLQTruncated is "true" on a stand-in: its value is the first
	// StandInBytes of the original, and the original's own headers are
	// left out.
	HeaderDLQTruncated = "sg-dlq-truncated"
)

// StandInBytes is how much of the value a stand-in keeps.
const StandInBytes = 1024

// standIn returns a small record in place of dead letter dl, which is too
// large to write: its sg-dlq-* headers, the size of its value, and the
// first StandInBytes of its key and value.
func standIn(dl *kgo.Record) *kgo.Record {
	var headers []kgo.RecordHeader
	for _, h := range dl.Headers {
		switch h.Key {
		case HeaderDLQTopic, HeaderDLQPartition, HeaderDLQOffset, HeaderDLQRole, HeaderDLQReason:
			headers = append(headers, h)
		case HeaderDLQError:
			headers = append(headers, kgo.RecordHeader{Key: h.Key, Value: h.Value[:min(len(h.Value), StandInBytes)]})
		}
	}
	headers = append(headers,
		kgo.RecordHeader{Key: HeaderDLQSize, Value: []byte(strconv.Itoa(len(dl.Value)))},
		kgo.RecordHeader{Key: HeaderDLQTruncated, Value: []byte("true")},
	)
	return &kgo.Record{Topic: dl.Topic, Key: dl.Key[:min(len(dl.Key), StandInBytes)],
		Value: dl.Value[:min(len(dl.Value), StandInBytes)], Headers: headers}
}

// DeadLetterOutput returns the dead letter of r, an output record of role
// that cannot be written where it was going (reason, err): r itself with the
// sg-dlq-* headers (sg-dlq-topic: where it was going, partition and offset
// -1), or its stand-in (see DeadLetter).
func DeadLetterOutput(dlq string, r *kgo.Record, role, reason string, err error) *kgo.Record {
	src := &kgo.Record{Topic: r.Topic, Partition: -1, Offset: -1, Key: r.Key, Value: r.Value, Headers: r.Headers}
	return DeadLetter(dlq, src, role, reason, fmt.Errorf("write to %s: %w", r.Topic, err))
}

// maxRejectRounds bounds how often a batch is written again without the
// records Kafka refused: once with their dead letters, once more with the
// stand-ins of dead letters that were refused too. A dead-letter topic that
// refuses even those ends Run with the error.
const maxRejectRounds = 2

// failedRecord is a record of a batch that was not written, and why.
type failedRecord struct {
	r   *kgo.Record
	err error
}

// produceAll writes out and waits for every record. It returns the records
// that failed and the first error.
func (h *Hop) produceAll(ctx context.Context, out []*kgo.Record) ([]failedRecord, error) {
	if len(out) == 0 {
		return nil, nil
	}
	var (
		mu     sync.Mutex
		failed []failedRecord
		first  error
		wg     sync.WaitGroup
	)
	wg.Add(len(out))
	for _, r := range out {
		h.cl.Produce(ctx, r, func(r *kgo.Record, err error) {
			defer wg.Done()
			if err == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			failed = append(failed, failedRecord{r, err})
			if first == nil {
				first = fmt.Errorf("produce to %s: %w", r.Topic, err)
			}
		})
	}
	wg.Wait()
	return failed, first
}

// replaceRejected returns out without the failed records, each replaced by
// its dead letter, and counts and logs each at warn. It returns false when
// a failure is not one a dead letter can replace: an error that is not
// fatal for the record alone (retriable: the batch is tried again as a
// whole), or a dead letter's stand-in that was refused too.
func (h *Hop) replaceRejected(out []*kgo.Record, failed []failedRecord) ([]*kgo.Record, bool) {
	drop := make(map[*kgo.Record]bool, len(failed))
	var add []*kgo.Record
	for _, f := range failed {
		reason, ok := rejectedReason(f.err)
		if !ok || h.cfg.DeadLetters == "" || Header(f.r, HeaderDLQTruncated) == "true" {
			return nil, false
		}
		drop[f.r] = true
		var dl *kgo.Record
		if f.r.Topic == h.cfg.DeadLetters {
			if reason != ReasonRecordTooLarge {
				return nil, false // the dead-letter topic itself is missing or closed to us
			}
			dl = standIn(f.r) // a dead letter too large: its stand-in
		} else {
			dl = DeadLetterOutput(h.cfg.DeadLetters, f.r, h.cfg.Role, reason, f.err)
		}
		add = append(add, dl)
		if h.rejectedVec != nil {
			h.rejectedVec.WithLabelValues(h.cfg.Group, reason).Inc()
		}
		h.log.Warn("record refused by Kafka for good; writing the batch again with a dead letter in its place",
			"group", h.cfg.Group, "topic", f.r.Topic, "key", string(f.r.Key[:min(len(f.r.Key), 128)]),
			"bytes", RecordSize(f.r), "reason", reason, "err", f.err)
	}
	next := make([]*kgo.Record, 0, len(out)+len(add))
	for _, r := range out {
		if !drop[r] {
			next = append(next, r)
		}
	}
	return append(next, add...), true
}

// allRejected reports whether every failure is fatal for its record alone:
// the batch was refused again and again, and Run must end.
func allRejected(failed []failedRecord) bool {
	for _, f := range failed {
		if _, ok := rejectedReason(f.err); !ok {
			return false
		}
	}
	return len(failed) > 0
}

// abortAttempt aborts the transaction of one attempt at a batch without the
// session: GroupTransactSession.End would also rewind the consumer to the
// committed offsets, and the batch is to be written again now.
func (h *Hop) abortAttempt(ctx context.Context) error {
	if err := h.cl.AbortBufferedRecords(ctx); err != nil {
		return err
	}
	return h.cl.EndTransaction(ctx, kgo.TryAbort)
}
