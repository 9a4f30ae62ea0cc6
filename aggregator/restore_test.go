package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// These tests move partitions between aggregator instances, stopped
// cleanly or abandoned as a kill -9 would leave them, and check the promise:
// every request gets exactly one reply, with every part that arrived.

// fixture is a results topic, its changelog, a one-partition replies
// topic (so that replies are read in the order they were written) and a
// DLQ, on the test's broker.
type fixture struct {
	t      *testing.T
	c      *testkafka.Cluster
	topics kafkaconfig.Topics
	parts  int32
	w      *writer
}

// newFixture makes a fixture with parts partitions of results; kfakeOpts
// apply when the broker is kfake.
func newFixture(t *testing.T, parts int32, kfakeOpts ...kfake.Opt) *fixture {
	// kfake's cleaner can drop the abort marker of a transaction whose data
	// it dropped while keeping the transaction in its aborted index; a
	// read_committed consumer then takes the producer's later, committed
	// batches for aborted ones (kfake v0.0.0-20260918054303; see
	// TestKfakeCompactionHidesCommittedData). testkafka runs kfake's cleaner
	// every second; here it runs at kfake's default, hourly, so never
	// within a test. Real Kafka compacts as it is configured.
	c := testkafka.New(t, testkafka.WithKfakeOpts(append([]kfake.Opt{kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": "3600000"})}, kfakeOpts...)...))
	f := &fixture{t: t, c: c, topics: kafkaconfig.Topics{Prefix: c.Prefix}, parts: parts}
	results := c.CreateTopic(t, "results", parts, nil)
	c.CreateTopic(t, "aggregator-state", parts, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")})
	c.CreateTopic(t, "replies", 1, nil)
	c.CreateTopic(t, "dlq", 1, nil)
	f.w = &writer{t: t, cl: c.Client(t, kgo.DefaultProduceTopic(results), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchMaxBytes(1<<20), kgo.ProducerLinger(5*time.Millisecond))}
	return f
}

// instance is one running aggregator.
type instance struct {
	name string
	agg  *Aggregator
	cut  *cutter
	stop context.CancelFunc
	done chan struct{}
	err  error
}

// start runs an aggregator of the fixture's group with instance id id.
func (f *fixture) start(id string, g kafkaconfig.Guarantee, edit ...func(*Config)) *instance {
	f.t.Helper()
	cut := &cutter{topic: f.topics.State()}
	cfg := Config{
		Role: kafkaconfig.Role{
			Client: kafkaconfig.Client{Brokers: f.c.Brokers, Opts: []kgo.Opt{
				kgo.Dialer(cut.dial),
				kgo.WithHooks(cut),
				// A killed instance must not retry for long: its goroutines
				// go on until they give up, unlike a real killed process.
				kgo.RetryTimeout(2 * time.Second),
			}},
			Topics:     f.topics,
			InstanceID: id,
			Guarantee:  g,
			Logger:     slog.New(slog.NewTextHandler(f.t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})).With("instance", id),
		},
	}
	for _, e := range edit {
		e(&cfg)
	}
	agg, err := New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{name: id, agg: agg, cut: cut, stop: cancel, done: make(chan struct{})}
	go func() { // exits when Run returns; waited for by stopNow, kill or the cleanup
		defer close(in.done)
		in.err = agg.Run(ctx)
	}()
	f.t.Cleanup(func() {
		cancel()
		select {
		case <-in.done:
		case <-time.After(2 * time.Minute):
			// A hang: say where every goroutine is, rather than wait
			// for go test's timeout to cut the output short.
			pprof.Lookup("goroutine").WriteTo(f.t.Output(), 1)
			f.t.Errorf("%s: Run has not returned 2m after its context was cancelled", id)
		}
	})
	return in
}

// stopNow stops the instance as SIGTERM does and waits for it.
func (in *instance) stopNow(t *testing.T) {
	t.Helper()
	in.stop()
	<-in.done
	if in.err != nil {
		t.Fatalf("%s: Run: %v", in.name, in.err)
	}
}

// kill leaves the instance as kill -9 would: every connection to the
// broker is cut at once and no new one can be made, so nothing more
// reaches the broker: no commit, no abort, no leaving the group. Then its
// goroutines are stopped: whatever they try fails, except that an
// idempotent producer never gives up a batch that may have been written,
// so after a while its client is closed under it.
func (in *instance) kill() {
	in.cut.cutAll()
	in.stop()
	select {
	case <-in.done:
	case <-time.After(15 * time.Second):
		in.agg.hop.Abandon()
		<-in.done
	}
}

// cutter dials the broker until cutAll, which closes every connection.
// Once armed, it cuts them as soon as a batch of the changelog topic was
// written: in the middle of a transaction, under exactly-once.
type cutter struct {
	topic string
	armed atomic.Bool

	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

// OnProduceBatchWritten implements kgo.HookProduceBatchWritten.
func (c *cutter) OnProduceBatchWritten(_ kgo.BrokerMetadata, topic string, _ int32, _ kgo.ProduceBatchMetrics) {
	if topic == c.topic && c.armed.CompareAndSwap(true, false) {
		c.cutAll()
	}
}

func (c *cutter) dial(ctx context.Context, network, host string) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return nil, errors.New("killed")
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, network, host)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *cutter) cutAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = true
	for _, conn := range c.conns {
		_ = conn.Close()
	}
}

// waitFor polls cond every 20ms until it holds or within passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// replyLog reads replies and dead letters, read_committed, from the start.
type replyLog struct {
	t       *testing.T
	cl      *kgo.Client
	dlq     string
	replies map[schemas.CorrelationID][]schemas.Reply
	n       int
	dead    []*kgo.Record
}

func (f *fixture) replyLog() *replyLog {
	return &replyLog{
		t:       f.t,
		cl:      f.c.Client(f.t, kgo.ConsumeTopics(f.topics.Replies(), f.topics.DLQ()), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond)),
		dlq:     f.topics.DLQ(),
		replies: map[schemas.CorrelationID][]schemas.Reply{},
	}
}

// until reads until cond holds, failing the test after within.
func (l *replyLog) until(what string, within time.Duration, cond func() bool) {
	l.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			l.t.Fatalf("no %s after %s: %d replies for %d requests, %d dead letters", what, within, l.n, len(l.replies), len(l.dead))
		}
		ctx, cancel := context.WithTimeout(l.t.Context(), 200*time.Millisecond)
		fs := l.cl.PollFetches(ctx)
		cancel()
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				l.t.Fatalf("fetch %s/%d: %v", topic, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			if r.Topic == l.dlq {
				l.dead = append(l.dead, r)
				return
			}
			reply, err := schemas.DecodeReply(r.Value)
			if err != nil {
				l.t.Fatalf("reply at %s/%d@%d: %v", r.Topic, r.Partition, r.Offset, err)
			}
			l.replies[reply.CorrelationID] = append(l.replies[reply.CorrelationID], reply)
			l.n++
		})
	}
}

