package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// hopFault is done to a running hop by the broker, from the middle of one
// of its batches.
type hopFault func(ctx context.Context, t *testing.T, c *testkafka.Cluster, group, txnID string) error

// fence initialises the hop's transactional id from another client, as a
// restarted instance or a transaction timeout would (kafka.Fence).
func fence(ctx context.Context, t *testing.T, c *testkafka.Cluster, _, txnID string) error {
	return kafka.Fence(ctx, c.Client(t), txnID)
}

// kick has the group coordinator remove every member of the hop's group,
// as a session timeout under load would (a LeaveGroup naming the members).
func kick(ctx context.Context, t *testing.T, c *testkafka.Cluster, group, _ string) error {
	gs, err := c.Admin(t).DescribeGroups(ctx, group)
	if err != nil {
		return err
	}
	g := gs[group]
	if g.Err != nil || len(g.Members) == 0 {
		return fmt.Errorf("describe group %s: %d members, err %v", group, len(g.Members), g.Err)
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = group
	for _, m := range g.Members {
		lm := kmsg.NewLeaveGroupRequestMember()
		lm.MemberID, lm.InstanceID = m.MemberID, m.InstanceID
		lm.Reason = kmsg.StringPtr("test: kicked")
		req.Members = append(req.Members, lm)
	}
	resp, err := req.RequestWith(ctx, c.Client(t))
	if err != nil {
		return err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return err
	}
	for _, m := range resp.Members {
		if err := kerr.ErrorForCode(m.ErrorCode); err != nil {
			return fmt.Errorf("leave %s: %w", m.MemberID, err)
		}
	}
	return nil
}

// TestHopRecovers runs a hop that copies one topic to another and, in the
// middle of a batch, has the broker fence its producer or remove it from
// its group. The hop must build a new client and go on: every record is
// copied (exactly once under exactly-once), Run does not return before it
// is stopped, and a record is never processed while its partition is
// revoked, as a role's per-partition state requires (the aggregator drops
// a partition's state on revocation and restores it on assignment).
func TestHopRecovers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		guarantee kafkaconfig.Guarantee
		static    bool
		fault     hopFault
		// restart: the hop must have built a new client. Under
		// exactly-once a member removed from its group only aborts the
		// transaction (franz-go's session sees UNKNOWN_MEMBER_ID and
		// rejoins); under at-least-once the offset commit fails.
		restart bool
	}{
		{"fenced/exactly-once", kafkaconfig.ExactlyOnce, false, fence, true},
		{"fenced/exactly-once/static", kafkaconfig.ExactlyOnce, true, fence, true},
		{"kicked/exactly-once", kafkaconfig.ExactlyOnce, false, kick, false},
		{"kicked/at-least-once", kafkaconfig.AtLeastOnce, false, kick, true},
		{"kicked/at-least-once/static", kafkaconfig.AtLeastOnce, true, kick, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testHopRecovers(t, tc.guarantee, tc.static, tc.fault, tc.restart)
		})
	}
}

