package bench

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

func TestMain(m *testing.M) { testkafka.Main(m) }

// testClientConfig is a valid client config for tests that connect nowhere.
func testClientConfig() kafkaconfig.Client {
	return kafkaconfig.Client{Brokers: []string{"127.0.0.1:1"}}
}

func testLayout() kafkaconfig.Layout {
	return kafkaconfig.Layout{Partitions: 3, ResultPartitions: 3, ReplicationFactor: -1}
}

// TestRunWithBaseline runs a two-second bench of the pipeline and the
// baseline on the test broker and checks the JSON report.
func TestRunWithBaseline(t *testing.T) {
	tests := []struct {
		guarantee kafkaconfig.Guarantee
		load      Load
	}{
		{kafkaconfig.AtLeastOnce, Load{Concurrency: 4, Duration: 2 * time.Second, Warmup: 500 * time.Millisecond}},
		{kafkaconfig.ExactlyOnce, Load{Rate: 100, Duration: 2 * time.Second, Warmup: 500 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(string(tt.guarantee), func(t *testing.T) {
			c := testkafka.New(t)
			cfg := Config{
				Client: kafkaconfig.Client{Brokers: c.Brokers}, Topics: kafkaconfig.Topics{Prefix: c.Prefix}, Layout: testLayout(),
				Guarantee: tt.guarantee, Fanout: 4, Baseline: true, Load: tt.load,
			}
			rep, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "bench.json")
			if err := WriteJSON(path, rep); err != nil {
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
			num := func(m map[string]any, k string) float64 {
				t.Helper()
				v, ok := m[k].(float64)
				if !ok {
					t.Fatalf("key %q: %v (%T), want a number", k, m[k], m[k])
				}
				return v
			}
			base, ok := m["baseline"].(map[string]any)
			if !ok {
				t.Fatalf("no baseline object in %s", b)
			}
			for name, ph := range map[string]map[string]any{"pipeline": m, "baseline": base} {
				reqs, complete := num(ph, "requests"), num(ph, "complete")
				if reqs < 10 || complete != reqs {
					t.Errorf("%s: %v of %v measured requests COMPLETE, want all (and at least 10)", name, complete, reqs)
				}
				for _, k := range []string{"partial", "failed", "no_reply"} {
					if v := num(ph, k); v != 0 {
						t.Errorf("%s: %s = %v, want 0", name, k, v)
					}
				}
				if tasks := num(ph, "tasks"); tasks != 4*reqs {
					t.Errorf("%s: %v tasks for %v requests of fan-out 4", name, tasks, reqs)
				}
				if rps, tps := num(ph, "requests_per_s"), num(ph, "tasks_per_s"); rps <= 0 || math.Abs(tps-4*rps) > 1e-6*tps {
					t.Errorf("%s: requests/s %v, tasks/s %v: want tasks = 4 × requests > 0", name, rps, tps)
				}
				p50, p99, p999, pmax := num(ph, "p50_ms"), num(ph, "p99_ms"), num(ph, "p999_ms"), num(ph, "max_ms")
				if !(0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= pmax && pmax < 10_000) {
					t.Errorf("%s: latencies p50 %v p99 %v p99.9 %v max %v ms are not sane", name, p50, p99, p999, pmax)
				}
				if mb := num(ph, "mb_per_s"); mb <= 0 {
					t.Errorf("%s: %v MB/s written", name, mb)
				}
			}
			if r := num(m, "ratio_tasks_per_s"); r <= 0 {
				t.Errorf("ratio_tasks_per_s = %v, want > 0", r)
			}
			if r := num(m, "ratio_p99"); r <= 0 {
				t.Errorf("ratio_p99 = %v, want > 0", r)
			}
			if tt.load.Rate > 0 && math.Abs(rep.RequestsPerS-tt.load.Rate) > tt.load.Rate*0.2 {
				t.Errorf("open loop at %v req/s: pipeline answered %v req/s", tt.load.Rate, rep.RequestsPerS)
			}

			// The pipeline writes, per request, a request, 4 tasks, a
			// manifest, 4 results and a reply; the baseline the same but
			// the manifest.
			wantRecords := map[string]float64{"request": 1, "task": 4, "manifest": 1, "result": 4, "reply": 1}
			for kind, want := range wantRecords {
				if got := rep.Records[kind].PerRequest; math.Abs(got-want) > 0.01*want {
					t.Errorf("pipeline: %v %s records per request, want %v", got, kind, want)
				}
				if kind == "manifest" {
					continue
				}
				if got := rep.Baseline.Records[kind].PerRequest; math.Abs(got-want) > 0.01*want {
					t.Errorf("baseline: %v %s records per request, want %v", got, kind, want)
				}
				// Same keys, headers and value sizes: the same bytes.
				if p, b := rep.Records[kind].AvgBytes, rep.Baseline.Records[kind].AvgBytes; math.Abs(p-b) > 2 {
					t.Errorf("%s records: pipeline %v bytes on average, baseline %v", kind, p, b)
				}
			}

			// Every chain produces and fetches; under exactly-once each
			// hop also ends transactions. At least one Produce per
			// request: the request itself.
			for name, ph := range map[string]*Phase{"pipeline": &rep.Phase, "baseline": rep.Baseline} {
				reqs := ph.KafkaRequests
				if reqs["Produce"].PerRequest < 1 || reqs["Fetch"].Count == 0 {
					t.Errorf("%s: Kafka requests %v, want at least one Produce per request and some Fetch", name, reqs)
				}
				if tt.guarantee == kafkaconfig.ExactlyOnce && reqs["EndTxn"].Count == 0 {
					t.Errorf("%s: no EndTxn under exactly-once (Kafka requests %v)", name, reqs)
				}
			}

			// The estimate used when the roles run elsewhere is close to
			// what the pipeline wrote.
			sizes := rep.Settings.BaselineSizes
			if sizes == nil || !sizes.Measured {
				t.Fatalf("baseline sizes %+v, want measured ones", sizes)
			}
			_ = cfg.Validate()
			est, err := estimateSizes(&cfg, cfg.payload())
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []struct {
				kind          string
				measured, est int
			}{{"request", sizes.Request.Value, est.Request.Value}, {"task", sizes.Task.Value, est.Task.Value},
				{"result", sizes.Result.Value, est.Result.Value}, {"reply", sizes.Reply.Value, est.Reply.Value}} {
				if math.Abs(float64(s.est-s.measured)) > 0.1*float64(s.measured) {
					t.Errorf("%s: estimated %d bytes, the pipeline wrote %d", s.kind, s.est, s.measured)
				}
			}

			// Both phases deleted their topics. A real broker's metadata
			// may list a deleted topic for a moment after the deletion.
			adm, left := c.Admin(t), []string(nil)
			for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				topics, err := adm.ListTopics(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				left = left[:0]
				for _, name := range topics.Names() {
					if strings.HasPrefix(name, c.Prefix) {
						left = append(left, name)
					}
				}
				if len(left) == 0 || time.Now().After(deadline) {
					break
				}
			}
			for _, name := range left {
				t.Errorf("topic %s left behind", name)
			}
		})
	}
}
