package cli

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// common holds the flags every role shares.
type common struct {
	brokers          string
	prefix           string
	partitions       int
	resultPartitions int
	replication      int
	routesFile       string
	guarantee        string
	instanceID       string
	commitInterval   time.Duration
	transactionGap   time.Duration
	sessionTimeout   time.Duration
	logLevel         string
	logFormat        string
	kafkaLogLevel    string
	createTopics     bool
	security         kafkaconfig.Security
	registry         registryFlags
}

// register defines the shared flags; withBrokers is false for commands that
// run their own embedded broker.
func (c *common) register(fs *flag.FlagSet, withBrokers bool) {
	if withBrokers {
		fs.StringVar(&c.brokers, "brokers", "127.0.0.1:9092", "Kafka seed brokers, comma separated")
		fs.BoolVar(&c.createTopics, "create-topics", true, "create missing topics at start (and check existing ones); without it, missing topics are named in the log and /readyz (503) until they exist")
		registerSecurity(fs, &c.security)
		c.registry.register(fs)
	}
	fs.StringVar(&c.prefix, "topic-prefix", kafkaconfig.DefaultPrefix, "prefix of every topic name")
	fs.IntVar(&c.partitions, "partitions", 6, "partitions of requests, tasks.<route>, replies and dlq when created")
	fs.IntVar(&c.resultPartitions, "result-partitions", 6, "partitions of results and aggregator-state (co-partitioned) when created")
	fs.IntVar(&c.replication, "replication-factor", -1, "replication factor of created topics; -1 takes the broker's default")
	fs.StringVar(&c.routesFile, "routes-file", "", "JSON route table (docs/routes.md describes every field); empty serves the demo routes search, quotes and echo")
	fs.StringVar(&c.guarantee, "guarantee", string(kafkaconfig.ExactlyOnce), "exactly-once (Kafka transactions) or at-least-once")
	fs.StringVar(&c.instanceID, "instance-id", "", "stable name of this instance, part of its transactional id; default hostname-pid")
	fs.DurationVar(&c.sessionTimeout, "session-timeout", kafkaconfig.DefaultSessionTimeout, "how long the consumer group waits for an instance that stopped heartbeating (crashed) before its partitions go to the others; the broker allows 6s to 30m by default")
	fs.DurationVar(&c.commitInterval, "offset-commit-interval", kafkaconfig.DefaultOffsetCommitInterval, "at-least-once: least time between two offset commits (a crash consumes up to that much again); the aggregator, under either guarantee, writes its open requests' state and commits its offsets once per interval; 0 or negative: after every batch")
	fs.DurationVar(&c.transactionGap, "transaction-gap", kafkaconfig.DefaultTransactionGap, "exactly-once: least time from the end of a transaction to the poll for the next batch (Kafka 4.x holds a transaction's first produce 20ms when it begins while the last one's markers are being written); 0 or negative: no wait")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.kafkaLogLevel, "kafka-log-level", "warn", "level of the Kafka client's own logs: debug, info, warn, error or none")
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// logger builds the process logger on stderr.
func (c *common) logger() (*slog.Logger, error) {
	return newLogger(os.Stderr, c.logLevel, c.logFormat)
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	l, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// clientConfig returns the Kafka client settings for brokers.
func (c *common) clientConfig(brokers []string, clientID string) (kafkaconfig.Client, error) {
	cc := kafkaconfig.Client{Brokers: brokers, ClientID: clientID, Security: c.security}
	if c.kafkaLogLevel != "none" {
		l, err := parseLevel(c.kafkaLogLevel)
		if err != nil {
			return cc, fmt.Errorf("--kafka-log-level: %w", err)
		}
		log, err := newLogger(os.Stderr, l.String(), c.logFormat)
		if err != nil {
			return cc, fmt.Errorf("--log-format: %w", err)
		}
		cc.Logger = log.With("component", "kafka")
	}
	return cc, cc.Validate()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (c *common) brokerList() []string { return splitList(c.brokers) }

func (c *common) topics() kafkaconfig.Topics { return kafkaconfig.Topics{Prefix: c.prefix} }

func (c *common) layout() kafkaconfig.Layout {
	return kafkaconfig.Layout{Partitions: int32(c.partitions), ResultPartitions: int32(c.resultPartitions), ReplicationFactor: int16(c.replication)}
}

func (c *common) routes() (*routes.Table, error) {
	if c.routesFile == "" {
		return routes.Demo(), nil
	}
	return routes.Load(c.routesFile)
}

func (c *common) parseGuarantee() (kafkaconfig.Guarantee, error) {
	g, err := kafkaconfig.ParseGuarantee(c.guarantee)
	if err != nil {
		return "", fmt.Errorf("--guarantee: %w", err)
	}
	return g, nil
}

type setupResult struct {
	// log carries the role's name, for the command's own logs; base does
	// not, for the role's Config.Logger (each role adds its own name).
	log, base *slog.Logger
	guarantee kafkaconfig.Guarantee
	client    kafkaconfig.Client
	table     *routes.Table
}

// topicsHint is the command that creates the topics this command's flags
// name, for the log and /readyz of a role that finds them missing.
func (c *common) topicsHint() string {
	cmd := "scattergather topics --brokers " + c.brokers + " --topic-prefix " + c.prefix
	if c.routesFile != "" {
		cmd += " --routes-file " + c.routesFile
	}
	if c.security != (kafkaconfig.Security{}) {
		cmd += " and this command's TLS/SASL flags"
	}
	if !c.createTopics {
		cmd += " (or start this command with --create-topics)"
	}
	return cmd
}
