package kafka_test

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// TestHopRejectedRecords runs a hop that copies records and, for some
// input records, also writes one record to a topic that does not exist
// and one too large for Kafka. Those two are dead-lettered with their
// reasons (the too-large one as a stand-in) and every copy is written
// once: the batch goes on without them instead of aborting for good.
func TestHopRejectedRecords(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			const n = 60
			c := testkafka.New(t)
			in := c.CreateTopic(t, "in", 2, nil)
			out := c.CreateTopic(t, "out", 2, nil)
			dlq := c.CreateTopic(t, "dlq", 1, nil)
			missing := c.Name("missing")
			group := c.Name("copy")
			reg := prometheus.NewRegistry()
			cfg := kafka.HopConfig{
				Client:      kafkaconfig.Client{Brokers: c.Brokers},
				Group:       group,
				Topics:      []string{in},
				Guarantee:   g,
				Tick:        100 * time.Millisecond,
				Logger:      slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
				Metrics:     reg,
				DeadLetters: dlq,
				Role:        "copier",
			}
			if g == kafkaconfig.ExactlyOnce {
				cfg.TransactionalID = group + "-0"
			}
			hop, err := kafka.NewHop(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var recs []*kgo.Record
			for i := range n {
				recs = append(recs, &kgo.Record{Topic: in, Key: []byte("k" + strconv.Itoa(i%7)), Value: []byte(strconv.Itoa(i))})
			}
			if err := c.Client(t).ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			var aborted atomic.Int64
			process := func(_ context.Context, b *kafka.Batch) error {
				b.Fetches.EachRecord(func(r *kgo.Record) {
					b.Produce(&kgo.Record{Topic: out, Key: r.Key, Value: r.Value})
					switch string(r.Value) {
					case "10":
						b.Produce(&kgo.Record{Topic: missing, Key: []byte("nowhere"), Value: r.Value})
					case "20":
						b.Produce(&kgo.Record{Topic: out, Key: []byte("huge"), Value: make([]byte, 1_200_000)})
					}
				})
				return nil
			}
			end := func(ok bool) {
				if !ok {
					aborted.Add(1)
				}
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- hop.Run(ctx, process, end) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("run: %v", err)
				}
			})

			copies := readTopic(t, c, out, n, 30*time.Second)
			seen := map[string]int{}
			for _, r := range copies {
				seen[string(r.Value)]++
			}
			for i := range n {
				if seen[strconv.Itoa(i)] != 1 {
					t.Errorf("record %d copied %d times, want once", i, seen[strconv.Itoa(i)])
				}
			}
			dls := readTopic(t, c, dlq, 2, 30*time.Second)
			reasons := map[string]*kgo.Record{}
			for _, r := range dls {
				reasons[kafka.Header(r, kafka.HeaderDLQReason)] = r
				if role := kafka.Header(r, kafka.HeaderDLQRole); role != "copier" {
					t.Errorf("dead letter role %q, want copier", role)
				}
			}
			if r := reasons[kafka.ReasonUnknownTopic]; r == nil || kafka.Header(r, kafka.HeaderDLQTopic) != missing || string(r.Value) != "10" {
				t.Errorf("no dead letter of the record for %s with reason %s: %v", missing, kafka.ReasonUnknownTopic, dls)
			}
			if r := reasons[kafka.ReasonRecordTooLarge]; r == nil || kafka.Header(r, kafka.HeaderDLQTruncated) != "true" ||
				kafka.Header(r, kafka.HeaderDLQSize) != "1200000" || len(r.Value) != kafka.StandInBytes ||
				!strings.Contains(kafka.Header(r, kafka.HeaderDLQError), "MESSAGE_TOO_LARGE") {
				t.Errorf("no stand-in for the record too large: %v", dls)
			}
			if len(dls) != 2 {
				t.Errorf("%d dead letters, want 2", len(dls))
			}
			for _, reason := range []string{kafka.ReasonUnknownTopic, kafka.ReasonRecordTooLarge} {
				if got := counterOf(t, reg, "scattergather_records_rejected_total", reason); got != 1 {
					t.Errorf("records_rejected_total{reason=%q} = %v, want 1", reason, got)
				}
			}
		})
	}
}

// TestHopDeadLettersRefused: when even the dead-letter topic refuses the
// record (it does not exist), Run ends with an error naming it rather than
// abort the same batch for ever.
func TestHopDeadLettersRefused(t *testing.T) {
	c := testkafka.New(t)
	in := c.CreateTopic(t, "in", 1, nil)
	group := c.Name("copy")
	hop, err := kafka.NewHop(kafka.HopConfig{
		Client:          kafkaconfig.Client{Brokers: c.Brokers},
		Group:           group,
		Topics:          []string{in},
		TransactionalID: group + "-0",
		DeadLetters:     c.Name("no-dlq"),
		Role:            "copier",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Client(t).ProduceSync(t.Context(), &kgo.Record{Topic: in, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	err = hop.Run(ctx, func(_ context.Context, b *kafka.Batch) error {
		b.Fetches.EachRecord(func(r *kgo.Record) { b.Produce(&kgo.Record{Topic: c.Name("missing"), Value: r.Value}) })
		return nil
	}, func(bool) {})
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), c.Name("no-dlq")) {
		t.Fatalf("run: %v (context: %v), want an error naming the dead-letter topic %s", err, ctx.Err(), c.Name("no-dlq"))
	}
}

// readTopic reads topic read_committed from the start until want records
// came or timeout passed, then a little longer for any extra.
func readTopic(t *testing.T, c *testkafka.Cluster, topic string, want int, timeout time.Duration) []*kgo.Record {
	t.Helper()
	cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxBytes(8<<20))
	var recs []*kgo.Record
	deadline := time.Now().Add(timeout)
	extra := time.Time{}
	for {
		ctx, cancel := context.WithDeadline(t.Context(), deadline)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
		if len(recs) >= want && extra.IsZero() {
			extra = time.Now().Add(time.Second)
			deadline = extra
		}
		if time.Now().After(deadline) {
			return recs
		}
	}
}

// counterOf returns the value of the counter of name in reg whose reason
// label is reason.
func counterOf(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Errorf("no %s{reason=%q}", name, reason)
	return 0
}
