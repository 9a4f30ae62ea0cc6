package aggregator

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/scattergather/scattergather/schemas"
)

// Best returns the merge that picks the best offer across parts, e.g. the
// cheapest quote. Each OK part's payload must be one JSON object or a JSON
// array of objects, each with a numeric field named field. The merge picks
// the object with the lowest field (the highest when max is set); on a tie
// the first in part order wins. The output is
//
//	{"best": <the object as its part wrote it>, "part": "<its part id>", "candidates": <objects compared>}
//
// A payload that is not an object or an array of objects, an object without
// a numeric field, or no object at all fails the merge.
//
// It returns an error if field is empty.
func Best(field string, max bool) (Merge, error) {
	if field == "" {
		return nil, errors.New("best: field is empty")
	}
	return func(parts []Part) ([]byte, error) {
		var (
			best      json.RawMessage
			bestPart  schemas.PartID
			bestScore float64
			n         int
		)
		for _, p := range parts {
			objs, err := objects(p, false)
			if err != nil {
				return nil, fmt.Errorf("best: %w", err)
			}
			for _, o := range objs {
				v, err := o.number(field)
				if err != nil {
					return nil, fmt.Errorf("best: %w", err)
				}
				if n == 0 || (max && v > bestScore) || (!max && v < bestScore) {
					best, bestPart, bestScore = o.raw, p.ID, v
				}
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("best: no candidates in %d parts", len(parts))
		}
		return json.Marshal(struct {
			Best       json.RawMessage `json:"best"`
			Part       schemas.PartID  `json:"part"`
			Candidates int             `json:"candidates"`
		}{compact(best), bestPart, n})
	}, nil
}
