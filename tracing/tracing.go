// Package tracing carries W3C trace context (the traceparent header) across
// the pipeline's Kafka records, so that one request's fan-out is one trace:
//
//	request ──> scatter span ──> task ──> process span (one per part) ──> result
//	                        └──> manifest ──> aggregate span ──> reply
//
// Each hop reads the traceparent header of the record it consumed, starts a
// child span (a new span id under the same trace id), and writes the child's
// traceparent on every record it produces. A record without a valid
// traceparent starts a new trace. Without an exporter, spans only carry ids;
// with one ([NewExporter], OTLP over HTTP with JSON encoding), ended spans
// are sent to an OpenTelemetry collector, Jaeger, Tempo or any OTLP/HTTP
// endpoint.
//
// This package implements the traceparent format
// (https://www.w3.org/TR/trace-context/) and the OTLP/HTTP JSON encoding
// itself instead of pulling in the OpenTelemetry SDK: the pipeline needs
// parse, format, child ids and a batch exporter, about 400 lines, not the
// SDK's dependency tree. tracestate is not carried.
//
// Usage:
//
//	exp, err := tracing.NewExporter(tracing.ExporterConfig{Endpoint: "http://127.0.0.1:4318"})
//	go exp.Run(ctx) // owned and waited for by the caller
//	tr := tracing.New(exp, "scattergather-processor")
//	span := tr.Start(tracing.FromRecord(in), "process search", tracing.Consumer, time.Now())
//	tracing.Inject(out, span.Context())
//	span.End(time.Now())
package tracing

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Header is the record header that carries the trace context.
const Header = "traceparent"

// TraceID identifies a trace: 16 bytes, not all zero.
type TraceID [16]byte

// SpanID identifies a span: 8 bytes, not all zero.
type SpanID [8]byte

// IsZero reports whether id is all zeros (invalid).
func (id TraceID) IsZero() bool { return id == TraceID{} }

// IsZero reports whether id is all zeros (invalid).
func (id SpanID) IsZero() bool { return id == SpanID{} }

func (id TraceID) String() string { return hex.EncodeToString(id[:]) }
func (id SpanID) String() string  { return hex.EncodeToString(id[:]) }

// SpanContext is what a traceparent carries.
type SpanContext struct {
	TraceID TraceID
	SpanID  SpanID
	// Sampled is the sampled flag: the caller may have recorded its span,
	// and spans under it should be recorded too.
	Sampled bool
}

// Valid reports whether sc has a trace id and a span id.
func (sc SpanContext) Valid() bool { return !sc.TraceID.IsZero() && !sc.SpanID.IsZero() }

// String formats sc as a version-00 traceparent:
// 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>.
func (sc SpanContext) String() string {
	flags := "00"
	if sc.Sampled {
		flags = "01"
	}
	return "00-" + sc.TraceID.String() + "-" + sc.SpanID.String() + "-" + flags
}

// Parse parses a traceparent header value. It accepts version 00 and, as
// the specification asks, later versions whose first four fields have the
// version-00 shape.
func Parse(s string) (SpanContext, error) {
	var sc SpanContext
	if len(s) < 55 {
		return sc, fmt.Errorf("traceparent %q: %d characters, want 55", s, len(s))
	}
	if s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return sc, fmt.Errorf("traceparent %q: want version-traceid-spanid-flags", s)
	}
	var version [1]byte
	if err := decodeHex(version[:], s[0:2]); err != nil {
		return sc, fmt.Errorf("traceparent %q: version: %w", s, err)
	}
	switch {
	case version[0] == 0xff:
		return sc, fmt.Errorf("traceparent %q: version ff is invalid", s)
	case version[0] == 0 && len(s) != 55:
		return sc, fmt.Errorf("traceparent %q: version 00 has 55 characters, not %d", s, len(s))
	case version[0] != 0 && len(s) > 55 && s[55] != '-':
		return sc, fmt.Errorf("traceparent %q: unknown trailing data", s)
	}
	if err := decodeHex(sc.TraceID[:], s[3:35]); err != nil {
		return sc, fmt.Errorf("traceparent %q: trace id: %w", s, err)
	}
	if err := decodeHex(sc.SpanID[:], s[36:52]); err != nil {
		return sc, fmt.Errorf("traceparent %q: span id: %w", s, err)
	}
	var flags [1]byte
	if err := decodeHex(flags[:], s[53:55]); err != nil {
		return sc, fmt.Errorf("traceparent %q: flags: %w", s, err)
	}
	if sc.TraceID.IsZero() || sc.SpanID.IsZero() {
		return SpanContext{}, fmt.Errorf("traceparent %q: all-zero trace or span id", s)
	}
	sc.Sampled = flags[0]&1 == 1
	return sc, nil
}

