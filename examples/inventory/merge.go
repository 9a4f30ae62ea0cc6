package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/schemas"
)

// StockReport is the merged payload of a stock reply: the items of every OK
// shard, sorted by SKU, and their totals. In a PARTIAL reply it covers the
// OK shards only (Shards lists them); the reply's parts say which are
// missing.
type StockReport struct {
	Items []Item `json:"items"`
	// Shards are the shards whose answer the report holds.
	Shards []schemas.PartID `json:"shards"`
	// NotFound lists the SKUs no shard stocks.
	NotFound []string `json:"not_found,omitempty"`
	// Units is the stock of every item found; ValueCents what it is worth.
	Units      int `json:"units"`
	ValueCents int `json:"value_cents"`
}

// mergeStock is the stock route's aggregator.Merge: it concatenates the
// shards' items, sorts them by SKU and sums their stock and value. A part
// whose payload is not a ShardStock fails the merge, which makes the reply
// FAILED with "merge: ..." in its error: a report built from a payload the
// merge cannot read would be wrong, not partial.
func mergeStock(parts []aggregator.Part) ([]byte, error) {
	var r StockReport
	for _, p := range parts {
		var s ShardStock
		if err := json.Unmarshal(p.Payload, &s); err != nil {
			return nil, fmt.Errorf("part %s: %w", p.ID, err)
		}
		r.Shards = append(r.Shards, p.ID)
		for _, it := range s.Items {
			r.Items = append(r.Items, it)
			if !it.Found {
				r.NotFound = append(r.NotFound, it.SKU)
				continue
			}
			r.Units += it.Stock
			r.ValueCents += it.Stock * it.PriceCents
		}
	}
	slices.SortFunc(r.Items, func(a, b Item) int { return strings.Compare(a.SKU, b.SKU) })
	slices.Sort(r.NotFound)
	return json.Marshal(r)
}
