package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// StockQuery is the payload of a request on the stock route, and of each of
// its tasks: the SKUs to look up.
type StockQuery struct {
	SKUs []string `json:"skus"`
}

// maxSKUs caps the SKUs of one request.
const maxSKUs = 1000

// splitBySKU is the stock route's scatterer.SplitFunc: it sends each SKU to
// the shard that holds it, one part per shard that has any (a request for
// two SKUs on one shard is one task, not four). Parts are named by
// scatterer.ShardID, so the processor learns its shard from the task's
// PartID, and split tasks are keyed by part, so a shard's tasks always go to
// the same partition of tasks.stock.
//
// A request the split cannot read is rejected: the scatterer dead-letters it
// and answers FAILED ("split-failed: ..."); no task is sent. It does not
// check what a SKU looks like: that is the shard's business (a malformed
// SKU is answered ERROR by its part, see lookupHandler).
func splitBySKU(req schemas.Request, fanout int) ([]scatterer.Part, error) {
	if fanout != Shards {
		return nil, fmt.Errorf("the inventory has %d shards; a request cannot ask for %d", Shards, fanout)
	}
	var q StockQuery
	if err := json.Unmarshal(req.Payload, &q); err != nil {
		return nil, fmt.Errorf("payload: want {\"skus\": [...]}: %w", err)
	}
	switch {
	case len(q.SKUs) == 0:
		return nil, errors.New("no skus")
	case len(q.SKUs) > maxSKUs:
		return nil, fmt.Errorf("%d skus, at most %d", len(q.SKUs), maxSKUs)
	}
	var perShard [Shards][]string
	seen := map[string]bool{}
	for _, sku := range q.SKUs {
		if seen[sku] {
			continue // asked twice, looked up once
		}
		seen[sku] = true
		s := shardOf(sku)
		perShard[s] = append(perShard[s], sku)
	}
	var parts []scatterer.Part
	for shard, skus := range perShard {
		if len(skus) == 0 {
			continue
		}
		payload, err := json.Marshal(StockQuery{SKUs: skus})
		if err != nil {
			return nil, err
		}
		parts = append(parts, scatterer.Part{ID: scatterer.ShardID(shard), Payload: payload})
	}
	return parts, nil
}
