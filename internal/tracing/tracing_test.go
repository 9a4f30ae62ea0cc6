package tracing

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// TestExtractHTTP: the gateway continues a caller's trace only from a
// valid W3C traceparent header; a malformed one is dropped (the pipeline
// starts a trace of its own).
func TestExtractHTTP(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"spec example", good, true},
		{"not sampled", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
		{"empty", "", false},
		{"short", good[:54], false},
		{"version ff", "ff" + good[2:], false},
		{"uppercase", strings.ToUpper(good), false},
		{"zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"zero span id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"not hex", "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/v1/routes/echo/requests", nil)
			if tc.in != "" {
				r.Header.Set(Header, tc.in)
			}
			if got := trace.SpanContextFromContext(ExtractHTTP(r)).IsValid(); got != tc.ok {
				t.Errorf("traceparent %q: a valid span context %v, want %v", tc.in, got, tc.ok)
			}
		})
	}
}

func header(r *kgo.Record) string {
	for _, h := range r.Headers {
		if h.Key == Header {
			return string(h.Value)
		}
	}
	return ""
}

// TestInjectExtract: Inject replaces the traceparent on a new header slice
// (records may share one), an invalid context removes it, Extract reads it.
func TestInjectExtract(t *testing.T) {
	r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: "sg-type", Value: []byte("task")}, {Key: Header, Value: []byte("garbage")}}}
	if trace.SpanContextFromContext(Extract(r)).IsValid() {
		t.Fatal("an invalid traceparent gave a valid context")
	}
	shared := r.Headers
	parent := &kgo.Record{Headers: []kgo.RecordHeader{{Key: Header, Value: []byte(good)}}}
	Inject(Extract(parent), r)
	if header(r) != good || len(r.Headers) != 2 || r.Headers[0].Key != "sg-type" {
		t.Errorf("headers after Inject: %v", r.Headers)
	}
	if string(shared[1].Value) != "garbage" {
		t.Error("Inject changed the header slice it was given")
	}
	Inject(context.Background(), r)
	if len(r.Headers) != 1 || header(r) != "" {
		t.Errorf("Inject of no span context left %v", r.Headers)
	}
}

// TestTracer: with a provider, a span is the child of the record's
// context under the same trace; without one (nil), the span records
// nothing and passes the parent's traceparent on unchanged.
func TestTracer(t *testing.T) {
	in := &kgo.Record{Headers: []kgo.RecordHeader{{Key: Header, Value: []byte(good)}}}
	rec := tracetest.NewSpanRecorder()
	ctx, span := Tracer(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))).Start(Extract(in), "process x")
	span.End()
	out := &kgo.Record{}
	Inject(ctx, out)
	if tp := header(out); tp[:36] != good[:36] || tp[36:52] == good[36:52] {
		t.Errorf("child traceparent %q of %q: want the trace id and a new span id", tp, good)
	}
	if ended := rec.Ended(); len(ended) != 1 || ended[0].Parent().SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("recorded %v", ended)
	}
	ctx, span = Tracer(nil).Start(Extract(in), "process x")
	span.End()
	Inject(ctx, out)
	if header(out) != good {
		t.Errorf("without a provider the traceparent became %q, want %q", header(out), good)
	}
}

// TestHooks: kotel's spans only for records with a traceparent, children
// of its span context, the header left as it was; a caller's span in the
// produce context is neither the parent nor ended.
func TestHooks(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	h := Hooks(tp)[0].(hooks)
	callerCtx, caller := tp.Tracer("caller").Start(context.Background(), "caller")

	traced := &kgo.Record{Topic: "tasks", Context: callerCtx, Headers: []kgo.RecordHeader{{Key: Header, Value: []byte(good)}}}
	plain := &kgo.Record{Topic: "state", Context: callerCtx}
	for _, r := range []*kgo.Record{traced, plain} {
		h.OnProduceRecordBuffered(r)
		h.OnProduceRecordUnbuffered(r, nil)
	}
	fetched := &kgo.Record{Topic: "tasks", Headers: []kgo.RecordHeader{{Key: Header, Value: []byte(good)}}}
	h.OnFetchRecordBuffered(fetched)
	h.OnFetchRecordUnbuffered(fetched, true)

	ended := rec.Ended()
	if len(ended) != 2 {
		t.Fatalf("%d spans ended, want the publish and receive spans of the traced records", len(ended))
	}
	for _, s := range ended {
		if s.Parent().SpanID().String() != "00f067aa0ba902b7" {
			t.Errorf("span %q has parent %s, want the record's", s.Name(), s.Parent().SpanID())
		}
	}
	if header(traced) != good {
		t.Errorf("kotel changed the traceparent to %q", header(traced))
	}
	if !caller.IsRecording() {
		t.Error("the hooks ended the caller's span")
	}
}
