// Package testkafka gives integration tests a Kafka broker and a topic
// prefix of their own. One suite runs unchanged on three brokers:
//
//   - KAFKA_BROKERS=host:port,... : a real cluster you run, e.g. the one
//     scripts/kafka-local.sh starts (`make test-kafka`). It must answer, or
//     the test fails; it is never skipped.
//   - SG_TESTCONTAINERS=1: an Apache Kafka container (image SG_KAFKA_IMAGE,
//     default [DefaultImage]) shared by the test binary; needs Docker.
//   - otherwise: a fresh in-process kfake cluster per call, closed when the
//     test ends.
//
// Usage:
//
//	func TestMain(m *testing.M) { testkafka.Main(m) }
//
//	func TestRoundTrip(t *testing.T) {
//		c := testkafka.New(t)
//		topic := c.CreateTopic(t, "tasks", 3, nil)
//		cl := c.Client(t, kgo.DefaultProduceTopic(topic))
//		...
//	}
//
// Topics, groups and transactional IDs a test makes should start with
// [Cluster.Prefix] (see [Cluster.Name]) so that tests sharing a real broker
// never see each other's data. On a real broker the topics under the
// prefix are deleted when the test ends, unless SG_KEEP_TOPICS=1.
//
// Everything here is safe for concurrent use by parallel tests.
package testkafka

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/kafkaconfig"
)

// The kinds of broker a [Cluster] can be.
const (
	KindKfake          = "kfake"
	KindKafka          = "kafka"
	KindTestcontainers = "testcontainers"
)

// Cluster is the broker a test talks to.
type Cluster struct {
	Brokers []string // seed addresses
	Kind    string   // "kfake", "kafka" (KAFKA_BROKERS) or "testcontainers"
	Prefix  string   // a topic prefix unique to this test: "t.<test name>.<random>."

	// Fake is the in-process cluster when Kind is "kfake", for tests that
	// steer it (Control, Compact, MoveTopicPartition...); nil otherwise.
	Fake *kfake.Cluster

	version string // what the broker says it is, for Describe and Main
}

// Option configures [New].
type Option func(*options)

type options struct {
	kfake []kfake.Opt
}

// WithKfakeOpts passes extra options to kfake.NewCluster when New starts
// an in-process cluster, after testkafka's own (so they win). They are
// ignored on a real broker.
func WithKfakeOpts(opts ...kfake.Opt) Option {
	return func(o *options) { o.kfake = append(o.kfake, opts...) }
}

// New returns a broker for t: KAFKA_BROKERS if set (comma separated; it
// must answer, else t.Fatal), else a testcontainers Kafka when
// SG_TESTCONTAINERS=1 (t.Fatal if Docker is unavailable), else a fresh
// in-process kfake cluster closed with t.Cleanup.
func New(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case os.Getenv("KAFKA_BROKERS") != "":
		return newExternal(t, KindKafka, splitBrokers(os.Getenv("KAFKA_BROKERS")))
	case os.Getenv("SG_TESTCONTAINERS") == "1":
		return newExternal(t, KindTestcontainers, containerBrokers(t))
	default:
		return NewKfake(t, o.kfake...)
	}
}

// KfakeConfigs are the broker configs NewKfake starts kfake with. They
// match what scripts/kafka-local.sh gives the real broker: KIP-848
// heartbeats every 500ms instead of 5s so that group rebalances take well
// under a second, a 10s session timeout, and compaction checked every
// second.
func KfakeConfigs() map[string]string {
	return map[string]string{
		"group.consumer.heartbeat.interval.ms": "500",
		"group.consumer.session.timeout.ms":    "10000",
		"group.share.heartbeat.interval.ms":    "500",
		"log.cleaner.backoff.ms":               "1000",
	}
}

// NewKfake returns a fresh in-process kfake cluster for t, whatever the
// environment says, closed when t ends. It has one broker, no topics, no
// auto topic creation, and transactions (kfake supports them always); opts
// are applied after these defaults.
func NewKfake(t testing.TB, opts ...kfake.Opt) *Cluster {
	t.Helper()
	all := append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.BrokerConfigs(KfakeConfigs()),
	}, opts...)
	fake, err := kfake.NewCluster(all...)
	if err != nil {
		t.Fatalf("testkafka: start kfake: %v", err)
	}
	t.Cleanup(fake.Close)
	c := &Cluster{
		Brokers: fake.ListenAddrs(),
		Kind:    KindKfake,
		Prefix:  newPrefix(t.Name()),
		Fake:    fake,
		version: "kfake",
	}
	record(c)
	return c
}

