package e2e

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// TestPoisonRecords interleaves every kind of bad record into requests,
// tasks and results with 1,000 good requests: every good request
// completes, every bad record is in the DLQ with the right reason and
// role, rejected requests that carry a correlation id are answered FAILED
// naming the reason, and no role stops.
func TestPoisonRecords(t *testing.T) {
	c := testkafka.New(t)
	p := startPipeline(t, c, stack.Config{
		Routes:        table(t, `{"routes":[{"name":"echo","mode":"split","fanout":4,"max_fanout":8,"timeout":"30s","max_timeout":"1m"}]}`),
		Processors:    []stack.ProcessorSpec{{Route: "echo", Handler: processor.Echo(), Instances: 2}},
		TuneScatterer: func(sc *scatterer.Config) { sc.MaxPayloadBytes = 4096 },
	})
	raw := c.Client(t)
	now := time.Now()
	produce := func(topic, key string, value []byte) {
		t.Helper()
		if err := raw.ProduceSync(t.Context(), &kgo.Record{Topic: topic, Key: []byte(key), Value: value}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	request := func(id, route string, mod func(*schemas.Request)) []byte {
		r := schemas.Request{CorrelationID: schemas.CorrelationID(id), Route: schemas.Route(route), Payload: []byte(`"x"`), SubmittedAt: now}
		if mod != nil {
			mod(&r)
		}
		b, err := schemas.EncodeRequest(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	valid := request("v", "echo", nil)
	unknownFP := append([]byte{}, valid...)
	binary.LittleEndian.PutUint64(unknownFP[2:10], 0x0123456789abcdef)
	task, _ := schemas.EncodeTask(schemas.Task{CorrelationID: "t", PartID: "shard-0", PartCount: 1, Route: "echo", Deadline: now.Add(time.Minute), SubmittedAt: now})

	type bad struct {
		topic, key string
		value      []byte
		role       string
		reason     string
		failedID   string // the correlation id answered FAILED, if any
	}
	fanout := func(n int) *int { return &n }
	bads := []bad{
		{p.topics.Requests(), "g1", []byte("\x00\x01garbage"), "scatterer", "not-avro", "g1"},
		{p.topics.Requests(), "g2", unknownFP, "scatterer", "unknown-schema", "g2"},
		{p.topics.Requests(), "g3", valid[:len(valid)-3], "scatterer", "malformed", "g3"},
		{p.topics.Requests(), "g4", task, "scatterer", "wrong-schema", "g4"},
		{p.topics.Requests(), "big", request("big", "echo", func(r *schemas.Request) { r.Payload = make([]byte, 5000) }), "scatterer", "payload-too-large", "big"},
		{p.topics.Requests(), "route", request("route", "nope", nil), "scatterer", "unknown-route", "route"},
		{p.topics.Requests(), "f0", request("f0", "echo", func(r *schemas.Request) { r.Fanout = fanout(0) }), "scatterer", "invalid-fanout", "f0"},
		{p.topics.Requests(), "f9", request("f9", "echo", func(r *schemas.Request) { r.Fanout = fanout(9) }), "scatterer", "invalid-fanout", "f9"},
		{p.topics.Requests(), "tneg", request("tneg", "echo", func(r *schemas.Request) { r.Timeout = -time.Second }), "scatterer", "invalid-timeout", "tneg"},
		{p.topics.Requests(), "tmax", request("tmax", "echo", func(r *schemas.Request) { r.Timeout = time.Hour }), "scatterer", "invalid-timeout", "tmax"},
		{p.topics.Tasks("echo"), "shard-0", []byte("not a task"), "processor", "not-avro", ""},
		{p.topics.Tasks("echo"), "shard-1", task[:len(task)/2], "processor", "malformed", ""},
		{p.topics.Results(), "r1", []byte{0xC3, 0x01, 1, 2, 3}, "aggregator", "not-avro", ""},
		{p.topics.Results(), "r2", valid, "aggregator", "wrong-schema", ""},
	}
	// A result for a part its manifest does not list needs the manifest
	// first: request "up" is a good one, then a result for part "shard-9".
	up, err := p.client.Submit(t.Context(), "echo", []byte(`"up"`), client.Options{Timeout: 30 * time.Second, CorrelationID: "up"})
	if err != nil {
		t.Fatal(err)
	}
	upReply, err := up.Await(t.Context())
	if err != nil || upReply.Status != schemas.ReplyComplete {
		t.Fatalf("request up: %v %v", upReply.Status, err)
	}
	// After completion a stray part would only be "late"; send the unknown
	// part for a request whose manifest is open instead.
	openMF, _ := schemas.EncodeManifest(schemas.Manifest{CorrelationID: "open", Route: "echo", Parts: []schemas.PartID{"shard-0"},
		Deadline: now.Add(60 * time.Second), Policy: "all", SubmittedAt: now})
	stray, _ := schemas.EncodeResult(schemas.Result{CorrelationID: "open", PartID: "shard-9", Route: "echo", Status: schemas.ResultOK,
		Attempt: 1, Tries: 1, StartedAt: now, FinishedAt: now, Deadline: now.Add(60 * time.Second)})
	produce(p.topics.Results(), "open", openMF)
	bads = append(bads, bad{p.topics.Results(), "open", stray, "aggregator", "unknown-part", ""})

	const n = 1000
	pending := make([]*client.Pending, 0, n)
	for i := range n {
		if i%(n/len(bads)) == 0 && i/(n/len(bads)) < len(bads) {
			b := bads[i/(n/len(bads))]
			produce(b.topic, b.key, b.value)
		}
		pp, err := p.client.Submit(t.Context(), "echo", []byte(fmt.Sprintf(`"%d"`, i)), client.Options{Timeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, pp)
	}
	awaitEchoes(t, pending, 4)

	dlq := readAll(t, c, p.topics.DLQ(), len(bads), 30*time.Second)
	type key struct{ role, reason string }
	got := map[key]int{}
	for _, r := range dlq {
		got[key{kafka.Header(r, kafka.HeaderDLQRole), kafka.Header(r, kafka.HeaderDLQReason)}]++
		for _, h := range []string{kafka.HeaderDLQTopic, kafka.HeaderDLQPartition, kafka.HeaderDLQOffset, kafka.HeaderDLQError} {
			if kafka.Header(r, h) == "" {
				t.Errorf("dead letter %q lacks header %s", r.Key, h)
			}
		}
	}
	want := map[key]int{}
	for _, b := range bads {
		want[key{b.role, b.reason}]++
	}
	if fmt.Sprint(sorted(got)) != fmt.Sprint(sorted(want)) {
		t.Errorf("dead letters by role/reason:\n got %v\nwant %v", sorted(got), sorted(want))
	}

	replies := p.replies(t, n+1+11, time.Second)
	for _, b := range bads {
		if b.failedID == "" {
			continue
		}
		rs := replies[schemas.CorrelationID(b.failedID)]
		if len(rs) != 1 || rs[0].Status != schemas.ReplyFailed || !strings.Contains(rs[0].Error, b.reason) {
			t.Errorf("request %s: replies %+v, want one FAILED naming %s", b.failedID, rs, b.reason)
		}
	}
}

func sorted[K comparable](m map[K]int) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, fmt.Sprintf("%v=%d", k, v))
	}
	sort.Strings(out)
	return out
}
