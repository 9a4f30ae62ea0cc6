package kafka_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/testkafka"
)

// TestFranzGoSessionPassesOnlyFirstRevocation pins the franz-go behaviour
// that the hop works around (Hop.sessFlagged, hop_owned.go; DESIGN.md "The
// hop"): a GroupTransactSession passes on only the first revocation to
// OnPartitionsRevoked until its End runs. A member that never calls End
// (an idle hop: nothing to commit) is not told of the second rebalance that
// takes partitions from it, and would keep their state.
//
// When this test fails, franz-go passes on every revocation: the flag and
// the empty End it forces can go (keep the sync-assignment check in
// hop_owned.go until a revocation during End is passed on too).
func TestFranzGoSessionPassesOnlyFirstRevocation(t *testing.T) {
	c := testkafka.New(t)
	topic := c.CreateTopic(t, "in", 6, nil)
	group := c.Name("g")

	var mu sync.Mutex
	held := map[string]map[int32]bool{} // what each member's callbacks say it holds
	revocations := 0                    // non-empty revocations passed on to a
	track := func(name string) []kgo.Opt {
		mu.Lock()
		held[name] = map[int32]bool{}
		mu.Unlock()
		return []kgo.Opt{
			kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
			kgo.Balancers(kgo.CooperativeStickyBalancer()),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, as map[string][]int32) {
				mu.Lock()
				defer mu.Unlock()
				for _, p := range as[topic] {
					held[name][p] = true
				}
			}),
			kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, rev map[string][]int32) {
				mu.Lock()
				defer mu.Unlock()
				if name == "a" && len(rev[topic]) > 0 {
					revocations++
				}
				for _, p := range rev[topic] {
					delete(held[name], p)
				}
			}),
		}
	}
	holds := func(name string) int {
		mu.Lock()
		defer mu.Unlock()
		return len(held[name])
	}
	// poll keeps a member's client polling until the test ends, as a
	// consumer does; it never ends a transaction.
	poll := func(cl interface {
		PollFetches(context.Context) kgo.Fetches
	}) {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ctx.Err() == nil {
				pctx, pcancel := context.WithTimeout(ctx, 100*time.Millisecond)
				cl.PollFetches(pctx)
				pcancel()
			}
		}()
		t.Cleanup(func() { cancel(); <-done })
	}
	wait := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("not within 30s: %s (a holds %d, b %d, c %d)", what, holds("a"), holds("b"), holds("c"))
			}
		}
	}

	sess, err := kgo.NewGroupTransactSession(append(track("a"), kgo.SeedBrokers(c.Brokers...),
		kgo.TransactionalID(group+"-a"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sess.Close)
	poll(sess)
	wait("a holds all 6", func() bool { return holds("a") == 6 })

	// b joins: a's first revocation, passed on.
	b, err := kgo.NewClient(append(track("b"), kgo.SeedBrokers(c.Brokers...))...)
	if err != nil {
		t.Fatal(err)
	}
	poll(b)
	wait("b gets partitions and a is told", func() bool { return holds("b") > 0 && holds("a")+holds("b") == 6 })
	b.Close()
	wait("a holds all 6 again", func() bool { return holds("a") == 6 })

	// c joins: a loses partitions again, but is not told.
	cc, err := kgo.NewClient(append(track("c"), kgo.SeedBrokers(c.Brokers...))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Close)
	poll(cc)
	wait("c gets partitions", func() bool { return holds("c") > 0 })
	time.Sleep(time.Second) // time for a callback that would come
	mu.Lock()
	defer mu.Unlock()
	if revocations != 1 || len(held["a"]) != 6 {
		t.Fatalf("a was told of %d revocations and holds %d partitions by its callbacks while c holds %d: "+
			"franz-go now passes on the second revocation without End; see the doc comment", revocations, len(held["a"]), len(held["c"]))
	}
}