// fence writes a request on every partition that completes at once and
// reads until its replies came: a reply written before them has been read.
func (f *fixture) fence(l *replyLog, name string) {
	f.t.Helper()
	far := time.Now().Add(time.Minute)
	var ids []schemas.CorrelationID
	for p := range f.parts {
		id := fmt.Sprintf("%s-%d", name, p)
		f.w.send(p, f.w.manifest(id, far, "", "a"), f.w.result(id, "a", schemas.ResultOK, `0`, "", far))
		ids = append(ids, schemas.CorrelationID(id))
	}
	l.until(name+" replies", 30*time.Second, func() bool {
		for _, id := range ids {
			if len(l.replies[id]) == 0 {
				return false
			}
		}
		return true
	})
}

// waitCommitted waits until group has committed every partition of topic
// up to its end.
func waitCommitted(t *testing.T, c *testkafka.Cluster, group, topic string) {
	t.Helper()
	adm := c.Admin(t)
	waitFor(t, "the group's offsets committed to the end of "+topic, 30*time.Second, func() bool {
		ends, err := adm.ListEndOffsets(t.Context(), topic)
		if err != nil {
			return false
		}
		offs, err := adm.FetchOffsets(t.Context(), group)
		if err != nil {
			return false
		}
		done := true
		ends.Each(func(e kadm.ListedOffset) {
			if o, ok := offs.Lookup(topic, e.Partition); e.Offset > 0 && (!ok || o.At < e.Offset) {
				done = false
			}
		})
		return done
	})
}

