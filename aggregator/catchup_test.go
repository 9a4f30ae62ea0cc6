package aggregator

import (
	"fmt"
	"testing"
	"time"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/schemas"
)

// TestCatchUpAfterOutage: requests are open with one of two parts when the
// aggregator stops; the second part of each arrives, in time, while no
// aggregator runs, and the deadlines pass before one starts again. The
// restored partitions must read that backlog before their overdue
// deadlines fire: every request is answered once, COMPLETE, not PARTIAL
// with the part that sat in the topic marked MISSING.
func TestCatchUpAfterOutage(t *testing.T) {
	for _, g := range []kafka.Guarantee{kafka.ExactlyOnce, kafka.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			t.Parallel()
			const requests = 300
			f := newFixture(t, 3)
			a := f.start("a", g)
			waitFor(t, "instance ready", 30*time.Second, a.agg.Ready)

			deadline := time.Now().Add(4 * time.Second)
			id := func(i int) string { return fmt.Sprintf("req-%04d", i) }
			for i := range requests {
				f.w.send(int32(i)%f.parts, f.w.manifest(id(i), deadline, "", "a", "b"),
					f.w.result(id(i), "a", schemas.ResultOK, payload(id(i), "a"), "", deadline))
			}
			waitFor(t, "every request open", 30*time.Second, func() bool { return a.agg.Stats().Manifests == requests })
			a.stopNow(t)

			for i := range requests {
				f.w.send(int32(i)%f.parts, f.w.result(id(i), "b", schemas.ResultOK, payload(id(i), "b"), "", deadline))
			}
			if time.Now().After(deadline) {
				t.Fatalf("the second parts were written after the deadline: the machine is too slow for this test")
			}
			time.Sleep(time.Until(deadline) + 300*time.Millisecond)

			// Small batches: the backlog takes many, and every batch fires
			// the timers that are due.
			b := f.start("a", g, func(c *Config) { c.MaxPollRecords = 20 })
			l := f.replyLog()
			l.until("every reply", 30*time.Second, func() bool { return len(l.replies) == requests })
			waitFor(t, "restored", 10*time.Second, b.agg.Ready)
			settled := time.Now().Add(time.Second) // time for a second reply to show
			l.until("a second of reading", 5*time.Second, func() bool { return time.Now().After(settled) })

			var partial []string
			for i := range requests {
				reps := l.replies[schemas.CorrelationID(id(i))]
				if len(reps) != 1 {
					t.Errorf("%s: %d replies, want 1", id(i), len(reps))
					continue
				}
				if reps[0].Status != schemas.ReplyComplete {
					partial = append(partial, fmt.Sprintf("%s %s", id(i), reps[0].Status))
				}
			}
			if len(partial) > 0 {
				t.Errorf("%d of %d replies not COMPLETE although every part was in the topic before the deadline, e.g. %v",
					len(partial), requests, partial[:min(len(partial), 5)])
			}
			if s := b.agg.Stats(); s.RestoredOpen != requests {
				t.Errorf("restored %d open requests, want %d", s.RestoredOpen, requests)
			}
		})
	}
}
