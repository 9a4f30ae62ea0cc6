// Package catalog is the demo product index behind the search handler: a
// deterministic catalogue of made-up products and a keyword search over it
// that can run on one shard of the catalogue or on all of it.
//
// It exists to make the seed's example checkable end to end: a search
// scattered over the shards and merged with the aggregator's top-k merge must
// equal the same search run on the whole catalogue,
//
//	cat := catalog.New(10_000, 1)
//	want := cat.Search("red running shoes", 10, 0, 1) // the whole index
//	part := cat.Search("red running shoes", 10, 2, 4) // shard 2 of 4
//
// so Search orders hits exactly as that merge does: by score, highest first,
// ties by id, lowest first.
//
// A Catalog is immutable once built and safe for concurrent use.
package catalog

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"unicode"
)

// Hit is one product found by a search.
type Hit struct {
	ID    string  `json:"id"`
	Name  string  `json:"name"`
	Price float64 `json:"price"`
	Score float64 `json:"score"`
}

// Product is one entry of the catalogue.
type Product struct {
	ID          string
	Name        string
	Description string
	Price       float64

	nameTerms []string // sorted, distinct
	descTerms []string // sorted, distinct
	boost     float64  // in [0, maxBoost): breaks ties, same for every search
}

// Catalog is a deterministic product catalogue.
type Catalog struct {
	products []Product
}

// Word lists the products are made of. Small on purpose: a query of a few of
// these words matches many products, so top-k lists are full and the merge
// across shards is exercised.
var (
	brands    = []string{"Acme", "Northwind", "Contoso", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Tyrell", "Hooli"}
	colours   = []string{"red", "blue", "green", "black", "white", "grey", "yellow", "orange", "purple", "brown"}
	materials = []string{"leather", "cotton", "wool", "steel", "bamboo", "canvas", "nylon", "oak", "glass", "ceramic"}
	kinds     = []string{"shoes", "jacket", "backpack", "mug", "lamp", "chair", "watch", "scarf", "bottle", "tent", "boots", "shirt"}
	uses      = []string{"running", "hiking", "office", "travel", "kitchen", "camping", "winter", "summer", "garden", "cycling"}
	qualities = []string{"lightweight", "durable", "waterproof", "classic", "compact", "handmade", "vintage", "ergonomic"}
)

// maxBoost bounds the per-product tie breaker. It is far below the smallest
// score step (1), so it never lifts a product over one that matches more.
const maxBoost = 0.01

// New builds a catalogue of n products (ids p00000, p00001, ...) from seed.
// The same n and seed always give the same catalogue. n < 0 counts as 0.
func New(n int, seed int64) *Catalog {
	n = max(n, 0)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5ca77e2))
	pick := func(words []string) string { return words[rng.IntN(len(words))] }
	c := &Catalog{products: make([]Product, n)}
	for i := range c.products {
		colour, material, kind := pick(colours), pick(materials), pick(kinds)
		p := Product{
			ID:   fmt.Sprintf("p%05d", i),
			Name: fmt.Sprintf("%s %s %s %s", pick(brands), colour, material, kind),
			Description: fmt.Sprintf("A %s %s %s for %s, in %s %s.",
				pick(qualities), pick(qualities), kind, pick(uses), colour, pick(materials)),
			// Cents, so that prices survive JSON unchanged.
			Price: float64(199+rng.IntN(49_800)) / 100,
			boost: rng.Float64() * maxBoost,
		}
		p.nameTerms = terms(p.Name)
		p.descTerms = terms(p.Description)
		c.products[i] = p
	}
	return c
}

// Len returns the number of products.
func (c *Catalog) Len() int { return len(c.products) }

// Product returns product i, for i in [0, Len()).
func (c *Catalog) Product(i int) Product { return c.products[i] }

// Search returns the top k products of shard shard (of shards) for query, by
// score, highest first, ties by id, lowest first. Product j belongs to shard
// j % shards; shard 0 of 1 (or of 0) is the whole catalogue. k <= 0 returns
// every hit. An out-of-range shard has no products and returns nil.
//
// A product scores 2 for each distinct query term in its name and 1 for each
// in its description, plus a small per-product boost below 0.01 that makes
// ties rare; products that match no term are not hits. Terms are the
// lowercase runs of letters and digits, so "Red, running-shoes" is the three
// terms red, running and shoes.
func (c *Catalog) Search(query string, k, shard, shards int) []Hit {
	if shards <= 0 {
		shards = 1
	}
	if shard < 0 || shard >= shards {
		return nil
	}
	q := terms(query)
	if len(q) == 0 {
		return nil
	}
	var hits []Hit
	for j := shard; j < len(c.products); j += shards {
		p := &c.products[j]
		var score float64
		for _, t := range q {
			if _, ok := slices.BinarySearch(p.nameTerms, t); ok {
				score += 2
			}
			if _, ok := slices.BinarySearch(p.descTerms, t); ok {
				score++
			}
		}
		if score == 0 {
			continue
		}
		hits = append(hits, Hit{ID: p.ID, Name: p.Name, Price: p.Price, Score: score + p.boost})
	}
	SortHits(hits)
	if k > 0 && len(hits) > k {
		hits = hits[:k:k]
	}
	return hits
}

// SortHits sorts hits as Search returns them: by score, highest first, ties
// by id, lowest first. Merging the top k of every shard with it and keeping
// the first k gives the top k of the whole catalogue.
func SortHits(hits []Hit) {
	slices.SortFunc(hits, func(a, b Hit) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// terms returns the distinct lowercase terms of s, sorted.
func terms(s string) []string {
	ts := strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
	slices.Sort(ts)
	return slices.Compact(ts)
}
