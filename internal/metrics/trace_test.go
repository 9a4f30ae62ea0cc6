package metrics_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// TestTraceOfARequest: a request produced with a caller's traceparent
// comes back as one trace, recorded by the TracerProvider of each role
// (kafkaconfig.Role.TracerProvider, as a library user sets it): the
// scatter span is the caller's span's child, the four process spans and
// the aggregate span are the scatter span's children, the reply record
// carries the aggregate span's context, and kotel's publish and receive
// spans of the records are children of the role spans.
func TestTraceOfARequest(t *testing.T) {
	recs := map[string]*tracetest.SpanRecorder{}
	tps := map[string]trace.TracerProvider{}
	for _, role := range []string{"scatterer", "processor", "aggregator"} {
		recs[role] = tracetest.NewSpanRecorder()
		tps[role] = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recs[role]))
	}
	p := startPipeline(t, tps)
	p.run()
	topics := kafkaconfig.Topics{Prefix: p.cluster.Prefix}
	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	const traceID, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	v, err := schemas.EncodeRequest(schemas.Request{CorrelationID: "traced-1", Route: "fan", Payload: []byte(`{}`),
		ContentType: "application/json", Timeout: 10 * time.Second, SubmittedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	req := &kgo.Record{Topic: topics.Requests(), Key: []byte("traced-1"), Value: v,
		Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte(traceparent)}}}
	cl := p.cluster.Client(t, kgo.ConsumeTopics(topics.Replies()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err := cl.ProduceSync(t.Context(), req).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var reply *kgo.Record
	pctx, pcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer pcancel()
	for reply == nil && pctx.Err() == nil {
		cl.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			if string(r.Key) == "traced-1" {
				reply = r
			}
		})
	}
	if reply == nil {
		t.Fatal("no reply within 30s")
	}
	var replyTP string
	for _, h := range reply.Headers {
		if h.Key == "traceparent" {
			replyTP = string(h.Value)
		}
	}
	if len(replyTP) != 55 || replyTP[3:35] != traceID || replyTP[53:] != "01" {
		t.Fatalf("reply traceparent %q, want trace %s sampled", replyTP, traceID)
	}

	// The role spans end when their batch commits, the reply's just after
	// the reply can be read.
	ended := func(role, name string) []sdktrace.ReadOnlySpan {
		var out []sdktrace.ReadOnlySpan
		for _, s := range recs[role].Ended() {
			if s.Name() == name && s.SpanContext().TraceID().String() == traceID {
				out = append(out, s)
			}
		}
		return out
	}
	var scatter, process, aggregate []sdktrace.ReadOnlySpan
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		scatter, process, aggregate = ended("scatterer", "scatter fan"), ended("processor", "process fan"), ended("aggregator", "aggregate fan")
		if len(aggregate) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(scatter) != 1 || len(process) != 4 || len(aggregate) != 1 {
		t.Fatalf("spans of the trace: %d scatter, %d process, %d aggregate; want 1, 4, 1", len(scatter), len(process), len(aggregate))
	}
	sc := scatter[0].SpanContext()
	if got := scatter[0].Parent().SpanID().String(); got != callerSpan || !scatter[0].Parent().IsRemote() {
		t.Errorf("scatter span's parent %s, want the caller's span %s", got, callerSpan)
	}
	for _, s := range process {
		if s.Parent().SpanID() != sc.SpanID() {
			t.Errorf("process span's parent %s, want the scatter span %s", s.Parent().SpanID(), sc.SpanID())
		}
	}
	if a := aggregate[0]; a.Parent().SpanID() != sc.SpanID() || a.SpanContext().SpanID().String() != replyTP[36:52] {
		t.Errorf("aggregate span %s (parent %s), want the scatter span's child whose id the reply carries (%s)",
			a.SpanContext().SpanID(), a.Parent().SpanID(), replyTP)
	}
	// kotel: the scatterer's task publish spans are the scatter span's
	// children; the processors' task receive spans too (the task's
	// traceparent is the scatter span's).
	children := func(role, name string, parent trace.SpanID) int {
		n := 0
		for _, s := range recs[role].Ended() {
			if s.Name() == name && s.Parent().SpanID() == parent {
				n++
			}
		}
		return n
	}
	tasks := topics.Tasks("fan")
	if n := children("scatterer", tasks+" publish", sc.SpanID()); n != 4 {
		t.Errorf("%d task publish spans under the scatter span, want 4", n)
	}
	if n := children("processor", tasks+" receive", sc.SpanID()); n < 4 {
		t.Errorf("%d task receive spans under the scatter span, want 4 or more", n)
	}
}
