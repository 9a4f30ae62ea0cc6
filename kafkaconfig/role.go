package kafkaconfig

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// Role is what the scatterer, the processor and the aggregator share: how
// to reach Kafka, the topics, the consumer group and instance, the
// guarantee, and where to log, count and trace. Each role's Config embeds
// it, so cfg.Client, cfg.Topics and the rest are fields of the role's
// config too.
type Role struct {
	// Client is how to reach Kafka; Client.Brokers is required.
	Client Client
	// Topics names the topics; an empty Prefix takes DefaultPrefix.
	Topics Topics
	// Group is the consumer group; empty takes the role's default
	// (Topics.Prefix + the role's name; each role's Config says which).
	Group string
	// InstanceID names this instance; default "<hostname>-<pid>". It goes
	// into the transactional id (Group + "-" + InstanceID), so keep it
	// stable across restarts of one instance, so that a restarted instance
	// fences its predecessor's transactions, and unique among the
	// instances of a group.
	InstanceID string
	// Guarantee defaults to ExactlyOnce.
	Guarantee Guarantee
	// OffsetCommitInterval is, under at-least-once, the least time between
	// two offset commits of the role's group: a batch acknowledged sooner
	// after the last commit leaves its offsets to the next one (the first
	// batch past the interval, a revocation, or the end of Run), which
	// saves a round trip per batch; a crash consumes up to that much again,
	// which at-least-once allows. The aggregator also writes the changelog
	// of its open requests once per interval (what it completes, in every
	// batch), under both guarantees: under exactly-once its transactions
	// between two such writes commit their replies but leave the offsets
	// where they were, so that a crash consumes the interval again. Zero
	// takes DefaultOffsetCommitInterval; negative commits (and writes the
	// changelog) in every batch. The other roles under exactly-once commit
	// offsets in each batch's transaction and ignore it.
	OffsetCommitInterval time.Duration
	// TransactionGap is, under exactly-once, the least time from the end
	// of one of the role's transactions to its poll for the next batch.
	// On Kafka 4.x (transactions v2) the broker holds the first produce of
	// a transaction that begins while the previous one's commit markers
	// are still being written, and retries it after
	// add.partitions.to.txn.retry.backoff.ms (20ms by default): a busy
	// role that begins at once loses those 20ms nearly every other
	// transaction. Waiting a little instead lets the markers finish and
	// gathers more records into the next batch. Zero takes
	// DefaultTransactionGap; negative: no wait. At-least-once ignores it.
	TransactionGap time.Duration
	// SessionTimeout is how long the group waits for a member that stopped
	// heartbeating (a crashed or frozen instance) before its partitions go
	// to the others; the tasks, requests or results there wait that long.
	// A shorter one fails over sooner and risks taking a slow member for a
	// dead one (the broker bounds it: group.min.session.timeout.ms, 6s by
	// default). Zero takes DefaultSessionTimeout. A member that stops
	// cleanly leaves at once.
	SessionTimeout time.Duration
	// Logger receives the role's logs; nil discards them.
	Logger *slog.Logger
	// Metrics registers the role's Prometheus metrics; nil registers none.
	Metrics prometheus.Registerer
	// TracerProvider records the role's spans: one per request, task or
	// reply the role handles (scatter, process, aggregate), each a child of
	// the span in the consumed record's W3C traceparent header and the
	// parent of what it produces, plus franz-go's kotel publish and receive
	// spans of those records. Build it with the OpenTelemetry SDK
	// (go.opentelemetry.io/otel/sdk/trace) and shut it down after Run
	// returns, to flush its spans. nil records no spans: each record's
	// traceparent is passed on unchanged. The role never uses the
	// OpenTelemetry globals.
	TracerProvider trace.TracerProvider
}

// WithDefaults returns r with its empty fields filled in: Topics.Prefix,
// Group (Topics.Prefix + group), InstanceID, Guarantee and Logger. It
// changes nothing r shares with the caller.
func (r Role) WithDefaults(group string) Role {
	r.Topics = r.Topics.withDefaults()
	if r.Group == "" {
		r.Group = r.Topics.Prefix + group
	}
	if r.InstanceID == "" {
		r.InstanceID = DefaultInstanceID()
	}
	if r.Guarantee == "" {
		r.Guarantee = ExactlyOnce
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if r.OffsetCommitInterval == 0 {
		r.OffsetCommitInterval = DefaultOffsetCommitInterval
	}
	if r.SessionTimeout == 0 {
		r.SessionTimeout = DefaultSessionTimeout
	}
	if r.TransactionGap == 0 {
		r.TransactionGap = DefaultTransactionGap
	}
	return r
}

// DefaultSessionTimeout is Role.SessionTimeout's default.
const DefaultSessionTimeout = 10 * time.Second

// DefaultOffsetCommitInterval is Role.OffsetCommitInterval's default.
const DefaultOffsetCommitInterval = 100 * time.Millisecond

// DefaultTransactionGap is Role.TransactionGap's default. Measured on one
// Kafka 4.4 node (docs/benchmarks.md): at 16 requests in flight,
// exactly-once, the pipeline answered 191-247 requests/s with no gap,
// 510-601 with 1-2ms and 421-459 with 3ms.
const DefaultTransactionGap = 2 * time.Millisecond

// Validate reports every problem with r at once; an empty field that
// WithDefaults fills is not a problem. It changes nothing.
func (r Role) Validate() error {
	var errs []error
	if err := r.Client.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("client: %w", err))
	}
	if r.Guarantee != "" {
		if _, err := ParseGuarantee(string(r.Guarantee)); err != nil {
			errs = append(errs, err)
		}
	}
	if r.SessionTimeout < 0 {
		errs = append(errs, fmt.Errorf("session timeout: %s is negative", r.SessionTimeout))
	}
	return errors.Join(errs...)
}

// DefaultInstanceID returns "<hostname>-<pid>", the instance name a role
// takes when none is configured. It is unique per process but not stable
// across restarts: give each instance a stable InstanceID in production
// so a restarted instance fences its predecessor's transactions.
func DefaultInstanceID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "host"
	}
	return h + "-" + strconv.Itoa(os.Getpid())
}
