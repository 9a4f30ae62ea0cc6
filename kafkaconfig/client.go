package kafkaconfig

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

// MaxRecordBytes is the largest record the clients of this module write:
// franz-go's default batch limit (ProducerBatchMaxBytes, 1,000,012 bytes,
// Kafka's default max.message.bytes for a topic), less the overhead of a
// batch holding only that record: the v2 batch header (61 bytes) and the
// record's own length, attribute, delta and length varints, with room to
// spare (64 bytes). A task, result or reply over it is answered with a
// reason that says so instead of being written.
const MaxRecordBytes = 1_000_012 - (61 + 64)

// FailoverMetadataMinAge is the shortest time between two metadata
// refreshes of a client of this module, and FailoverMaxRetryBackoff the
// longest wait between two tries of a failed request: together they bound
// how long a client keeps writing to a broker the controller has fenced.
// The metadata age also paces a transactional produce that the broker
// answers CONCURRENT_TRANSACTIONS (the last transaction's markers not yet
// written, which after a broker failure takes a second or two): franz-go
// tries such a batch again after the next metadata refresh. While a
// broker is down a client asks for metadata up to ten times a second; a
// healthy cluster sees no more requests. Java's clients start their
// retries at 100ms too (retry.backoff.ms).
const (
	FailoverMetadataMinAge  = 100 * time.Millisecond
	FailoverMaxRetryBackoff = 500 * time.Millisecond
)

// failoverBackoff is franz-go's default backoff (doubling, ±20% jitter)
// starting at 100ms instead of 250ms and capped at FailoverMaxRetryBackoff
// instead of 5s.
func failoverBackoff(fails int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < fails && d < FailoverMaxRetryBackoff; i++ {
		d *= 2
	}
	d = time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return min(d, FailoverMaxRetryBackoff)
}

// Client is how every Kafka client of a role reaches the brokers.
type Client struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// ClientID names the client in broker logs and quotas.
	ClientID string
	// Logger receives franz-go's logs at warn level and above; nil discards them.
	Logger *slog.Logger
	// Security is TLS and SASL; the zero value is plaintext.
	Security Security
	// Opts are passed to kgo.NewClient after ours, so they win.
	Opts []kgo.Opt
	// NewHooks, when set, is called once for every client built from this
	// config, and its hooks are attached to that client alone: for hooks
	// that must not be shared, such as kprom's per-client metrics.
	NewHooks func() []kgo.Hook
	// Hooks are attached to every client built from this config, shared:
	// for stateless interceptors such as the schema registry's wire-format
	// rewrite of the schema registry.
	Hooks []kgo.Hook
}

// Validate reports every problem with c at once.
func (c Client) Validate() error {
	if len(c.Brokers) == 0 {
		return fmt.Errorf("brokers: none given")
	}
	for _, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			return fmt.Errorf("brokers: empty address in %q", strings.Join(c.Brokers, ","))
		}
	}
	return c.Security.Validate()
}

// Options returns the kgo options for c, before any role-specific ones.
func (c Client) Options() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		// Topics are created by EnsureTopics; a produce to a missing topic is
		// a configuration error that must surface, not wait forever.
		kgo.UnknownTopicRetries(3),
		// Broker failover: a request to a dead leader fails, and the client
		// learns the new leader from the first metadata refresh after the
		// controller fences the dead broker. franz-go spaces the refreshes
		// a failure triggers by MetadataMinAge (5s by default) and backs
		// retries off up to 5s, so a 3s fencing cost 8-15s; with a refresh
		// at most every 100ms and retries at most 500ms apart the client
		// follows within about half a second (docs/guarantees.md,
		// "Running through broker failures"). The periodic refresh stays
		// at its default (5 min), so a healthy cluster sees no more
		// metadata requests.
		kgo.MetadataMinAge(FailoverMetadataMinAge),
		kgo.RetryBackoffFn(failoverBackoff),
	}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	// Validate has read the files and checked the mechanism; an error here
	// means a file changed since, and the client then fails to connect with
	// a clear authentication error rather than silently in plaintext.
	if sec, err := c.Security.options(); err == nil {
		opts = append(opts, sec...)
	} else {
		opts = append(opts, kgo.Dialer(func(context.Context, string, string) (net.Conn, error) { return nil, err }))
	}
	if c.Logger != nil {
		opts = append(opts, kgo.WithLogger(kslog.New(c.Logger)))
	}
	if len(c.Hooks) > 0 {
		opts = append(opts, kgo.WithHooks(c.Hooks...))
	}
	if c.NewHooks != nil {
		if hooks := c.NewHooks(); len(hooks) > 0 {
			opts = append(opts, kgo.WithHooks(hooks...))
		}
	}
	return append(opts, c.Opts...)
}
