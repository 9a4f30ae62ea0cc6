package metrics_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
	"github.com/scattergather/scattergather/tracing"
)

// span is what the test collector keeps of an exported span.
type span struct {
	Service, TraceID, SpanID, ParentSpanID, Name string
}

// collector is an OTLP/HTTP JSON endpoint that keeps the spans it gets.
func collector(t *testing.T) (string, func() []span) {
	var (
		mu    sync.Mutex
		spans []span
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ResourceSpans []struct {
				Resource struct {
					Attributes []struct {
						Key   string
						Value struct{ StringValue string }
					}
				}
				ScopeSpans []struct {
					Spans []struct{ TraceID, SpanID, ParentSpanID, Name string }
				}
			}
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || r.URL.Path != "/v1/traces" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rs := range req.ResourceSpans {
			service := rs.Resource.Attributes[0].Value.StringValue
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					spans = append(spans, span{service, s.TraceID, s.SpanID, s.ParentSpanID, s.Name})
				}
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []span {
		mu.Lock()
		defer mu.Unlock()
		return append([]span(nil), spans...)
	}
}

// TestTraceOfARequest: a request produced with a traceparent comes back as
// one trace: the scatter span is the request span's child, the four
// process spans and the aggregate span are the scatter span's children, and
// the reply record carries the aggregate span's context.
func TestTraceOfARequest(t *testing.T) {
	url, spans := collector(t)
	exp, err := tracing.NewExporter(tracing.ExporterConfig{Endpoint: url, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan struct{})
	go func() { defer close(done); _ = exp.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	p := startPipeline(t, exp)
	p.run()
	topics := kafkaconfig.Topics{Prefix: p.cluster.Prefix}
	parent, err := tracing.Parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if err != nil {
		t.Fatal(err)
	}
	v, err := schemas.EncodeRequest(schemas.Request{CorrelationID: "traced-1", Route: "fan", Payload: []byte(`{}`),
		ContentType: "application/json", Timeout: 10 * time.Second, SubmittedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	req := &kgo.Record{Topic: topics.Requests(), Key: []byte("traced-1"), Value: v}
	tracing.Inject(req, parent)
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
	rsc := tracing.FromRecord(reply)
	if rsc.TraceID != parent.TraceID || !rsc.Sampled {
		t.Fatalf("reply traceparent %v, want trace %s sampled", rsc, parent.TraceID)
	}

	// Every span of the request reaches the collector.
	var got []span
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = nil
		for _, s := range spans() {
			if s.TraceID == parent.TraceID.String() {
				got = append(got, s)
			}
		}
		if len(got) >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var scatter, aggregate *span
	var process []span
	for i, s := range got {
		switch s.Name {
		case "scatter fan":
			scatter = &got[i]
		case "aggregate fan":
			aggregate = &got[i]
		case "process fan":
			process = append(process, s)
		}
	}
	if scatter == nil || aggregate == nil || len(process) != 4 || len(got) != 6 {
		t.Fatalf("spans of the trace: %+v; want scatter, 4 process and aggregate", got)
	}
	if scatter.ParentSpanID != parent.SpanID.String() || scatter.Service != "scattergather-scatterer" {
		t.Errorf("scatter span %+v, want the child of the request's span %s", scatter, parent.SpanID)
	}
	for _, s := range process {
		if s.ParentSpanID != scatter.SpanID || s.Service != "scattergather-processor" {
			t.Errorf("process span %+v, want a child of the scatter span %s", s, scatter.SpanID)
		}
	}
	if aggregate.ParentSpanID != scatter.SpanID || aggregate.SpanID != rsc.SpanID.String() {
		t.Errorf("aggregate span %+v, want the scatter span's child whose id the reply carries (%s)", aggregate, rsc.SpanID)
	}
}
