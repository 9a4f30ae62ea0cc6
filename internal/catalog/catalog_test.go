package catalog

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestNewIsDeterministic(t *testing.T) {
	a, b := New(500, 7), New(500, 7)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two catalogues from the same seed differ")
	}
	if reflect.DeepEqual(a.products, New(500, 8).products) {
		t.Fatal("catalogues from seeds 7 and 8 are equal")
	}
	for i := range a.Len() {
		p := a.Product(i)
		if want := fmt.Sprintf("p%05d", i); p.ID != want {
			t.Fatalf("product %d has id %q, want %q", i, p.ID, want)
		}
		if p.Name == "" || p.Description == "" || p.Price <= 0 {
			t.Fatalf("product %d is incomplete: %+v", i, p)
		}
	}
	if New(-1, 1).Len() != 0 {
		t.Fatal("New(-1) has products")
	}
}

func TestSearchScoresAndOrder(t *testing.T) {
	c := New(2000, 1)
	hits := c.Search("Red, running-SHOES", 0, 0, 1)
	if len(hits) == 0 {
		t.Fatal("no hits")
	}
	for i, h := range hits {
		p := c.products[idIndex(t, h.ID)]
		want := 0.0
		for _, term := range []string{"red", "running", "shoes"} {
			if strings.Contains(" "+strings.ToLower(p.Name)+" ", " "+term+" ") {
				want += 2
			}
			if hasWord(p.Description, term) {
				want++
			}
		}
		if want == 0 {
			t.Fatalf("hit %s matches no term: %+v", h.ID, p)
		}
		if h.Score < want || h.Score >= want+maxBoost {
			t.Fatalf("hit %s scores %v, want %v plus a boost below %v", h.ID, h.Score, want, maxBoost)
		}
		if h.Name != p.Name || h.Price != p.Price {
			t.Fatalf("hit %s does not carry its product: %+v vs %+v", h.ID, h, p)
		}
		if i > 0 {
			prev := hits[i-1]
			if prev.Score < h.Score || prev.Score == h.Score && prev.ID >= h.ID {
				t.Fatalf("hits %d and %d out of order: %+v, %+v", i-1, i, prev, h)
			}
		}
	}
	if top := c.Search("red running shoes", 10, 0, 1); !reflect.DeepEqual(top, hits[:10]) {
		t.Fatalf("top 10 is not the head of all hits:\n%v\n%v", top, hits[:10])
	}
}

func TestSearchEdgeCases(t *testing.T) {
	c := New(100, 1)
	for _, tc := range []struct {
		name          string
		query         string
		shard, shards int
	}{
		{"empty query", "", 0, 1},
		{"only punctuation", " ,;- ", 0, 1},
		{"unknown words", "spaceship quantum", 0, 1},
		{"shard out of range", "red", 4, 4},
		{"negative shard", "red", -1, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if hits := c.Search(tc.query, 10, tc.shard, tc.shards); len(hits) != 0 {
				t.Fatalf("got %d hits, want none", len(hits))
			}
		})
	}
	if a, b := c.Search("red", 5, 0, 0), c.Search("red", 5, 0, 1); !reflect.DeepEqual(a, b) || len(a) != 5 {
		t.Fatalf("shards 0 and 1 differ or are short: %v, %v", a, b)
	}
}

// TestShardUnionIsWholeSearch is the property the demo relies on: the top k
// of every shard, merged and cut to k, is the top k of the whole catalogue.
func TestShardUnionIsWholeSearch(t *testing.T) {
	c := New(3000, 42)
	for _, q := range []string{"red running shoes", "waterproof hiking boots", "oak chair", "glass", "acme blue mug office"} {
		for _, shards := range []int{1, 2, 3, 7} {
			t.Run(fmt.Sprintf("%s/%d", q, shards), func(t *testing.T) {
				const k = 10
				var merged []Hit
				seen := map[string]bool{}
				for s := range shards {
					for _, h := range c.Search(q, k, s, shards) {
						if n := idIndex(t, h.ID); n%shards != s {
							t.Fatalf("shard %d returned product %d", s, n)
						}
						if seen[h.ID] {
							t.Fatalf("product %s in two shards", h.ID)
						}
						seen[h.ID] = true
						merged = append(merged, h)
					}
				}
				SortHits(merged)
				merged = merged[:min(k, len(merged))]
				if want := c.Search(q, k, 0, 1); !reflect.DeepEqual(merged, want) {
					t.Fatalf("merged shards:\n%v\nwhole catalogue:\n%v", merged, want)
				}
			})
		}
	}
}

func idIndex(t *testing.T, id string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscanf(id, "p%05d", &n); err != nil {
		t.Fatalf("id %q: %v", id, err)
	}
	return n
}

func hasWord(s, w string) bool {
	for _, f := range terms(s) {
		if f == w {
			return true
		}
	}
	return false
}
