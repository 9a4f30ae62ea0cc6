package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"sync"
)

// Shards is how many shards the inventory is partitioned into. Each SKU
// lives on exactly one of them, shardOf(sku), and the route's fan-out is
// this number.
const Shards = 4

// shardOf is the shard that holds sku: the split routes each SKU there and
// the processor checks that it was.
func shardOf(sku string) int {
	h := fnv.New32a()
	h.Write([]byte(sku))
	return int(h.Sum32() % Shards)
}

// skuPattern is what a SKU looks like: three capital letters, a dash, four
// digits ("BLU-0042").
var skuPattern = regexp.MustCompile(`^[A-Z]{3}-[0-9]{4}$`)

// Item is one SKU's stock and price on its shard.
type Item struct {
	SKU        string `json:"sku"`
	Found      bool   `json:"found"`
	Stock      int    `json:"stock"`
	PriceCents int    `json:"price_cents"`
}

// ErrUnavailable is the error of a shard that does not answer: a transient
// failure, which the processor retries.
var ErrUnavailable = errors.New("unavailable")

// Warehouse is the sharded stock store the processors look SKUs up in. In a
// real deployment each processor would query its shard's database; here
// every shard is a map, and a shard can be made to fail on purpose (FailNext,
// SetOffline) to show how the pipeline reports it. Safe for concurrent use.
type Warehouse struct {
	mu       sync.Mutex
	shards   [Shards]map[string]Item
	failNext [Shards]int
	offline  [Shards]bool
	lookups  [Shards]int
}

// NewWarehouse returns a warehouse stocked with the items of stock.
func NewWarehouse(stock []Item) *Warehouse {
	w := &Warehouse{}
	for i := range w.shards {
		w.shards[i] = map[string]Item{}
	}
	for _, it := range stock {
		it.Found = true
		w.shards[shardOf(it.SKU)][it.SKU] = it
	}
	return w
}

// Lookup returns the stock of the SKUs on shard, in the order asked. A SKU
// the shard does not stock is returned with Found false.
func (w *Warehouse) Lookup(ctx context.Context, shard int, skus []string) ([]Item, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lookups[shard]++
	switch {
	case w.offline[shard]:
		return nil, fmt.Errorf("shard-%d: %w (offline)", shard, ErrUnavailable)
	case w.failNext[shard] > 0:
		w.failNext[shard]--
		return nil, fmt.Errorf("shard-%d: %w (connection reset)", shard, ErrUnavailable)
	}
	items := make([]Item, len(skus))
	for i, sku := range skus {
		it, ok := w.shards[shard][sku]
		if !ok {
			it = Item{SKU: sku}
		}
		items[i] = it
	}
	return items, nil
}

// FailNext makes the next n lookups on shard fail with ErrUnavailable.
func (w *Warehouse) FailNext(shard, n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failNext[shard] = n
}

// SetOffline makes every lookup on shard fail with ErrUnavailable until it
// is set online again.
func (w *Warehouse) SetOffline(shard int, offline bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.offline[shard] = offline
}

// Lookups returns how many lookups shard has served, failed ones included.
func (w *Warehouse) Lookups(shard int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lookups[shard]
}

// demoStock is the example's inventory.
var demoStock = []Item{
	{SKU: "BLK-0002", Stock: 9, PriceCents: 1250},
	{SKU: "BLU-0001", Stock: 12, PriceCents: 1999},
	{SKU: "BLU-0002", Stock: 0, PriceCents: 2499},
	{SKU: "GRN-0001", Stock: 7, PriceCents: 899},
	{SKU: "GRN-0002", Stock: 31, PriceCents: 450},
	{SKU: "PUR-0001", Stock: 2, PriceCents: 15900},
	{SKU: "RED-0001", Stock: 3, PriceCents: 12900},
	{SKU: "RED-0002", Stock: 18, PriceCents: 3250},
	{SKU: "YLW-0001", Stock: 40, PriceCents: 199},
	{SKU: "YLW-0002", Stock: 5, PriceCents: 7500},
}
