package tracing

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestParse(t *testing.T) {
	const good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name, in string
		ok       bool
		sampled  bool
	}{
		{"spec example", good, true, true},
		{"not sampled", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true, false},
		{"future version with more fields", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", true, true},
		{"empty", "", false, false},
		{"short", good[:54], false, false},
		{"version 00 too long", good + "-x", false, false},
		{"version ff", "ff" + good[2:], false, false},
		{"uppercase", strings.ToUpper(good), false, false},
		{"zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false, false},
		{"zero span id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false, false},
		{"bad separator", "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false},
		{"not hex", "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, err := Parse(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("Parse(%q) error %v, want ok=%v", tt.in, err, tt.ok)
			}
			if !tt.ok {
				if sc.Valid() {
					t.Errorf("invalid input gave a valid context %v", sc)
				}
				return
			}
			if sc.Sampled != tt.sampled || sc.TraceID.String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sc.SpanID.String() != "00f067aa0ba902b7" {
				t.Errorf("Parse(%q) = %+v", tt.in, sc)
			}
			if tt.in == good && sc.String() != good {
				t.Errorf("String() = %q, want %q", sc.String(), good)
			}
		})
	}
}

func TestRecordHeaders(t *testing.T) {
	r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: "sg-type", Value: []byte("task")}, {Key: Header, Value: []byte("garbage")}}}
	if FromRecord(r).Valid() {
		t.Fatal("an invalid traceparent gave a valid context")
	}
	sc := New(nil, "t").Start(SpanContext{}, "root", Internal, time.Now()).Context()
	shared := r.Headers
	Inject(r, sc)
	if got := FromRecord(r); got != sc {
		t.Errorf("FromRecord after Inject = %v, want %v", got, sc)
	}
	if len(r.Headers) != 2 || r.Headers[0].Key != "sg-type" {
		t.Errorf("headers after Inject: %v", r.Headers)
	}
	if string(shared[1].Value) != "garbage" {
		t.Error("Inject changed the header slice it was given")
	}
	Inject(r, SpanContext{})
	if len(r.Headers) != 1 || FromRecord(r).Valid() {
		t.Errorf("Inject of an invalid context left %v", r.Headers)
	}
}

func TestStartChildAndRoot(t *testing.T) {
	tr := New(nil, "svc")
	root := tr.Start(SpanContext{}, "root", Consumer, time.Now())
	if !root.Context().Valid() || root.Context().Sampled {
		t.Errorf("root without exporter: %+v, want valid and not sampled", root.Context())
	}
	child := tr.Start(root.Context(), "child", Consumer, time.Now())
	if child.Context().TraceID != root.Context().TraceID || child.Context().SpanID == root.Context().SpanID || child.parent != root.Context().SpanID {
		t.Errorf("child %+v (parent %s) of %+v", child.Context(), child.parent, root.Context())
	}
	var nilTracer *Tracer
	if s := nilTracer.Start(root.Context(), "x", Internal, time.Now()); s.Context().TraceID != root.Context().TraceID {
		t.Error("a nil tracer does not carry the trace")
	} else {
		s.End(time.Now()) // must not panic
	}
}

// TestExporter: spans of two services reach an OTLP/HTTP endpoint as JSON
// with hex ids, parent ids, string timestamps and attributes.
func TestExporter(t *testing.T) {
	var (
		mu   sync.Mutex
		got  []otlpRequest
		path string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req otlpRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got, path = append(got, req), r.URL.Path
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	exp, err := NewExporter(ExporterConfig{Endpoint: srv.URL, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1700000000, 5)
	a := New(exp, "scattergather-scatterer").Start(SpanContext{}, "scatter search", Consumer, start, Attr{"correlation_id", "c1"}, Attr{"parts", 8})
	b := New(exp, "scattergather-processor").Start(a.Context(), "process search", Consumer, start)
	b.SetError()
	a.End(start.Add(time.Millisecond))
	b.End(start.Add(2 * time.Millisecond))
	exp.Flush(t.Context())

	if exp.Exported() != 2 || exp.Dropped() != 0 {
		t.Fatalf("exported %d dropped %d", exp.Exported(), exp.Dropped())
	}
	if path != "/v1/traces" || len(got) != 1 || len(got[0].ResourceSpans) != 2 {
		t.Fatalf("path %q, requests %+v", path, got)
	}
	rs := got[0].ResourceSpans
	if v := rs[0].Resource.Attributes[0].Value.StringValue; v == nil || *v != "scattergather-scatterer" {
		t.Errorf("service.name of the first resource: %+v", rs[0].Resource)
	}
	sa, sb := rs[0].ScopeSpans[0].Spans[0], rs[1].ScopeSpans[0].Spans[0]
	if sa.TraceID != a.Context().TraceID.String() || sa.SpanID != a.Context().SpanID.String() || sa.ParentSpanID != "" {
		t.Errorf("root span %+v", sa)
	}
	if sb.TraceID != sa.TraceID || sb.ParentSpanID != sa.SpanID || sb.Status.Code != 2 {
		t.Errorf("child span %+v", sb)
	}
	if sa.StartTimeUnixNano != "1700000000000000005" || sa.EndTimeUnixNano != "1700000000001000005" || sa.Kind != int(Consumer) {
		t.Errorf("times/kind %+v", sa)
	}
	if len(sa.Attributes) != 2 || *sa.Attributes[1].Value.IntValue != "8" {
		t.Errorf("attributes %+v", sa.Attributes)
	}
}

func TestExporterFailureDropsAndFullQueue(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "collector down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	exp, err := NewExporter(ExporterConfig{Endpoint: srv.URL + "/v1/traces", MaxQueue: 2})
	if err != nil {
		t.Fatal(err)
	}
	tr := New(exp, "svc")
	for range 3 {
		tr.Start(SpanContext{}, "s", Internal, time.Now()).End(time.Now())
	}
	if exp.Dropped() != 1 {
		t.Fatalf("full queue: dropped %d, want 1", exp.Dropped())
	}
	exp.Flush(t.Context())
	if exp.Dropped() != 3 || exp.Exported() != 0 {
		t.Errorf("after a failed export: dropped %d exported %d", exp.Dropped(), exp.Exported())
	}
}

func TestExporterConfig(t *testing.T) {
	for _, bad := range []string{"", "localhost:4318", "ftp://x", "http://"} {
		if _, err := NewExporter(ExporterConfig{Endpoint: bad}); err == nil {
			t.Errorf("endpoint %q accepted", bad)
		}
	}
	exp, err := NewExporter(ExporterConfig{Endpoint: "http://collector:4318/"})
	if err != nil || exp.cfg.Endpoint != "http://collector:4318/v1/traces" {
		t.Errorf("endpoint %q, %v", exp.cfg.Endpoint, err)
	}
}
