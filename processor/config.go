package processor

import (
	"errors"
	"fmt"
	"time"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// Defaults of [Config].
const (
	DefaultRetries    = 3
	DefaultBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff = 2 * time.Second
	// DefaultCommitInterval is Config.CommitInterval's default.
	DefaultCommitInterval = 2 * time.Millisecond
	// DefaultDrainTimeout is Config.DrainTimeout's default.
	DefaultDrainTimeout = 10 * time.Second
)

// Config configures a [Processor]. A zero field takes its default.
type Config struct {
	// Role is how to reach Kafka, the topics, and the rest every role
	// shares. The processor consumes Topics.Tasks(Route), writes results to
	// Topics.Results() and undecodable tasks to Topics.DLQ(). Group
	// defaults to Topics.Prefix + "processor." + Route, plus "." +
	// Recipient when Recipient is set. InstanceID also goes into every
	// Result.ProcessorID.
	kafkaconfig.Role
	// Route whose tasks to handle; required.
	Route schemas.Route
	// Recipient is the part id this processor answers broadcast tasks (tasks
	// without a PartID) as: on a broadcast route each recipient runs its own
	// group. Leave it empty on split routes. A broadcast task reaching a
	// processor without a Recipient is dead-lettered ("no-part-id").
	Recipient schemas.PartID
	// Retries is how many times a failed handler is tried again after the
	// first try. nil takes DefaultRetries (3); new(0) means no retries.
	Retries *int
	// Backoff is the delay before the first retry, default 100ms. It doubles
	// with each retry up to MaxBackoff (default 2s); each delay is drawn
	// uniformly from its upper half, [d/2, d], so that tasks failing together
	// do not retry together.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// DrainTimeout bounds how long the handlers of the batch in flight may
	// run after Run's context is done; default 10s. Tasks still running then
	// are not answered: the batch is aborted and consumed again.
	DrainTimeout time.Duration
	// Concurrency is how many tasks of one partition are handled at once;
	// default 1. With 1, each polled batch is handled with one goroutine
	// per partition, records in order, and committed as a whole. Above 1
	// the processor pipelines (see the package doc): it keeps polling
	// while tasks run, hands up to Concurrency tasks of each partition to
	// handlers at once (per Ordering), writes each result as soon as it is
	// ready, and commits each partition up to its first unfinished task,
	// with the finished ones above it in the commit's metadata so that
	// they are not handled again. Slow I/O handlers are then not capped
	// by the partition count, and a slow task holds back no other.
	Concurrency int
	// Ordering says which tasks of a partition must wait for each other
	// when Concurrency is above 1: OrderKey (default) handles the tasks of
	// one record key one after the other and different keys in parallel;
	// OrderNone handles any tasks in parallel. Split tasks are keyed by
	// shard, so under OrderKey a processor works on one task per shard at
	// a time; broadcast tasks are keyed by correlation id.
	Ordering Ordering
	// CommitInterval is, when Concurrency is above 1 under exactly-once,
	// the least time from the end of a transaction to the start of the
	// next; default 2ms. Results finished meanwhile share a transaction.
	// Back to back, a transaction's first produce waits 20ms on the broker
	// for the last one's markers (see kafkaconfig.Role.TransactionGap,
	// which every hop waits before its poll; this interval adds to it only
	// when longer); a longer interval means fewer, larger transactions and
	// more latency.
	CommitInterval time.Duration
}

// Ordering says which tasks of a partition are handled in order when
// [Config.Concurrency] is above 1.
type Ordering string

// The orderings.
const (
	// OrderKey handles the tasks of one record key in offset order, one at
	// a time; tasks of different keys run in parallel. Records without a
	// key are ordered by nothing.
	OrderKey Ordering = "key"
	// OrderNone handles the tasks of a partition in parallel regardless
	// of their keys.
	OrderNone Ordering = "none"
)

// MaxConcurrency caps [Config.Concurrency].
const MaxConcurrency = 1024

// setDefaults returns c with its empty fields filled in.
func (c Config) setDefaults() Config {
	group := "processor." + string(c.Route)
	if c.Recipient != "" {
		group += "." + string(c.Recipient)
	}
	c.Role = c.Role.WithDefaults(group)
	if c.Retries == nil {
		c.Retries = new(DefaultRetries)
	}
	if c.Backoff == 0 {
		c.Backoff = DefaultBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.Backoff)
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = DefaultCommitInterval
	}
	if c.Ordering == "" {
		c.Ordering = OrderKey
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	return c
}

// Validate reports every problem with c at once; a zero field that takes a
// default is not a problem. It changes nothing.
func (c Config) Validate() error {
	var errs []error
	if err := c.Role.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := kafkaconfig.ValidRouteName(string(c.Route)); err != nil {
		errs = append(errs, fmt.Errorf("route: %w", err))
	}
	if c.Retries != nil && *c.Retries < 0 {
		errs = append(errs, fmt.Errorf("retries: %d is negative", *c.Retries))
	}
	if c.Backoff < 0 {
		errs = append(errs, fmt.Errorf("backoff: %s is negative", c.Backoff))
	}
	if c.MaxBackoff < 0 {
		errs = append(errs, fmt.Errorf("max backoff: %s is negative", c.MaxBackoff))
	}
	if c.Backoff > 0 && c.MaxBackoff > 0 && c.MaxBackoff < c.Backoff {
		errs = append(errs, fmt.Errorf("max backoff: %s is below backoff %s", c.MaxBackoff, c.Backoff))
	}
	if c.Concurrency < 0 || c.Concurrency > MaxConcurrency {
		errs = append(errs, fmt.Errorf("concurrency: %d, want 1..%d", c.Concurrency, MaxConcurrency))
	}
	if c.CommitInterval < 0 {
		errs = append(errs, fmt.Errorf("commit interval: %s is negative", c.CommitInterval))
	}
	switch c.Ordering {
	case "", OrderKey, OrderNone:
	default:
		errs = append(errs, fmt.Errorf("ordering: %q, want %q or %q", c.Ordering, OrderKey, OrderNone))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("drain timeout: %s is negative", c.DrainTimeout))
	}
	return errors.Join(errs...)
}

func (c *Config) hopConfig() kafka.HopConfig {
	return kafka.HopConfig{
		Client:          c.Client,
		Group:           c.Group,
		Topics:          []string{c.Topics.Tasks(string(c.Route))},
		Guarantee:       c.Guarantee,
		TransactionalID: c.Group + "-" + c.InstanceID,
		InstanceID:      c.InstanceID,
		DeadLetters:     c.Topics.DLQ(),
		CommitInterval:  max(c.OffsetCommitInterval, 0),
		TransactionGap:  c.TransactionGap,
		SessionTimeout:  c.SessionTimeout,
		Role:            "processor",
		TracerProvider:  c.TracerProvider,
		Metrics:         c.Metrics,
		DrainTimeout:    c.DrainTimeout,
		Logger:          c.Logger,
	}
}
