package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/trace"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/metrics"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

func TestMain(m *testing.M) { testkafka.Main(m) }

// testRoutes: a split route, a split route whose handler fails each task's
// first try (retries), and a broadcast route where recipient "slow" misses
// the deadline (PARTIAL replies, then late results).
const testRoutes = `{"routes": [
  {"name": "fan", "mode": "split", "fanout": 4, "timeout": "10s"},
  {"name": "flaky", "mode": "split", "fanout": 2, "timeout": "10s"},
  {"name": "bc", "mode": "broadcast", "recipients": ["fast", "slow"], "timeout": "600ms"}
]}`

// failOnce fails the first try of every task and succeeds on the next.
func failOnce() processor.Handler {
	var seen sync.Map
	return processor.HandlerFunc(func(_ context.Context, t schemas.Task) ([]byte, error) {
		if _, again := seen.LoadOrStore(string(t.CorrelationID)+"/"+string(t.PartID), true); !again {
			return nil, errors.New("first try fails")
		}
		return t.Payload, nil
	})
}

// pipeline is a stack with its metrics served on a free port.
type pipeline struct {
	stack   *stack.Stack
	srv     *metrics.Server
	cluster *testkafka.Cluster
	client  *client.Client
	run     func()
	release func() // lets the slow recipient answer
}

