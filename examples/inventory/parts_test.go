package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// The split, the handler and the merge are plain functions: they are tested
// here without Kafka.

func TestSplitBySKU(t *testing.T) {
	parts, err := splitBySKU(schemas.Request{Payload: query([]string{"BLU-0001", "RED-0001", "GRN-0001", "BLU-0001"})}, Shards)
	if err != nil {
		t.Fatal(err)
	}
	// BLU-0001 and GRN-0001 share shard-2; RED-0001 is on shard-0; the
	// second BLU-0001 is dropped.
	got := map[schemas.PartID]string{}
	for _, p := range parts {
		got[p.ID] = string(p.Payload)
	}
	want := map[schemas.PartID]string{
		"shard-0": `{"skus":["RED-0001"]}`,
		"shard-2": `{"skus":["BLU-0001","GRN-0001"]}`,
	}
	if len(got) != len(want) || got["shard-0"] != want["shard-0"] || got["shard-2"] != want["shard-2"] {
		t.Errorf("parts %v, want %v", got, want)
	}

	for name, tc := range map[string]struct {
		payload string
		fanout  int
		err     string
	}{
		"not json":    {`skus`, Shards, "payload"},
		"no skus":     {`{"skus":[]}`, Shards, "no skus"},
		"other field": {`{"sku":"BLU-0001"}`, Shards, "no skus"},
		"fanout":      {`{"skus":["BLU-0001"]}`, 2, "4 shards"},
	} {
		if _, err := splitBySKU(schemas.Request{Payload: []byte(tc.payload)}, tc.fanout); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want one with %q", name, err, tc.err)
		}
	}
}

func TestLookupHandler(t *testing.T) {
	w := NewWarehouse(demoStock)
	h := lookupHandler(w)
	ctx := context.Background()
	task := func(part, payload string) schemas.Task {
		return schemas.Task{PartID: schemas.PartID(part), Payload: []byte(payload)}
	}

	b, err := h.Handle(ctx, task("shard-2", `{"skus":["YLW-0002","WHT-0001"]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"shard":"shard-2","items":[{"sku":"YLW-0002","found":true,"stock":5,"price_cents":7500},{"sku":"WHT-0001","found":false,"stock":0,"price_cents":0}]}`
	if string(b) != want {
		t.Errorf("answer %s, want %s", b, want)
	}

	// Bad input is permanent: retrying cannot fix it.
	for name, tk := range map[string]schemas.Task{
		"not a shard":   task("acme", `{"skus":["BLU-0001"]}`),
		"shard 9":       task(string(scatterer.ShardID(9)), `{"skus":["BLU-0001"]}`),
		"not json":      task("shard-2", `[`),
		"malformed sku": task("shard-2", `{"skus":["blu-1"]}`),
		"other shard":   task("shard-1", `{"skus":["BLU-0001"]}`),
	} {
		if _, err := h.Handle(ctx, tk); err == nil || !processor.IsPermanent(err) {
			t.Errorf("%s: error %v, want a permanent one", name, err)
		}
	}

	// A shard that does not answer is transient: the processor retries.
	w.FailNext(2, 1)
	_, err = h.Handle(ctx, task("shard-2", `{"skus":["BLU-0001"]}`))
	if !errors.Is(err, ErrUnavailable) || processor.IsPermanent(err) {
		t.Errorf("failing shard: error %v, want ErrUnavailable, not permanent", err)
	}
	if _, err := h.Handle(ctx, task("shard-2", `{"skus":["BLU-0001"]}`)); err != nil {
		t.Errorf("after the failure: %v", err)
	}
}

func TestMergeStock(t *testing.T) {
	b, err := mergeStock([]aggregator.Part{
		{ID: "shard-1", Payload: []byte(`{"shard":"shard-1","items":[{"sku":"RED-0002","found":true,"stock":18,"price_cents":3250}]}`)},
		{ID: "shard-2", Payload: []byte(`{"shard":"shard-2","items":[{"sku":"GRN-0001","found":true,"stock":7,"price_cents":899},{"sku":"AAA-0000","found":false}]}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var r StockReport
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Units != 25 || r.ValueCents != 18*3250+7*899 || len(r.Items) != 3 ||
		r.Items[0].SKU != "AAA-0000" || r.Items[2].SKU != "RED-0002" ||
		len(r.NotFound) != 1 || len(r.Shards) != 2 {
		t.Errorf("report %s", b)
	}
	if _, err := mergeStock([]aggregator.Part{{ID: "shard-0", Payload: []byte("oops")}}); err == nil || !strings.Contains(err.Error(), "shard-0") {
		t.Errorf("bad payload: error %v, want one naming shard-0", err)
	}
}
