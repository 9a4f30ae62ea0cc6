package kafka_test

import (
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

	m := newMembers(t, topic)
	track := func(name string) []kgo.Opt {
		return append(m.track(name), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
			kgo.Balancers(kgo.CooperativeStickyBalancer()))
	}
	holds := func(name string) int { return len(m.holds(name)) }
	wait := m.wait

	sess, err := kgo.NewGroupTransactSession(append(track("a"), kgo.SeedBrokers(c.Brokers...),
		kgo.TransactionalID(group+"-a"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sess.Close)
	keepPolling(t, sess)
	wait("a holds all 6", func() bool { return holds("a") == 6 })

	// b joins: a's first revocation, passed on.
	b, err := kgo.NewClient(append(track("b"), kgo.SeedBrokers(c.Brokers...))...)
	if err != nil {
		t.Fatal(err)
	}
	keepPolling(t, b)
	wait("b gets partitions and a is told", func() bool { return holds("b") > 0 && holds("a")+holds("b") == 6 })
	b.Close()
	wait("a holds all 6 again", func() bool { return holds("a") == 6 })

	// c joins: a loses partitions again, but is not told.
	cc, err := kgo.NewClient(append(track("c"), kgo.SeedBrokers(c.Brokers...))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Close)
	keepPolling(t, cc)
	wait("c gets partitions", func() bool { return holds("c") > 0 })
	time.Sleep(time.Second) // time for a callback that would come
	if revocations := m.revocationsOfA(); revocations != 1 || holds("a") != 6 {
		t.Fatalf("a was told of %d revocations and holds %d partitions by its callbacks while c holds %d: "+
			"franz-go now passes on the second revocation without End; see the doc comment", revocations, holds("a"), holds("c"))
	}
}