// newExternal checks that a real broker answers and returns a Cluster on
// it whose topics are deleted when t ends.
func newExternal(t testing.TB, kind string, brokers []string) *Cluster {
	t.Helper()
	if len(brokers) == 0 {
		t.Fatalf("testkafka: no broker addresses for %s", kind)
	}
	c := &Cluster{Brokers: brokers, Kind: kind, Prefix: newPrefix(t.Name())}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, err := ping(ctx, brokers)
	if err != nil {
		t.Fatalf("testkafka: %s broker %s does not answer: %v", kind, strings.Join(brokers, ","), err)
	}
	c.version = v
	t.Cleanup(func() { c.deleteTopics(t) })
	record(c)
	return c
}

// ping asks every broker for its API versions and returns the version
// the first one claims to be.
func ping(ctx context.Context, brokers []string) (string, error) {
	adm, err := kadm.NewOptClient(kgo.SeedBrokers(brokers...), kgo.DialTimeout(5*time.Second))
	if err != nil {
		return "", err
	}
	defer adm.Close()
	vs, err := adm.ApiVersions(ctx)
	if err != nil {
		return "", err
	}
	version := ""
	for _, v := range vs.Sorted() {
		if v.Err != nil {
			return "", v.Err
		}
		if version == "" {
			version = v.VersionGuess()
		}
	}
	if version == "" {
		return "", errors.New("no broker answered ApiVersions")
	}
	return version, nil
}

// Client returns a franz-go client for the cluster (closed on cleanup) with
// the given extra options, which come after the seed brokers.
func (c *Cluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Brokers...)}, opts...)...)
	if err != nil {
		t.Fatalf("testkafka: new client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Admin returns a kadm client (closed on cleanup).
func (c *Cluster) Admin(t testing.TB) *kadm.Client {
	t.Helper()
	return kadm.NewClient(c.Client(t))
}

// Name returns Prefix+suffix: the name to give a topic, group or
// transactional ID so that it belongs to this test.
func (c *Cluster) Name(suffix string) string { return c.Prefix + suffix }

// CreateTopic creates the topic Name(name) with the given partitions, the
// broker's default replication factor and the given topic configs (nil for
// none), waits until every partition has a leader, and returns its name.
// It fails t on any error.
func (c *Cluster) CreateTopic(t testing.TB, name string, partitions int32, configs map[string]*string) string {
	t.Helper()
	topic := c.Name(name)
	spec := kafkaconfig.TopicSpec{Name: topic, Partitions: partitions, ReplicationFactor: -1, Configs: map[string]string{}}
	for k, v := range configs {
		spec.Configs[k] = *v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// EnsureTopics returns once the topic has its leaders: a real broker
	// answers CreateTopics before every broker knows them, and a produce
	// then would see UNKNOWN_TOPIC_OR_PARTITION.
	created, err := kafkaconfig.EnsureTopics(ctx, c.Admin(t), []kafkaconfig.TopicSpec{spec})
	if err == nil && len(created) != 1 {
		err = errors.New("it exists already")
	}
	if err != nil {
		t.Fatalf("testkafka: create topic %s: %v", topic, err)
	}
	return topic
}

// deleteTopics removes the topics under c.Prefix from a real broker; kfake
// clusters vanish whole. It logs rather than fails: the test is over.
func (c *Cluster) deleteTopics(t testing.TB) {
	if os.Getenv("SG_KEEP_TOPICS") == "1" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	adm, err := kadm.NewOptClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		t.Logf("testkafka: cleanup client: %v", err)
		return
	}
	defer adm.Close()
	td, err := adm.ListTopics(ctx)
	if err != nil {
		t.Logf("testkafka: cleanup list topics: %v", err)
		return
	}
	var mine []string
	for _, name := range td.Names() {
		if strings.HasPrefix(name, c.Prefix) {
			mine = append(mine, name)
		}
	}
	if len(mine) == 0 {
		return
	}
	resps, err := adm.DeleteTopics(ctx, mine...)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		t.Logf("testkafka: cleanup delete topics %v: %v", mine, err)
	}
}

func splitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// maxNameInPrefix keeps prefixes short: Kafka topic names stop at 249
// characters, and tests append their own names.
const maxNameInPrefix = 48

// newPrefix turns a test name into "t.<name>.<8 hex>.", keeping only
// characters legal in a topic name. Subtest slashes become dots. A long
// name keeps its head and tail, the parts that tell tests apart.
func newPrefix(testName string) string {
	var b strings.Builder
	for _, r := range testName {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == '/' || r == '.':
			b.WriteByte('.')
		default:
			b.WriteByte('_')
		}
	}
	name := b.String()
	if len(name) > maxNameInPrefix {
		half := maxNameInPrefix / 2
		name = name[:half] + "-" + name[len(name)-half+1:]
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:]) // crypto/rand.Read never fails on Linux, and panics rather than return an error elsewhere
	return "t." + name + "." + hex.EncodeToString(rnd[:]) + "."
}
