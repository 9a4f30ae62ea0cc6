package replay

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

func TestMain(m *testing.M) { testkafka.Main(m) }

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("SG_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

func clientConfig(c *testkafka.Cluster) kafkaconfig.Client {
	return kafkaconfig.Client{Brokers: c.Brokers, ClientID: "replay-test"}
}

var testLayout = kafkaconfig.Layout{Partitions: 4, ResultPartitions: 4, ReplicationFactor: -1}

// ensureTopics creates the pipeline topics of routes under topics.
func ensureTopics(t testing.TB, c *testkafka.Cluster, topics kafkaconfig.Topics, routeNames ...string) {
	t.Helper()
	if err := stack.EnsureTopics(t.Context(), clientConfig(c), topics, testLayout, routeNames); err != nil {
		t.Fatalf("topics: %v", err)
	}
}

// table parses a route table literal.
func table(t testing.TB, js string) *routes.Table {
	t.Helper()
	tb, err := routes.Parse([]byte(js))
	if err != nil {
		t.Fatalf("routes: %v", err)
	}
	return tb
}

// startStack runs the pipeline of cfg on c under topics until the test ends.
func startStack(t *testing.T, c *testkafka.Cluster, topics kafkaconfig.Topics, cfg stack.Config) *stack.Stack {
	t.Helper()
	cfg.Client = clientConfig(c)
	cfg.Topics = topics
	cfg.Layout = testLayout
	if cfg.Guarantee == "" {
		cfg.Guarantee = kafkaconfig.ExactlyOnce
	}
	cfg.Logger = testLogger(t)
	st, err := stack.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("build stack: %v", err)
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- st.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("stack: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("stack did not stop within 30s")
		}
	})
	return st
}

// original is a request produced straight to a requests topic.
type original struct {
	req       schemas.Request
	partition int32
	offset    int64
	timestamp time.Time
}

// produceOriginals produces n requests to topic, request i with the record
// timestamp (and submitted-at) t0 + i*step, on route routeOf(i), with the
// payload {"n": i}.
func produceOriginals(t testing.TB, c *testkafka.Cluster, topic string, n int, t0 time.Time, step time.Duration, routeOf func(int) schemas.Route) []original {
	t.Helper()
	cl := c.Client(t, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), kgo.ProducerLinger(5*time.Millisecond))
	out := make([]original, n)
	recs := make([]*kgo.Record, n)
	for i := range n {
		ts := t0.Add(time.Duration(i) * step)
		req := schemas.Request{
			CorrelationID: schemas.CorrelationID(fmt.Sprintf("orig-%05d", i)),
			Route:         routeOf(i),
			Payload:       fmt.Appendf(nil, `{"n":%d}`, i),
			ContentType:   "application/json",
			Timeout:       time.Duration(10+i%5) * time.Second,
			Headers:       map[string]string{"tenant": fmt.Sprint("t", i%3)},
			SubmittedAt:   ts,
		}
		v, err := schemas.EncodeRequest(req)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = original{req: req, timestamp: ts}
		recs[i] = &kgo.Record{Topic: topic, Key: []byte(req.CorrelationID), Value: v, Timestamp: ts}
	}
	index := make(map[*kgo.Record]int, n)
	for i, r := range recs {
		index[r] = i
	}
	// In order, so that timestamps grow with offsets in every partition.
	const chunk = 1000
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		res := cl.ProduceSync(t.Context(), recs[lo:hi]...)
		if err := res.FirstErr(); err != nil {
			t.Fatalf("produce originals: %v", err)
		}
		for _, r := range res { // results come in completion order
			i := index[r.Record]
			out[i].partition, out[i].offset = r.Record.Partition, r.Record.Offset
		}
	}
	return out
}

