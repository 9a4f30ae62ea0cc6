package routes

import "time"

// Demo returns the routes that `scattergather demo` and `dev` serve:
//
//   - search: the seed's example, a product search split across 8 index
//     shards and merged top-k by score;
//   - quotes: one quote request broadcast to three providers, the best
//     (lowest) rate wins;
//   - echo: a plain split route for trying the pipeline and benchmarks.
func Demo() *Table {
	return &Table{Routes: []Route{
		{Name: "search", Mode: "split", Fanout: 8, MaxFanout: 64, Timeout: Duration(2 * time.Second),
			Merge: MergeSpec{Kind: "topk", Field: "score", K: 10, Tiebreak: "id"}},
		{Name: "quotes", Mode: "broadcast", Recipients: []string{"acme", "globex", "initech"}, Timeout: Duration(time.Second),
			Merge: MergeSpec{Kind: "best", Field: "rate", Order: "min"}},
		{Name: "echo", Mode: "split", Fanout: 4, MaxFanout: 256, Timeout: Duration(5 * time.Second),
			Merge: MergeSpec{Kind: "collect"}},
	}}
}
