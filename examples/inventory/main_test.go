package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

// TestScenario runs the example end to end, as `go run ./inventory` does
// (an in-process broker, every role, the client), and checks each reply:
// its status, its parts and the merged report.
func TestScenario(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var out strings.Builder
	sum, err := run(ctx, options{prefix: "inventory.", processors: 2}, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(sum.Outcomes) != 7 {
		t.Fatalf("%d replies, want 7", len(sum.Outcomes))
	}
	reply := func(i int) schemas.Reply { return sum.Outcomes[i].Reply }

	// 1. A SKU on every shard: COMPLETE, every shard OK, the report merged,
	// sorted by SKU and summed: 12×19.99 + 31×4.50 + 3×129.00 + 18×32.50.
	const wantReport = `{"items":[` +
		`{"sku":"BLU-0001","found":true,"stock":12,"price_cents":1999},` +
		`{"sku":"GRN-0002","found":true,"stock":31,"price_cents":450},` +
		`{"sku":"PNK-0001","found":false,"stock":0,"price_cents":0},` +
		`{"sku":"RED-0001","found":true,"stock":3,"price_cents":12900},` +
		`{"sku":"RED-0002","found":true,"stock":18,"price_cents":3250}],` +
		`"shards":["shard-0","shard-1","shard-2","shard-3"],"not_found":["PNK-0001"],"units":64,"value_cents":135138}`
	r := reply(0)
	checkReply(t, "every shard", r, schemas.ReplyComplete, map[string]schemas.PartStatus{
		"shard-0": schemas.PartOK, "shard-1": schemas.PartOK, "shard-2": schemas.PartOK, "shard-3": schemas.PartOK})
	if string(r.Payload) != wantReport {
		t.Errorf("every shard: report\n%s\nwant\n%s", r.Payload, wantReport)
	}

	// 2. Two SKUs of one shard: one task.
	r = reply(1)
	checkReply(t, "one shard", r, schemas.ReplyComplete, map[string]schemas.PartStatus{"shard-3": schemas.PartOK})
	if rep := decode(t, r); rep.Units != 40 || len(rep.Items) != 2 || rep.Items[0].SKU != "BLU-0002" {
		t.Errorf("one shard: report %+v, want BLU-0002 and YLW-0001, 40 units", rep)
	}

	// 3. A malformed SKU: its shard ERROR (Permanent, so not retried), the
	// other shard OK, the reply PARTIAL with the OK shard's report.
	r = reply(2)
	checkReply(t, "malformed", r, schemas.ReplyPartial, map[string]schemas.PartStatus{
		"shard-1": schemas.PartOK, "shard-2": schemas.PartError})
	if p, _ := r.Part("shard-2"); !strings.Contains(p.Error, `bad sku "red 2"`) {
		t.Errorf("malformed: shard-2 error %q, want it to name the bad sku", p.Error)
	}
	if rep := decode(t, r); len(rep.Shards) != 1 || rep.Shards[0] != "shard-1" || rep.Units != 18 {
		t.Errorf("malformed: report %+v, want shard-1's RED-0002 only", rep)
	}

	// 4. No SKUs: rejected by the split, FAILED without parts.
	r = reply(3)
	checkReply(t, "no skus", r, schemas.ReplyFailed, map[string]schemas.PartStatus{})
	if !strings.Contains(r.Error, "split-failed") || len(r.Payload) != 0 {
		t.Errorf("no skus: error %q payload %q, want split-failed and no payload", r.Error, r.Payload)
	}

	// 5. A shard failing twice: retried, COMPLETE, the same report as 1.
	r = reply(4)
	checkReply(t, "flaky shard", r, schemas.ReplyComplete, map[string]schemas.PartStatus{
		"shard-0": schemas.PartOK, "shard-1": schemas.PartOK, "shard-2": schemas.PartOK, "shard-3": schemas.PartOK})
	if string(r.Payload) != wantReport {
		t.Errorf("flaky shard: report\n%s\nwant\n%s", r.Payload, wantReport)
	}

	// 6. shard-3 offline: its part ERROR after 3 tries, PARTIAL, the report
	// of the other three shards (GRN-0002's 31 units missing).
	r = reply(5)
	checkReply(t, "offline", r, schemas.ReplyPartial, map[string]schemas.PartStatus{
		"shard-0": schemas.PartOK, "shard-1": schemas.PartOK, "shard-2": schemas.PartOK, "shard-3": schemas.PartError})
	if p, _ := r.Part("shard-3"); !strings.Contains(p.Error, "unavailable") {
		t.Errorf("offline: shard-3 error %q, want unavailable", p.Error)
	}
	if rep := decode(t, r); rep.Units != 33 || len(rep.Shards) != 3 || rep.ValueCents != 135138-31*450 {
		t.Errorf("offline: report %+v, want shards 0-2: 33 units, %d cents", rep, 135138-31*450)
	}

	// 7. Only SKUs of the offline shard: FAILED, no report.
	r = reply(6)
	checkReply(t, "offline alone", r, schemas.ReplyFailed, map[string]schemas.PartStatus{"shard-3": schemas.PartError})
	if len(r.Payload) != 0 {
		t.Errorf("offline alone: payload %s, want none", r.Payload)
	}

	// Retries: 2 for the flaky shard, 2 for each request to the offline
	// one, none for the malformed SKU (Permanent).
	want := processor.Stats{OK: 13, Error: 3, Retries: 6}
	if got := sum.Processors; got.OK != want.OK || got.Error != want.Error || got.Retries != want.Retries {
		t.Errorf("processors: %+v, want OK %d, Error %d, Retries %d", got, want.OK, want.Error, want.Retries)
	}

	// What is printed shows a partial answer as partial.
	for _, s := range []string{
		"PARTIAL: 1 of 2 parts OK",
		"shard-2  ERROR: bad sku",
		"report (PARTIAL: covers shard-1 only)",
		"FAILED: no parts",
		"PARTIAL: 3 of 4 parts OK",
		"report (PARTIAL: covers shard-0, shard-1, shard-2 only): 33 units worth $1211.88",
		"processors: parts OK 13, ERROR 3; retries 6",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q", s)
		}
	}
}

