package processor

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// lockedBuffer is a log sink a running processor writes while the test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestUnknownRecipient: a processor whose Recipient is not among the
// recipients a broadcast task's sg-recipients header lists (a misspelt
// --recipient: acmee for acme) writes no result for it, counts it
// (Stats.UnknownRecipient and
// scattergather_processor_unknown_recipient_tasks_total) and warns once,
// naming itself and the route's recipients; the right recipient answers
// every task. A task without the header (a scatterer older than it)
// cannot be checked and is answered as before. Batch-at-a-time and the
// pipeline.
func TestUnknownRecipient(t *testing.T) {
	for _, conc := range []int{1, 4} {
		t.Run(modeName(kafkaconfig.ExactlyOnce, conc), func(t *testing.T) {
			e := newEnv(t, 1)
			h := HandlerFunc(func(_ context.Context, t schemas.Task) ([]byte, error) { return []byte(t.PartID), nil })
			reg := prometheus.NewRegistry()
			var logs lockedBuffer
			recipients := map[schemas.PartID]*running{}
			for _, r := range []schemas.PartID{"acme", "acmee"} {
				cfg := e.config("proc-" + string(r))
				cfg.Recipient, cfg.Concurrency, cfg.Guarantee = r, conc, kafkaconfig.ExactlyOnce
				if r == "acmee" {
					cfg.Metrics = reg
					cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
				}
				recipients[r] = start(t, cfg, h)
			}
			var recs []*kgo.Record
			for i := range 3 {
				tk := task(fmt.Sprintf("q-%d", i), "", "quote please")
				recs = append(recs, &kgo.Record{Topic: e.topics.Tasks(string(testRoute)), Value: encodeTasks(t, tk)[0],
					Headers: []kgo.RecordHeader{{Key: "sg-recipients", Value: []byte("acme,initech")}}})
			}
			recs = append(recs, &kgo.Record{Topic: e.topics.Tasks(string(testRoute)), Value: encodeTasks(t, task("legacy", "", "no header"))[0]})
			if err := e.prod.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}

			rd := e.reader(t, e.topics.Results())
			rd.until(t, "5 results", func(rs []*kgo.Record) bool { return len(rs) >= 5 })
			eventually(t, "3 tasks skipped by acmee", func() bool { return recipients["acmee"].p.Stats().UnknownRecipient == 3 })
			var got []string
			for _, r := range results(t, rd.drain(t, e.layout.ResultPartitions)) {
				got = append(got, string(r.CorrelationID)+"/"+string(r.PartID))
			}
			sort.Strings(got)
			if want := "legacy/acme legacy/acmee q-0/acme q-1/acme q-2/acme"; strings.Join(got, " ") != want {
				t.Errorf("results %v, want %s", got, want)
			}
			if n := counterValue(t, reg, "scattergather_processor_unknown_recipient_tasks_total"); n != 3 {
				t.Errorf("unknown recipient tasks counted %v, want 3", n)
			}
			log := logs.String()
			if n := strings.Count(log, "recipient unknown to the route"); n != 1 {
				t.Errorf("warned %d times, want once: %s", n, log)
			}
			if !strings.Contains(log, "recipient=acmee") || !strings.Contains(log, "route_recipients=acme,initech") || !strings.Contains(log, "level=WARN") {
				t.Errorf("the warning does not name the recipient and the route's: %s", log)
			}
		})
	}
}

// counterValue returns the value of the one series of the counter name.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no single series %s in the registry", name)
	return 0
}
