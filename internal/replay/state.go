package replay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// CheckpointTopic is the compacted topic, under the target prefix, that
// holds one [RunState] per replay run, keyed by run id.
func CheckpointTopic(target kafkaconfig.Topics) string { return target.Prefix + "replay-checkpoints" }

// TransactionalID is the transactional id of run's producer: derived from
// the run id, so that a second copy of the same run fences the first.
func TransactionalID(target kafkaconfig.Topics, runID string) string {
	return target.Prefix + "replay." + runID
}

// RunState is a replay run's checkpoint: what it replays and how far it
// got. It is written as JSON, keyed by the run id, to [CheckpointTopic] in
// the same Kafka transaction as the replayed requests it accounts for, so
// the two can never disagree.
type RunState struct {
	Version int    `json:"v"`
	RunID   string `json:"run_id"`
	// SourceTopic is the requests topic read; TargetTopic the one written.
	SourceTopic string `json:"source_topic"`
	TargetTopic string `json:"target_topic"`
	// From and To are the bounds as given; Partitions are what they
	// resolved to when the run was created. A resumed run keeps them.
	From       string           `json:"from"`
	To         string           `json:"to"`
	Partitions []PartitionRange `json:"partitions"`
	// Routes replayed; empty for all.
	Routes         []string `json:"routes,omitempty"`
	IncludeReplays bool     `json:"include_replays,omitempty"`
	// TargetStart is where each partition of TargetTopic ended when the run
	// was created: the run's requests are after it ([Compare] reads from
	// there).
	TargetStart map[int32]int64 `json:"target_start"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
	// Counts so far, over every session of the run.
	Submitted int64            `json:"submitted"`
	Skipped   map[string]int64 `json:"skipped,omitempty"`
	// LongestTimeoutMS is the longest timeout of a request replayed so far
	// (a request without one counts as the scatterer's default, 5s): how
	// long after the last submission the last reply may take.
	LongestTimeoutMS int64 `json:"longest_timeout_ms,omitempty"`
	// Sessions counts the times the run was started or resumed.
	Sessions int  `json:"sessions"`
	Done     bool `json:"done"`
}

// stateVersion is RunState.Version as written now.
const stateVersion = 1

// Total is the number of offsets in the run's range; Advanced how many of
// them were replayed or skipped so far.
func (s *RunState) Total() (total, advanced int64) {
	for _, p := range s.Partitions {
		total += p.End - p.Start
		advanced += p.Next - p.Start
	}
	return total, advanced
}

var runIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidRunID reports whether id can name a run: 1 to 64 letters, digits,
// '.', '_' or '-', starting with a letter or digit.
func ValidRunID(id string) error {
	if !runIDPattern.MatchString(id) {
		return fmt.Errorf("run id %q: want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", id)
	}
	return nil
}

// NewRunID returns a fresh run id: the UTC time and a random suffix, e.g.
// 20260501-120000-3f9a1c.
func NewRunID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

func encodeState(s *RunState) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode checkpoint of run %s: %w", s.RunID, err)
	}
	return b, nil
}

// ErrRunNotFound is returned (wrapped) by LoadRun when the checkpoint
// topic holds no state for the run.
var ErrRunNotFound = errors.New("replay run not found")

// LoadRun reads the latest committed state of runID from the checkpoint
// topic of target. It reads the whole (compacted, one-partition) topic up to
// its last stable offset.
func LoadRun(ctx context.Context, cc kafkaconfig.Client, target kafkaconfig.Topics, runID string) (*RunState, error) {
	topic := CheckpointTopic(target)
	cl, err := kafka.NewClient(cc)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	wm, err := kafka.Watermarks(ctx, kadm.NewClient(cl), topic)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", runID, err)
	}
	ranges := make([]PartitionRange, 0, len(wm))
	for p, w := range wm {
		ranges = append(ranges, PartitionRange{Partition: p, Start: w.Start, End: w.Stable, Next: w.Start})
	}
	var state *RunState
	err = kafka.ReadRanges(ctx, cc, topic, spans(ranges), func(rec *kgo.Record) error {
		if rec.Attrs.IsControl() || string(rec.Key) != runID {
			return nil
		}
		if rec.Value == nil { // a tombstone: the run was deleted
			state = nil
			return nil
		}
		var s RunState
		if err := json.Unmarshal(rec.Value, &s); err != nil {
			return fmt.Errorf("checkpoint of run %s at %s/%d@%d: %w", runID, rec.Topic, rec.Partition, rec.Offset, err)
		}
		if s.Version > stateVersion {
			return fmt.Errorf("checkpoint of run %s was written by a newer version (%d > %d)", runID, s.Version, stateVersion)
		}
		state = &s
		return nil
	})
	if err != nil {
		return nil, err
	}
	if state == nil {
		return nil, fmt.Errorf("run %s in %s: %w", runID, topic, ErrRunNotFound)
	}
	return state, nil
}
