package aggregator

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/testkafka"
)

// TestKfakeCompactionHidesCommittedData pins a kfake bug that the
// aggregator's changelog meets: when the cleaner finds a transaction's
// data aborted and its producer with no other data in the cleanable range,
// it drops the data and the abort marker but keeps the transaction in the
// partition's aborted index. A read_committed fetch then lists the aborted
// transaction without a marker to end it, and the client takes every later
// batch of that producer (its committed transactions) for aborted ones.
// Restoring a changelog lost whole partitions this way (TestFailover, when
// a rebalance had aborted a transaction). newFixture therefore turns kfake's
// cleaner down; when this test fails, kfake is fixed: remove that.
func TestKfakeCompactionHidesCommittedData(t *testing.T) {
	c := testkafka.NewKfake(t) // the cleaner runs every second
	topic := c.CreateTopic(t, "compacted", 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")})
	ctx := t.Context()
	plain := c.Client(t, kgo.DefaultProduceTopic(topic))
	txn := c.Client(t, kgo.DefaultProduceTopic(topic), kgo.TransactionalID(c.Name("txn")))
	produce := func(cl *kgo.Client, key string) {
		t.Helper()
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(key), Value: []byte(key)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	inTxn := func(key string, commit kgo.TransactionEndTry) {
		t.Helper()
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		produce(txn, key)
		if err := txn.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	read := func(iso kgo.IsolationLevel) []string {
		t.Helper()
		cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(iso))
		var keys []string
		for !slices.Contains(keys, "end") {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			fs := cl.PollFetches(pctx)
			timedOut := pctx.Err() != nil
			cancel()
			if timedOut {
				t.Fatalf("no end record; read %v", keys)
			}
			fs.EachRecord(func(r *kgo.Record) { keys = append(keys, string(r.Key)) })
		}
		return keys
	}

	produce(plain, "first") // keeps the log start before the aborted transaction
	inTxn("aborted", kgo.TryAbort)
	produce(plain, "end") // so that the abort marker is not the last batch
	deadline := time.Now().Add(20 * time.Second)
	for slices.Contains(read(kgo.ReadUncommitted()), "aborted") {
		if time.Now().After(deadline) {
			t.Fatal("kfake's cleaner did not run")
		}
		time.Sleep(200 * time.Millisecond)
	}
	inTxn("committed", kgo.TryCommit)
	produce(plain, "end")

	got := read(kgo.ReadCommitted())
	if slices.Contains(got, "committed") {
		t.Fatalf("kfake now shows the committed transaction (%v): its cleaner is fixed; let newFixture compact again", got)
	}
	t.Logf("read_committed after the cleaner dropped an aborted transaction: %v (the committed transaction is missing)", got)
}