// payload is the part's payload in these tests: a JSON string naming it.
func payload(id, part string) string { return fmt.Sprintf("%q", id+"/"+part) }

// TestRestoreAfterRestart: 10,000 requests are open, each with one of
// three parts, when the aggregator stops, cleanly or as by kill -9. A new
// instance restores all of them; the second part of most arrives while no
// aggregator runs, the third once the new one is ready; every fifth request
// gets no more parts and must time out, at its original deadline, with two
// MISSING parts.
func TestRestoreAfterRestart(t *testing.T) {
	const requests = 10_000
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		for _, how := range []string{"stopped", "killed"} {
			t.Run(string(g)+"/"+how, func(t *testing.T) {
				t.Parallel()
				testRestoreAfterRestart(t, g, how, requests)
			})
		}
	}
}

func testRestoreAfterRestart(t *testing.T, g kafkaconfig.Guarantee, how string, requests int) {
	f := newFixture(t, 4)
	// Long enough for the restart: a killed instance keeps its partitions
	// until its session times out (10s).
	timeoutAfter := 10 * time.Second
	if how == "killed" {
		timeoutAfter = 20 * time.Second
	}
	t0 := time.Now()
	far, timeoutAt := t0.Add(10*time.Minute), t0.Add(timeoutAfter)
	id := func(i int) string { return fmt.Sprintf("req-%05d", i) }
	times := func(i int) bool { return i%5 == 0 }
	byPart := func(emit func(i int) []*kgo.Record) {
		recs := make([][]*kgo.Record, f.parts)
		for i := range requests {
			p := int32(i) % f.parts
			recs[p] = append(recs[p], emit(i)...)
		}
		for p := range f.parts {
			f.w.send(p, recs[p]...)
		}
	}

	a := f.start("a", g)
	byPart(func(i int) []*kgo.Record {
		deadline := far
		if times(i) {
			deadline = timeoutAt
		}
		return []*kgo.Record{
			f.w.manifest(id(i), deadline, "", "a", "b", "c"),
			f.w.result(id(i), "a", schemas.ResultOK, payload(id(i), "a"), "", deadline),
		}
	})
	waitFor(t, "10,000 manifests and results committed by the first instance", time.Minute, func() bool {
		s := a.agg.Stats()
		return s.Manifests == int64(requests) && s.ResultsReceived == int64(requests)
	})
	if s := a.agg.Stats(); s.Open != int64(requests) {
		t.Fatalf("first instance: %d open, want %d", s.Open, requests)
	}
	if how == "killed" {
		if g == kafkaconfig.AtLeastOnce {
			// Under at-least-once the state is written once per offset
			// commit interval, with the commit: a kill loses what came
			// since, and the next instance consumes it again. To restore
			// every request, kill once all is committed.
			waitCommitted(t, f.c, a.agg.cfg.Group, f.topics.Results())
		}
		a.kill()
	} else {
		a.stopNow(t)
	}

	// While no aggregator runs: the second part of the requests that will
	// complete. The next instance must apply them to the restored state,
	// not take them for results without a manifest.
	byPart(func(i int) []*kgo.Record {
		if times(i) {
			return nil
		}
		return []*kgo.Record{f.w.result(id(i), "b", schemas.ResultOK, payload(id(i), "b"), "", far)}
	})

	b := f.start("b", g)
	waitFor(t, "the second instance ready", timeoutAfter, readyOf(b.agg))
	// Under exactly-once the requests the last interval created are not in
	// the changelog (machine.young): the second instance consumes them
	// again. Every request is restored or consumed again, none both.
	waitFor(t, "every request restored or consumed again", timeoutAfter, func() bool {
		s := b.agg.Stats()
		return s.RestoredOpen+s.Manifests >= int64(requests)
	})
	if s := b.agg.Stats(); s.RestoredOpen+s.Manifests != int64(requests) || s.RestoreSkipped != 0 ||
		(g == kafkaconfig.AtLeastOnce && s.RestoredOpen != int64(requests)) {
		t.Fatalf("second instance restored %d open requests (%d entries skipped) and read %d manifests again, want %d in all (all restored under at-least-once)",
			s.RestoredOpen, s.RestoreSkipped, s.Manifests, requests)
	}
	t.Logf("restart: the second instance was ready %s after the first began, %s before the deadline", time.Since(t0).Round(time.Millisecond), time.Until(timeoutAt).Round(time.Millisecond))
	if time.Until(timeoutAt) < time.Second {
		t.Fatalf("the restart took too long for this test: the timeouts are due %s after it", time.Until(timeoutAt))
	}
	byPart(func(i int) []*kgo.Record {
		if times(i) {
			return nil
		}
		return []*kgo.Record{f.w.result(id(i), "c", schemas.ResultOK, payload(id(i), "c"), "", far)}
	})

	l := f.replyLog()
	l.until("a reply for every request", timeoutAfter+30*time.Second, func() bool { return len(l.replies) >= requests })
	f.fence(l, "fence")

	for i := range requests {
		rs := l.replies[schemas.CorrelationID(id(i))]
		if len(rs) != 1 {
			t.Fatalf("%s: %d replies, want 1", id(i), len(rs))
		}
		r := rs[0]
		if times(i) {
			want := []marker{{"a", "OK", ""}, {"b", "MISSING", ""}, {"c", "MISSING", ""}}
			if r.Status != schemas.ReplyPartial || !slices.Equal(markers(r), want) || string(r.Payload) != "["+payload(id(i), "a")+"]" {
				t.Fatalf("%s: %s %v %s, want PARTIAL %v", id(i), r.Status, markers(r), r.Payload, want)
			}
			if late := r.CompletedAt.Sub(timeoutAt.Truncate(time.Millisecond)); late < 0 || late > 5*time.Second {
				t.Fatalf("%s: completed %s after its deadline, want at it", id(i), late)
			}
			continue
		}
		want := "[" + payload(id(i), "a") + "," + payload(id(i), "b") + "," + payload(id(i), "c") + "]"
		if r.Status != schemas.ReplyComplete || string(r.Payload) != want {
			t.Fatalf("%s: %s %s, want COMPLETE %s", id(i), r.Status, r.Payload, want)
		}
	}
	if len(l.dead) != 0 {
		t.Fatalf("%d dead letters, want none; the first: %s %s", len(l.dead), l.dead[0].Key, kafka.Header(l.dead[0], kafka.HeaderDLQReason))
	}
	if l.n != requests+int(f.parts) {
		t.Fatalf("%d replies, want %d", l.n, requests+int(f.parts))
	}
}

