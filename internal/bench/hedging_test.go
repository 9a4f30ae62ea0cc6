package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/scatterer"
)

// TestCompareHedging runs the three phases briefly with many slow
// stragglers, so that even a short run shows them: the JSON report has the
// "hedging" object, the stragglers show in the unhedged p99, and the hedged
// phase re-issued tasks within its budget. The figures of a real comparison
// are in docs/benchmarks.md; this checks the plumbing.
func TestCompareHedging(t *testing.T) {
	c := testkafka.New(t)
	cfg := Config{
		Client: kafkaconfig.Client{Brokers: c.Brokers}, Topics: kafkaconfig.Topics{Prefix: c.Prefix}, Layout: testLayout(),
		Fanout: 4, Handler: HandlerSpec{Delay: time.Millisecond},
		Load: Load{Rate: 40, Duration: 2 * time.Second, Warmup: 500 * time.Millisecond},
	}
	h := Hedging{StragglerRate: 0.1, StragglerDelay: 400 * time.Millisecond,
		Hedge: scatterer.Hedge{Delay: 50 * time.Millisecond, Budget: 0.2}, ProcessorConcurrency: 16}
	rep, err := CompareHedging(t.Context(), cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "hedging.json")
	if err := WriteJSON(path, rep); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Hedging map[string]float64 `json:"hedging"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"p99_ms_no_stragglers", "p99_ms_unhedged", "p99_ms_hedged"} {
		if m.Hedging[k] <= 0 {
			t.Errorf("hedging.%s = %v, want a latency", k, m.Hedging[k])
		}
	}
	extra, ok := m.Hedging["extra_tasks_pct"]
	if !ok || extra <= 0 || extra > 20.5 {
		t.Errorf("hedging.extra_tasks_pct = %v (present %v), want above 0 and within the 20%% budget", extra, ok)
	}
	s := rep.Hedging
	if s.P99MSUnhedged < 400 {
		t.Errorf("unhedged p99 %v ms: the 400ms stragglers do not show", s.P99MSUnhedged)
	}
	if s.HedgesIssued == 0 || s.HedgesWon == 0 || s.TasksIssued == 0 {
		t.Errorf("hedged phase: %+v, want hedges issued and won", s)
	}
	for name, ph := range map[string]*Phase{"no stragglers": rep.NoStragglers, "unhedged": rep.Unhedged, "hedged": rep.Hedged} {
		if ph.Requests < 10 || ph.Complete != ph.Requests {
			t.Errorf("%s: %d of %d requests COMPLETE", name, ph.Complete, ph.Requests)
		}
	}
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "stragglers, hedged") {
		t.Errorf("table:\n%s", table.String())
	}
	t.Logf("\n%s", table.String())
}