// decodeHex decodes lowercase hex only, as traceparent requires.
func decodeHex(dst []byte, s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return errors.New("not lowercase hex")
		}
	}
	_, err := hex.Decode(dst, []byte(s))
	return err
}

// FromRecord returns the span context of r's last traceparent header, or the
// zero SpanContext when it has none or an invalid one.
func FromRecord(r *kgo.Record) SpanContext {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == Header {
			sc, err := Parse(string(r.Headers[i].Value))
			if err != nil {
				return SpanContext{}
			}
			return sc
		}
	}
	return SpanContext{}
}

// Inject sets r's traceparent header to sc, replacing any it has. An
// invalid sc removes it. r gets a new header slice: records may share one.
func Inject(r *kgo.Record, sc SpanContext) {
	kept := make([]kgo.RecordHeader, 0, len(r.Headers)+1)
	for _, h := range r.Headers {
		if h.Key != Header {
			kept = append(kept, h)
		}
	}
	r.Headers = kept
	if sc.Valid() {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: Header, Value: []byte(sc.String())})
	}
}

// Kind is the OTLP span kind.
type Kind int

// Span kinds, numbered as in OTLP.
const (
	Internal Kind = 1
	Server   Kind = 2
	Client   Kind = 3
	Producer Kind = 4
	Consumer Kind = 5
)

// Attr is a span attribute; Value is a string, an int, an int64 or a bool.
type Attr struct {
	Key   string
	Value any
}

// Tracer starts spans for one service. A nil *Tracer, or one without an
// exporter, still makes child span contexts, so the trace is carried even
// when nothing is exported. Safe for concurrent use.
type Tracer struct {
	exp     *Exporter
	service string
}

// New returns a tracer whose sampled spans go to exp (nil: none) under the
// OTLP resource attribute service.name = service.
func New(exp *Exporter, service string) *Tracer {
	return &Tracer{exp: exp, service: service}
}

// Span is a started span; End it once.
type Span struct {
	tracer  *Tracer
	ctx     SpanContext
	parent  SpanID
	name    string
	kind    Kind
	start   time.Time
	end     time.Time
	attrs   []Attr
	isError bool
}

// Start starts a span named name at start: a child of parent when parent is
// valid, else the root of a new trace (sampled when t exports).
func (t *Tracer) Start(parent SpanContext, name string, kind Kind, start time.Time, attrs ...Attr) *Span {
	s := &Span{tracer: t, name: name, kind: kind, start: start, attrs: attrs}
	if parent.Valid() {
		s.ctx.TraceID, s.parent, s.ctx.Sampled = parent.TraceID, parent.SpanID, parent.Sampled
	} else {
		s.ctx.TraceID = newTraceID()
		s.ctx.Sampled = t != nil && t.exp != nil
	}
	s.ctx.SpanID = newSpanID()
	return s
}

// Context returns the span's context, to Inject into the records it writes.
func (s *Span) Context() SpanContext { return s.ctx }

// SetAttr adds an attribute.
func (s *Span) SetAttr(key string, value any) { s.attrs = append(s.attrs, Attr{key, value}) }

// SetError marks the span's status as an error.
func (s *Span) SetError() { s.isError = true }

// End ends the span at end and, when it is sampled and its tracer exports,
// queues it for export.
func (s *Span) End(end time.Time) {
	s.end = end
	if s.tracer != nil && s.tracer.exp != nil && s.ctx.Sampled {
		s.tracer.exp.enqueue(s)
	}
}

func newTraceID() TraceID {
	var id TraceID
	for id.IsZero() {
		putUint64(id[:8], rand.Uint64())
		putUint64(id[8:], rand.Uint64())
	}
	return id
}

func newSpanID() SpanID {
	var id SpanID
	for id.IsZero() {
		putUint64(id[:], rand.Uint64())
	}
	return id
}

func putUint64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}
