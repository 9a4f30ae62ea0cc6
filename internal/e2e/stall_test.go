package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

// One bad request must never stop the replies of others (issue #13): a
// reply topic deleted while its requests are in flight, records too large
// for Kafka at every hop, and requests that cannot be decoded. After each,
// 100 good requests are all answered in time.

// goodRequests sends n requests on the echo route and waits for every
// reply: COMPLETE, within each request's 10s timeout.
func goodRequests(t *testing.T, p *pipeline, n int) {
	t.Helper()
	pending := make([]*client.Pending, 0, n)
	for i := range n {
		pp, err := p.client.Submit(t.Context(), "echo", []byte(fmt.Sprintf(`"%d"`, i)), client.Options{Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, pp)
	}
	awaitEchoes(t, pending, 2)
}

// rawRequest encodes a request as a client in another language would.
func rawRequest(t testing.TB, r schemas.Request) []byte {
	t.Helper()
	if r.SubmittedAt.IsZero() {
		r.SubmittedAt = time.Now()
	}
	b, err := schemas.EncodeRequest(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dlqReasons counts the dead letters of topic by role and reason, once
// want of them have come (or 30s passed).
func dlqReasons(t testing.TB, c *testkafka.Cluster, topic string, want int) (map[string]int, []*kgo.Record) {
	t.Helper()
	recs := readAll(t, c, topic, want, 30*time.Second)
	got := map[string]int{}
	for _, r := range recs {
		got[kafka.Header(r, kafka.HeaderDLQRole)+"/"+kafka.Header(r, kafka.HeaderDLQReason)]++
	}
	return got, recs
}

func TestReplyTopicDeletedInFlight(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			c := testkafka.New(t)
			release := make(chan struct{})
			var held atomic.Int64
			p := startPipeline(t, c, stack.Config{
				Guarantee: g,
				Routes: table(t, `{"routes":[
					{"name":"echo","mode":"split","fanout":2,"timeout":"10s"},
					{"name":"held","mode":"split","fanout":2,"timeout":"30s","max_timeout":"1m"}]}`),
				Processors: []stack.ProcessorSpec{
					{Route: "echo", Handler: processor.Echo()},
					{Route: "held", Handler: processor.HandlerFunc(func(ctx context.Context, t schemas.Task) ([]byte, error) {
						held.Add(1)
						select {
						case <-release:
						case <-ctx.Done():
						}
						return t.Payload, nil
					}), Tune: func(pc *processor.Config) { pc.Concurrency, pc.Ordering = 16, processor.OrderNone }},
				},
			})
			gone := c.CreateTopic(t, "replies.gone", 1, nil) // under the replies topic, as reply-to must be
			raw := c.Client(t)
			const n = 5
			for i := range n {
				v := rawRequest(t, schemas.Request{CorrelationID: schemas.CorrelationID(fmt.Sprintf("gone-%d", i)), Route: "held",
					Payload: []byte(`"g"`), ReplyTo: gone})
				if err := raw.ProduceSync(t.Context(), &kgo.Record{Topic: p.topics.Requests(), Key: []byte(fmt.Sprintf("gone-%d", i)), Value: v}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, func() bool { return held.Load() == 2*n })
			if got := held.Load(); got != 2*n {
				t.Fatalf("held tasks: %d, want %d", got, 2*n)
			}
			if _, err := c.Admin(t).DeleteTopics(t.Context(), gone); err != nil {
				t.Fatalf("delete %s: %v", gone, err)
			}
			waitFor(t, func() bool {
				td, err := c.Admin(t).ListTopics(t.Context(), gone)
				return err == nil && td[gone].Err != nil
			})
			close(release)
			goodRequests(t, p, 100)
			got, _ := dlqReasons(t, c, p.topics.DLQ(), n)
			if got["aggregator/"+"unknown-reply-topic"] != n {
				t.Errorf("dead letters: %v, want %d aggregator/unknown-reply-topic", got, n)
			}
		})
	}
}

func TestUnknownReplyTopicRefused(t *testing.T) {
	c := testkafka.New(t)
	p := startPipeline(t, c, stack.Config{
		Routes:     table(t, `{"routes":[{"name":"echo","mode":"split","fanout":2,"timeout":"10s"}]}`),
		Processors: []stack.ProcessorSpec{{Route: "echo", Handler: processor.Echo()}},
	})
	raw := c.Client(t)
	v := rawRequest(t, schemas.Request{CorrelationID: "typo", Route: "echo", Payload: []byte(`"x"`), ReplyTo: p.topics.Replies() + ".typo"})
	if err := raw.ProduceSync(t.Context(), &kgo.Record{Topic: p.topics.Requests(), Key: []byte("typo"), Value: v}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	goodRequests(t, p, 100)
	replies := p.replies(t, 101, 0)
	if rs := replies["typo"]; len(rs) != 1 || rs[0].Status != schemas.ReplyFailed || !strings.Contains(rs[0].Error, "unknown-reply-topic") {
		t.Errorf("request typo: replies %+v, want one FAILED naming unknown-reply-topic on the default replies topic", rs)
	}
	if got, _ := dlqReasons(t, c, p.topics.DLQ(), 1); got["scatterer/unknown-reply-topic"] != 1 {
		t.Errorf("dead letters: %v, want scatterer/unknown-reply-topic", got)
	}
}

// TestOversizedRecords puts a record too large for Kafka in the path of
// every hop: an input record near the broker's limit whose dead letter
// cannot fit, a request whose task cannot, a result too large, and merged
// replies too large.
func TestOversizedRecords(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			c := testkafka.New(t)
			fill := func(n int) []byte { return []byte(`"` + strings.Repeat("a", n) + `"`) }
			p := startPipeline(t, c, stack.Config{
				Guarantee: g,
				Routes: table(t, `{"routes":[
					{"name":"echo","mode":"split","fanout":2,"timeout":"10s"},
					{"name":"big","mode":"split","fanout":2,"timeout":"10s"},
					{"name":"wide","mode":"split","fanout":16,"max_fanout":16,"timeout":"20s"},
					{"name":"many","mode":"split","split":"json-array","max_fanout":100000,"timeout":"10s"}]}`),
				Processors: []stack.ProcessorSpec{
					{Route: "echo", Handler: processor.Echo()},
					{Route: "big", Handler: processor.HandlerFunc(func(_ context.Context, t schemas.Task) ([]byte, error) {
						if t.PartID == "shard-0" {
							return fill(1_100_000), nil
						}
						return []byte(`"small"`), nil
					})},
					{Route: "wide", Handler: processor.HandlerFunc(func(context.Context, schemas.Task) ([]byte, error) {
						return fill(100_000), nil
					})},
				},
			})
			// The roles' own clients keep Kafka's default limit; this
			// producer writes what another client with a larger one may.
			raw := c.Client(t, kgo.ProducerBatchMaxBytes(4<<20))
			produce := func(topic, key string, value []byte) {
				t.Helper()
				if err := raw.ProduceSync(t.Context(), &kgo.Record{Topic: topic, Key: []byte(key), Value: value}).FirstErr(); err != nil {
					t.Fatalf("produce %d bytes to %s: %v", len(value), topic, err)
				}
			}
			huge := make([]byte, 1_010_000)
			for i := range huge {
				huge[i] = byte(i*7 + i/251) // not Avro, and not compressible to nothing
			}
			produce(p.topics.Requests(), "huge-request", huge)
			goodRequests(t, p, 100)
			produce(p.topics.Tasks("echo"), "shard-0", huge)
			goodRequests(t, p, 100)
			produce(p.topics.Requests(), "huge-task", rawRequest(t, schemas.Request{CorrelationID: "huge-task", Route: "echo",
				Payload: fill(1_000_000)}))
			goodRequests(t, p, 100)

			// 100,000 parts: every task fits, the manifest listing them does not.
			many := "[" + strings.TrimSuffix(strings.Repeat("0,", 100_000), ",") + "]"
			manyReply, err := p.client.Do(t.Context(), "many", []byte(many), client.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if manyReply.Status != schemas.ReplyFailed || !strings.Contains(manyReply.Error, "manifest-too-large") {
				t.Errorf("route many: %s %q, want FAILED naming manifest-too-large", manyReply.Status, manyReply.Error)
			}
			goodRequests(t, p, 100)

			bigReply, err := p.client.Do(t.Context(), "big", []byte(`"x"`), client.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if part, _ := bigReply.Part("shard-0"); part.Status != schemas.PartError || !strings.Contains(part.Error, processor.ReasonResultTooLarge) {
				t.Errorf("route big: part shard-0 %s %q, want ERROR naming %s", part.Status, part.Error, processor.ReasonResultTooLarge)
			}
			if part, _ := bigReply.Part("shard-1"); part.Status != schemas.PartOK {
				t.Errorf("route big: part shard-1 %s, want OK", part.Status)
			}
			goodRequests(t, p, 100)

			wide, err := p.client.Do(t.Context(), "wide", []byte(`"x"`), client.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if wide.Status != schemas.ReplyFailed || !strings.Contains(wide.Error, "reply-too-large") || len(wide.Payload) != 0 || len(wide.Parts) != 16 {
				t.Errorf("route wide: %s %q, %d payload bytes, %d parts; want FAILED naming reply-too-large, no payload, 16 parts",
					wide.Status, wide.Error, len(wide.Payload), len(wide.Parts))
			}
			for _, part := range wide.Parts {
				if part.Status != schemas.PartOK {
					t.Errorf("route wide: part %s %s, want OK (the parts keep their statuses)", part.PartID, part.Status)
				}
			}
			goodRequests(t, p, 100)

			replies := p.replies(t, 605, 0)
			for id, reason := range map[schemas.CorrelationID]string{"huge-request": "not-avro", "huge-task": "task-too-large"} {
				if rs := replies[id]; len(rs) != 1 || rs[0].Status != schemas.ReplyFailed || !strings.Contains(rs[0].Error, reason) {
					t.Errorf("request %s: replies %+v, want one FAILED naming %s", id, rs, reason)
				}
			}
			got, dls := dlqReasons(t, c, p.topics.DLQ(), 4)
			want := map[string]int{"scatterer/not-avro": 1, "processor/not-avro": 1, "scatterer/task-too-large": 1, "scatterer/manifest-too-large": 1}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("dead letters: %v, want %v", got, want)
			}
			for _, r := range dls {
				if len(r.Value) > 1_000_000 && kafka.Header(r, kafka.HeaderDLQTruncated) != "true" {
					t.Errorf("dead letter %s of %d bytes is not a stand-in", r.Key, len(r.Value))
				}
			}
			standIns := 0
			for _, r := range dls {
				if kafka.Header(r, kafka.HeaderDLQTruncated) != "true" {
					continue
				}
				standIns++
				if len(r.Value) != kafka.StandInBytes {
					t.Errorf("stand-in %s: %d value bytes, want %d", r.Key, len(r.Value), kafka.StandInBytes)
				}
				if kafka.Header(r, kafka.HeaderDLQReason) == "not-avro" && kafka.Header(r, kafka.HeaderDLQSize) != "1010000" {
					t.Errorf("stand-in %s: size header %q, want 1010000", r.Key, kafka.Header(r, kafka.HeaderDLQSize))
				}
			}
			if standIns != 3 {
				t.Errorf("stand-ins: %d, want 3 (the huge request, the huge task, the request of the task too large)", standIns)
			}
		})
	}
}