func testHopRecovers(t *testing.T, g kafkaconfig.Guarantee, static bool, fault hopFault, wantRestart bool) {
	const n = 300
	c := testkafka.New(t)
	in := c.CreateTopic(t, "in", 3, nil)
	out := c.CreateTopic(t, "out", 3, nil)
	group := c.Name("copy")
	reg := prometheus.NewRegistry()
	cfg := kafka.HopConfig{
		Client:         kafkaconfig.Client{Brokers: c.Brokers},
		Group:          group,
		Topics:         []string{in},
		Guarantee:      g,
		Tick:           100 * time.Millisecond,
		RestartBackoff: 50 * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		Metrics:        reg,
	}
	if g == kafkaconfig.ExactlyOnce {
		cfg.TransactionalID = group + "-0"
	}
	if static {
		cfg.InstanceID = "copy-0"
	}

	// owned is the hop's assignment as its callbacks tell it: the state a
	// role keeps per partition.
	var (
		mu              sync.Mutex
		owned           = map[int32]bool{}
		assigns, revoks int
	)
	cfg.OnAssigned = func(_ context.Context, _ *kgo.Client, as map[string][]int32) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range as[in] {
			owned[p] = true
		}
		assigns++
	}
	cfg.OnRevoked = func(_ context.Context, _ *kgo.Client, rev map[string][]int32) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range rev[in] {
			delete(owned, p)
		}
		revoks++
	}
	hop, err := kafka.NewHop(cfg)
	if err != nil {
		t.Fatal(err)
	}

	prod := c.Client(t, kgo.DefaultProduceTopic(in))
	produce := func(from, to int) {
		t.Helper()
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			recs = append(recs, &kgo.Record{Key: []byte("k" + strconv.Itoa(i%17)), Value: []byte(strconv.Itoa(i))})
		}
		if err := prod.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// A first batch is committed before the fault (the producer has an
	// id and epoch to be fenced), then the fault strikes in the middle of
	// a batch, then the rest of the records come.
	produce(0, n/6)
	faulted := make(chan error, 1)
	committed := make(chan struct{})
	var faultOnce, commitOnce sync.Once
	var armed atomic.Bool
	var unowned []string
	process := func(ctx context.Context, b *kafka.Batch) error {
		mu.Lock()
		var stray []int32
		b.Fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) > 0 && !owned[p.Partition] {
				stray = append(stray, p.Partition)
			}
		})
		mu.Unlock()
		if len(stray) > 0 {
			// Polled before a revocation: consumed again by the owner.
			unowned = append(unowned, fmt.Sprint(stray))
			return kafka.ErrAbort
		}
		b.Fetches.EachRecord(func(r *kgo.Record) {
			b.Produce(&kgo.Record{Topic: out, Key: r.Key, Value: r.Value})
		})
		if b.Fetches.NumRecords() > 0 && armed.Load() {
			faultOnce.Do(func() { faulted <- fault(ctx, t, c, group, cfg.TransactionalID) })
		}
		return nil
	}
	end := func(ok bool) {
		if ok {
			commitOnce.Do(func() { close(committed) })
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	var runErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runErr = hop.Run(ctx, process, end)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	select {
	case <-committed:
	case <-done:
		t.Fatalf("Run returned before a commit: %v", runErr)
	case <-time.After(time.Minute):
		t.Fatal("no commit within a minute")
	}
	armed.Store(true)
	produce(n/6, n/2)
	select {
	case err := <-faulted:
		if err != nil {
			t.Fatalf("fault: %v", err)
		}
	case <-done:
		t.Fatalf("Run returned before the fault: %v", runErr)
	case <-time.After(time.Minute):
		t.Fatal("no batch within a minute")
	}
	produce(n/2, n)

	// Every value arrives, read_committed, while Run keeps going.
	rd := c.Client(t, kgo.ConsumeTopics(out), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	seen := map[string]int{}
	deadline := time.Now().Add(90 * time.Second)
	for len(seen) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d values copied after 90s; restarts %d", len(seen), n, hop.Restarts())
		}
		select {
		case <-done:
			t.Fatalf("Run returned with %d of %d values copied: %v", len(seen), n, runErr)
		default:
		}
		pctx, pcancel := context.WithTimeout(t.Context(), time.Second)
		rd.PollFetches(pctx).EachRecord(func(r *kgo.Record) { seen[string(r.Value)]++ })
		pcancel()
	}
	cancel()
	<-done
	if runErr != nil {
		t.Fatalf("Run after stop: %v", runErr)
	}
	// Anything committed late shows up within a few polls.
	for range 3 {
		pctx, pcancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		rd.PollFetches(pctx).EachRecord(func(r *kgo.Record) { seen[string(r.Value)]++ })
		pcancel()
	}

	// The member left the group on the way out, static or not: its
	// partitions need not wait for the session timeout.
	gs, err := c.Admin(t).DescribeGroups(t.Context(), group)
	if err != nil {
		t.Fatal(err)
	}
	if ms := gs[group].Members; len(ms) > 0 {
		t.Errorf("after Run returned the group has %d members (%s), want none", len(ms), gs[group].State)
	}

	var dups []string
	for _, v := range slices.Sorted(maps.Keys(seen)) {
		if seen[v] > 1 {
			dups = append(dups, fmt.Sprintf("%s×%d", v, seen[v]))
		}
	}
	if g == kafkaconfig.ExactlyOnce && len(dups) > 0 {
		t.Errorf("exactly-once: %d values copied more than once: %v", len(dups), dups[:min(len(dups), 10)])
	}
	restarts := hop.Restarts()
	if wantRestart && restarts == 0 {
		t.Errorf("the hop did not build a new client after the fault")
	}
	if got := restartsMetric(t, reg, group); got != float64(restarts) {
		t.Errorf("scattergather_hop_restarts_total = %v, want %d", got, restarts)
	}
	mu.Lock()
	defer mu.Unlock()
	if restarts > 0 && (assigns < 2 || revoks < 1) {
		t.Errorf("after a restart: %d assignments and %d revocations, want the partitions revoked and assigned again", assigns, revoks)
	}
	t.Logf("restarts %d, assignments %d, revocations %d, batches with revoked partitions %d, duplicates %d", restarts, assigns, revoks, len(unowned), len(dups))
}

