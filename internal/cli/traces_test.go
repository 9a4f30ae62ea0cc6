package cli

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// otlpSpan is what the receiver keeps of a span: the span and its resource's
// attributes (string values).
type otlpSpan struct {
	span     *tracepb.Span
	resource map[string]string
}

// otlpReceiver is an in-process OTLP/HTTP trace receiver (protobuf, gzip or
// not) on 127.0.0.1:0; it returns its base URL and the spans it got.
func otlpReceiver(t *testing.T) (string, func() []otlpSpan) {
	t.Helper()
	var (
		mu    sync.Mutex
		spans []otlpSpan
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := io.Reader(r.Body)
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		var req coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(b, &req)
		}
		if err != nil || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("OTLP receiver: %s %s (%s): %v", r.Method, r.URL.Path, r.Header.Get("Content-Type"), err)
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, rs := range req.GetResourceSpans() {
			res := map[string]string{}
			for _, kv := range rs.GetResource().GetAttributes() {
				res[kv.GetKey()] = kv.GetValue().GetStringValue()
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					spans = append(spans, otlpSpan{span: s, resource: res})
				}
			}
		}
		mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []otlpSpan {
		mu.Lock()
		defer mu.Unlock()
		return append([]otlpSpan(nil), spans...)
	}
}

// startRole runs a role command as a user would and waits for its /readyz;
// stop cancels it and waits for it to exit (spans flushed), once.
func startRole(t *testing.T, args ...string) (stop func()) {
	t.Helper()
	addr := freeAddr(t)
	args = append(args, "--metrics-addr", addr, "--log-level", "warn", "--kafka-log-level", "none")
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan int, 1)
	var errOut lockedBuffer
	go func() { done <- Main(ctx, args, Commands(), io.Discard, &errOut) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case code := <-done:
				if code != 0 {
					t.Errorf("%s exited %d: %s", args[0], code, errOut.String())
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s did not stop within 30s of its context", args[0])
			}
		})
	}
	t.Cleanup(stop)
	waitReadyz(t, addr, &errOut)
	return stop
}

// TestTracesToAnOTLPReceiver runs a scatterer, a processor and an aggregator
// as separate commands, configured by the standard OTEL_* variables only,
// sends one request through them, stops them, and reads what an OTLP/HTTP
// receiver got: one trace with the scatter span at its root, the four
// process spans and the aggregate span its children, kotel's publish spans
// under the role spans, service.name per role and the attribute of
// OTEL_RESOURCE_ATTRIBUTES on every resource. The batch processor's delay
// is an hour: the spans arrive because the commands flush them when they
// stop. Under OTEL_TRACES_SAMPLER=always_off nothing is sent, and the reply
// still carries a (not sampled) traceparent.
func TestTracesToAnOTLPReceiver(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sampler string
		sampled bool
	}{
		{"default sampler", "", true},
		{"always_off", "always_off", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, received := otlpReceiver(t)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
			t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=otel-test")
			t.Setenv("OTEL_TRACES_SAMPLER", tc.sampler)
			t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
			for _, v := range []string{"OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
				t.Setenv(v, "")
			}
			c := testkafka.New(t)
			common := []string{"--brokers", strings.Join(c.Brokers, ","), "--topic-prefix", c.Prefix,
				"--partitions", "2", "--result-partitions", "2"}
			stops := []func(){
				startRole(t, append([]string{"scatterer", "--instance-id", "s"}, common...)...),
				startRole(t, append([]string{"processor", "--route", "echo", "--instance-id", "p"}, common...)...),
				startRole(t, append([]string{"aggregator", "--instance-id", "a"}, common...)...),
			}
			reply := roundTrip(t, c, "traced-1", "echo")
			tp := ""
			for _, h := range reply.Headers {
				if h.Key == "traceparent" {
					tp = string(h.Value)
				}
			}
			if len(tp) != 55 || tc.sampled != strings.HasSuffix(tp, "-01") {
				t.Fatalf("reply traceparent %q, want one, sampled %v", tp, tc.sampled)
			}
			for _, stop := range stops {
				stop()
			}
			spans := received()
			if !tc.sampled {
				if len(spans) != 0 {
					t.Fatalf("%d spans sent under always_off, want none", len(spans))
				}
				return
			}
			checkTrace(t, spans, tp[3:35], c.Prefix)
		})
	}
}