// TestBrokers runs the example against a broker it did not start, as
// --brokers does, with --skus, and an OpenTelemetry TracerProvider on the
// roles (kafkaconfig.Role.TracerProvider): the request is one trace, the
// scatter span its root, the process and aggregate spans its children.
func TestBrokers(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	fake, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var out strings.Builder
	sum, err := run(ctx, options{brokers: fake.ListenAddrs(), prefix: "mine.", processors: 1, skus: []string{"YLW-0002", "BLK-0002"},
		tracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))}, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(sum.Outcomes) != 1 {
		t.Fatalf("%d replies, want 1", len(sum.Outcomes))
	}
	r := sum.Outcomes[0].Reply
	checkReply(t, "--skus", r, schemas.ReplyComplete, map[string]schemas.PartStatus{"shard-1": schemas.PartOK, "shard-2": schemas.PartOK})
	if rep := decode(t, r); rep.Units != 14 || rep.ValueCents != 5*7500+9*1250 {
		t.Errorf("report %+v, want 14 units, %d cents", rep, 5*7500+9*1250)
	}
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans.Ended() {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	scatter, process, aggregate := byName["scatter stock"], byName["process stock"], byName["aggregate stock"]
	if len(scatter) != 1 || len(process) != 2 || len(aggregate) != 1 {
		t.Fatalf("%d scatter, %d process, %d aggregate spans; want 1, 2, 1", len(scatter), len(process), len(aggregate))
	}
	root := scatter[0].SpanContext()
	for _, s := range append(process, aggregate...) {
		if s.Parent().TraceID() != root.TraceID() || s.Parent().SpanID() != root.SpanID() {
			t.Errorf("span %q has parent %v, want the scatter span %v", s.Name(), s.Parent(), root)
		}
	}
}

// checkReply checks a reply's status and its parts' markers.
func checkReply(t *testing.T, name string, r schemas.Reply, status schemas.ReplyStatus, parts map[string]schemas.PartStatus) {
	t.Helper()
	if r.Status != status {
		t.Errorf("%s: status %s (%s), want %s", name, r.Status, r.Error, status)
	}
	if len(r.Parts) != len(parts) {
		t.Errorf("%s: %d parts %+v, want %d", name, len(r.Parts), r.Parts, len(parts))
	}
	for id, want := range parts {
		if p, ok := r.Part(schemas.PartID(id)); !ok || p.Status != want {
			t.Errorf("%s: part %s %+v (listed %v), want %s", name, id, p, ok, want)
		}
	}
}

func decode(t *testing.T, r schemas.Reply) StockReport {
	t.Helper()
	var rep StockReport
	if err := json.Unmarshal(r.Payload, &rep); err != nil {
		t.Fatalf("reply payload %q: %v", r.Payload, err)
	}
	return rep
}
