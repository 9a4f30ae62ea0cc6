package processor

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/tracing"
	"github.com/scattergather/scattergather/schemas"
)

// Defaults of [Config].
const (
	DefaultRetries    = 3
	DefaultBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff = 2 * time.Second
	// DefaultCommitInterval is Config.CommitInterval's default.
	DefaultCommitInterval = 2 * time.Millisecond
)

// Config configures a [Processor]. Validate fills in the defaults.
type Config struct {
	// Client is how to reach Kafka.
	Client kafka.ClientConfig
	// Topics names the topics; an empty Prefix takes kafka.DefaultPrefix.
	// The processor consumes Topics.Tasks(Route), writes results to
	// Topics.Results() and undecodable tasks to Topics.DLQ().
	Topics kafka.Topics
	// Route whose tasks to handle; required.
	Route schemas.Route
	// Recipient is the part id this processor answers broadcast tasks (tasks
	// without a PartID) as: on a broadcast route each recipient runs its own
	// group. Leave it empty on split routes. A broadcast task reaching a
	// processor without a Recipient is dead-lettered ("no-part-id").
	Recipient schemas.PartID
	// Group is the consumer group; default Topics.Prefix + "processor." +
	// Route, plus "." + Recipient when Recipient is set.
	Group string
	// InstanceID names this instance; default "<hostname>-<pid>". It goes
	// into every Result.ProcessorID and into the transactional id
	// (Group + "-" + InstanceID), so keep it stable across restarts of one
	// instance and unique among the instances of a group.
	InstanceID string
	// Guarantee defaults to kafka.ExactlyOnce.
	Guarantee kafka.Guarantee
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
	// Back to back, a transaction's first produce waits on the broker
	// (most likely for the last one's markers); a longer interval means fewer, larger transactions and
	// more latency.
	CommitInterval time.Duration
	// Logger; nil discards logs.
	Logger *slog.Logger
	// Metrics registers the processor's metrics (see internal/metrics);
	// nil: none.
	Metrics prometheus.Registerer
	// Tracer starts the process span of each task and carries its
	// traceparent on the result; nil still carries the trace.
	Tracer *tracing.Tracer
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

// Validate fills in the defaults and reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Client.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("client: %w", err))
	}
	if c.Topics.Prefix == "" {
		c.Topics.Prefix = kafka.DefaultPrefix
	}
	if err := kafka.ValidRouteName(string(c.Route)); err != nil {
		errs = append(errs, fmt.Errorf("route: %w", err))
	}
	if c.Group == "" {
		c.Group = c.Topics.Prefix + "processor." + string(c.Route)
		if c.Recipient != "" {
			c.Group += "." + string(c.Recipient)
		}
	}
	if c.InstanceID == "" {
		c.InstanceID = kafka.DefaultInstanceID()
	}
	if c.Guarantee == "" {
		c.Guarantee = kafka.ExactlyOnce
	}
	if _, err := kafka.ParseGuarantee(string(c.Guarantee)); err != nil {
		errs = append(errs, err)
	}
	if c.Retries == nil {
		c.Retries = new(DefaultRetries)
	} else if *c.Retries < 0 {
		errs = append(errs, fmt.Errorf("retries: %d is negative", *c.Retries))
	}
	if c.Backoff < 0 {
		errs = append(errs, fmt.Errorf("backoff: %s is negative", c.Backoff))
	} else if c.Backoff == 0 {
		c.Backoff = DefaultBackoff
	}
	if c.MaxBackoff < 0 {
		errs = append(errs, fmt.Errorf("max backoff: %s is negative", c.MaxBackoff))
	} else if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.Backoff)
	}
	if c.Backoff > 0 && c.MaxBackoff > 0 && c.MaxBackoff < c.Backoff {
		errs = append(errs, fmt.Errorf("max backoff: %s is below backoff %s", c.MaxBackoff, c.Backoff))
	}
	switch {
	case c.Concurrency == 0:
		c.Concurrency = 1
	case c.Concurrency < 0 || c.Concurrency > MaxConcurrency:
		errs = append(errs, fmt.Errorf("concurrency: %d, want 1..%d", c.Concurrency, MaxConcurrency))
	}
	switch {
	case c.CommitInterval < 0:
		errs = append(errs, fmt.Errorf("commit interval: %s is negative", c.CommitInterval))
	case c.CommitInterval == 0:
		c.CommitInterval = DefaultCommitInterval
	}
	switch c.Ordering {
	case "":
		c.Ordering = OrderKey
	case OrderKey, OrderNone:
	default:
		errs = append(errs, fmt.Errorf("ordering: %q, want %q or %q", c.Ordering, OrderKey, OrderNone))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("drain timeout: %s is negative", c.DrainTimeout))
	} else if c.DrainTimeout == 0 {
		c.DrainTimeout = 10 * time.Second
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
		Role:            "processor",
		Metrics:         c.Metrics,
		DrainTimeout:    c.DrainTimeout,
		Logger:          c.Logger,
	}
}