// roundTrip produces a request for route and returns its reply record.
func roundTrip(t *testing.T, c *testkafka.Cluster, id, route string) *kgo.Record {
	t.Helper()
	topics := kafkaconfig.Topics{Prefix: c.Prefix}
	v, err := schemas.EncodeRequest(schemas.Request{CorrelationID: schemas.CorrelationID(id), Route: schemas.Route(route),
		Payload: []byte(`{"q":1}`), ContentType: "application/json", Timeout: 10 * time.Second, SubmittedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Client(t, kgo.ConsumeTopics(topics.Replies()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: topics.Requests(), Key: []byte(id), Value: v}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		var reply *kgo.Record
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if string(r.Key) == id {
				reply = r
			}
		})
		if reply != nil {
			return reply
		}
	}
	t.Fatalf("no reply to %s within 30s", id)
	return nil
}

// checkTrace checks the spans of trace traceID (hex) a receiver got.
func checkTrace(t *testing.T, spans []otlpSpan, traceID, prefix string) {
	t.Helper()
	byName := map[string][]otlpSpan{}
	ids := map[string]otlpSpan{}
	for _, s := range spans {
		if hexID(s.span.GetTraceId()) != traceID {
			t.Errorf("span %q of service %s in trace %x, want every span in the request's trace %s",
				s.span.GetName(), s.resource["service.name"], s.span.GetTraceId(), traceID)
			continue
		}
		if got := s.resource["deployment.environment.name"]; got != "otel-test" {
			t.Errorf("span %q: resource %v lacks OTEL_RESOURCE_ATTRIBUTES' deployment.environment.name=otel-test", s.span.GetName(), s.resource)
		}
		byName[s.span.GetName()] = append(byName[s.span.GetName()], s)
		ids[hexID(s.span.GetSpanId())] = s
	}
	one := func(name, service string, n int) []otlpSpan {
		t.Helper()
		got := byName[name]
		if len(got) != n {
			t.Fatalf("%d spans %q in the trace, want %d; got %d spans: %v", len(got), name, n, len(spans), names(spans))
		}
		for _, s := range got {
			if s.resource["service.name"] != service {
				t.Errorf("span %q of service %q, want %q", name, s.resource["service.name"], service)
			}
		}
		return got
	}
	scatter := one("scatter echo", "scattergather-scatterer", 1)[0]
	process := one("process echo", "scattergather-processor", 4)
	aggregate := one("aggregate echo", "scattergather-aggregator", 1)[0]
	if len(scatter.span.GetParentSpanId()) != 0 {
		t.Errorf("scatter span has parent %x, want the root (the request had no traceparent)", scatter.span.GetParentSpanId())
	}
	sid := hexID(scatter.span.GetSpanId())
	for _, s := range append(process, aggregate) {
		if p := hexID(s.span.GetParentSpanId()); p != sid {
			t.Errorf("span %q has parent %s, want the scatter span %s", s.span.GetName(), p, sid)
		}
	}
	// kotel's client spans are children of the role spans, and every span
	// but the root has its parent in the trace.
	parentName := func(s otlpSpan) string { return ids[hexID(s.span.GetParentSpanId())].span.GetName() }
	for _, want := range []struct{ name, parent string }{
		{prefix + "tasks.echo publish", "scatter echo"},
		{prefix + "tasks.echo receive", "scatter echo"},
		{prefix + "results publish", "scatter echo"}, // the manifest
		{prefix + "results publish", "process echo"},
		{prefix + "results receive", "process echo"},
		{prefix + "replies publish", "aggregate echo"},
	} {
		found := false
		for _, s := range byName[want.name] {
			found = found || parentName(s) == want.parent
		}
		if !found {
			t.Errorf("no %q span under a %q span; got %v", want.name, want.parent, names(spans))
		}
	}
	for _, s := range ids {
		if s.span != scatter.span && parentName(s) == "" {
			t.Errorf("span %q has parent %x, not a span of the trace", s.span.GetName(), s.span.GetParentSpanId())
		}
	}
}

