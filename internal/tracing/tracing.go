// Package tracing carries W3C trace context (the traceparent header) across
// the pipeline's Kafka records with the OpenTelemetry API, so that one
// request's fan-out is one trace:
//
//	request ──> scatter span ──> task ──> process span (one per part) ──> result
//	                        └──> manifest ──> aggregate span ──> reply
//
// Each hop extracts the trace context of the record it consumed
// ([Extract]), starts its span as a child, and injects the span's context
// into every record it produces ([Inject]). A record without a valid
// traceparent starts a new trace. The roles take a trace.TracerProvider
// (kafkaconfig.Role.TracerProvider); without one ([Tracer] of nil) they
// start no spans and pass the consumed traceparent on unchanged.
//
// [Hooks] adds franz-go's kotel spans (publish, receive) under the same
// trace, as children of the roles' spans: see its comment for why the
// headers stay ours.
//
// Usage:
//
//	tr := tracing.Tracer(cfg.TracerProvider)
//	ctx, span := tr.Start(tracing.Extract(in), "process search", trace.WithSpanKind(trace.SpanKindConsumer))
//	tracing.Inject(ctx, out)
//	span.End()
package tracing

import (
	"context"
	"net/http"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Header is the record header that carries the trace context; tracestate,
// when a caller sets one, travels beside it.
const Header = "traceparent"

// ScopeName is the instrumentation scope of the roles' spans.
const ScopeName = "github.com/scattergather/scattergather"

// propagator reads and writes the W3C headers. It is a value without
// state: the roles never use the OpenTelemetry globals.
var propagator = propagation.TraceContext{}

// Tracer returns the roles' tracer of tp; nil tp gives a tracer whose spans
// record nothing and carry their parent's span context unchanged.
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer(ScopeName)
}

// Extract returns a context holding the remote span context of r's
// traceparent (and tracestate) header; without a valid one, a context
// without a span, so that a span started from it is a root.
func Extract(r *kgo.Record) context.Context {
	return propagator.Extract(context.Background(), kotel.NewRecordCarrier(r))
}

// Inject sets r's traceparent (and tracestate) header to the span context
// of ctx, replacing any it has; an invalid span context removes them. r
// gets a new header slice: records may share one.
func Inject(ctx context.Context, r *kgo.Record) {
	kept := make([]kgo.RecordHeader, 0, len(r.Headers)+1)
	for _, h := range r.Headers {
		if h.Key != Header && h.Key != "tracestate" {
			kept = append(kept, h)
		}
	}
	r.Headers = kept
	propagator.Inject(ctx, kotel.NewRecordCarrier(r))
}

// ExtractHTTP returns a context holding the remote span context of r's
// traceparent (and tracestate) header, as Extract does for a record.
func ExtractHTTP(r *http.Request) context.Context {
	return propagator.Extract(context.Background(), propagation.HeaderCarrier(r.Header))
}

// ContextWith returns a context whose span context is sc: the parent of a
// span started from it.
func ContextWith(sc trace.SpanContext) context.Context {
	return trace.ContextWithRemoteSpanContext(context.Background(), sc)
}

// Hooks returns kgo hooks that give the records of a request's trace
// franz-go's kotel spans, recorded by tp: a "<topic> publish" span under
// the role's span for each record produced, a "<topic> receive" span
// under the producing role's span for each record fetched. Records
// without a traceparent (state, changelog, hedges of no trace) get none,
// so that they do not each make a trace of their own. nil tp: no hooks.
//
// kotel injects its publish span's context into the headers it is
// given; here it is given an extract-only propagator, and the roles'
// spans stay the parents of the next hop's spans (Inject writes them):
// the trace keeps the shape the package doc draws, with the client spans
// as children beside it.
func Hooks(tp trace.TracerProvider) []kgo.Hook {
	if tp == nil {
		return nil
	}
	return []kgo.Hook{hooks{kotel.NewTracer(kotel.TracerProvider(tp), kotel.TracerPropagator(extractOnly{}))}}
}

// hooks calls kotel's tracer for the records that carry a traceparent.
type hooks struct{ t *kotel.Tracer }

var (
	_ kgo.HookProduceRecordBuffered   = hooks{}
	_ kgo.HookProduceRecordUnbuffered = hooks{}
	_ kgo.HookFetchRecordBuffered     = hooks{}
	_ kgo.HookFetchRecordUnbuffered   = hooks{}
)

func hasTrace(r *kgo.Record) bool {
	for _, h := range r.Headers {
		if h.Key == Header {
			return true
		}
	}
	return false
}

// OnProduceRecordBuffered starts the publish span as a child of the span
// context in r's traceparent, not of any span in r.Context (Produce's
// context, whose cancellation r keeps).
func (h hooks) OnProduceRecordBuffered(r *kgo.Record) {
	if !hasTrace(r) {
		return
	}
	ctx := r.Context
	if ctx == nil {
		ctx = context.Background()
	}
	r.Context = propagator.Extract(ctx, kotel.NewRecordCarrier(r))
	h.t.OnProduceRecordBuffered(r)
}

// The Unbuffered hooks end the span in r.Context: only a span the
// Buffered hook started, never one of the caller's context. The headers
// that decide are the same at both ends.

func (h hooks) OnProduceRecordUnbuffered(r *kgo.Record, err error) {
	if hasTrace(r) {
		h.t.OnProduceRecordUnbuffered(r, err)
	}
}

func (h hooks) OnFetchRecordBuffered(r *kgo.Record) {
	if hasTrace(r) {
		h.t.OnFetchRecordBuffered(r)
	}
}

func (h hooks) OnFetchRecordUnbuffered(r *kgo.Record, polled bool) {
	if hasTrace(r) {
		h.t.OnFetchRecordUnbuffered(r, polled)
	}
}

// extractOnly is the W3C propagator without Inject (see Hooks).
type extractOnly struct{}

func (extractOnly) Inject(context.Context, propagation.TextMapCarrier) {}
func (extractOnly) Extract(ctx context.Context, c propagation.TextMapCarrier) context.Context {
	return propagator.Extract(ctx, c)
}
func (extractOnly) Fields() []string { return propagator.Fields() }
