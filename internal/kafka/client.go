package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

// Guarantee is the delivery guarantee a role runs with.
type Guarantee string

// The guarantees.
const (
	// ExactlyOnce runs every consume-produce hop in a Kafka transaction and
	// reads read_committed.
	ExactlyOnce Guarantee = "exactly-once"
	// AtLeastOnce produces idempotently and commits offsets after the produced
	// records are acknowledged; duplicates may flow and are removed by the
	// aggregator's per-part de-duplication.
	AtLeastOnce Guarantee = "at-least-once"
)

// ParseGuarantee parses "exactly-once" or "at-least-once".
func ParseGuarantee(s string) (Guarantee, error) {
	switch g := Guarantee(strings.ToLower(strings.TrimSpace(s))); g {
	case ExactlyOnce, AtLeastOnce:
		return g, nil
	}
	return "", fmt.Errorf("guarantee %q: want %q or %q", s, ExactlyOnce, AtLeastOnce)
}

// ClientConfig is what every client of a role shares.
type ClientConfig struct {
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
	// rewrite (internal/schemareg).
	Hooks []kgo.Hook
}

// Validate reports every problem with c at once.
func (c ClientConfig) Validate() error {
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
func (c ClientConfig) Options() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		// Topics are created by EnsureTopics; a produce to a missing topic is
		// a configuration error that must surface, not wait forever.
		kgo.UnknownTopicRetries(3),
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

// NewClient returns a plain client (no group) for c plus extra options.
func NewClient(c ClientConfig, extra ...kgo.Opt) (*kgo.Client, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(c.Options(), extra...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return cl, nil
}

// DefaultInstanceID returns "<hostname>-<pid>", the instance name a role
// takes when none is configured. It is unique per process but not stable
// across restarts: give each instance a stable --instance-id in production
// so a restarted instance fences its predecessor's transactions.
func DefaultInstanceID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "host"
	}
	return h + "-" + strconv.Itoa(os.Getpid())
}
