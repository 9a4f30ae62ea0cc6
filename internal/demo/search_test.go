package demo

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/scattergather/scattergather/internal/catalog"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

func searchTask(part schemas.PartID, count int, payload string) schemas.Task {
	return schemas.Task{CorrelationID: "c", PartID: part, PartCount: count, Payload: []byte(payload)}
}

func TestSearchRejects(t *testing.T) {
	h := Search(catalog.New(100, 1))
	for _, tc := range []struct {
		name    string
		task    schemas.Task
		errPart string
	}{
		{"not json", searchTask("shard-0", 2, "red shoes"), "search payload"},
		{"json array", searchTask("shard-0", 2, `["red"]`), "search payload"},
		{"query not a string", searchTask("shard-0", 2, `{"query":3}`), "search payload"},
		{"empty query", searchTask("shard-0", 2, `{"query":"  "}`), "query is empty"},
		{"trailing data", searchTask("shard-0", 2, `{"query":"red"} {}`), "data after"},
		{"k too big", searchTask("shard-0", 2, `{"query":"red","k":101}`), "k 101"},
		{"k negative", searchTask("shard-0", 2, `{"query":"red","k":-1}`), "k -1"},
		{"not a shard", searchTask("alpha", 2, `{"query":"red"}`), `part id "alpha"`},
		{"shard with sign", searchTask("shard-+1", 2, `{"query":"red"}`), "is not a shard"},
		{"shard with leading zero", searchTask("shard-01", 2, `{"query":"red"}`), "is not a shard"},
		{"shard out of range", searchTask("shard-2", 2, `{"query":"red"}`), "shard 2 is not in [0, 2)"},
		{"no part count", searchTask("shard-0", 0, `{"query":"red"}`), "part count 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := h.Handle(t.Context(), tc.task)
			if err == nil {
				t.Fatalf("accepted, answered %s", out)
			}
			if !processor.IsPermanent(err) || !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("error %q (permanent %v), want a permanent error about %q", err, processor.IsPermanent(err), tc.errPart)
			}
		})
	}
}

// TestSearchShardUnion checks the seed's example at the handler: the answers
// of all shards, merged the way the aggregator's top-k merge does, equal the
// search of the whole catalogue.
func TestSearchShardUnion(t *testing.T) {
	cat := catalog.New(5000, 11)
	h := Search(cat)
	for _, tc := range []struct {
		query  string
		k      int
		shards int
	}{
		{"red running shoes", 10, 4},
		{"waterproof hiking boots", 0, 3}, // default k
		{"oak chair", 25, 8},
		{"glass", 100, 1},
		{"zeppelin", 5, 4}, // no hits anywhere
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.query, tc.shards), func(t *testing.T) {
			k := tc.k
			if k == 0 {
				k = DefaultSearchK
			}
			payload, _ := json.Marshal(SearchRequest{Query: tc.query, K: tc.k})
			var merged []catalog.Hit
			for i := range tc.shards {
				out, err := h.Handle(t.Context(), searchTask(scatterer.ShardID(i), tc.shards, string(payload)))
				if err != nil {
					t.Fatalf("shard %d: %v", i, err)
				}
				var hits []catalog.Hit
				if err := json.Unmarshal(out, &hits); err != nil || hits == nil {
					t.Fatalf("shard %d answered %q: %v", i, out, err)
				}
				if len(hits) > k {
					t.Fatalf("shard %d returned %d hits, want at most %d", i, len(hits), k)
				}
				merged = append(merged, hits...)
			}
			catalog.SortHits(merged)
			merged = merged[:min(k, len(merged))]
			want := cat.Search(tc.query, k, 0, 1)
			if len(want) == 0 && len(merged) == 0 {
				return
			}
			if !reflect.DeepEqual(merged, want) {
				t.Fatalf("merged shards:\n%v\nwhole catalogue:\n%v", merged, want)
			}
			if tc.query == "red running shoes" && len(want) != k {
				t.Fatalf("only %d hits for %q; the test needs a full top %d", len(want), tc.query, k)
			}
		})
	}
}
