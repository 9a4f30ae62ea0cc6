package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// syncBuffer is a bytes.Buffer safe for the hop's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTxnOffsetCommitConcurrentTransactions pins a franz-go behaviour the
// hop lives with (v1.22.3, GroupTransactSession.End): a TxnOffsetCommit
// answered CONCURRENT_TRANSACTIONS is not retried, the transaction is
// aborted and End reports committed=false with no error, as for a
// rebalance. Kafka 4.4 on three nodes answers so to about one in ten of a
// busy aggregator's transactions (one that comes right after a commit,
// whose marker the offsets partition has not got yet); Kafka's Java
// producer retries it (KAFKA-16122). The batch is consumed again and commits then;
// the hop logs it as a failed offset commit, not as a rebalance.
func TestTxnOffsetCommitConcurrentTransactions(t *testing.T) {
	r := runRefusedCommits(t, kerr.ConcurrentTransactions, 1)
	if len(r.ends) != 2 || r.ends[0] || !r.ends[1] {
		t.Errorf("batch ends %s, want [aborted committed]: End does not retry CONCURRENT_TRANSACTIONS", fmtBools(r.ends))
	}
	if r.read != 6 {
		t.Errorf("%d records read, want the 3 twice", r.read)
	}
	if !strings.Contains(r.logs, "transaction aborted: its offset commit failed") || strings.Contains(r.logs, "aborted by a rebalance") {
		t.Errorf("the abort is not logged as a failed offset commit:\n%s", r.logs)
	}
	if r.restarts != 0 {
		t.Errorf("the hop built %d new clients, want none", r.restarts)
	}
	if r.committed != 3 {
		t.Errorf("committed offset %d, want 3", r.committed)
	}
}

// TestTxnOffsetCommitFailureAborts: a TxnOffsetCommit that fails with an
// error End does not count as abortable (a broker SIGKILLed under the
// group coordinator: franz-go gives up when two coordinator lookups fail to
// dial) makes End abort the transaction, set the client back and return
// that error. The hop goes on with the same client, as after any abort,
// instead of building a new one (a rejoin, and for the aggregator a
// restore); only a fourth such failure in a row builds one. kfake answers
// REQUEST_TIMED_OUT here in place of the dial error; End takes the same
// path for both. It also pins the message offsetCommitAborted recognises.
func TestTxnOffsetCommitFailureAborts(t *testing.T) {
	for _, tc := range []struct {
		refusals     int32
		wantRestarts int64
	}{{1, 0}, {3, 0}, {4, 1}} {
		t.Run(fmt.Sprintf("refused %d times", tc.refusals), func(t *testing.T) {
			r := runRefusedCommits(t, kerr.RequestTimedOut, tc.refusals)
			checkFailuresThenCommit(t, r, "offset commit", tc.refusals, tc.wantRestarts)
			for i, committed := range r.ends {
				if committed != (i == len(r.ends)-1) || len(r.ends) != int(tc.refusals)+1 {
					t.Errorf("batch ends %s, want %d aborted, then committed", fmtBools(r.ends), tc.refusals)
					break
				}
			}
			if want := 3 * (int(tc.refusals) + 1); r.read != want {
				t.Errorf("%d records read, want the 3 %d times", r.read, tc.refusals+1)
			}
			if !strings.Contains(r.logs, "REQUEST_TIMED_OUT") {
				t.Errorf("the aborts are not logged with their error:\n%s", r.logs)
			}
		})
	}
}

