package kafka_test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// TestHopRepairsMissedRewind: after a batch that did not commit, the next
// poll of a partition must start at or before the first record the batch
// read of it. The test plays the fault issue #13 could not explain (four
// replies lost once): once the hop has set the client back after an
// aborted batch, the EndFunc moves the partition 5 records forward, as a
// rewind that was missed would leave it. The hop must notice it at the
// next poll, set the partition back, and so copy every record; without
// the check the 5 records are never copied. A second abort without the
// fault must not count as a repair.
func TestHopRepairsMissedRewind(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			const n = 20
			h, in, out := copyHop(t, n, kafka.HopConfig{Guarantee: g})
			var (
				mu      sync.Mutex
				aborts  int
				pending []string // the batch in flight's values
				copied  []string // values of committed batches
			)
			done := make(chan struct{})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			runErr := make(chan error, 1)
			go func() {
				runErr <- h.Run(ctx, func(_ context.Context, b *kafka.Batch) error {
					mu.Lock()
					defer mu.Unlock()
					pending = pending[:0]
					b.Fetches.EachRecord(func(r *kgo.Record) {
						pending = append(pending, string(r.Value))
						b.Produce(&kgo.Record{Topic: out, Value: r.Value})
					})
					if len(pending) > 0 && aborts < 2 {
						return kafka.ErrAbort
					}
					return nil
				}, func(committed bool) {
					mu.Lock()
					defer mu.Unlock()
					if !committed {
						if aborts++; aborts == 1 {
							// A rewind missed: the partition is left past
							// the aborted batch's first records.
							h.Client().SetOffsets(map[string]map[int32]kgo.EpochOffset{in: {0: {Epoch: -1, Offset: 5}}})
						}
						return
					}
					copied = append(copied, pending...)
					if len(copied) >= n {
						select {
						case <-done:
						default:
							close(done)
						}
					}
				})
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				mu.Lock()
				t.Fatalf("copied %d of %d records in 20s: %v", len(copied), n, copied)
			}
			cancel()
			if err := <-runErr; err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			want := make([]string, n)
			for i := range want {
				want[i] = strconv.Itoa(i)
			}
			if !slices.Equal(copied, want) {
				t.Fatalf("copied %v, want every record once in order", copied)
			}
			if got := h.RewindsRepaired(); got != 1 {
				t.Fatalf("RewindsRepaired = %d, want 1 (the second abort was set back by the hop itself)", got)
			}
		})
	}
}
