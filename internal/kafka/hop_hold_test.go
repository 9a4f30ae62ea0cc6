package kafka_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// TestHeldTransactions: under exactly-once, a batch whose role holds its
// state (Batch.HoldState) has its output committed in a transaction that
// commits the offsets where they were, still sending the TxnOffsetCommit
// that fences a zombie; a batch that does not hold commits everything
// polled. A held batch whose transaction aborts is consumed again from its
// own first record, not from the committed offset: the earlier held
// batches, whose output is committed, are not consumed again.
func TestHeldTransactions(t *testing.T) {
	c := testkafka.NewKfake(t)
	in := c.CreateTopic(t, "in", 1, nil)
	out := c.CreateTopic(t, "out", 1, nil)
	group := c.Name("g")

	var (
		mu      sync.Mutex
		sent    []int64 // the offsets of in/0 each TxnOffsetCommit carried
		refuse  atomic.Bool
		refused atomic.Int32
	)
	c.Fake.ControlKey(int16(kmsg.TxnOffsetCommit), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake.KeepControl()
		req := kreq.(*kmsg.TxnOffsetCommitRequest)
		mu.Lock()
		for _, rt := range req.Topics {
			for _, rp := range rt.Partitions {
				sent = append(sent, rp.Offset)
			}
		}
		mu.Unlock()
		if !refuse.CompareAndSwap(true, false) {
			return nil, nil, false
		}
		refused.Add(1)
		return concurrentTransactions(req), nil, true
	})

	h, err := kafka.NewHop(kafka.HopConfig{
		Client: kafkaconfig.Client{Brokers: c.Brokers}, Group: group, Topics: []string{in},
		Guarantee: kafkaconfig.ExactlyOnce, TransactionalID: group + "-a", InstanceID: "a", Tick: 50 * time.Millisecond,
		// No batch is due by time: only the first (nothing committed yet)
		// and those the role does not hold commit their offsets.
		CommitInterval: time.Hour, HoldsState: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	var (
		read  []string
		ends  []bool
		hold  atomic.Bool
		dueAt []string // the records of batches that were StateDue
		// endsAtRead: the batch ends before the last batch that read
		endsAtRead int
	)
	hold.Store(true)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- h.Run(ctx, func(_ context.Context, b *kafka.Batch) error {
			mu.Lock()
			endsAtRead = len(ends)
			mu.Unlock()
			b.Fetches.EachRecord(func(r *kgo.Record) {
				mu.Lock()
				read = append(read, string(r.Value))
				if b.StateDue() {
					dueAt = append(dueAt, string(r.Value))
				}
				mu.Unlock()
				b.Produce(&kgo.Record{Topic: out, Value: r.Value})
			})
			if hold.Load() && !b.StateDue() {
				b.HoldState()
			}
			return nil
		}, func(committed bool) {
			mu.Lock()
			ends = append(ends, committed)
			mu.Unlock()
		})
	}()
	state := func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprintf("read %v (due %v), batch ends %s, offsets sent %v", read, dueAt, fmtBools(ends), sent)
	}
	cl := c.Client(t)
	produce := func(v string) {
		t.Helper()
		mu.Lock()
		before := len(read)
		mu.Unlock()
		if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: in, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		// Until a batch that read v has ended committed.
		eventually(t, 30*time.Second, state, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(ends) > endsAtRead && ends[len(ends)-1] && len(read) > before && read[len(read)-1] == v
		})
	}
	committedAt := func() int64 { return committedOffset(t, c, group, in) }

	// The first batch commits (the partition has no committed offset to
	// commit again); the next two hold.
	for _, v := range []string{"a", "b", "c"} {
		produce(v)
	}
	if got := committedAt(); got != 1 {
		t.Errorf("committed offset %d after two held batches, want 1 (%s)", got, state())
	}
	mu.Lock()
	if want := []int64{1, 1, 1}; !slices.Equal(sent, want) {
		t.Errorf("TxnOffsetCommit offsets %v, want %v: every held transaction commits the offset again", sent, want)
	}
	mu.Unlock()

	// A held batch whose transaction aborts is consumed again alone.
	refuse.Store(true)
	produce("d")
	if refused.Load() != 1 {
		t.Fatalf("TxnOffsetCommit refused %d times, want 1 (%s)", refused.Load(), state())
	}
	mu.Lock()
	if want := []string{"a", "b", "c", "d", "d"}; !slices.Equal(read, want) {
		t.Errorf("read %v, want %v: the aborted held batch is consumed again from its first record, the earlier held ones are not", read, want)
	}
	mu.Unlock()
	if got := committedAt(); got != 1 {
		t.Errorf("committed offset %d after the held batch committed, want 1", got)
	}

	// A batch that does not hold commits everything polled.
	hold.Store(false)
	produce("e")
	if got := committedAt(); got != 5 {
		t.Errorf("committed offset %d after a batch that wrote its state, want 5 (%s)", got, state())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	// Every output record once, read_committed.
	rc := c.Client(t, kgo.ConsumeTopics(out), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got []string
	eventually(t, 10*time.Second, func() string { return fmt.Sprint(got) }, func() bool {
		pctx, pcancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer pcancel()
		rc.PollFetches(pctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
		return len(got) >= 5
	})
	if s := strings.Join(got, ""); s != "abcde" {
		t.Errorf("output %q, want abcde", s)
	}
}

// TestHeldOffsetsCommitted: under exactly-once, offsets a role held are
// committed once the interval passes even when nothing more comes (an idle
// batch that writes no state), and when Run ends, so that an idle group
// shows no lag and a stopped one is not consumed again.
func TestHeldOffsetsCommitted(t *testing.T) {
	c := testkafka.New(t)
	in := c.CreateTopic(t, "in", 1, nil)
	group := c.Name("g")
	const interval = 2 * time.Second
	h, err := kafka.NewHop(kafka.HopConfig{
		Client: kafkaconfig.Client{Brokers: c.Brokers}, Group: group, Topics: []string{in},
		Guarantee: kafkaconfig.ExactlyOnce, TransactionalID: group + "-a", InstanceID: "a", Tick: 50 * time.Millisecond,
		CommitInterval: interval, HoldsState: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		held []string
		read []string
	)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- h.Run(ctx, func(_ context.Context, b *kafka.Batch) error {
			mu.Lock()
			defer mu.Unlock()
			b.Fetches.EachRecord(func(r *kgo.Record) {
				read = append(read, string(r.Value))
				if !b.StateDue() {
					held = append(held, string(r.Value))
				}
			})
			if !b.StateDue() {
				b.HoldState()
			}
			return nil
		}, func(bool) {})
	}()
	cl := c.Client(t)
	produce := func(v string) {
		t.Helper()
		if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: in, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, func() string { return fmt.Sprint(read) }, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.Contains(read, v)
		})
	}
	committedAt := func() int64 { return committedOffset(t, c, group, in) }
	produce("a")
	eventually(t, 10*time.Second, func() string { return fmt.Sprint(committedAt()) }, func() bool { return committedAt() == 1 })
	start := time.Now()
	produce("b")
	mu.Lock()
	wasHeld := slices.Contains(held, "b")
	mu.Unlock()
	if !wasHeld {
		t.Fatalf("b was not held (read %v, held %v): the test proves nothing", read, held)
	}
	eventually(t, interval+10*time.Second, func() string { return fmt.Sprintf("committed %d", committedAt()) }, func() bool { return committedAt() == 2 })
	if d := time.Since(start); d < interval/2 {
		t.Errorf("b's offset committed %s after it was read, before the interval (%s) passed", d, interval)
	}

	produce("c")
	if got := committedAt(); got != 2 {
		t.Fatalf("committed %d right after c was held, want 2", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	// A transactional offset commit is visible once Kafka has written its
	// marker, after End returns.
	eventually(t, 10*time.Second, func() string {
		return fmt.Sprintf("committed %d after Run ended, want 3: the held offsets are committed on the way out", committedAt())
	}, func() bool { return committedAt() == 3 })
}

// TestStateDueWithoutHeldState: under exactly-once a role that does not
// hold its state (no HopConfig.HoldsState) commits every batch, whatever
// the commit interval, and its batches say so (Batch.StateDue).
func TestStateDueWithoutHeldState(t *testing.T) {
	c := testkafka.New(t)
	in := c.CreateTopic(t, "in", 1, nil)
	group := c.Name("g")
	h, err := kafka.NewHop(kafka.HopConfig{
		Client: kafkaconfig.Client{Brokers: c.Brokers}, Group: group, Topics: []string{in},
		Guarantee: kafkaconfig.ExactlyOnce, TransactionalID: group + "-a", InstanceID: "a", Tick: 50 * time.Millisecond,
		CommitInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		due []bool
	)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- h.Run(ctx, func(_ context.Context, b *kafka.Batch) error {
			if b.Fetches.NumRecords() > 0 {
				mu.Lock()
				due = append(due, b.StateDue())
				mu.Unlock()
			}
			return nil
		}, func(bool) {})
	}()
	cl := c.Client(t)
	for i := range 3 {
		if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: in, Value: []byte{byte(i)}}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, func() string { return fmt.Sprint(due) }, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(due) > i
		})
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if slices.Contains(due, false) {
		t.Errorf("StateDue of the batches %v, want every one true", due)
	}
	// A transactional offset commit is visible once Kafka has written its
	// marker, after End returns.
	eventually(t, 10*time.Second, func() string { return fmt.Sprintf("committed offset %d, want 3", committedOffset(t, c, group, in)) },
		func() bool { return committedOffset(t, c, group, in) == 3 })
}

// committedOffset returns group's committed offset of partition 0 of
// topic, -1 for none.
func committedOffset(t *testing.T, c *testkafka.Cluster, group, topic string) int64 {
	t.Helper()
	offs, err := c.Admin(t).FetchOffsets(t.Context(), group)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup(topic, 0); ok {
		return o.At
	}
	return -1
}
