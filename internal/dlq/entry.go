package dlq

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
)

// Pos is a record's place in a topic: partition and offset.
type Pos struct {
	Partition int32
	Offset    int64
}

// String returns "partition/offset", what ParsePos reads.
func (p Pos) String() string { return fmt.Sprintf("%d/%d", p.Partition, p.Offset) }

// ParsePos parses "partition/offset" (also "partition:offset" and
// "partition@offset").
func ParsePos(s string) (Pos, error) {
	i := strings.IndexAny(s, "/:@")
	if i < 0 {
		return Pos{}, fmt.Errorf("position %q: want partition/offset, e.g. 0/12", s)
	}
	p, perr := strconv.ParseInt(strings.TrimSpace(s[:i]), 10, 32)
	o, oerr := strconv.ParseInt(strings.TrimSpace(s[i+1:]), 10, 64)
	if perr != nil || oerr != nil || p < 0 || o < 0 {
		return Pos{}, fmt.Errorf("position %q: want partition/offset, two whole numbers >= 0, e.g. 0/12", s)
	}
	return Pos{Partition: int32(p), Offset: o}, nil
}

// Entry is one dead letter as Scan read it.
type Entry struct {
	// At is where it is in the DLQ topic; Time is its timestamp there
	// (when it was dead-lettered).
	At   Pos
	Time time.Time
	// SourceTopic, SourcePartition and SourceOffset are where the record
	// was consumed (sg-dlq-topic, -partition, -offset); for an output record
	// that Kafka refused, where it was going, with partition and offset -1.
	SourceTopic     string
	SourcePartition int32
	SourceOffset    int64
	Role            string
	Reason          string
	Error           string
	// Size is the value's size in bytes; for a stand-in the original's
	// (sg-dlq-size).
	Size int
	// Truncated is set on a stand-in: Key and Value are the first bytes of
	// the original's and its own headers are not kept.
	Truncated bool
	// Redriven, when set, says where the dead letter was redriven to.
	Redriven *RedriveMark
	// Record is the dead letter as read.
	Record *kgo.Record
}

// RedriveMark is what a marker says: the dead letter was written back to
// Topic at Partition/Offset, at Time.
type RedriveMark struct {
	Topic     string
	Partition int32
	Offset    int64
	Time      time.Time
	// Marker is where the marker is in the DLQ topic.
	Marker Pos
}

// String returns "topic/partition/offset".
func (r *RedriveMark) String() string { return fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset) }

// Source returns "topic/partition/offset" of where the record came from,
// or "topic" alone for an output record that never had a place there.
func (e *Entry) Source() string {
	if e.SourcePartition < 0 {
		return e.SourceTopic
	}
	return fmt.Sprintf("%s/%d/%d", e.SourceTopic, e.SourcePartition, e.SourceOffset)
}

// newEntry reads the dead-letter headers of r.
func newEntry(r *kgo.Record) *Entry {
	e := &Entry{
		At:              Pos{r.Partition, r.Offset},
		Time:            r.Timestamp,
		SourceTopic:     kafka.Header(r, kafka.HeaderDLQTopic),
		SourcePartition: -1,
		SourceOffset:    -1,
		Role:            kafka.Header(r, kafka.HeaderDLQRole),
		Reason:          kafka.Header(r, kafka.HeaderDLQReason),
		Error:           kafka.Header(r, kafka.HeaderDLQError),
		Size:            len(r.Value),
		Truncated:       kafka.Header(r, kafka.HeaderDLQTruncated) == "true",
		Record:          r,
	}
	if p, err := strconv.ParseInt(kafka.Header(r, kafka.HeaderDLQPartition), 10, 32); err == nil {
		e.SourcePartition = int32(p)
	}
	if o, err := strconv.ParseInt(kafka.Header(r, kafka.HeaderDLQOffset), 10, 64); err == nil {
		e.SourceOffset = o
	}
	if n, err := strconv.Atoi(kafka.Header(r, kafka.HeaderDLQSize)); err == nil && e.Truncated {
		e.Size = n
	}
	return e
}

// Filter selects dead letters. Every field that is set must match; the
// zero Filter selects all.
type Filter struct {
	// Reasons are sg-dlq-reason values; any of them matches.
	Reasons []string
	// Roles are sg-dlq-role values (scatterer, processor, aggregator).
	Roles []string
	// SourceTopics are full topic names or path.Match patterns
	// ("sg.tasks.*"); any of them matches.
	SourceTopics []string
	// Since and Until bound the dead letter's timestamp: Since <= t < Until.
	Since, Until time.Time
	// At are positions in the DLQ topic; any of them matches.
	At []Pos
}

// Validate reports every problem with f at once.
func (f Filter) Validate() error {
	var errs []error
	for _, p := range f.SourceTopics {
		if _, err := path.Match(p, ""); err != nil {
			errs = append(errs, fmt.Errorf("source topic pattern %q: %w", p, err))
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		errs = append(errs, fmt.Errorf("since %s is not before until %s", f.Since.Format(time.RFC3339), f.Until.Format(time.RFC3339)))
	}
	return errors.Join(errs...)
}

// Match reports whether e passes f.
func (f Filter) Match(e *Entry) bool {
	if len(f.Reasons) > 0 && !slices.Contains(f.Reasons, e.Reason) {
		return false
	}
	if len(f.Roles) > 0 && !slices.Contains(f.Roles, e.Role) {
		return false
	}
	if len(f.SourceTopics) > 0 && !slices.ContainsFunc(f.SourceTopics, func(p string) bool {
		ok, _ := path.Match(p, e.SourceTopic)
		return ok
	}) {
		return false
	}
	if !f.Since.IsZero() && e.Time.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !e.Time.Before(f.Until) {
		return false
	}
	if len(f.At) > 0 && !slices.Contains(f.At, e.At) {
		return false
	}
	return true
}
