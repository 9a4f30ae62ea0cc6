package kafka_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/testkafka"
)

// TestFranzGoAbortRewindsPartitionAddedMidSession checks candidate 1 of the
// lost-replies investigation (guarantees.md, "Open: four replies lost
// once"): a GroupTransactSession whose transaction is aborted by a
// cooperative revocation must rewind a partition assigned to it moments
// before (by another member leaving) to the group's committed offset, so
// that the records the aborted batch read of it are consumed again.
func TestFranzGoAbortRewindsPartitionAddedMidSession(t *testing.T) {
	c := testkafka.New(t)
	topic := c.CreateTopic(t, "in", 4, nil)
	out := c.CreateTopic(t, "out", 1, nil)
	group := c.Name("g")
	ctx := t.Context()

	prod := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for p := range int32(4) {
		for i := 0; i < 10; i++ {
			if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: []byte("v")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	const committedAt = 5
	os := kadm.Offsets{}
	for p := range int32(4) {
		os.Add(kadm.Offset{Topic: topic, Partition: p, At: committedAt, LeaderEpoch: -1})
	}
	if _, err := c.Admin(t).CommitOffsets(ctx, group, os); err != nil {
		t.Fatal(err)
	}

	m := newMembers(t, topic)
	track := func(name string) []kgo.Opt {
		return append(m.track(name), kgo.SeedBrokers(c.Brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.HeartbeatInterval(200*time.Millisecond))
	}
	holds, wait := m.holds, m.wait

	b, err := kgo.NewClient(append(track("b"), kgo.DisableAutoCommit())...)
	if err != nil {
		t.Fatal(err)
	}
	keepPolling(t, b)
	wait("b holds all 4", func() bool { return len(holds("b")) == 4 })

	sess, err := kgo.NewGroupTransactSession(append(track("a"), kgo.TransactionalID(group+"-a"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sess.Close)
	// a polls, without ending a transaction, until it holds a share.
	first := map[int32]int64{} // the first offset a polled of each partition since its last End
	poll := func(d time.Duration) {
		pctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		sess.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			if _, ok := first[r.Partition]; !ok {
				first[r.Partition] = r.Offset
			}
		})
	}
	wait("a gets a share", func() bool { poll(100 * time.Millisecond); return len(holds("a")) > 0 })
	before := holds("a")
	if err := sess.Begin(); err != nil {
		t.Fatal(err)
	}
	// b leaves: a gets b's partitions added to its session.
	b.Close()
	wait("a holds all 4", func() bool { poll(100 * time.Millisecond); return len(holds("a")) == 4 })
	wait("a polled every partition", func() bool { poll(100 * time.Millisecond); return len(first) == 4 })
	added := slices.DeleteFunc(holds("a"), func(p int32) bool { return slices.Contains(before, p) })
	sess.Produce(ctx, &kgo.Record{Topic: out, Value: []byte("x")}, nil)

	// c joins: a's in-flight transaction is aborted by the revocation.
	cc, err := kgo.NewClient(append(track("c"), kgo.DisableAutoCommit())...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Close)
	keepPolling(t, cc)
	wait("a is told of a revocation", func() bool { poll(100 * time.Millisecond); return m.revocationsOfA() > 0 })
	committed, err := sess.End(ctx, kgo.TryCommit)
	if err != nil || committed {
		t.Fatalf("End: committed=%v err=%v, want an abort", committed, err)
	}
	clear(first)
	kept := holds("a")
	wait("a polls what it kept again", func() bool {
		poll(100 * time.Millisecond)
		for _, p := range kept {
			if _, ok := first[p]; !ok {
				return false
			}
		}
		return true
	})
	t.Logf("a held %v, was given %v, kept %v after c joined; first offsets after the abort %v", before, added, kept, first)
	for _, p := range kept {
		if first[p] != committedAt {
			t.Errorf("partition %d (added mid-session: %v): after the abort a polled from offset %d, want the committed %d",
				p, slices.Contains(added, p), first[p], committedAt)
		}
	}
}
