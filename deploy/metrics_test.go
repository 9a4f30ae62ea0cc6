package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"

	"github.com/scattergather/scattergather/gateway"
	"github.com/scattergather/scattergather/internal/metrics"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
)

// recorder is a Registerer that keeps the name and labels of every metric
// registered through it, observed or not.
type recorder struct {
	prometheus.Registerer
	mu     sync.Mutex
	labels map[string][]string // metric name -> its label names
}

var descRE = regexp.MustCompile(`fqName: "([^"]+)".*constLabels: \{([^}]*)\}, variableLabels: \{([^}]*)\}\}$`)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	r.mu.Lock()
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			continue
		}
		var ls []string
		for _, kv := range strings.Split(m[2], ",") {
			if k, _, ok := strings.Cut(kv, "="); ok {
				ls = append(ls, k)
			}
		}
		for _, l := range strings.Split(m[3], ",") {
			if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
				ls = append(ls, l)
			}
		}
		r.labels[m[1]] = ls
	}
	r.mu.Unlock()
	return r.Registerer.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

var registered struct {
	once   sync.Once
	labels map[string][]string
	err    error
}

// registeredMetrics returns the name and label names of every metric the
// roles register: it runs the scatterer, a processor and the aggregator
// with metrics on an in-process broker, as `scattergather dev` does, until
// they are ready (processors build their Kafka client in Run), with the
// metrics server and the lag sampler, and builds a gateway; Kafka client
// metrics (kprom) included. Built once per test binary.
func registeredMetrics(t *testing.T) map[string][]string {
	t.Helper()
	registered.once.Do(func() { registered.labels, registered.err = buildRegistries(t) })
	if registered.err != nil {
		t.Fatal(registered.err)
	}
	return registered.labels
}

func buildRegistries(t *testing.T) (map[string][]string, error) {
	c := testkafka.New(t)
	reg := metrics.NewRegistry()
	rec := &recorder{Registerer: reg, labels: map[string][]string{}}
	gathered, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	for _, f := range gathered {
		rec.labels[f.GetName()] = nil
	}
	km := metrics.NewKafkaMetrics(rec)
	cc := kafkaconfig.Client{Brokers: c.Brokers, ClientID: "deploy-test"}
	topics := kafkaconfig.Topics{Prefix: c.Prefix}
	st, err := stack.New(t.Context(), stack.Config{Client: cc, Topics: topics, Routes: routes.Demo(),
		Layout:     kafkaconfig.Layout{Partitions: 1, ResultPartitions: 1, ReplicationFactor: -1},
		Processors: []stack.ProcessorSpec{{Route: "echo", Handler: processor.Echo()}},
		Metrics:    rec, KafkaMetrics: km})
	if err != nil {
		return nil, err
	}
	checks := st.Checks()
	srs, err := routes.Demo().ScattererRoutes()
	if err != nil {
		return nil, err
	}
	gcc := cc
	gcc.NewHooks = km.Hooks("gateway")
	g, err := gateway.New(gateway.Config{Client: gcc, Topics: topics, Routes: srs, Addr: "127.0.0.1:0", Metrics: rec})
	if err != nil {
		return nil, err
	}
	checks = append(checks, metrics.Check{Name: "gateway", Ready: g.Ready})
	srv, err := metrics.NewServer(metrics.ServerConfig{Addr: "127.0.0.1:0", Gatherer: reg, Registerer: rec, Checks: checks})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	if _, err := metrics.NewLagSampler(metrics.LagConfig{Client: cc, Groups: st.Groups(), Registerer: rec}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for _, ch := range st.Checks() {
		for ch.Ready() != nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	cancel()
	if err := <-done; err != nil {
		return nil, err
	}
	return rec.labels, nil
}

// selector is one metric a query selects, with the labels it matches on.
type selector struct {
	name     string
	matchers []*labels.Matcher
}

// selectors parses expr as PromQL and returns its series selectors.
func selectors(expr string) ([]selector, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var out []selector
	var errs []error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			if vs.Name == "" {
				errs = append(errs, fmt.Errorf("selector %s names no metric", vs))
			}
			out = append(out, selector{vs.Name, vs.LabelMatchers})
		}
		return nil
	})
	return out, errors.Join(errs...)
}

// leValue is a bucket bound Prometheus 2 and 3 store alike: one with a
// fraction (client_golang writes 2.5 as "2.5", 5 as "5", and Prometheus 3
// normalises "5" to "5.0" at ingestion), or +Inf.
var leValue = regexp.MustCompile(`^(\+Inf|[0-9]+\.[0-9]*[1-9])$`)

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"instance", "job"}

