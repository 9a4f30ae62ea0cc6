package replay

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
)

// BoundKind says how a [Bound] designates an offset.
type BoundKind int

// The kinds of bound.
const (
	// Earliest is the log start offset of each partition.
	Earliest BoundKind = iota
	// Latest is the last stable offset of each partition: the end of what
	// a read_committed consumer can read now.
	Latest
	// AtTime is the first offset whose timestamp is at or after a time.
	AtTime
	// Ago is AtTime for a duration before now.
	Ago
	// AtOffset is the same offset in every partition.
	AtOffset
)

// Bound is one end of a replay range, or where a group reset moves a group:
// a time, a duration ago, an offset, the start or the end of each
// partition. Build it with [ParseBound]; the zero Bound is Earliest.
type Bound struct {
	Kind   BoundKind
	Time   time.Time     // AtTime
	Ago    time.Duration // Ago
	Offset int64         // AtOffset
}

// boundSyntax is the accepted syntax, for error messages and help text.
const boundSyntax = `an RFC3339 time (2026-05-01T12:00:00Z), a duration ago (2h, 90m, 1d), "offset:N", "earliest" or "latest"`

// ParseBound parses a bound:
//
//	2026-05-01T12:00:00Z   RFC3339 time (fractions and zone offsets allowed)
//	2h, 90m, 1d, "2h ago"  that long before now
//	offset:N, "offset N"   offset N of every partition
//	earliest | start       the log start of every partition
//	latest | end | now     the last stable offset of every partition
func ParseBound(s string) (Bound, error) {
	in := strings.TrimSpace(s)
	low := strings.ToLower(in)
	switch low {
	case "":
		return Bound{}, fmt.Errorf("bound is empty: want %s", boundSyntax)
	case "earliest", "start", "beginning":
		return Bound{Kind: Earliest}, nil
	case "latest", "end", "now":
		return Bound{Kind: Latest}, nil
	}
	for _, p := range []string{"offset:", "offset=", "offset "} {
		if rest, ok := strings.CutPrefix(low, p); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			if err != nil || n < 0 {
				return Bound{}, fmt.Errorf("bound %q: the offset must be a whole number >= 0", s)
			}
			return Bound{Kind: AtOffset, Offset: n}, nil
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, in); err == nil {
		return Bound{Kind: AtTime, Time: t}, nil
	}
	d, err := parseAgo(strings.TrimSpace(strings.TrimSuffix(low, "ago")))
	if err != nil {
		return Bound{}, fmt.Errorf("bound %q: want %s", s, boundSyntax)
	}
	if d <= 0 {
		return Bound{}, fmt.Errorf("bound %q: a duration ago must be positive", s)
	}
	return Bound{Kind: Ago, Ago: d}, nil
}

// parseAgo is time.ParseDuration plus whole days ("1d", "2d12h").
func parseAgo(s string) (time.Duration, error) {
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil {
			return 0, err
		}
		days = time.Duration(n) * 24 * time.Hour
		if s = s[i+1:]; s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	return days + d, err
}

// String returns b in the syntax ParseBound reads.
func (b Bound) String() string {
	switch b.Kind {
	case Latest:
		return "latest"
	case AtTime:
		return b.Time.UTC().Format(time.RFC3339Nano)
	case Ago:
		return b.Ago.String()
	case AtOffset:
		return "offset:" + strconv.FormatInt(b.Offset, 10)
	}
	return "earliest"
}

// Resolve returns the offset b designates in every partition of topic,
// clamped to what the partition holds now (see [kafka.Watermark]). A time
// resolves with ListOffsets to the first offset whose timestamp is at or
// after it, or to the end when there is none. now anchors Ago.
func (b Bound) Resolve(ctx context.Context, adm *kadm.Client, topic string, now time.Time) (map[int32]int64, map[int32]kafka.Watermark, error) {
	wm, err := kafka.Watermarks(ctx, adm, topic)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[int32]int64, len(wm))
	switch b.Kind {
	case Earliest:
		for p, w := range wm {
			out[p] = w.Start
		}
	case Latest:
		for p, w := range wm {
			out[p] = w.Stable
		}
	case AtOffset:
		for p, w := range wm {
			out[p] = clamp(b.Offset, w)
		}
	case AtTime, Ago:
		at := b.Time
		if b.Kind == Ago {
			at = now.Add(-b.Ago)
		}
		byTime, err := kafka.Listed(adm.ListOffsetsAfterMilli(ctx, at.UnixMilli(), topic))
		if err != nil {
			return nil, nil, fmt.Errorf("offsets of %s at %s: %w", topic, at.UTC().Format(time.RFC3339Nano), err)
		}
		for p, w := range wm {
			o, ok := byTime[topic][p]
			if !ok || o.Offset < 0 {
				out[p] = w.Stable
				continue
			}
			out[p] = clamp(o.Offset, w)
		}
	default:
		return nil, nil, fmt.Errorf("bound kind %d is unknown", b.Kind)
	}
	return out, wm, nil
}

func clamp(o int64, w kafka.Watermark) int64 { return min(max(o, w.Start), w.Stable) }

// PartitionRange is the part of one partition a replay reads: offsets
// Start up to, not including, End. Next is the first offset not yet
// replayed (Start when nothing was).
type PartitionRange struct {
	Partition int32 `json:"partition"`
	Start     int64 `json:"start"`
	End       int64 `json:"end"`
	Next      int64 `json:"next"`
}

// Done reports whether the whole range was replayed.
func (r PartitionRange) Done() bool { return r.Next >= r.End }

// spans returns what is left to read of ranges: from Next to End.
func spans(ranges []PartitionRange) []kafka.Range {
	out := make([]kafka.Range, len(ranges))
	for i, r := range ranges {
		out[i] = kafka.Range{Partition: r.Partition, From: r.Next, To: r.End}
	}
	return out
}

// ResolveRange resolves [from, to) on every partition of topic, sorted by
// partition. An end before its start gives an empty range.
func ResolveRange(ctx context.Context, adm *kadm.Client, topic string, from, to Bound, now time.Time) ([]PartitionRange, error) {
	starts, _, err := from.Resolve(ctx, adm, topic, now)
	if err != nil {
		return nil, fmt.Errorf("--from %s: %w", from, err)
	}
	ends, _, err := to.Resolve(ctx, adm, topic, now)
	if err != nil {
		return nil, fmt.Errorf("--to %s: %w", to, err)
	}
	out := make([]PartitionRange, 0, len(starts))
	for p, s := range starts {
		e := max(ends[p], s)
		out = append(out, PartitionRange{Partition: p, Start: s, End: e, Next: s})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out, nil
}