func hexID(b []byte) string { return hex.EncodeToString(b) }

func names(spans []otlpSpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.resource["service.name"]+": "+s.span.GetName())
	}
	return out
}

// TestTraceSettings: which flag and variables turn the spans on, and what
// is refused at start.
func TestTraceSettings(t *testing.T) {
	for _, tc := range []struct {
		name     string
		flag     string
		env      map[string]string
		on       bool
		endpoint string
		err      string
	}{
		{name: "nothing set: off"},
		{name: "OTEL_EXPORTER_OTLP_ENDPOINT", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, on: true},
		{name: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, on: true},
		{name: "flag, /v1/traces appended", flag: "http://c:4318", on: true, endpoint: "http://c:4318/v1/traces"},
		{name: "flag with the path", flag: "https://c/otlp/v1/traces", on: true, endpoint: "https://c/otlp/v1/traces"},
		{name: "bad flag", flag: "c:4318", err: "--otlp-endpoint"},
		{name: "OTEL_SDK_DISABLED", flag: "http://c:4318", env: map[string]string{"OTEL_SDK_DISABLED": "true"}, endpoint: "http://c:4318/v1/traces"},
		{name: "OTEL_TRACES_EXPORTER=none", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}},
		{name: "OTEL_TRACES_EXPORTER=zipkin", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: "OTEL_TRACES_EXPORTER"},
		{name: "grpc protocol", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, err: "http/protobuf"},
		{name: "http/json", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, on: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := observeFlags{otlpEndpoint: tc.flag}
			s, err := o.traceSettings(func(k string) string { return tc.env[k] })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil || s.on != tc.on || s.endpointURL != tc.endpoint {
				t.Errorf("settings %+v, %v; want on %v, endpoint %q", s, err, tc.on, tc.endpoint)
			}
		})
	}
}

// TestTraceResource: service.name is scattergather-<role> unless
// OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) says otherwise.
func TestTraceResource(t *testing.T) {
	for _, tc := range []struct{ name, serviceName, attrs, want string }{
		{"default", "", "", "scattergather-processor"},
		{"OTEL_SERVICE_NAME", "search-workers", "service.name=x", "search-workers"},
		{"OTEL_RESOURCE_ATTRIBUTES", "", "service.name=from-attrs,team=search", "from-attrs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("OTEL_SERVICE_NAME", tc.serviceName)
			t.Setenv("OTEL_RESOURCE_ATTRIBUTES", tc.attrs)
			res, err := traceResource(t.Context(), "processor")
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, kv := range res.Attributes() {
				got[string(kv.Key)] = kv.Value.Emit()
			}
			if got["service.name"] != tc.want || got["telemetry.sdk.language"] != "go" {
				t.Errorf("resource %v, want service.name %s", got, tc.want)
			}
		})
	}
}

// TestOTLPEndpointFlag: --otlp-endpoint, a base URL, sends to its
// /v1/traces, whatever OTEL_EXPORTER_OTLP_ENDPOINT says.
func TestOTLPEndpointFlag(t *testing.T) {
	url, received := otlpReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	o := observeFlags{otlpEndpoint: url}
	s, err := o.traceSettings(func(k string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	tp, err := newTracerProvider(t.Context(), s, "scatterer")
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("test").Start(t.Context(), "one")
	span.End()
	shutdownTraces(t.Context(), slog.New(slog.DiscardHandler), []*sdktrace.TracerProvider{tp})
	if got := received(); len(got) != 1 || got[0].resource["service.name"] != "scattergather-scatterer" {
		t.Fatalf("received %v, want the span of scattergather-scatterer", names(got))
	}
}