// checkSelector: s is a metric the code registers (a histogram's _bucket,
// _sum and _count count as its own), and s matches only on its labels.
func checkSelector(known map[string][]string, s selector) error {
	name, ls := s.name, known[s.name]
	if _, ok := known[name]; !ok {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok {
				if bl, ok := known[base]; ok {
					name, ls = base, bl
					if suffix == "_bucket" {
						ls = append(slices.Clone(ls), "le")
					}
				}
			}
		}
	}
	if _, ok := known[name]; !ok {
		return fmt.Errorf("%s: no role registers it", s.name)
	}
	for _, m := range s.matchers {
		if m.Name == "le" && !leValue.MatchString(m.Value) {
			return fmt.Errorf("%s{le=%q}: Prometheus 3 stores a bucket bound as a float (5 as \"5.0\", 2.5 as \"2.5\"); Prometheus 2 as the client writes it: use a bound both write alike (2.5, not 5), or le=~", s.name, m.Value)
		}
		if m.Name != model.MetricNameLabel && !slices.Contains(ls, m.Name) && !slices.Contains(targetLabels, m.Name) {
			return fmt.Errorf("%s has no label %s (it has %v)", s.name, m.Name, ls)
		}
	}
	return nil
}

// dashboard is the part of the Grafana dashboard the test reads.
type dashboard struct {
	UID        string
	Title      string
	Templating struct {
		List []struct {
			Name       string
			Type       string
			Definition string
			Query      json.RawMessage
		}
	}
	Panels []struct {
		Type    string
		Title   string
		Targets []struct{ Expr string }
	}
}

var templateVar = regexp.MustCompile(`\$(?:\{(\w+)(?::\w+)?\}|(\w+))`)

// expand replaces the dashboard's variables in expr by values a query
// could take ($route by ".*"), and returns the variables it used.
func expand(expr string) (string, []string) {
	var used []string
	out := templateVar.ReplaceAllStringFunc(expr, func(v string) string {
		m := templateVar.FindStringSubmatch(v)
		name := m[1] + m[2]
		used = append(used, name)
		switch name {
		case "__rate_interval", "__interval", "__range":
			return "1m"
		}
		return ".*"
	})
	return out, used
}

var labelValues = regexp.MustCompile(`^label_values\((\w+),\s*(\w+)\)$`)

// TestDashboard: the Grafana dashboard is valid JSON with panels; every
// query parses as PromQL once its variables are filled and asks only for
// metrics the code registers, on their labels; the variables route and
// instance come from registered metrics and every panel's query filters by
// them where its metrics have the label; and the dashboard shows the
// pipeline, the gateway, hedging, client restarts and the dead letters.
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("grafana", "dashboards", "scattergather.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash dashboard
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.UID == "" || dash.Title == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard without uid, title or panels")
	}
	known := registeredMetrics(t)
	if _, ok := known["scattergather_replies_total"]; !ok {
		t.Fatalf("registered metrics lack the basics: %v", known)
	}
	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
		m := labelValues.FindStringSubmatch(v.Definition)
		if v.Type != "query" || m == nil {
			t.Errorf("variable %s: want a query label_values(metric, label), have %s %q", v.Name, v.Type, v.Definition)
			continue
		}
		if !strings.Contains(string(v.Query), v.Definition) {
			t.Errorf("variable %s: its query %s is not its definition %q", v.Name, v.Query, v.Definition)
		}
		if err := checkSelector(known, selector{name: m[1], matchers: []*labels.Matcher{{Name: m[2]}}}); err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
		}
	}
	for _, want := range []string{"route", "instance"} {
		if !vars[want] {
			t.Errorf("no template variable %s", want)
		}
	}
	want := []string{"replies_total", "request_duration_seconds_bucket", "open_requests", "consumer_lag", "requests_scattered_total",
		"gateway_http_requests_total", "gateway_http_request_duration_seconds_bucket", "gateway_in_flight_requests",
		"hedges_total", "hop_restarts_total", "dead_letters_total", "records_rejected_total", "ready"}
	used := map[string]bool{}
	varsUsed := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			expr, vs := expand(tg.Expr)
			for _, v := range vs {
				varsUsed[v] = true
				if !vars[v] && !strings.HasPrefix(v, "__") {
					t.Errorf("panel %q uses $%s, which the dashboard does not define", p.Title, v)
				}
			}
			sels, err := selectors(expr)
			if err != nil {
				t.Errorf("panel %q: %q: %v", p.Title, tg.Expr, err)
				continue
			}
			for _, s := range sels {
				used[strings.TrimPrefix(s.name, "scattergather_")] = true
				if err := checkSelector(known, s); err != nil {
					t.Errorf("panel %q: %v", p.Title, err)
					continue
				}
				// Each selection follows the variables of the labels it has.
				for _, v := range []string{"route", "instance"} {
					if !hasLabel(known, s.name, v) {
						continue
					}
					if !slices.ContainsFunc(s.matchers, func(m *labels.Matcher) bool { return m.Name == v && m.Type == labels.MatchRegexp }) ||
						!strings.Contains(tg.Expr, v+`=~"$`+v+`"`) {
						t.Errorf("panel %q: %s is not filtered by %s=~\"$%s\"", p.Title, s.name, v, v)
					}
				}
			}
		}
	}
	for v := range vars {
		if !varsUsed[v] {
			t.Errorf("variable %s is used by no panel", v)
		}
	}
	for _, w := range want {
		if !used[w] {
			t.Errorf("the dashboard does not show scattergather_%s", w)
		}
	}
}

