package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults of [TopicWatchConfig].
const (
	DefaultTopicWatchInterval = time.Second
	DefaultTopicWatchRecheck  = 10 * time.Second
)

// TopicWatchConfig configures a [TopicWatch].
type TopicWatchConfig struct {
	// Client is how to reach Kafka.
	Client kafkaconfig.Client
	// Topics are the role's topics, all of which must exist; at least one.
	Topics []string
	// Hint says how to create missing topics, e.g. the command line of
	// `scattergather topics`; Ready and the log repeat it.
	Hint string
	// Interval is how often the topics are listed while any is missing or
	// none has been listed yet (default 1s), Recheck how often once all
	// exist, to notice a deletion (default 10s).
	Interval, Recheck time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// setDefaults fills in what c leaves unset; NewTopicWatch calls it on its
// copy.
func (c *TopicWatchConfig) setDefaults() {
	if c.Interval == 0 {
		c.Interval = DefaultTopicWatchInterval
	}
	if c.Recheck == 0 {
		c.Recheck = DefaultTopicWatchRecheck
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem with c at once; it changes nothing.
func (c TopicWatchConfig) Validate() error {
	var errs []error
	if err := c.Client.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("client: %w", err))
	}
	if len(c.Topics) == 0 {
		errs = append(errs, errors.New("topics: none given"))
	}
	if c.Interval < 0 || c.Recheck < 0 {
		errs = append(errs, fmt.Errorf("interval %s, recheck %s: negative", c.Interval, c.Recheck))
	}
	return errors.Join(errs...)
}

// TopicWatch tells whether a role's topics exist, for its readiness and
// its log. A role whose consumed topic is missing joins its group with
// nothing assigned and looks ready (a produced one fails only at the first
// record), so a role started before `scattergather topics` ran, or without
// --create-topics, would wait in silence.
//
// Run lists the topics every Interval until they all exist, then every
// Recheck; it logs a warning naming the missing topics and the Hint each
// time that set changes, and an info line when they all exist again.
// Ready is safe for concurrent use.
type TopicWatch struct {
	cfg   TopicWatchConfig
	state atomic.Pointer[topicState]
}

// topicState is the result of the last listing that answered.
type topicState struct {
	missing []string
}

// NewTopicWatch validates cfg; nothing connects until Run.
func NewTopicWatch(cfg TopicWatchConfig) (*TopicWatch, error) {
	cfg.Topics = slices.Clone(cfg.Topics)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("topic watch config: %w", err)
	}
	cfg.setDefaults()
	return &TopicWatch{cfg: cfg}, nil
}

// Ready returns nil when the last listing found every topic, else an error
// naming the missing topics and how to create them (or saying that none
// has been listed yet).
func (w *TopicWatch) Ready() error {
	s := w.state.Load()
	switch {
	case s == nil:
		return errors.New("topics not listed yet")
	case len(s.missing) > 0:
		return fmt.Errorf("missing topics %s; create them with: %s", strings.Join(s.missing, ", "), w.cfg.Hint)
	}
	return nil
}

// Run lists the topics until ctx ends, then closes its client and returns
// nil. A listing that fails (the broker unreachable) is logged at debug
// level and changes nothing.
func (w *TopicWatch) Run(ctx context.Context) error {
	cl, err := NewClient(w.cfg.Client, kgo.MetadataMinAge(w.cfg.Interval/2))
	if err != nil {
		return fmt.Errorf("topic watch: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for {
		wait := w.cfg.Interval
		if missing, err := w.list(ctx, adm); err != nil {
			if ctx.Err() == nil {
				w.cfg.Logger.Debug("cannot list topics", "err", err)
			}
		} else {
			w.update(missing)
			if len(missing) == 0 {
				wait = w.cfg.Recheck
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// list returns the topics that do not exist.
func (w *TopicWatch) list(ctx context.Context, adm *kadm.Client) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, max(w.cfg.Interval, 5*time.Second))
	defer cancel()
	td, err := adm.ListTopics(ctx, w.cfg.Topics...)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, t := range w.cfg.Topics {
		d, ok := td[t]
		switch {
		case !ok, errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			missing = append(missing, t)
		case d.Err != nil:
			return nil, fmt.Errorf("topic %s: %w", t, d.Err)
		}
	}
	return missing, nil
}

// update logs a change, then installs a listing's result: whoever sees the
// new state (/readyz) finds it in the log too. Run's goroutine alone calls
// it.
func (w *TopicWatch) update(missing []string) {
	prev := w.state.Load()
	defer w.state.Store(&topicState{missing: missing})
	switch {
	case len(missing) > 0 && (prev == nil || !slices.Equal(prev.missing, missing)):
		w.cfg.Logger.Warn("topics missing: not ready until they exist", "topics", strings.Join(missing, ","), "create_with", w.cfg.Hint)
	case len(missing) == 0 && prev != nil && len(prev.missing) > 0:
		w.cfg.Logger.Info("topics exist now", "topics", strings.Join(w.cfg.Topics, ","))
	}
}
