package chaos

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/scattergather/scattergather/kafkaconfig"
)

func TestFlowingSince(t *testing.T) {
	o := newObserver(kafkaconfig.Topics{}, "g")
	t0 := time.Now()
	if ok, why := o.flowingSince(t0); ok || why != "no record yet" {
		t.Fatalf("no record: flowing %v (%q), want false", ok, why)
	}
	o.last[stallKey{"replies", 0}] = t0.Add(-time.Second)
	o.last[stallKey{"results", 2}] = t0.Add(-2 * time.Second)
	o.last[stallKey{"results", 1}] = t0.Add(time.Second)
	if ok, why := o.flowingSince(t0); ok || why != "replies/0" {
		t.Fatalf("two partitions without a record since t: flowing %v, waiting %q; want false, replies/0 (the first by name)", ok, why)
	}
	o.last[stallKey{"replies", 0}] = t0.Add(time.Millisecond)
	if ok, why := o.flowingSince(t0); ok || why != "results/2" {
		t.Fatalf("one partition without a record since t: flowing %v, waiting %q; want false, results/2", ok, why)
	}
	o.last[stallKey{"results", 2}] = t0.Add(3 * time.Second)
	if ok, why := o.flowingSince(t0); !ok || why != "" {
		t.Fatalf("every partition with a record since t: flowing %v, waiting %q; want true", ok, why)
	}
}

// TestWaitFlowing: the next broker fault waits for the partitions a move
// of leaders stalled, and for nothing once the load is all sent.
func TestWaitFlowing(t *testing.T) {
	newFaults := func() (*brokerFaults, *observer) {
		o := newObserver(kafkaconfig.Topics{}, "g")
		s := &session{h: &Harness{cfg: Config{Out: io.Discard}, start: time.Now()}, obs: o}
		return &brokerFaults{s: s}, o
	}
	t.Run("until every partition shows a record", func(t *testing.T) {
		b, o := newFaults()
		t0 := time.Now()
		o.last[stallKey{"results", 0}] = t0.Add(-time.Second)
		go func() {
			time.Sleep(300 * time.Millisecond)
			o.mu.Lock()
			o.last[stallKey{"results", 0}] = time.Now()
			o.mu.Unlock()
		}()
		if d := b.waitFlowing(context.Background(), t0); d < 300*time.Millisecond || d >= flowBound {
			t.Fatalf("waited %s, want from 300ms (the record) to under %s", d, flowBound)
		}
	})
	t.Run("not once the load is sent", func(t *testing.T) {
		b, o := newFaults()
		o.last[stallKey{"results", 0}] = time.Now().Add(-time.Second)
		sent := make(chan struct{})
		close(sent)
		b.sent = sent
		if d := b.waitFlowing(context.Background(), time.Now()); d != -1 {
			t.Fatalf("waited %s with the load sent, want -1", d)
		}
	})
}
