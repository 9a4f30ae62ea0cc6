package dlq

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// MissingTopicError is returned when the dead-letter topic does not exist.
type MissingTopicError struct{ Topic string }

func (e *MissingTopicError) Error() string {
	return fmt.Sprintf("dead-letter topic %s does not exist", e.Topic)
}

// Log is what Scan read of a dead-letter topic.
type Log struct {
	Topic string
	// Entries are the dead letters the filter selected, in partition and
	// offset order, markers folded in (Entry.Redriven).
	Entries []*Entry
	// Total counts every dead letter read, selected or not.
	Total int
	// Markers counts the redrive markers read.
	Markers int
	// End is, per partition, the offset Scan read up to (excluded): the
	// last stable offset when it started.
	End map[int32]int64

	filter  Filter
	pending []*kgo.Record // markers, until fold
	// sources maps every dead letter read, selected or not, to its source
	// record, and redrivenSources holds those of the dead letters redriven:
	// a duplicate outside the selection still counts.
	sources         map[Pos]Source
	redrivenSources map[Source]Pos
	topicNames      map[string]string // interned
}

// Source is the place of a record a dead letter stands for.
type Source struct {
	Topic     string
	Partition int32
	Offset    int64
}

// source returns e's source and whether it had a place: an output record
// that Kafka refused never had one.
func (e *Entry) source() (Source, bool) {
	return Source{e.SourceTopic, e.SourcePartition, e.SourceOffset}, e.SourcePartition >= 0 && e.SourceOffset >= 0
}

// RedrivenSource returns the dead letter, selected or not, through which
// the record at src was redriven.
func (l *Log) RedrivenSource(src Source) (Pos, bool) {
	p, ok := l.redrivenSources[src]
	return p, ok
}

// Find returns the dead letter at p, or nil.
func (l *Log) Find(p Pos) *Entry {
	i := sort.Search(len(l.Entries), func(i int) bool { return !l.Entries[i].At.less(p) })
	if i < len(l.Entries) && l.Entries[i].At == p {
		return l.Entries[i]
	}
	return nil
}

func (p Pos) less(q Pos) bool {
	return p.Partition < q.Partition || p.Partition == q.Partition && p.Offset < q.Offset
}

// Scan reads topic, a dead-letter topic, from the log start of every
// partition up to its last stable offset when Scan starts, read_committed,
// and returns the dead letters f selects with their redrive markers folded
// in; it keeps only those in memory. It never waits for new records.
// progress, if not nil, is called after each record with the records read
// and the total to read.
func Scan(ctx context.Context, cc kafkaconfig.Client, topic string, f Filter, progress func(read, total int64)) (*Log, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	adm, err := kafka.NewClient(cc)
	if err != nil {
		return nil, err
	}
	wm, err := kafka.Watermarks(ctx, kadm.NewClient(adm), topic)
	adm.Close()
	if mt, ok := errors.AsType[*kafka.MissingTopicError](err); ok {
		err = &MissingTopicError{Topic: mt.Topic}
	}
	if err != nil {
		return nil, fmt.Errorf("--brokers: %w", err)
	}
	l := &Log{Topic: topic, End: map[int32]int64{}, filter: f}
	var total, n int64
	var ranges []kafka.Range
	for p, w := range wm {
		l.End[p] = w.Stable
		if w.Stable > w.Start {
			total += w.Stable - w.Start
			ranges = append(ranges, kafka.Range{Partition: p, From: w.Start, To: w.Stable})
		}
	}
	// Control records count as read: offsets count them too.
	err = kafka.ReadRanges(ctx, cc, topic, ranges, func(r *kgo.Record) error {
		n++
		if !r.Attrs.IsControl() {
			l.add(r)
		}
		if progress != nil {
			progress(min(n, total), total)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	l.fold()
	return l, nil
}

// add takes one record of the DLQ topic: a dead letter or a marker.
func (l *Log) add(r *kgo.Record) {
	if kafka.Header(r, kafka.HeaderDLQRedriven) != "" {
		l.Markers++
		l.pending = append(l.pending, r)
		return
	}
	l.Total++
	e := newEntry(r)
	if src, ok := e.source(); ok {
		if l.sources == nil {
			l.sources, l.topicNames = map[Pos]Source{}, map[string]string{}
		}
		if name, ok := l.topicNames[src.Topic]; ok {
			src.Topic = name
		} else {
			l.topicNames[src.Topic] = src.Topic
		}
		l.sources[e.At] = src
	}
	if l.filter.Match(e) {
		l.Entries = append(l.Entries, e)
	}
}

// fold sorts the entries and sets Redriven on every entry a marker names.
func (l *Log) fold() {
	sort.Slice(l.Entries, func(i, j int) bool { return l.Entries[i].At.less(l.Entries[j].At) })
	for _, m := range l.pending {
		at, err := ParsePos(kafka.Header(m, kafka.HeaderDLQRedriven))
		if err != nil {
			continue
		}
		if src, ok := l.sources[at]; ok {
			if l.redrivenSources == nil {
				l.redrivenSources = map[Source]Pos{}
			}
			if _, seen := l.redrivenSources[src]; !seen {
				l.redrivenSources[src] = at
			}
		}
		e := l.Find(at)
		if e == nil || e.Redriven != nil {
			continue
		}
		e.Redriven = parseRedrive(kafka.Header(m, kafka.HeaderDLQRedrivenTo), m)
	}
	l.pending, l.sources, l.topicNames = nil, nil, nil
}

// parseRedrive reads a marker's sg-dlq-redriven-to, "topic/partition/offset".
func parseRedrive(to string, m *kgo.Record) *RedriveMark {
	rd := &RedriveMark{Partition: -1, Offset: -1, Time: m.Timestamp, Marker: Pos{m.Partition, m.Offset}}
	parts := strings.Split(to, "/")
	if len(parts) != 3 {
		rd.Topic = to
		return rd
	}
	rd.Topic = parts[0]
	if p, err := strconv.ParseInt(parts[1], 10, 32); err == nil {
		rd.Partition = int32(p)
	}
	if o, err := strconv.ParseInt(parts[2], 10, 64); err == nil {
		rd.Offset = o
	}
	return rd
}
