package aggregator

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// TopK returns the merge that ranks search hits across parts. Each OK
// part's payload must be a JSON array of objects, each with a numeric field
// named field; the merge concatenates them, sorts by field descending, then
// (if tiebreak is set) by the string field tiebreak ascending, then by part
// order and position within the part, and keeps the first k. The output is
// a JSON array of the kept objects, each as its part wrote it (compacted).
// A payload that is not an array of objects, or an object without a numeric
// field (or without a string tiebreak when one is set), fails the merge.
//
// It returns an error if field is empty or k is less than 1.
func TopK(field string, k int, tiebreak string) (Merge, error) {
	var errs []error
	if field == "" {
		errs = append(errs, errors.New("topk: score field is empty"))
	}
	if k < 1 {
		errs = append(errs, fmt.Errorf("topk: k is %d, want at least 1", k))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	type hit struct {
		score float64
		tie   string
		raw   json.RawMessage
	}
	return func(parts []Part) ([]byte, error) {
		var hits []hit
		for _, p := range parts {
			objs, err := objects(p, true)
			if err != nil {
				return nil, fmt.Errorf("topk: %w", err)
			}
			for _, o := range objs {
				h := hit{raw: o.raw}
				if h.score, err = o.number(field); err != nil {
					return nil, fmt.Errorf("topk: %w", err)
				}
				if tiebreak != "" {
					if h.tie, err = o.text(tiebreak); err != nil {
						return nil, fmt.Errorf("topk: %w", err)
					}
				}
				hits = append(hits, h)
			}
		}
		slices.SortStableFunc(hits, func(a, b hit) int {
			if c := cmp.Compare(b.score, a.score); c != 0 {
				return c
			}
			return cmp.Compare(a.tie, b.tie)
		})
		out := make([]json.RawMessage, 0, min(k, len(hits)))
		for _, h := range hits[:min(k, len(hits))] {
			out = append(out, compact(h.raw))
		}
		return json.Marshal(out)
	}, nil
}