// TestFailover runs two instances in one group under load and stops one
// of them in the middle: cleanly, as by kill -9 at any moment, or as by
// kill -9 just after its transaction wrote changelog records (the other
// instance must wait until the transaction times out, then not see them).
// Its partitions move to the other. No request is lost, none is answered
// twice, and every part counts: each request has three parts, one of which
// often comes before its manifest.
func TestFailover(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		for _, how := range []string{"stopped", "killed", "killed in a transaction"} {
			if how == "killed in a transaction" && g != kafkaconfig.ExactlyOnce {
				continue
			}
			t.Run(string(g)+"/"+how, func(t *testing.T) {
				t.Parallel()
				testFailover(t, g, how)
			})
		}
	}
}

func testFailover(t *testing.T, g kafkaconfig.Guarantee, how string) {
	const (
		requests = 3000
		perSend  = 50
	)
	f := newFixture(t, 6)
	a := f.start("a", g)
	b := f.start("b", g)
	// Ready comes with the first assignment, which may be empty: with the
	// cooperative balancer the second member gets its share a rebalance
	// later. Both must hold partitions, or the stopped one proves nothing.
	waitFor(t, "both instances ready with partitions", 30*time.Second, func() bool {
		_, pa := a.agg.GroupAssignment()
		_, pb := b.agg.GroupAssignment()
		return a.agg.Ready() == nil && b.agg.Ready() == nil && pa > 0 && pb > 0
	})

	// A killed instance's partitions move after its session timeout (10s),
	// and under exactly-once its open transaction must time out (30s)
	// before they can be read: the deadline is far.
	far := time.Now().Add(5 * time.Minute)
	id := func(i int) string { return fmt.Sprintf("req-%05d", i) }
	// load writes, for requests [from, to), the records emit returns, in
	// sends of perSend requests across the partitions. It runs off the
	// test's goroutine: it must not call t.Fatal.
	load := func(from, to int, emit func(i int) []*kgo.Record) {
		for start := from; start < to; start += perSend {
			recs := make([][]*kgo.Record, f.parts)
			for i := start; i < min(start+perSend, to); i++ {
				p := int32(i) % f.parts
				for _, r := range emit(i) {
					r.Partition = p
					recs[p] = append(recs[p], r)
				}
			}
			for p := range f.parts {
				if err := f.w.cl.ProduceSync(context.Background(), recs[p]...).FirstErr(); err != nil {
					t.Errorf("produce: %v", err)
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Every request: its manifest and parts a and b (a third of them a
	// before the manifest) while both instances run; one instance stops
	// in the middle of that; then every part c. So when the instance
	// stops, its partitions hold open requests, held results and done
	// requests, and it may be in the middle of a batch.
	first := func(i int) []*kgo.Record {
		m := f.w.manifest(id(i), far, "", "a", "b", "c")
		ra := f.w.result(id(i), "a", schemas.ResultOK, payload(id(i), "a"), "", far)
		rb := f.w.result(id(i), "b", schemas.ResultOK, payload(id(i), "b"), "", far)
		if i%3 == 0 {
			return []*kgo.Record{ra, m, rb}
		}
		return []*kgo.Record{m, ra, rb}
	}
	var wg sync.WaitGroup
	wg.Go(func() { load(0, requests, first) }) // exits when written
	waitFor(t, "half the load processed, some of it by the instance to stop", time.Minute, func() bool {
		return a.agg.Stats().Manifests+b.agg.Stats().Manifests >= requests/2 && a.agg.Stats().Manifests > 0
	})
	killed := time.Now()
	switch how {
	case "killed":
		a.kill()
	case "killed in a transaction":
		a.cut.armed.Store(true)
		waitFor(t, "a changelog batch written", 10*time.Second, func() bool {
			a.cut.mu.Lock()
			defer a.cut.mu.Unlock()
			return a.cut.cut
		})
		killed = time.Now()
		a.kill()
	default:
		a.stopNow(t)
	}
	wg.Wait()
	load(0, requests, func(i int) []*kgo.Record {
		return []*kgo.Record{f.w.result(id(i), "c", schemas.ResultOK, payload(id(i), "c"), "", far)}
	})

	l := f.replyLog()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		missing := map[int32][]int{}
		for i := range requests {
			if len(l.replies[schemas.CorrelationID(id(i))]) == 0 {
				missing[int32(i)%f.parts] = append(missing[int32(i)%f.parts], i)
			}
		}
		for p, is := range missing {
			t.Logf("partition %d: %d requests without a reply, from %d to %d", p, len(is), is[0], is[len(is)-1])
		}
		t.Logf("remaining instance: %+v", b.agg.Stats())
		t.Logf("stopped instance: %+v", a.agg.Stats())
		b.agg.mu.Lock()
		for p, ps := range b.agg.m.parts {
			t.Logf("partition %d: %d requests, gauges %+v", p, len(ps.reqs), ps.g)
		}
		b.agg.mu.Unlock()
	})
	l.until("a reply for every request", time.Minute, func() bool { return len(l.replies) >= requests })
	f.fence(l, "fence")
	for i := range requests {
		rs := l.replies[schemas.CorrelationID(id(i))]
		want := "[" + payload(id(i), "a") + "," + payload(id(i), "b") + "," + payload(id(i), "c") + "]"
		if len(rs) != 1 || rs[0].Status != schemas.ReplyComplete || string(rs[0].Payload) != want {
			var got []string
			for _, r := range rs {
				got = append(got, string(r.Status)+" "+string(r.Payload))
			}
			t.Fatalf("%s: replies %q, want one COMPLETE %s", id(i), got, want)
		}
	}
	if len(l.dead) != 0 {
		t.Fatalf("%d dead letters, want none; the first: %s %s", len(l.dead), l.dead[0].Key, kafka.Header(l.dead[0], kafka.HeaderDLQReason))
	}
	s := b.agg.Stats()
	t.Logf("the remaining instance restored %d open requests and %d held results; all replied %s after the stop",
		s.RestoredOpen, s.RestoredHeld, time.Since(killed).Round(time.Millisecond))
	if s.RestoredOpen == 0 {
		t.Fatal("the remaining instance restored no open request: the failover proved nothing")
	}
}

// TestLateDuplicateAfterRestart: a request completed on one instance; its
// done marker moves with the partition, so a duplicate result and a second
// manifest that reach the next instance are dropped, not answered again.
func TestLateDuplicateAfterRestart(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 1)
			far := time.Now().Add(time.Minute)
			l := f.replyLog()
			a := f.start("a", g)
			f.w.send(0, f.w.manifest("x", far, "", "a"), f.w.result("x", "a", schemas.ResultOK, `1`, "", far))
			l.until("the reply", 30*time.Second, func() bool { return len(l.replies["x"]) == 1 })
			waitFor(t, "the reply committed", 10*time.Second, func() bool { return a.agg.Stats().RepliesComplete == 1 })
			a.stopNow(t)

			b := f.start("b", g)
			waitFor(t, "the second instance ready", 30*time.Second, readyOf(b.agg))
			if s := b.agg.Stats(); s.RestoredDone != 1 {
				t.Fatalf("restored %d done requests, want 1", s.RestoredDone)
			}
			f.w.send(0, f.w.result("x", "a", schemas.ResultOK, `2`, "", far), f.w.manifest("x", far, "", "a"))
			f.fence(l, "fence")
			if n := len(l.replies["x"]); n != 1 {
				t.Fatalf("%d replies for x, want 1", n)
			}
			waitFor(t, "the late result and the duplicate manifest counted", 10*time.Second, func() bool {
				s := b.agg.Stats()
				return s.Late == 1 && s.Duplicates == 1
			})
		})
	}
}