// restartsMetric reads scattergather_hop_restarts_total{group} from reg.
func restartsMetric(t *testing.T, reg prometheus.Gatherer, group string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "scattergather_hop_restarts_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "group" && l.GetValue() == group {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestHopFencesBeforeJoining: an instance died with a transaction open
// on a topic that its successor reads, read_committed, while it is being
// assigned its partitions (as the aggregator restores its changelog). The
// successor, with the same transactional id, must abort that transaction
// before it joins, rather than wait for the transaction's timeout (30s).
func TestHopFencesBeforeJoining(t *testing.T) {
	c := testkafka.New(t)
	in := c.CreateTopic(t, "in", 1, nil)
	state := c.CreateTopic(t, "state", 1, nil)
	group := c.Name("g")
	txnID := group + "-0"

	// The dead instance: a transaction open on state, never ended.
	dead := c.Client(t, kgo.TransactionalID(txnID), kgo.TransactionTimeout(30*time.Second), kgo.DefaultProduceTopic(state))
	if err := dead.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := dead.ProduceSync(t.Context(), &kgo.Record{Key: []byte("k"), Value: []byte("uncommitted")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// A record after it, outside any transaction: a read_committed reader
	// sees it only once the open transaction is over.
	if err := c.Client(t, kgo.DefaultProduceTopic(state)).ProduceSync(t.Context(), &kgo.Record{Key: []byte("k"), Value: []byte("after")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	restored := make(chan time.Duration, 1)
	cfg := kafka.HopConfig{
		Client:          kafkaconfig.Client{Brokers: c.Brokers},
		Group:           group,
		Topics:          []string{in},
		TransactionalID: txnID,
		InstanceID:      "g-0",
		Tick:            100 * time.Millisecond,
		OnAssigned: func(ctx context.Context, _ *kgo.Client, _ map[string][]int32) {
			start := time.Now()
			rd, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.ConsumeTopics(state), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
			if err != nil {
				t.Error(err)
				return
			}
			defer rd.Close()
			for ctx.Err() == nil {
				found := false
				rd.PollFetches(ctx).EachRecord(func(r *kgo.Record) { found = found || string(r.Value) == "after" })
				if found {
					restored <- time.Since(start)
					return
				}
			}
		},
	}
	hop, err := kafka.NewHop(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hop.Run(ctx, func(context.Context, *kafka.Batch) error { return nil }, func(bool) {}); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case took := <-restored:
		t.Logf("read past the dead instance's transaction %s after the assignment", took.Round(time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatal("the assignment callback still waits on the dead instance's transaction after 15s: it was not aborted when the successor started")
	}
}