// hasLabel reports whether the series of name (or of its histogram) have
// label l.
func hasLabel(known map[string][]string, name, l string) bool {
	if slices.Contains(targetLabels, l) {
		return true
	}
	for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if ls, ok := known[base]; ok {
				return slices.Contains(ls, l)
			}
		}
	}
	return false
}

const alertsFile = "prometheus/alerts.yml"

// alertCase is a state of the series at which an alert's expression must
// fire, or must not.
type alertCase struct {
	name string
	load string // promqltest load commands, one series a line, 1m apart from t=0
	fire bool
}

// alertCases are evaluated at 40m. Every alert of alerts.yml needs a case
// that fires it and one that does not.
var alertCases = map[string][]alertCase{
	"ScattergatherReplyLatencySLO": {
		{"10% over 2.5s", `
			scattergather_request_duration_seconds_bucket{route="search",outcome="COMPLETE",le="2.5"} 0+90x40
			scattergather_request_duration_seconds_count{route="search",outcome="COMPLETE"} 0+100x40`, true},
		{"all within 2.5s", `
			scattergather_request_duration_seconds_bucket{route="search",outcome="COMPLETE",le="2.5"} 0+100x40
			scattergather_request_duration_seconds_count{route="search",outcome="COMPLETE"} 0+100x40`, false},
	},
	"ScattergatherPartialOrFailedReplies": {
		{"10% PARTIAL", `
			scattergather_replies_total{route="quotes",outcome="COMPLETE"} 0+90x40
			scattergather_replies_total{route="quotes",outcome="PARTIAL"} 0+10x40`, true},
		{"1% FAILED", `
			scattergather_replies_total{route="quotes",outcome="COMPLETE"} 0+99x40
			scattergather_replies_total{route="quotes",outcome="FAILED"} 0+1x40`, false},
	},
	"ScattergatherFailedReplies": {
		{"30% FAILED", `
			scattergather_replies_total{route="search",outcome="COMPLETE"} 0+70x40
			scattergather_replies_total{route="search",outcome="FAILED"} 0+30x40`, true},
		{"all PARTIAL", `
			scattergather_replies_total{route="search",outcome="PARTIAL"} 0+100x40`, false},
	},
	"ScattergatherConsumerLag": {
		{"two partitions 6000 behind", `
			scattergather_consumer_lag{instance="a",group="sg.aggregator",topic="sg.results",partition="0"} 6000x40
			scattergather_consumer_lag{instance="a",group="sg.aggregator",topic="sg.results",partition="1"} 6000x40`, true},
		// Two instances sample the same partition: it is 6000 behind, not 12000.
		{"one partition 6000 behind, sampled twice", `
			scattergather_consumer_lag{instance="a",group="sg.aggregator",topic="sg.results",partition="0"} 6000x40
			scattergather_consumer_lag{instance="b",group="sg.aggregator",topic="sg.results",partition="0"} 6000x40`, false},
	},
	"ScattergatherDeadLetters": {
		{"2 a minute", `scattergather_dead_letters_total{instance="a",role="scatterer",reason="unknown-route"} 0+2x40`, true},
		{"1 in 2 minutes", `scattergather_dead_letters_total{instance="a",role="scatterer",reason="unknown-route"} 0+0.5x40`, false},
	},
	"ScattergatherNoReadyScatterer":  noReadyCases("scatterer"),
	"ScattergatherNoReadyProcessor":  noReadyCases("processor"),
	"ScattergatherNoReadyAggregator": noReadyCases("aggregator"),
	"ScattergatherNoReadyGateway":    noReadyCases("gateway"),
	"ScattergatherClientRestarts": {
		{"1 a minute", `scattergather_hop_restarts_total{instance="a",group="sg.aggregator"} 0+1x40`, true},
		{"1 in 10 minutes", `scattergather_hop_restarts_total{instance="a",group="sg.aggregator"} 0+0.1x40`, false},
	},
	"ScattergatherRewindRepaired": {
		{"one repair", `scattergather_hop_rewinds_repaired_total{instance="a",group="sg.aggregator"} 0x20 1x20`, true},
		{"none", `scattergather_hop_rewinds_repaired_total{instance="a",group="sg.aggregator"} 0x40`, false},
	},
}

