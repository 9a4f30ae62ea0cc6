package kafka_test

import (
	"context"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// commitCounter counts the OffsetCommit requests a client writes.
type commitCounter struct{ n atomic.Int64 }

func (c *commitCounter) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key == 8 && err == nil { // OffsetCommit
		c.n.Add(1)
	}
}

// TestCommitInterval: an at-least-once hop with a commit interval commits
// less often than it ends batches, commits what it acknowledged before a
// rebalance hands its partitions over (the new member consumes nothing
// twice), and commits the rest when Run ends.
func TestCommitInterval(t *testing.T) {
	c := testkafka.New(t)
	in := c.CreateTopic(t, "in", 4, nil)
	out := c.CreateTopic(t, "out", 1, nil)
	group := c.Name("copy")

	var batches atomic.Int64
	copyTo := func(ctx context.Context, b *kafka.Batch) error {
		b.Fetches.EachRecord(func(r *kgo.Record) {
			b.Produce(&kgo.Record{Topic: out, Key: r.Key, Value: r.Value})
		})
		return nil
	}
	var assigned sync.Map // name → *atomic.Int64, partitions held
	newHop := func(name string, counter *commitCounter) *kafka.Hop {
		held := &atomic.Int64{}
		assigned.Store(name, held)
		h, err := kafka.NewHop(kafka.HopConfig{
			Client:         kafkaconfig.Client{Brokers: c.Brokers, Opts: []kgo.Opt{kgo.WithHooks(counter)}},
			Group:          group,
			Topics:         []string{in},
			Guarantee:      kafkaconfig.AtLeastOnce,
			Tick:           50 * time.Millisecond,
			CommitInterval: time.Hour, // only the first batch, revocations and Run's end commit
			InstanceID:     name,
			OnAssigned: func(_ context.Context, _ *kgo.Client, as map[string][]int32) {
				held.Add(int64(len(as[in])))
			},
			OnRevoked: func(_ context.Context, _ *kgo.Client, rev map[string][]int32) {
				held.Add(-int64(len(rev[in])))
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	run := func(h *kafka.Hop) (stop func()) {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			done <- h.Run(ctx, copyTo, func(committed bool) {
				if committed {
					batches.Add(1)
				}
			})
		}()
		var once sync.Once
		stop = func() {
			once.Do(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("run: %v", err)
				}
			})
		}
		t.Cleanup(stop)
		return stop
	}
	prod := c.Client(t, kgo.DefaultProduceTopic(in))
	sent := 0
	produce := func(n int) {
		t.Helper()
		for range n {
			r := &kgo.Record{Key: []byte("k" + strconv.Itoa(sent%13)), Value: []byte(strconv.Itoa(sent))}
			if err := prod.ProduceSync(t.Context(), r).FirstErr(); err != nil {
				t.Fatal(err)
			}
			sent++
		}
	}
	// The reader counts every copy of every record written to out.
	var (
		readMu sync.Mutex
		seen   = map[string]int{}
	)
	reader := c.Client(t, kgo.ConsumeTopics(out), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	rctx, rcancel := context.WithCancel(t.Context())
	rdone := make(chan struct{})
	go func() {
		defer close(rdone)
		for rctx.Err() == nil {
			reader.PollFetches(rctx).EachRecord(func(r *kgo.Record) {
				readMu.Lock()
				seen[string(r.Value)]++
				readMu.Unlock()
			})
		}
	}()
	t.Cleanup(func() { rcancel(); <-rdone })
	copied := func() map[string]int {
		readMu.Lock()
		defer readMu.Unlock()
		return maps.Clone(seen)
	}
	waitCopied := func(want int) map[string]int {
		t.Helper()
		var got map[string]int
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if got = copied(); len(got) >= want {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d records copied after 30s", len(got), want)
			}
		}
	}

	ca := &commitCounter{}
	stopA := run(newHop("a", ca))
	for i := range 10 { // one record at a time, each copied before the next: a batch each
		produce(1)
		waitCopied(i + 1)
	}
	produce(30)
	waitCopied(40)
	if b, n := batches.Load(), ca.n.Load(); b < 10 || n > 1 {
		t.Fatalf("%d batches, %d offset commits; want several batches and at most the first commit", b, n)
	}

	// b joins: a commits before handing partitions over, so b copies
	// none of the 40 again.
	cb := &commitCounter{}
	stopB := run(newHop("b", cb))
	heldB, _ := assigned.Load("b")
	for deadline := time.Now().Add(30 * time.Second); heldB.(*atomic.Int64).Load() == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("b got no partition within 30s")
		}
	}
	produce(40)
	got := waitCopied(80)
	stopA()
	stopB()
	time.Sleep(500 * time.Millisecond) // any copy made while stopping
	got = copied()
	for v, n := range got {
		if n != 1 {
			t.Errorf("record %s copied %d times", v, n)
		}
	}
	if ca.n.Load() < 2 {
		t.Errorf("a committed %d times; want a commit before its revocation too", ca.n.Load())
	}

	// Run's end committed the rest: the group is at the end of in.
	adm := c.Admin(t)
	ends, err := adm.ListEndOffsets(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := adm.FetchOffsets(t.Context(), group)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(e kadm.ListedOffset) {
		if o, _ := committed.Lookup(in, e.Partition); o.At != e.Offset {
			t.Errorf("partition %d committed at %d, end %d", e.Partition, o.At, e.Offset)
		}
	})
}
