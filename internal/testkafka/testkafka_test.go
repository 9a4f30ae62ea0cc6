package testkafka_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/testkafka"
)

func TestMain(m *testing.M) { testkafka.Main(m) }

// TestBroker says which broker this run uses and proves it is what the
// environment asked for: with KAFKA_BROKERS (or SG_TESTCONTAINERS=1) it
// must be a real Apache Kafka, otherwise kfake. It fails when it cannot
// tell.
func TestBroker(t *testing.T) {
	c := testkafka.New(t)
	id, err := testkafka.Identify(t.Context(), c.Client(t))
	if err != nil {
		t.Fatalf("identify: %v", err)
	}
	t.Logf("testkafka: broker=%s version=%s metadata.version=%s brokers=%s",
		c.Kind, id.Version, id.MetadataVersion, strings.Join(c.Brokers, ","))
	t.Logf("evidence: %s", strings.Join(id.Evidence, "; "))
	t.Log(testkafka.Describe(t, c))

	wantReal := c.Kind != testkafka.KindKfake
	if id.RealKafka != wantReal {
		t.Fatalf("%s broker: RealKafka = %v, want %v (%s)", c.Kind, id.RealKafka, wantReal, strings.Join(id.Evidence, "; "))
	}
	if env := os.Getenv("KAFKA_BROKERS"); env != "" && c.Kind != testkafka.KindKafka {
		t.Fatalf("KAFKA_BROKERS=%s but New gave a %s broker", env, c.Kind)
	}
}

// TestIdentifyKfake checks, in every environment, that Identify does not
// mistake kfake for Kafka: TestBroker on a real broker relies on it.
func TestIdentifyKfake(t *testing.T) {
	c := testkafka.NewKfake(t)
	id, err := testkafka.Identify(t.Context(), c.Client(t))
	if err != nil {
		t.Fatalf("identify: %v", err)
	}
	if id.RealKafka {
		t.Fatalf("kfake identified as real Kafka: %s", strings.Join(id.Evidence, "; "))
	}
}

func TestPrefix(t *testing.T) {
	seen := map[string]bool{}
	for _, name := range []string{"plain", "with space/and:colon", strings.Repeat("long", 40)} {
		t.Run(name, func(t *testing.T) {
			c := testkafka.NewKfake(t)
			p := c.Prefix
			if !strings.HasPrefix(p, "t.") || !strings.HasSuffix(p, ".") {
				t.Errorf("prefix %q: want t.<name>.<random>.", p)
			}
			if len(p) > 80 {
				t.Errorf("prefix %q is %d chars, want <= 80", p, len(p))
			}
			for _, r := range p {
				if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
					t.Errorf("prefix %q has %q, not legal in a topic name", p, r)
				}
			}
			if seen[p] {
				t.Errorf("prefix %q handed out twice", p)
			}
			seen[p] = true
			if got := c.Name("x"); got != p+"x" {
				t.Errorf("Name(x) = %q, want %q", got, p+"x")
			}
		})
	}
}

func TestProduceConsume(t *testing.T) {
	c := testkafka.New(t)
	topic := c.CreateTopic(t, "rt", 3, nil)
	ctx := t.Context()

	prod := c.Client(t, kgo.DefaultProduceTopic(topic))
	const n = 100
	var want []string
	for i := range n {
		v := fmt.Sprintf("v%03d", i)
		want = append(want, v)
		prod.Produce(ctx, &kgo.Record{Key: []byte(v), Value: []byte(v)}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce %s: %v", v, err)
			}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}

	cons := c.Client(t,
		kgo.ConsumeTopics(topic),
		kgo.ConsumerGroup(c.Name("g")),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	got := consume(t, cons, n, func(r *kgo.Record) string { return string(r.Value) })
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("consumed %d records %v..., want %d", len(got), head(got), n)
	}
	if err := cons.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	lag, err := c.Admin(t).Lag(ctx, c.Name("g"))
	if err != nil {
		t.Fatalf("lag: %v", err)
	}
	if l := lag[c.Name("g")].Lag.Total(); l != 0 {
		t.Errorf("group lag after commit = %d, want 0", l)
	}
}