// TestEndTxnFailureSettled: an EndTxn that fails with an error leaving the
// transaction's outcome unknown (a broker SIGKILLed under the transaction
// coordinator: franz-go gives up when two coordinator lookups fail to dial;
// kfake answers REQUEST_TIMED_OUT here, End takes the same path) is settled
// with the same client: the producer ID is loaded again, and the group's
// committed offsets tell whether the transaction committed. Here it did
// not (kfake never saw the EndTxn): the batch is consumed again with the
// same client, and a fourth such failure in a row builds a new one. Without
// settling, every such failure built a new client (a rejoin, and for the
// aggregator a restore).
func TestEndTxnFailureSettled(t *testing.T) {
	for _, tc := range []struct {
		refusals     int32
		wantRestarts int64
	}{{1, 0}, {4, 1}} {
		t.Run(fmt.Sprintf("refused %d times", tc.refusals), func(t *testing.T) {
			c := testkafka.NewKfake(t)
			out := c.CreateTopic(t, "out", 1, nil)
			refused := refuseFirst(c, kmsg.EndTxn, tc.refusals, func(req kmsg.Request) kmsg.Response {
				resp := req.ResponseKind().(*kmsg.EndTxnResponse)
				resp.ErrorCode = kerr.RequestTimedOut.Code
				return resp
			})
			r := runUntilCommit(t, c, out, lastCommitted)
			if refused.Load() != tc.refusals {
				t.Fatalf("EndTxn refused %d times, want %d", refused.Load(), tc.refusals)
			}
			checkFailuresThenCommit(t, r, "end", tc.refusals, tc.wantRestarts)
			if got := len(readTopic(t, c, out, 3, 10*time.Second)); got != 3 {
				t.Errorf("%d records written read_committed, want the 3 once", got)
			}
		})
	}
}

// TestEndTxnFailureCommitted: an EndTxn that the coordinator carried out,
// but whose answer was lost, is not taken for an abort: the group's
// committed offsets show the transaction committed, and the hop builds a
// new client, which consumes from them. Nothing is written twice.
func TestEndTxnFailureCommitted(t *testing.T) {
	c := testkafka.NewKfake(t)
	out := c.CreateTopic(t, "out", 1, nil)
	side := c.Client(t)
	var refused atomic.Bool
	c.Fake.ControlKey(int16(kmsg.EndTxn), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake.KeepControl()
		req := kreq.(*kmsg.EndTxnRequest)
		if !req.Commit || !refused.CompareAndSwap(false, true) {
			return nil, nil, false
		}
		// The same EndTxn, from another connection, is carried out; this
		// one's answer is lost.
		var sideErr error
		c.Fake.SleepControl(func() {
			again := *req
			resp, err := again.RequestWith(t.Context(), side)
			if err == nil {
				err = kerr.ErrorForCode(resp.ErrorCode)
			}
			sideErr = err
		})
		if sideErr != nil {
			t.Errorf("the EndTxn carried out for the hop: %v", sideErr)
		}
		resp := req.ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = kerr.RequestTimedOut.Code
		return resp, nil, true
	})
	r := runUntilCommit(t, c, out, func(_ []bool, restarts int64) bool { return restarts > 0 })
	if !refused.Load() {
		t.Fatal("no EndTxn was answered as lost")
	}
	if strings.Contains(r.logs, "transaction aborted: its end failed") || !strings.Contains(r.logs, "it may have committed") {
		t.Errorf("the committed transaction was not told from an abort:\n%s", r.logs)
	}
	if got := len(readTopic(t, c, out, 3, 10*time.Second)); got != 3 {
		t.Errorf("%d records written read_committed, want the 3 once", got)
	}
	if r.committed != 3 {
		t.Errorf("committed offset %d, want 3", r.committed)
	}
}

// refusedCommits is what runUntilCommit saw.
type refusedCommits struct {
	read      int    // records the ProcessFunc was given
	ends      []bool // each batch's end: committed or not
	logs      string
	restarts  int64 // new clients the hop built
	committed int64 // the group's committed offset at the end
}

// runRefusedCommits runs an exactly-once hop over three records on kfake,
// whose first refusals TxnOffsetCommits are answered with code for every
// partition, until a batch commits.
func runRefusedCommits(t *testing.T, code *kerr.Error, refusals int32) refusedCommits {
	t.Helper()
	c := testkafka.NewKfake(t)
	refused := refuseFirst(c, kmsg.TxnOffsetCommit, refusals, func(req kmsg.Request) kmsg.Response {
		return refuseOffsets(req.(*kmsg.TxnOffsetCommitRequest), code)
	})
	r := runUntilCommit(t, c, "", lastCommitted)
	if refused.Load() != refusals {
		t.Fatalf("TxnOffsetCommit refused %d times, want %d", refused.Load(), refusals)
	}
	return r
}

// refuseFirst has kfake answer the first n requests of key with answer,
// without carrying them out, and carry out the rest. It returns how many
// it answered so.
func refuseFirst(c *testkafka.Cluster, key kmsg.Key, n int32, answer func(kmsg.Request) kmsg.Response) *atomic.Int32 {
	var refused atomic.Int32
	c.Fake.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake.KeepControl()
		if refused.Load() >= n {
			return nil, nil, false
		}
		refused.Add(1)
		return answer(req), nil, true
	})
	return &refused
}

