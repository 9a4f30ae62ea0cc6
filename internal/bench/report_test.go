package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/kafkaconfig"
)

func samplePhase(name string, tasksPerS, p99 float64) Phase {
	p := Phase{Name: name, RequestsPerS: tasksPerS / 8, TasksPerS: tasksPerS, MBPerS: 1.5,
		Percentiles: Percentiles{P50: p99 / 4, P90: p99 / 2, P99: p99, P999: p99 * 2, Max: p99 * 3},
		Complete:    1000, Requests: 1000, Tasks: 8000, WindowS: 10, CPUSeconds: 5, CPUCores: 0.5}
	for i := range 12 {
		stage := "measure"
		if i < 2 {
			stage = "warmup"
		}
		p.Series = append(p.Series, Sample{T: float64(i + 1), Stage: stage, RequestsPerS: p.RequestsPerS, TasksPerS: tasksPerS, P50: p.P50, P99: p99, Max: p.Max})
	}
	h := newHist()
	for i := 1; i <= 1000; i++ {
		record(h, time.Duration(i)*time.Duration(p99*1000/990)*time.Microsecond)
	}
	p.Distribution = distribution(h)
	return p
}

func sampleReport(label string, withBaseline bool) *Report {
	cfg := Config{Client: testClientConfig(), Label: label, Load: Load{Duration: 10 * time.Second, Warmup: 2 * time.Second}}
	_ = cfg.Validate()
	r := &Report{Phase: samplePhase("pipeline", 8000, 20), Settings: cfg.settings(), Env: environment()}
	if withBaseline {
		b := samplePhase("baseline", 16000, 10)
		r.Baseline = &b
		r.RatioTasksPerS, r.RatioP99 = 0.5, 2
	}
	return r
}

func TestReportJSONKeys(t *testing.T) {
	required := []string{"requests_per_s", "tasks_per_s", "p50_ms", "p99_ms", "p999_ms", "complete", "partial", "failed"}
	for _, withBaseline := range []bool{false, true} {
		t.Run(map[bool]string{false: "alone", true: "with baseline"}[withBaseline], func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bench.json")
			if err := WriteJSON(path, sampleReport("", withBaseline)); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			for _, k := range required {
				if _, ok := m[k]; !ok {
					t.Errorf("top-level key %q missing", k)
				}
			}
			if env, _ := m["environment"].(map[string]any); env == nil || env["commit"] == "" || env["commit"] == nil {
				t.Errorf("environment.commit missing: %v", m["environment"])
			}
			base, ok := m["baseline"].(map[string]any)
			if ok != withBaseline {
				t.Fatalf("baseline present: %v, want %v", ok, withBaseline)
			}
			if !withBaseline {
				if _, ok := m["ratio_tasks_per_s"]; ok {
					t.Error("ratio_tasks_per_s present without a baseline")
				}
				return
			}
			for _, k := range []string{"tasks_per_s", "p99_ms"} {
				if _, ok := base[k]; !ok {
					t.Errorf("baseline key %q missing", k)
				}
			}
			if m["ratio_tasks_per_s"] != 0.5 || m["ratio_p99"] != 2.0 {
				t.Errorf("ratios = %v, %v; want 0.5, 2", m["ratio_tasks_per_s"], m["ratio_p99"])
			}
		})
	}
}

func TestReportTable(t *testing.T) {
	var b bytes.Buffer
	r := sampleReport("", true)
	r.Settled = &Settled{Seconds: 10, Steady: true, Rounds: []float64{410, 800, 805, 798}, Metric: "requests_per_s"}
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"split fan-out 8", "tasks/s", "8000.0", "16000.0", "0.50", "latency p99.9 ms", "COMPLETE", "CPU cores busy", "; commit ",
		"settled before the pipeline: 10s, steady; requests_per_s per 2s round: 410.0 800.0 805.0 798.0"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestPlotsAreSelfContained(t *testing.T) {
	sr := &SweepReport{Sweep: []string{"fanout=1,4"}, Points: []*Report{sampleReport("fanout=1", true), sampleReport("fanout=4", true)}}
	tests := []struct {
		name   string
		plot   func(*bytes.Buffer) error
		charts int
	}{
		{"report", func(b *bytes.Buffer) error { return PlotReport(b, sampleReport("", true)) }, 3},
		{"sweep", func(b *bytes.Buffer) error { return PlotSweep(b, sr) }, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tt.plot(&b); err != nil {
				t.Fatal(err)
			}
			page := b.String()
			if n := strings.Count(page, "<svg"); n != tt.charts {
				t.Errorf("%d charts, want %d", n, tt.charts)
			}
			if strings.Contains(page, "no data") {
				t.Error("a chart has no data")
			}
			// Nothing is loaded from anywhere: the only URL is the SVG
			// namespace.
			rest := strings.ReplaceAll(page, `xmlns="http://www.w3.org/2000/svg"`, "")
			for _, bad := range []string{"<script", "http://", "https://", "src=", "href="} {
				if strings.Contains(rest, bad) {
					t.Errorf("page contains %q", bad)
				}
			}
			if strings.Contains(page, "NaN") || strings.Contains(page, "Inf") {
				t.Error("page contains NaN or Inf coordinates")
			}
		})
	}
}

