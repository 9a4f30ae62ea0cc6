package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// runHop runs h with a ProcessFunc that does nothing until the test ends;
// the returned stop cancels it and waits, and done yields Run's error.
func runHop(t *testing.T, h *kafka.Hop) (stop func(), done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	errs, exited := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(exited)
		errs <- h.Run(ctx, func(context.Context, *kafka.Batch) error { return nil }, func(bool) {})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				t.Error("hop did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	return stop, errs
}

func eventually(t *testing.T, timeout time.Duration, what func() string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, what())
		}
	}
}

// TestIdleHopSeesEveryRevocation: an exactly-once hop that polls nothing
// (an idle or paused aggregator) goes through rebalance after rebalance
// and its OnRevoked runs for each, so that it never keeps partitions it
// no longer owns. franz-go's GroupTransactSession passes on only the first
// revocation until its End runs, and an idle batch does not need End.
func TestIdleHopSeesEveryRevocation(t *testing.T) {
	c := testkafka.New(t)
	in := c.CreateTopic(t, "in", 6, nil)
	group := c.Name("g")
	var mu sync.Mutex
	owned := map[string]map[int32]bool{}
	count := func(name string) int {
		mu.Lock()
		defer mu.Unlock()
		return len(owned[name])
	}
	newHop := func(name string) *kafka.Hop {
		mu.Lock()
		owned[name] = map[int32]bool{}
		mu.Unlock()
		h, err := kafka.NewHop(kafka.HopConfig{
			Client: kafkaconfig.Client{Brokers: c.Brokers}, Group: group, Topics: []string{in},
			Guarantee: kafkaconfig.ExactlyOnce, TransactionalID: group + "-" + name, InstanceID: name,
			Tick: 50 * time.Millisecond,
			OnAssigned: func(_ context.Context, _ *kgo.Client, as map[string][]int32) {
				mu.Lock()
				defer mu.Unlock()
				for _, p := range as[in] {
					owned[name][p] = true
				}
			},
			OnRevoked: func(_ context.Context, _ *kgo.Client, rev map[string][]int32) {
				mu.Lock()
				defer mu.Unlock()
				for _, p := range rev[in] {
					delete(owned[name], p)
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	state := func() string {
		return fmt.Sprintf("partitions held by the callbacks: a %d, b %d, c %d", count("a"), count("b"), count("c"))
	}

	runHop(t, newHop("a"))
	eventually(t, 30*time.Second, state, func() bool { return count("a") == 6 })
	// b joins (a's first revocation), then leaves; c joins (the second).
	stopB, _ := runHop(t, newHop("b"))
	eventually(t, 30*time.Second, state, func() bool { return count("b") > 0 && count("a")+count("b") == 6 })
	stopB()
	eventually(t, 30*time.Second, state, func() bool { return count("a") == 6 })
	runHop(t, newHop("c"))
	eventually(t, 30*time.Second, state, func() bool {
		return count("c") > 0 && count("a") > 0 && count("a")+count("c") == 6
	})
}

// TestFencedInstanceEndsRun: of two live instances with the same
// InstanceID, the older one is fenced (FENCED_INSTANCE_ID) and its Run ends
// with that error rather than staying a member of nothing forever.
func TestFencedInstanceEndsRun(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			c := testkafka.New(t)
			in := c.CreateTopic(t, "in", 2, nil)
			group := c.Name("g")
			newHop := func(txn string) *kafka.Hop {
				cfg := kafka.HopConfig{Client: kafkaconfig.Client{Brokers: c.Brokers}, Group: group, Topics: []string{in},
					Guarantee: g, InstanceID: "same", Tick: 50 * time.Millisecond, RestartBackoff: 50 * time.Millisecond}
				if g == kafkaconfig.ExactlyOnce {
					cfg.TransactionalID = txn
				}
				h, err := kafka.NewHop(cfg)
				if err != nil {
					t.Fatal(err)
				}
				return h
			}
			first := newHop(group + "-1")
			_, firstDone := runHop(t, first)
			eventually(t, 30*time.Second, func() string { return "the first instance did not join" },
				func() bool { j, _ := first.Membership(); return j })
			second := newHop(group + "-2")
			_, secondDone := runHop(t, second)
			select {
			case err := <-firstDone:
				if !errors.Is(err, kerr.FencedInstanceID) {
					t.Errorf("the fenced instance's Run ended with %v, want FENCED_INSTANCE_ID", err)
				}
			case err := <-secondDone:
				t.Fatalf("the newer instance's Run ended: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("the fenced instance's Run did not end within 30s")
			}
			eventually(t, 30*time.Second, func() string { return "the newer instance holds no partitions" },
				func() bool { _, n := second.Membership(); return n == 2 })
		})
	}
}

// TestSettled: a hop is settled once it has an assignment and its group
// has had no rebalance for SettleQuiet; a member that joins unsettles the
// first until the rebalance is over. Readiness (/readyz)
// is built on it, so that the first request after ready does not meet a
// rebalance.
func TestSettled(t *testing.T) {
	c := testkafka.New(t)
	in := c.CreateTopic(t, "in", 4, nil)
	group := c.Name("g")
	newHop := func(name string) *kafka.Hop {
		h, err := kafka.NewHop(kafka.HopConfig{
			Client: kafkaconfig.Client{Brokers: c.Brokers}, Group: group, Topics: []string{in},
			Guarantee: kafkaconfig.ExactlyOnce, TransactionalID: group + "-" + name, InstanceID: name,
			Tick: 50 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	a := newHop("a")
	if err := a.Settled(); err == nil || !strings.Contains(err.Error(), "not yet a member") {
		t.Fatalf("before Run: %v", err)
	}
	start := time.Now()
	runHop(t, a)
	eventually(t, 30*time.Second, func() string { return fmt.Sprint(a.Settled()) }, func() bool { return a.Settled() == nil })
	if took := time.Since(start); took < kafka.SettleQuiet {
		t.Fatalf("settled %s after Run, before the quiet time %s", took, kafka.SettleQuiet)
	}

	b := newHop("b")
	runHop(t, b)
	// b's join is a rebalance for a: a is unsettled until it is over.
	eventually(t, 30*time.Second, func() string { return fmt.Sprint(a.Settled()) }, func() bool {
		err := a.Settled()
		return err != nil && strings.Contains(err.Error(), "rebalanced")
	})
	eventually(t, 30*time.Second, func() string { return fmt.Sprintf("a: %v; b: %v", a.Settled(), b.Settled()) }, func() bool {
		return a.Settled() == nil && b.Settled() == nil
	})
}
