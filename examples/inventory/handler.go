package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// ShardStock is the payload of one part's result: its shard's answer.
type ShardStock struct {
	Shard schemas.PartID `json:"shard"`
	Items []Item         `json:"items"`
}

// lookupHandler is the stock route's processor.Handler: it looks the task's
// SKUs up on the task's shard.
//
// Errors tell the processor what to do:
//   - bad input (a payload that is not a StockQuery, a part that is not a
//     shard, a malformed SKU, a SKU of another shard) can never succeed, so
//     it is processor.Permanent: the part is answered ERROR at once, without
//     retries;
//   - a shard that does not answer (ErrUnavailable) may answer the next
//     try, so the error is returned as it is: the processor retries it with
//     backoff (Config.Retries, Config.Backoff) and answers ERROR only when
//     the retries are spent or the deadline is near.
func lookupHandler(w *Warehouse) processor.Handler {
	return processor.HandlerFunc(func(ctx context.Context, t schemas.Task) ([]byte, error) {
		shard, err := scatterer.ParseShardID(t.PartID)
		if err != nil || shard < 0 || shard >= Shards {
			return nil, processor.Permanent(fmt.Errorf("part %q is not a shard of the inventory", t.PartID))
		}
		var q StockQuery
		if err := json.Unmarshal(t.Payload, &q); err != nil {
			return nil, processor.Permanent(fmt.Errorf("payload: %w", err))
		}
		for _, sku := range q.SKUs {
			if !skuPattern.MatchString(sku) {
				return nil, processor.Permanent(fmt.Errorf("bad sku %q: want three capital letters, a dash and four digits", sku))
			}
			if s := shardOf(sku); s != shard {
				return nil, processor.Permanent(fmt.Errorf("sku %s belongs to shard-%d, not %s", sku, s, t.PartID))
			}
		}
		items, err := w.Lookup(ctx, shard, q.SKUs)
		if err != nil {
			return nil, err // transient: retried
		}
		return json.Marshal(ShardStock{Shard: t.PartID, Items: items})
	})
}