func TestParseSweep(t *testing.T) {
	tests := []struct {
		in      string
		want    SweepDim
		wantErr string
	}{
		{in: "fanout=1,4,16,64", want: SweepDim{Key: "fanout", Values: []string{"1", "4", "16", "64"}}},
		{in: "processors= 1, 2 ,4", want: SweepDim{Key: "processors", Values: []string{"1", "2", "4"}}},
		{in: "guarantee=at-least-once,exactly-once", want: SweepDim{Key: "guarantee", Values: []string{"at-least-once", "exactly-once"}}},
		{in: "fanout", wantErr: "want key=v1,v2"},
		{in: "fanout=", wantErr: "no values"},
		{in: "color=red", wantErr: `sweep key "color"`},
		{in: "fanout=1,x", wantErr: `"x" is not a whole number`},
		{in: "rate=0", wantErr: "not a rate above 0"},
		{in: "guarantee=maybe", wantErr: "guarantee"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSweep(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSweep(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Key != tt.want.Key || !equal(got.Values, tt.want.Values) {
				t.Errorf("ParseSweep(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestSweepPoints(t *testing.T) {
	pts := points([]SweepDim{{Key: "fanout", Values: []string{"1", "4"}}, {Key: "processors", Values: []string{"1", "2", "4"}}})
	var got []string
	for _, p := range pts {
		var kv []string
		for _, x := range p {
			kv = append(kv, x[0]+"="+x[1])
		}
		got = append(got, strings.Join(kv, ","))
	}
	want := []string{"fanout=1,processors=1", "fanout=1,processors=2", "fanout=1,processors=4",
		"fanout=4,processors=1", "fanout=4,processors=2", "fanout=4,processors=4"}
	if !equal(got, want) {
		t.Errorf("points = %v, want %v", got, want)
	}
}

func TestSweepTableMarksPeak(t *testing.T) {
	a, b, c := sampleReport("fanout=1", true), sampleReport("fanout=4", true), sampleReport("fanout=16", true)
	a.TasksPerS, b.TasksPerS, c.TasksPerS = 1000, 3000, 2400
	var out bytes.Buffer
	if err := (&SweepReport{Sweep: []string{"fanout=1,4,16"}, Points: []*Report{a, b, c}}).WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	for _, want := range []struct{ point, gain, mark string }{{"fanout=4", "×3.00", "peak"}, {"fanout=16", "×0.80", ""}} {
		found := false
		for _, l := range lines {
			if strings.HasPrefix(strings.TrimSpace(l), want.point+" ") {
				found = true
				if !strings.Contains(l, want.gain) || strings.Contains(l, "peak") != (want.mark == "peak") {
					t.Errorf("row %q: want gain %s, peak %v", l, want.gain, want.mark == "peak")
				}
			}
		}
		if !found {
			t.Errorf("no row for %s in\n%s", want.point, out.String())
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr []string
	}{
		{name: "defaults", mod: func(*Config) {}},
		{name: "rate and concurrency", mod: func(c *Config) { c.Load.Rate, c.Load.Concurrency = 10, 4 }, wantErr: []string{"choose an open loop"}},
		{name: "everything wrong at once", mod: func(c *Config) {
			c.Mode, c.Fanout, c.Handler.Name, c.Processors, c.Load.Duration = "fan", 1000, "nap", -1, 0
		}, wantErr: []string{`mode "fan"`, "fanout: 1000", `handler "nap"`, "processors: -1", "duration"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Client: testClientConfig(), Layout: testLayout(), Load: Load{Duration: time.Second}}
			tt.mod(&c)
			err := c.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if c.Fanout != DefaultFanout || c.Load.Concurrency != DefaultConcurrency || c.Handler.Name != "echo" || c.RunID == "" {
					t.Errorf("defaults not filled: %+v", c)
				}
				return
			}
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v, want one containing %q", err, w)
				}
			}
		})
	}
}

func TestBaselineValue(t *testing.T) {
	id := []byte("0123456789abcdef0123456789abcdef")
	for _, size := range []int{0, 10, 300} {
		v := encodeValue(size, 513, id)
		if len(v) != max(size, valueHeader+len(id)) {
			t.Errorf("size %d: value of %d bytes", size, len(v))
		}
		part, got, err := decodeValue(v)
		if err != nil || part != 513 || string(got) != string(id) {
			t.Errorf("size %d: decoded %d %q %v", size, part, got, err)
		}
	}
	if _, _, err := decodeValue([]byte{0, 1, 40, 'x'}); err == nil {
		t.Error("a truncated value decoded")
	}
}

func TestParseProcStat(t *testing.T) {
	stat := []byte(`cpu  100 5 50 800 40 3 2 0 7 0
cpu0 50 2 25 400 20 1 1 0 7 0
cpu1 50 3 25 400 20 2 1 0 0 0
intr 12345
ctxt 999
`)
	m := parseProcStat(stat)
	// busy: user+nice+system+irq+softirq+steal, guest left out (in user).
	if m.busy != 160 || m.total != 1000 || m.cpus != 2 {
		t.Fatalf("got busy %d total %d cpus %d, want 160, 1000, 2", m.busy, m.total, m.cpus)
	}
	later := parseProcStat([]byte(`cpu  250 5 100 850 40 3 2 0 7 0
cpu0 0 0 0 0 0 0 0 0 0 0
cpu1 0 0 0 0 0 0 0 0 0 0
`))
	// 200 busy ticks of 250: 80% busy over 2 CPUs.
	cores, idle, ok := m.busyCores(later)
	if !ok || cores < 1.599 || cores > 1.601 || idle < 19.99 || idle > 20.01 {
		t.Fatalf("busyCores = %.3f, %.2f%%, %v; want 1.6 cores, 20%% idle", cores, idle, ok)
	}
	if _, _, ok := (machineCPU{}).busyCores(later); ok {
		t.Error("a missing first reading gave a figure")
	}
	if m := parseProcStat([]byte("cpu  1 x 3\n")); m.total != 0 {
		t.Errorf("a malformed line gave %+v", m)
	}
}

func TestSaturationNote(t *testing.T) {
	p := Phase{MachineCores: 1.9, MachineIdlePct: 5, MachineCPUPerRequestUS: 1000}
	b := Phase{MachineCores: 1.8, MachineIdlePct: 10, MachineCPUPerRequestUS: 800}
	if got := saturationNote(&p, &b); !strings.Contains(got, "baseline/pipeline 0.80") {
		t.Errorf("both saturated: %q", got)
	}
	b.MachineIdlePct = 40
	if got := saturationNote(&p, &b); strings.Contains(got, "follows") || !strings.Contains(got, "40% in the baseline's") {
		t.Errorf("only the pipeline saturated: %q", got)
	}
	p.MachineIdlePct = 30
	if got := saturationNote(&p, &b); got != "" {
		t.Errorf("idle machine: %q", got)
	}
	if got := saturationNote(&Phase{}, nil); got != "" {
		t.Errorf("no machine figures: %q", got)
	}
}

func TestMachineCPUInReport(t *testing.T) {
	r := sampleReport("", true)
	r.Phase.MachineCores, r.Phase.MachineIdlePct, r.Phase.MachineCPUPerRequestUS = 1.9, 5, 1000
	r.Baseline.MachineCores, r.Baseline.MachineIdlePct, r.Baseline.MachineCPUPerRequestUS = 1.8, 10, 800
	r.Phase.KafkaRequests = map[string]RequestStat{"Produce": {Count: 3000, PerRequest: 3}, "Fetch": {Count: 4500, PerRequest: 4.5}, "Heartbeat": {Count: 2, PerRequest: 0.002}}
	r.Baseline.KafkaRequests = map[string]RequestStat{"Produce": {Count: 2000, PerRequest: 2}}
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Kafka requests per request: pipeline 7.50 in all, 4.50 Fetch, 3.00 Produce; baseline 2.00 in all, 2.00 Produce\n",
		"machine cores busy", "machine idle %", "machine CPU µs/request", "1000", "800", "1.25", "follows the machine CPU per request"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestSettingsTransactionGap(t *testing.T) {
	for _, tc := range []struct {
		g    kafkaconfig.Guarantee
		gap  time.Duration
		want float64
	}{
		{kafkaconfig.ExactlyOnce, 0, float64(kafkaconfig.DefaultTransactionGap.Microseconds()) / 1000},
		{kafkaconfig.ExactlyOnce, 5 * time.Millisecond, 5},
		{kafkaconfig.ExactlyOnce, -1, 0},
		{kafkaconfig.AtLeastOnce, 5 * time.Millisecond, 0},
	} {
		cfg := Config{Client: testClientConfig(), Guarantee: tc.g, TransactionGap: tc.gap}
		if got := cfg.settings().TransactionGapMS; got != tc.want {
			t.Errorf("%s, gap %s: transaction_gap_ms %v, want %v", tc.g, tc.gap, got, tc.want)
		}
	}
}