// checkFailuresThenCommit checks a run whose first refusals transactions
// failed their what ("offset commit" or "end") with an error after which
// the hop goes on with the same client: it built wantRestarts new clients
// (a fourth failure in a row builds one), logged every other failure as
// an abort, and committed all three records in the end.
func checkFailuresThenCommit(t *testing.T, r refusedCommits, what string, refusals int32, wantRestarts int64) {
	t.Helper()
	if r.restarts != wantRestarts || int64(strings.Count(r.logs, kafka.LogClientRestart)) != wantRestarts {
		t.Errorf("the hop built %d new clients after %d failed transaction %ss, want %d:\n%s", r.restarts, refusals, what, wantRestarts, r.logs)
	}
	want := int(int64(refusals) - wantRestarts)
	if n := strings.Count(r.logs, "transaction aborted: its "+what+" failed"); n != want {
		t.Errorf("%d aborts logged as a failed %s, want %d:\n%s", n, what, want, r.logs)
	}
	if r.committed != 3 {
		t.Errorf("committed offset %d, want 3", r.committed)
	}
}

// lastCommitted reports whether the last batch committed.
func lastCommitted(ends []bool, _ int64) bool { return len(ends) > 0 && ends[len(ends)-1] }

// runUntilCommit runs an exactly-once hop on c over three records of a new
// topic until until(batch ends, new clients built) holds. With out set,
// each batch writes every record it read to out.
func runUntilCommit(t *testing.T, c *testkafka.Cluster, out string, until func([]bool, int64) bool) refusedCommits {
	t.Helper()
	in := c.CreateTopic(t, "in", 1, nil)
	group := c.Name("g")
	cl := c.Client(t)
	for _, v := range []string{"a", "b", "c"} {
		if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: in, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	var logs syncBuffer
	h, err := kafka.NewHop(kafka.HopConfig{
		Client: kafkaconfig.Client{Brokers: c.Brokers}, Group: group, Topics: []string{in},
		Guarantee: kafkaconfig.ExactlyOnce, TransactionalID: group + "-a", InstanceID: "a", Tick: 50 * time.Millisecond,
		RestartBackoff: 10 * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var r refusedCommits
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- h.Run(ctx, func(_ context.Context, b *kafka.Batch) error {
			mu.Lock()
			r.read += b.Fetches.NumRecords()
			mu.Unlock()
			if out != "" {
				b.Fetches.EachRecord(func(rec *kgo.Record) { b.Produce(&kgo.Record{Topic: out, Value: rec.Value}) })
			}
			return nil
		}, func(committed bool) {
			mu.Lock()
			r.ends = append(r.ends, committed)
			mu.Unlock()
		})
	}()
	state := func() (int, []bool) {
		mu.Lock()
		defer mu.Unlock()
		return r.read, append([]bool(nil), r.ends...)
	}
	eventually(t, 30*time.Second, func() string { n, e := state(); return fmt.Sprintf("records read %d, batch ends %s", n, fmtBools(e)) },
		func() bool { _, e := state(); return until(e, h.Restarts()) })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	r.read, r.ends = state()
	r.logs, r.restarts = logs.String(), h.Restarts()
	r.committed = committedOffset(t, c, group, in)
	return r
}

// concurrentTransactions answers req with CONCURRENT_TRANSACTIONS for
// every partition, as Kafka does to a transaction that comes right after
// the previous one's commit.
func concurrentTransactions(req *kmsg.TxnOffsetCommitRequest) *kmsg.TxnOffsetCommitResponse {
	return refuseOffsets(req, kerr.ConcurrentTransactions)
}

// refuseOffsets answers req with code for every partition.
func refuseOffsets(req *kmsg.TxnOffsetCommitRequest, code *kerr.Error) *kmsg.TxnOffsetCommitResponse {
	resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewTxnOffsetCommitResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
			sp.Partition, sp.ErrorCode = rp.Partition, code.Code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

func fmtBools(bs []bool) string {
	var s []string
	for _, b := range bs {
		if b {
			s = append(s, "committed")
		} else {
			s = append(s, "aborted")
		}
	}
	return "[" + strings.Join(s, " ") + "]"
}
