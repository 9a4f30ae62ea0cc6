package kafka_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// TestTransactionGap: under exactly-once a hop polls its next batch no
// sooner than TransactionGap after its last transaction ended, though
// records are waiting (each batch takes at most one, so that every one is
// a transaction of its own): the ends of its transactions are at least the
// gap apart, and every record is copied. With a negative gap the hop
// begins at once. Kafka 4.x holds a transaction's first produce 20ms when
// it begins while the last one's markers are written (see
// kafkaconfig.Role.TransactionGap); what the gap is worth there is
// measured by the bench (docs/benchmarks.md), not here.
func TestTransactionGap(t *testing.T) {
	for _, tc := range []struct {
		gap     time.Duration
		minStep time.Duration // least time between two ends, -1: unchecked
	}{
		{150 * time.Millisecond, 150 * time.Millisecond},
		{-1, -1},
	} {
		t.Run(tc.gap.String(), func(t *testing.T) {
			const n = 6
			h, _, out := copyHop(t, n, kafka.HopConfig{Guarantee: kafkaconfig.ExactlyOnce, MaxPollRecords: 1, TransactionGap: tc.gap})
			var (
				mu     sync.Mutex
				ends   []time.Time
				copied int
			)
			done := make(chan struct{})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			runErr := make(chan error, 1)
			go func() {
				runErr <- h.Run(ctx, func(_ context.Context, b *kafka.Batch) error {
					b.Fetches.EachRecord(func(r *kgo.Record) {
						b.Produce(&kgo.Record{Topic: out, Value: r.Value})
					})
					return nil
				}, func(committed bool) {
					mu.Lock()
					defer mu.Unlock()
					if committed {
						ends = append(ends, time.Now())
						if copied++; copied == n {
							close(done)
						}
					}
				})
			}()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("copied %d of %d records in 30s", copied, n)
			}
			cancel()
			if err := <-runErr; err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			for i := 1; i < len(ends); i++ {
				if step := ends[i].Sub(ends[i-1]); tc.minStep > 0 && step < tc.minStep {
					t.Errorf("transaction %d ended %s after the one before, want at least the gap %s", i, step, tc.gap)
				}
			}
		})
	}
}

// copyHop makes a topic "in" of one partition holding n records, the
// values "0" to "n-1", a topic "out", and a hop of cfg (its client, group,
// topics and transactional id set here) to copy one to the other.
func copyHop(t *testing.T, n int, cfg kafka.HopConfig) (h *kafka.Hop, in, out string) {
	t.Helper()
	c := testkafka.New(t)
	in = c.CreateTopic(t, "in", 1, nil)
	out = c.CreateTopic(t, "out", 1, nil)
	prod := c.Client(t, kgo.DefaultProduceTopic(in))
	for i := range n {
		if err := prod.ProduceSync(t.Context(), &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Client = kafkaconfig.Client{Brokers: c.Brokers}
	cfg.Group = c.Name("copy")
	cfg.Topics = []string{in}
	cfg.TransactionalID = cfg.Group + "-0"
	h, err := kafka.NewHop(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h, in, out
}