// readCommitted returns every record of topic up to its last stable offset,
// read_committed (control records left out).
//
// A transaction's commit returns before its markers are written (Kafka
// writes them after the coordinator has logged the commit), so the last
// stable offset can trail a batch just committed by a few milliseconds. The
// read waits up to 10s for every partition to be stable up to its high
// watermark, and reads what is stable then (a test may leave a transaction
// open on purpose).
func readCommitted(t testing.TB, c *testkafka.Cluster, topic string) []*kgo.Record {
	t.Helper()
	wm := settledWatermarks(t, c, topic, 10*time.Second)
	var ranges []PartitionRange
	for p, w := range wm {
		ranges = append(ranges, PartitionRange{Partition: p, Start: w.Start, Next: w.Start, End: w.Stable})
	}
	var out []*kgo.Record
	err := kafka.ReadRanges(t.Context(), clientConfig(c), topic, spans(ranges), func(r *kgo.Record) error {
		if !r.Attrs.IsControl() {
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", topic, err)
	}
	return out
}

// settledWatermarks lists topic's watermarks once no transaction is open on
// it (every last stable offset at its high watermark), or after wait.
func settledWatermarks(t testing.TB, c *testkafka.Cluster, topic string, wait time.Duration) map[int32]kafka.Watermark {
	t.Helper()
	adm := c.Admin(t)
	until := time.Now().Add(wait)
	for {
		wm, err := kafka.Watermarks(t.Context(), adm, topic)
		if err != nil {
			t.Fatal(err)
		}
		ends, err := adm.ListEndOffsets(t.Context(), topic)
		if err != nil {
			t.Fatal(err)
		}
		settled := true
		ends.Each(func(o kadm.ListedOffset) {
			if o.Err != nil || wm[o.Partition].Stable < o.Offset {
				settled = false
			}
		})
		if settled || time.Now().After(until) {
			return wm
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countUncommitted counts the data records of topic read_uncommitted: what
// the log holds, records of aborted and open transactions included.
func countUncommitted(t testing.TB, c *testkafka.Cluster, topic string) int {
	t.Helper()
	ends, err := c.Admin(t).ListEndOffsets(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	start := map[int32]kgo.Offset{}
	end := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		start[o.Partition] = kgo.NewOffset().AtStart()
		end[o.Partition] = o.Offset
	})
	cl := c.Client(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()), kgo.KeepControlRecords())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	next := map[int32]int64{}
	behind := func() bool {
		for p, e := range end {
			if next[p] < e {
				return true
			}
		}
		return false
	}
	n := 0
	for behind() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s uncommitted: %v", topic, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			next[r.Partition] = r.Offset + 1
			if !r.Attrs.IsControl() {
				n++
			}
		})
	}
	return n
}

// replayedRequests decodes the replayed requests of runID on topic, by
// replay id.
func replayedRequests(t testing.TB, c *testkafka.Cluster, topic, runID string) (map[schemas.CorrelationID]schemas.Request, int) {
	t.Helper()
	out := map[schemas.CorrelationID]schemas.Request{}
	total := 0
	for _, r := range readCommitted(t, c, topic) {
		req, err := schemas.DecodeRequest(r.Value)
		if err != nil {
			t.Fatalf("decode request at %d/%d: %v", r.Partition, r.Offset, err)
		}
		if req.ReplayRun == nil || *req.ReplayRun != runID {
			continue
		}
		total++
		out[req.CorrelationID] = req
	}
	return out, total
}

// decodeReplies decodes every committed reply on topic, by correlation id.
func decodeReplies(t testing.TB, c *testkafka.Cluster, topic string) map[schemas.CorrelationID][]schemas.Reply {
	t.Helper()
	out := map[schemas.CorrelationID][]schemas.Reply{}
	for _, r := range readCommitted(t, c, topic) {
		reply, err := schemas.DecodeReply(r.Value)
		if err != nil {
			t.Fatalf("decode reply: %v", err)
		}
		out[reply.CorrelationID] = append(out[reply.CorrelationID], reply)
	}
	return out
}

// waitFor polls cond every 20ms until it holds or timeout passes; it
// reports whether it held.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func mustBound(t testing.TB, s string) *Bound {
	t.Helper()
	b, err := ParseBound(s)
	if err != nil {
		t.Fatal(err)
	}
	return &b
}

func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
