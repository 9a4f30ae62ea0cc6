package processor

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// BenchmarkHTTPConcurrency measures a processor's throughput with the http
// handler against a loopback service that answers after 20ms, on 6
// partitions, at several concurrencies. Each iteration offers 600 tasks
// (times concurrency/4 above 4) with distinct keys (as broadcast tasks are
// keyed, by request) at once and waits for their results; tasks/s is
// reported. With concurrency 1 the bound is 6 partitions / 20ms = 300
// tasks/s.
//
//	go test ./processor -run '^$' -bench HTTPConcurrency -benchtime 3x
func BenchmarkHTTPConcurrency(b *testing.B) {
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	b.Cleanup(svc.Close)
	for _, conc := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("concurrency-%d", conc), func(b *testing.B) {
			benchHTTP(b, svc.URL, conc)
		})
	}
}

func benchHTTP(b *testing.B, url string, conc int) {
	const partitions = 6
	// Enough tasks that an iteration lasts about 2s at every concurrency:
	// the first and last transactions' latency would weigh on a short one.
	perIteration := 600 * max(1, conc/4)
	e := newEnv(b, partitions)
	h, err := HTTP(HTTPConfig{URL: url})
	if err != nil {
		b.Fatal(err)
	}
	cfg := e.config("bench")
	cfg.Concurrency = conc
	run := start(b, cfg, h)
	deadline := time.Now().Add(waitFor)
	for {
		if _, n := run.p.GroupAssignment(); n == partitions {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("no assignment")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rd := e.reader(b, e.topics.Results())
	topic := e.topics.Tasks(string(testRoute))
	b.ReportAllocs()
	b.ResetTimer()
	var elapsed time.Duration
	for i := range b.N {
		recs := make([]*kgo.Record, perIteration)
		for j := range recs {
			tk := task(fmt.Sprintf("it%d-%04d", i, j), scatterer.ShardID(j%16), `{"q":1}`)
			v, err := schemas.EncodeTask(tk)
			if err != nil {
				b.Fatal(err)
			}
			recs[j] = &kgo.Record{Topic: topic, Partition: int32(j % partitions), Key: []byte(tk.CorrelationID), Value: v}
		}
		began := time.Now()
		if err := e.prod.ProduceSync(b.Context(), recs...).FirstErr(); err != nil {
			b.Fatal(err)
		}
		want := (i + 1) * perIteration
		rd.until(b, "results", func(rs []*kgo.Record) bool { return len(rs) >= want })
		elapsed += time.Since(began)
	}
	b.StopTimer()
	for _, r := range results(b, rd.recs) {
		if r.Status != schemas.ResultOK {
			b.Fatalf("result %s: %s %s", r.CorrelationID, r.Status, r.Error)
		}
	}
	b.ReportMetric(float64(b.N*perIteration)/elapsed.Seconds(), "tasks/s")
	if err := run.stop(); err != nil {
		b.Fatal(err)
	}
}