func noReadyCases(check string) []alertCase {
	other := "scatterer"
	if check == other {
		other = "aggregator"
	}
	return []alertCase{
		{"every instance not ready", fmt.Sprintf(`
			scattergather_ready{instance="a",check=%q} 0x40
			scattergather_ready{instance="b",check=%q} 0x40`, check, check), true},
		{"no instance scraped", fmt.Sprintf(`scattergather_ready{instance="c",check=%q} 1x40`, other), true},
		{"one of two ready", fmt.Sprintf(`
			scattergather_ready{instance="a",check=%q} 0x40
			scattergather_ready{instance="b",check=%q} 1x40`, check, check), false},
	}
}

// TestAlertRules: alerts.yml passes Prometheus's rule parser (YAML, PromQL,
// templates; unknown fields fail), its alerts cover the reply latency SLO,
// PARTIAL/FAILED replies, consumer lag, dead letters and a role without a
// ready instance, each with a for, a severity and a summary; every metric
// it names is one the code registers, on its labels; and each alert's
// expression fires on the series of its cases that should fire it and on no
// other (evaluated by Prometheus's engine).
func TestAlertRules(t *testing.T) {
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("%s: %v", alertsFile, errors.Join(errs...))
	}
	known := registeredMetrics(t)
	exprs := map[string]string{}
	usedBy := map[string][]string{} // metric -> alerts
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: recording rule %s: the file holds alerts only", g.Name, r.Record)
				continue
			}
			if _, dup := exprs[r.Alert]; dup {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			exprs[r.Alert] = r.Expr
			if r.For <= 0 {
				t.Errorf("alert %s has no for: one bad scrape would page", r.Alert)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: want a summary and a description", r.Alert)
			}
			sels, err := selectors(r.Expr)
			if err != nil {
				t.Errorf("alert %s: %v", r.Alert, err)
				continue
			}
			for _, s := range sels {
				usedBy[s.name] = append(usedBy[s.name], r.Alert)
				if err := checkSelector(known, s); err != nil {
					t.Errorf("alert %s: %v", r.Alert, err)
				}
			}
		}
	}
	for _, m := range []string{"scattergather_request_duration_seconds_bucket", "scattergather_replies_total",
		"scattergather_consumer_lag", "scattergather_dead_letters_total", "scattergather_ready"} {
		if len(usedBy[m]) == 0 {
			t.Errorf("no alert on %s", m)
		}
	}
	for _, role := range []string{"scatterer", "processor", "aggregator", "gateway"} {
		if !slices.ContainsFunc(slices.Collect(maps.Values(exprs)), func(e string) bool {
			return strings.Contains(e, `absent(scattergather_ready{check="`+role+`"} == 1)`)
		}) {
			t.Errorf("no alert for a %s without a ready instance", role)
		}
	}
	names := make([]string, 0, len(exprs))
	for n := range exprs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			cases := alertCases[name]
			if !slices.ContainsFunc(cases, func(c alertCase) bool { return c.fire }) ||
				!slices.ContainsFunc(cases, func(c alertCase) bool { return !c.fire }) {
				t.Fatalf("alertCases needs a case that fires %s and one that does not", name)
			}
			for _, c := range cases {
				if got := fires(t, exprs[name], c.load); got != c.fire {
					t.Errorf("%s: fires %v, want %v\n%s", c.name, got, c.fire, exprs[name])
				}
			}
		})
	}
	for name := range alertCases {
		if _, ok := exprs[name]; !ok {
			t.Errorf("alertCases has cases for %s, which alerts.yml lacks", name)
		}
	}
}

// fires evaluates expr at 40m on the series of load and reports whether it
// returns any series, as a rule evaluation would.
func fires(t *testing.T, expr, load string) bool {
	t.Helper()
	var b strings.Builder
	b.WriteString("load 1m\n")
	for _, line := range strings.Split(load, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			b.WriteString("  " + line + "\n")
		}
	}
	st := promqltest.LoadedStorage(t, b.String())
	t.Cleanup(func() { st.Close() })
	eng := promqltest.NewTestEngine(t, false, 0, 1_000_000)
	q, err := eng.NewInstantQuery(t.Context(), st, nil, expr, time.Unix(0, 0).Add(40*time.Minute))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	defer q.Close()
	res := q.Exec(t.Context())
	if res.Err != nil {
		t.Fatalf("%s: %v", expr, res.Err)
	}
	v, err := res.Vector()
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return len(v) > 0
}