func startPipeline(t *testing.T, tps map[string]trace.TracerProvider) *pipeline {
	t.Helper()
	c := testkafka.New(t)
	tbl, err := routes.Parse([]byte(testRoutes))
	if err != nil {
		t.Fatal(err)
	}
	// slow ignores its deadline and answers once the test releases it,
	// after every bc reply went out: its results are all late (OK from the
	// tasks it held, EXPIRED from those queued behind them).
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	slow := processor.HandlerFunc(func(_ context.Context, t schemas.Task) ([]byte, error) {
		<-release
		return t.Payload, nil
	})
	reg := metrics.NewRegistry()
	cc := kafkaconfig.Client{Brokers: c.Brokers, ClientID: "metrics-test"}
	ctx := t.Context()
	st, err := stack.New(ctx, stack.Config{
		Client: cc, Topics: kafkaconfig.Topics{Prefix: c.Prefix}, Routes: tbl, Guarantee: kafkaconfig.ExactlyOnce,
		Layout: kafkaconfig.Layout{Partitions: 3, ResultPartitions: 3, ReplicationFactor: -1},
		Processors: []stack.ProcessorSpec{
			{Route: "fan", Handler: processor.Echo(), Instances: 2},
			{Route: "flaky", Handler: failOnce(), Tune: func(c *processor.Config) { c.Backoff = time.Millisecond }},
			{Route: "bc", Recipient: "fast", Handler: processor.Echo()},
			{Route: "bc", Recipient: "slow", Handler: slow},
		},
		Metrics: reg, KafkaMetrics: metrics.NewKafkaMetrics(reg), TracerProviders: tps,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := metrics.NewServer(metrics.ServerConfig{Addr: "127.0.0.1:0", Gatherer: reg, Registerer: reg, Checks: st.Checks()})
	if err != nil {
		t.Fatal(err)
	}
	lag, err := metrics.NewLagSampler(metrics.LagConfig{Client: cc, Groups: st.Groups(), Interval: 200 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeline{stack: st, srv: srv, cluster: c, release: func() { once.Do(func() { close(release) }) }}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	// The server runs from the start, so /readyz can be asked before the
	// roles join; the roles and the sampler start with run.
	wg.Go(func() {
		if err := srv.Run(runCtx); err != nil {
			t.Errorf("metrics server: %v", err)
		}
	})
	p.run = func() {
		wg.Go(func() {
			if err := st.Run(runCtx); err != nil {
				t.Errorf("stack: %v", err)
			}
		})
		wg.Go(func() { _ = lag.Run(runCtx) })
	}
	t.Cleanup(func() {
		stop()
		wg.Wait()
	})
	cl, err := client.New(ctx, client.Config{Client: cc, Topics: kafkaconfig.Topics{Prefix: c.Prefix}, DefaultTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	p.client = cl
	return p
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// scrape reads /metrics with the Prometheus text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value sums the samples of family name whose labels include want (a
// counter's or gauge's value, a histogram's count).
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	var sum float64
	found := false
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum, found
}

func l(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// TestMetricsOfARun runs a small load through a whole pipeline and checks
// every metric of internal/metrics' list against what was sent.
func TestMetricsOfARun(t *testing.T) {
	p := startPipeline(t, nil)
	base := "http://" + p.srv.Addr()

	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz before the roles run: %d", code)
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "aggregator 0: not yet a member") {
		t.Errorf("/readyz before the roles run: %d %q, want 503 naming the aggregator", code, body)
	}
	p.run()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := get(t, base+"/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not ready after 30s: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}

	const nFan, nFlaky, nBC, nUnknown = 20, 10, 5, 2
	ctx := t.Context()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		outcome = map[string]int{}
	)
	send := func(route schemas.Route, n int, timeout time.Duration) {
		for i := range n {
			wg.Go(func() {
				reply, err := p.client.Do(ctx, route, fmt.Appendf(nil, `{"i":%d}`, i), client.Options{Timeout: timeout})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("%s request: %v", route, err)
					return
				}
				outcome[string(route)+" "+string(reply.Status)]++
			})
		}
	}
	send("fan", nFan, 0)
	send("flaky", nFlaky, 0)
	send("bc", nBC, 600*time.Millisecond)
	send("nowhere", nUnknown, 0)
	wg.Wait()
	p.release()
	want := map[string]int{"fan COMPLETE": nFan, "flaky COMPLETE": nFlaky, "bc PARTIAL": nBC, "nowhere FAILED": nUnknown}
	for k, v := range want {
		if outcome[k] != v {
			t.Errorf("replies %v, want %v", outcome, want)
			break
		}
	}

	type check struct {
		name    string
		labels  map[string]string
		want    float64
		atLeast bool
	}
	checks := []check{
		{"scattergather_requests_scattered_total", l("route", "fan"), nFan, false},
		{"scattergather_requests_scattered_total", l("route", "flaky"), nFlaky, false},
		{"scattergather_requests_scattered_total", l("route", "bc"), nBC, false},
		{"scattergather_tasks_produced_total", l("route", "fan"), 4 * nFan, false},
		{"scattergather_tasks_produced_total", l("route", "flaky"), 2 * nFlaky, false},
		{"scattergather_tasks_produced_total", l("route", "bc"), nBC, false}, // one task, read by each recipient's group
		{"scattergather_tasks_processed_total", l("route", "fan", "status", "OK"), 4 * nFan, false},
		{"scattergather_tasks_processed_total", l("route", "flaky", "status", "OK"), 2 * nFlaky, false},
		{"scattergather_tasks_processed_total", l("route", "bc", "recipient", "fast", "status", "OK"), nBC, false},
		{"scattergather_tasks_processed_total", l("route", "bc", "recipient", "slow"), nBC, false},
		{"scattergather_task_duration_seconds", l("route", "fan"), 4 * nFan, false},
		{"scattergather_task_retries_total", l("route", "flaky"), 2 * nFlaky, false},
		{"scattergather_handler_panics_total", l("route", "fan"), 0, false},
		{"scattergather_manifests_received_total", nil, nFan + nFlaky + nBC, false},
		{"scattergather_results_received_total", nil, 4*nFan + 2*nFlaky + 2*nBC, false},
		{"scattergather_results_late_total", nil, nBC, false}, // the slow recipient's results after the PARTIAL reply
		{"scattergather_results_duplicate_total", nil, 0, false},
		{"scattergather_results_orphaned_total", nil, 0, false},
		{"scattergather_replies_total", l("route", "fan", "outcome", "COMPLETE"), nFan, false},
		{"scattergather_replies_total", l("route", "flaky", "outcome", "COMPLETE"), nFlaky, false},
		{"scattergather_replies_total", l("route", "bc", "outcome", "PARTIAL"), nBC, false},
		{"scattergather_replies_total", l("route", metrics.UnknownRoute, "outcome", "FAILED"), nUnknown, false},
		{"scattergather_replies_total", nil, nFan + nFlaky + nBC + nUnknown, false},
		{"scattergather_request_duration_seconds", nil, nFan + nFlaky + nBC + nUnknown, false},
		{"scattergather_dead_letters_total", l("role", "scatterer", "reason", "unknown-route"), nUnknown, false},
		{"scattergather_open_requests", nil, 0, false},
		{"scattergather_held_results", nil, 0, false},
		{"scattergather_state_restore_duration_seconds", nil, 1, true},
		{"scattergather_ready", nil, float64(len(p.stack.Checks())), false},
		{"scattergather_kafka_produce_records_total", l("role", "scatterer"), nFan + nFlaky + nBC, true},
		{"scattergather_kafka_fetch_records_total", l("role", "aggregator"), 1, true},
		{"scattergather_kafka_buffered_produce_records_total", l("role", "processor"), 0, true},
		{"scattergather_consumer_lag", l("topic", p.stack.Scatterer.Group()[:len(p.stack.Scatterer.Group())-len("scatterer")]+"requests"), 0, true},
		{"go_goroutines", nil, 1, true},
	}
	// Counters move when a batch's commit is acknowledged, a moment after
	// the reply is readable: poll until they settle.
	var fams map[string]*dto.MetricFamily
	failing := func() []string {
		var bad []string
		for _, c := range checks {
			got, ok := value(fams, c.name, c.labels)
			switch {
			case !ok:
				bad = append(bad, fmt.Sprintf("%s%v missing", c.name, c.labels))
			case c.atLeast && got < c.want, !c.atLeast && got != c.want:
				bad = append(bad, fmt.Sprintf("%s%v = %v, want %v (at least: %v)", c.name, c.labels, got, c.want, c.atLeast))
			}
		}
		return bad
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		fams = scrape(t, p.srv.Addr())
		bad := failing()
		if len(bad) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics after the run:\n%s", strings.Join(bad, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Histograms have plausible values: every request took less than its
	// timeout plus a margin, and more than nothing.
	for _, m := range fams["scattergather_request_duration_seconds"].GetMetric() {
		h := m.GetHistogram()
		if h.GetSampleSum() <= 0 || h.GetSampleSum() > float64(h.GetSampleCount())*12 {
			t.Errorf("request duration %v: sum %v over %d samples", m.GetLabel(), h.GetSampleSum(), h.GetSampleCount())
		}
	}
}