// TestChangelogOnTheBroker reads the changelog a run leaves: every record
// has a key, is on the partition of its request's results, and a request's
// entries are deleted (tombstones) once its late window has passed, so a
// new instance restores nothing of it.
func TestChangelogOnTheBroker(t *testing.T) {
	f := newFixture(t, 3)
	const lateWindow = 2 * time.Second
	a := f.start("a", kafkaconfig.ExactlyOnce, func(c *Config) { c.LateWindow = lateWindow })
	l := f.replyLog()
	// A request is remembered until its deadline plus the late window when
	// it completes before its deadline: keep the deadline near.
	far := time.Now().Add(5 * time.Second)
	var ids []string
	for i := range 9 {
		id, p := fmt.Sprintf("r%d", i), int32(i)%f.parts
		ids = append(ids, id)
		recs := []*kgo.Record{f.w.manifest(id, far, "", "a", "b")}
		if i%3 == 0 {
			recs = []*kgo.Record{f.w.result(id, "a", schemas.ResultOK, `1`, "", far), recs[0]}
		} else {
			recs = append(recs, f.w.result(id, "a", schemas.ResultOK, `1`, "", far))
		}
		f.w.send(p, recs...)
		time.Sleep(100 * time.Millisecond) // separate batches
		f.w.send(p, f.w.result(id, "b", schemas.ResultOK, `2`, "", far))
	}
	l.until("the replies", 30*time.Second, func() bool { return len(l.replies) == len(ids) })
	completed := time.Now()
	waitFor(t, "the late windows to pass", 30*time.Second, func() bool {
		return time.Since(completed) > lateWindow && a.agg.Stats().ChangelogRecords > 0 && func() bool {
			a.agg.mu.Lock()
			defer a.agg.mu.Unlock()
			for _, ps := range a.agg.m.parts {
				if len(ps.reqs) > 0 {
					return false
				}
			}
			return true
		}()
	})

	// Read the whole changelog.
	cl := f.c.Client(t, kgo.ConsumeTopics(f.topics.State()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	type entry struct {
		partition int32
		key       string
		value     []byte
	}
	var log []entry
	tombstoned := map[string]bool{}
	listed := map[string]bool{}
	// Until every key's latest record is a tombstone, and every request
	// was either listed done or had an entry of its own: a request opened
	// and completed within one offset commit interval has only its line of
	// a done-list.
	waitFor(t, "a tombstone for every key, and every request in the changelog", 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			log = append(log, entry{r.Partition, string(r.Key), r.Value})
			tombstoned[string(r.Key)] = r.Value == nil
			if _, ok := schemas.ParseDoneListKey(r.Key); ok && r.Value != nil {
				if s, err := schemas.DecodeAggregationState(r.Value); err == nil {
					for _, q := range s.Done.Requests {
						listed[string(q.CorrelationID)] = true
					}
				}
			}
		})
		for _, id := range ids {
			if _, own := tombstoned[id]; !own && !listed[id] {
				return false
			}
		}
		for k, dead := range tombstoned {
			if k != "" && !dead {
				return false
			}
		}
		return true
	})
	// What the records say, and which was written, is checked record by
	// record in changelog_test.go; the broker may have compacted some away
	// already (kfake compacts all but the last batch every second). What
	// must hold on any broker: keys, partitions, and that the latest record
	// of every key is a tombstone.
	latest := map[string][]byte{}
	kinds := map[string]int{}
	for _, e := range log {
		if e.key == "" {
			if e.value != nil {
				t.Errorf("a record with an empty key and a value: %x", e.value)
			}
			continue // a restore's end mark
		}
		latest[e.key] = e.value
		onItsPartition := func(id string) {
			t.Helper()
			var n int
			if _, err := fmt.Sscanf(id, "r%d", &n); err != nil {
				t.Fatalf("changelog record %q names no request of this test (%q)", e.key, id)
			}
			if want := int32(n) % f.parts; e.partition != want {
				t.Errorf("changelog record %q of %s on partition %d, want %d (its results' partition)", e.key, id, e.partition, want)
			}
		}
		if _, ok := schemas.ParseDoneListKey([]byte(e.key)); ok {
			if e.value == nil {
				kinds["tombstone"]++
				continue
			}
			s, err := schemas.DecodeAggregationState(e.value)
			if err != nil || s.Entry != schemas.EntryDone || len(s.Done.Requests) == 0 {
				t.Fatalf("done-list %q: %+v, %v", e.key, s, err)
			}
			for _, q := range s.Done.Requests {
				onItsPartition(string(q.CorrelationID))
			}
			kinds["done-list"]++
			continue
		}
		id := e.key
		if i := strings.IndexByte(e.key, 0); i >= 0 {
			id = e.key[:i]
		}
		onItsPartition(id)
		if e.value == nil {
			kinds["tombstone"]++
			continue
		}
		s, err := schemas.DecodeAggregationState(e.value)
		if err != nil {
			t.Fatalf("changelog record %q: %v", e.key, err)
		}
		if string(s.CorrelationID) != id {
			t.Errorf("changelog record %q holds request %s", e.key, s.CorrelationID)
		}
		kinds[s.Entry.String()]++
	}
	t.Logf("changelog as read (%s): %v, %d keys", f.c.Kind, kinds, len(latest))
	for k, v := range latest {
		if v != nil {
			t.Errorf("key %q: the latest record is not a tombstone", k)
		}
	}
	for _, id := range ids {
		if _, own := latest[id]; !own && !listed[id] {
			t.Errorf("request %s is neither listed done nor has an entry of its own in the changelog", id)
		}
	}

	// A new instance restores nothing: every entry was deleted.
	a.stopNow(t)
	b := f.start("b", kafkaconfig.ExactlyOnce)
	waitFor(t, "the second instance ready", 30*time.Second, readyOf(b.agg))
	if s := b.agg.Stats(); s.RestoredOpen+s.RestoredDone+s.RestoredHeld+s.RestoreSkipped != 0 {
		t.Fatalf("restored %+v from a changelog of forgotten requests", s)
	}
}
