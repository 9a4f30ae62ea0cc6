package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
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

// TestEndBoundedWhenRejoinHangs has the hop's member rejoin its group
// (another member joins) while a batch is in flight, and holds that
// JoinGroup unanswered. GroupTransactSession.End waits for a heartbeat after
// its offset commit, which the heartbeat loop cannot send while the member
// joins, so without a bound End waits as long as the JoinGroup (kgo gives
// it the rebalance timeout, 30s, and 10s more). Seen on kfake, which left
// the JoinGroup of a member removed from its group (LeaveGroup) unanswered:
// End hung 37s and its open transaction stalled every reply for 21s. The
// hop must give up on End after the session timeout, abort the batch,
// build a new client (a new member, whose join passes) and commit the
// batch then.
func TestEndBoundedWhenRejoinHangs(t *testing.T) {
	c := testkafka.NewKfake(t)
	in := c.CreateTopic(t, "in", 1, nil)
	other := c.CreateTopic(t, "other", 1, nil)
	group := c.Name("g")
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // before the cluster closes
	var armed atomic.Bool
	var victim atomic.Pointer[string]
	var held atomic.Int32
	c.Fake.ControlKey(int16(kmsg.JoinGroup), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake.KeepControl()
		req := kreq.(*kmsg.JoinGroupRequest)
		if !armed.Load() || req.InstanceID == nil || *req.InstanceID != "a" || req.MemberID == "" {
			return nil, nil, false
		}
		victim.CompareAndSwap(nil, &req.MemberID)
		if req.MemberID != *victim.Load() {
			return nil, nil, false
		}
		held.Add(1)
		c.Fake.SleepControl(func() { <-release })
		return nil, nil, false
	})
	cl := c.Client(t)
	for _, v := range []string{"a", "b", "c"} {
		if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: in, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	const session = 6 * time.Second
	var logs syncBuffer
	h, err := kafka.NewHop(kafka.HopConfig{
		Client: kafkaconfig.Client{Brokers: c.Brokers}, Group: group, Topics: []string{in},
		Guarantee: kafkaconfig.ExactlyOnce, TransactionalID: group + "-a", InstanceID: "a", Tick: 50 * time.Millisecond,
		SessionTimeout: session, RestartBackoff: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ends []bool
	var joiner atomic.Pointer[kgo.Client]
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- h.Run(ctx, func(_ context.Context, b *kafka.Batch) error {
			if b.Fetches.NumRecords() > 0 && !armed.Swap(true) {
				// Another member joins: this one must rejoin, and its
				// JoinGroup is held, while this batch ends.
				joiner.Store(c.Client(t, kgo.ConsumerGroup(group), kgo.ConsumeTopics(other)))
				time.Sleep(2 * time.Second) // the hop's next heartbeat learns of the rebalance
			}
			return nil
		}, func(committed bool) {
			mu.Lock()
			ends = append(ends, committed)
			mu.Unlock()
		})
	}()
	state := func() []bool {
		mu.Lock()
		defer mu.Unlock()
		return append([]bool(nil), ends...)
	}
	eventually(t, session+15*time.Second,
		func() string {
			return fmt.Sprintf("batch ends %s, joins held %d, restarts %d; logs:\n%s", fmtBools(state()), held.Load(), h.Restarts(), logs.String())
		},
		func() bool {
			if h.Restarts() > 0 {
				// The old client is closed: let kfake answer its join (it
				// does not fence a static member's old join as Kafka does),
				// so the group's rebalance, and the new member, go on.
				releaseOnce()
			}
			e := state()
			return len(e) > 0 && e[len(e)-1]
		})
	took := time.Since(start)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if held.Load() == 0 {
		t.Fatal("no JoinGroup was held: the test did not make End wait")
	}
	if e := state(); len(e) < 2 || e[0] {
		t.Errorf("batch ends %s, want the first aborted, then one committed", fmtBools(e))
	}
	if h.Restarts() < 1 || !strings.Contains(logs.String(), "not ended within "+session.String()) {
		t.Errorf("restarts %d; want the client rebuilt after End timed out; logs:\n%s", h.Restarts(), logs.String())
	}
	offs, err := c.Admin(t).FetchOffsets(t.Context(), group)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup(in, 0); !ok || o.At != 3 {
		t.Errorf("committed offset %+v, want 3", o)
	}
	t.Logf("committed %s after the start, End bounded at %s", took.Round(time.Millisecond), session)
}