// TestTransactions commits one transaction, aborts one and commits a
// sentinel: read_committed sees only the committed records, and
// read_uncommitted sees the aborted ones too. On a single real broker this
// proves the transaction state log settings.
func TestTransactions(t *testing.T) {
	c := testkafka.New(t)
	topic := c.CreateTopic(t, "txn", 1, nil)
	ctx := t.Context()

	prod := c.Client(t,
		kgo.DefaultProduceTopic(topic),
		kgo.TransactionalID(c.Name("tx")),
		kgo.TransactionTimeout(10*time.Second),
	)
	txn := func(commit bool, values ...string) {
		t.Helper()
		if err := prod.BeginTransaction(); err != nil {
			t.Fatalf("begin: %v", err)
		}
		for _, v := range values {
			if err := prod.ProduceSync(ctx, kgo.StringRecord(v)).FirstErr(); err != nil {
				t.Fatalf("produce %s: %v", v, err)
			}
		}
		if err := prod.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatalf("end transaction (commit=%v): %v", commit, err)
		}
	}
	txn(true, "c1", "c2", "c3")
	txn(false, "a1", "a2")
	txn(true, "end")

	for _, tc := range []struct {
		name  string
		level kgo.IsolationLevel
		want  []string
	}{
		{"read_committed", kgo.ReadCommitted(), []string{"c1", "c2", "c3", "end"}},
		{"read_uncommitted", kgo.ReadUncommitted(), []string{"c1", "c2", "c3", "a1", "a2", "end"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cons := c.Client(t,
				kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
				kgo.FetchIsolationLevel(tc.level),
			)
			got := consume(t, cons, len(tc.want), func(r *kgo.Record) string { return string(r.Value) })
			if !slices.Equal(got, tc.want) {
				t.Fatalf("%s read %v, want %v", tc.name, got, tc.want)
			}
		})
	}
}

// TestCompaction writes three values for each of two keys on a compacted
// topic that rolls segments every 100ms, and waits for the broker's
// cleaner to leave only the latest value of each key.
func TestCompaction(t *testing.T) {
	c := testkafka.New(t)
	cfg := func(s string) *string { return &s }
	topic := c.CreateTopic(t, "compact", 1, map[string]*string{
		"cleanup.policy":            cfg("compact"),
		"segment.ms":                cfg("100"),
		"min.cleanable.dirty.ratio": cfg("0.01"),
		"delete.retention.ms":       cfg("100"),
		"min.compaction.lag.ms":     cfg("0"),
	})
	ctx := t.Context()
	prod := c.Client(t, kgo.DefaultProduceTopic(topic))
	for round := range 3 {
		for _, k := range []string{"a", "b"} {
			r := &kgo.Record{Key: []byte(k), Value: fmt.Appendf(nil, "%s%d", k, round)}
			if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatalf("produce: %v", err)
			}
		}
		time.Sleep(150 * time.Millisecond) // a segment per round
	}

	want := []string{"a2", "b2"}
	deadline := time.Now().Add(60 * time.Second)
	for {
		// The active segment is never cleaned: keep appending a third
		// key so that the rounds above are in closed segments.
		if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte("z"), Value: []byte("z")}).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
		got := readAll(t, c, topic)
		var ab []string
		for _, v := range got {
			if v != "z" {
				ab = append(ab, v)
			}
		}
		if slices.Equal(ab, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s the compacted topic still reads %v, want %v then z's", ab, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// readAll reads a single-partition topic from the start to its current end.
func readAll(t *testing.T, c *testkafka.Cluster, topic string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ends, err := c.Admin(t).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("end offsets: %v", err)
	}
	end, _ := ends.Lookup(topic, 0)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer cl.Close()
	var out []string
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %s to offset %d: %v (read %v)", topic, end.Offset, err, out)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, string(r.Value))
			done = done || r.Offset >= end.Offset-1
		})
		if done {
			return out
		}
	}
}

// consume polls cl until it has n records, failing t after 30s.
func consume(t *testing.T, cl *kgo.Client, n int, val func(*kgo.Record) string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var got []string
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records in 30s: %v", len(got), n, head(got))
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { got = append(got, val(r)) })
	}
	return got
}

func head(s []string) []string { return s[:min(len(s), 5)] }
