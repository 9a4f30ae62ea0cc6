package replay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

// FieldPath is a dotted path into a JSON document ("a.b.c"), as
// --ignore-field takes it. A path applies to every element of an array it
// meets: "hits.score" names the score of every hit in {"hits": [...]}, and
// of every element when the document itself is an array.
type FieldPath []string

// ParseFieldPath parses a dotted path; empty segments are an error.
func ParseFieldPath(s string) (FieldPath, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	for _, p := range parts {
		if p == "" {
			return nil, fmt.Errorf("field path %q: empty segment (want dotted keys like a.b.c)", s)
		}
	}
	return parts, nil
}

func (p FieldPath) String() string { return strings.Join(p, ".") }

// JSONDiff compares two JSON documents ignoring object key order,
// whitespace, the spelling of numbers (1.0 equals 1) and the ignored
// fields. It returns where they differ (at most limit places, as "$.a.b[2]"
// paths) and ok=false if either side is not a single JSON document.
func JSONDiff(a, b []byte, ignore []FieldPath, limit int) (diffs []string, ok bool) {
	va, err := decodeJSON(a)
	if err != nil {
		return nil, false
	}
	vb, err := decodeJSON(b)
	if err != nil {
		return nil, false
	}
	for _, p := range ignore {
		va, vb = strip(va, p), strip(vb, p)
	}
	d := differ{limit: limit}
	d.diff(va, vb, "$")
	return d.out, true
}

func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON document")
	}
	return v, nil
}

// strip removes path from v and returns v.
func strip(v any, path FieldPath) any {
	switch x := v.(type) {
	case map[string]any:
		if len(path) == 1 {
			delete(x, path[0])
		} else if child, ok := x[path[0]]; ok {
			x[path[0]] = strip(child, path[1:])
		}
	case []any:
		for i := range x {
			x[i] = strip(x[i], path)
		}
	}
	return v
}

type differ struct {
	limit int
	out   []string
}

func (d *differ) add(path string) bool {
	if d.limit > 0 && len(d.out) >= d.limit {
		return false
	}
	d.out = append(d.out, path)
	return true
}

func (d *differ) full() bool { return d.limit > 0 && len(d.out) >= d.limit }

func (d *differ) diff(a, b any, path string) {
	if d.full() {
		return
	}
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			d.add(path)
			return
		}
		keys := slices.Sorted(maps.Keys(x))
		for k := range y {
			if _, ok := x[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			xv, xok := x[k]
			yv, yok := y[k]
			p := path + "." + k
			if xok != yok {
				d.add(p)
			} else {
				d.diff(xv, yv, p)
			}
			if d.full() {
				return
			}
		}
	case []any:
		y, ok := b.([]any)
		if !ok {
			d.add(path)
			return
		}
		for i := range min(len(x), len(y)) {
			d.diff(x[i], y[i], path+"["+strconv.Itoa(i)+"]")
		}
		if len(x) != len(y) {
			d.add(fmt.Sprintf("%s (length %d → %d)", path, len(x), len(y)))
		}
	case json.Number:
		y, ok := b.(json.Number)
		if !ok || !sameNumber(x, y) {
			d.add(path)
		}
	default: // string, bool, nil
		if a != b {
			d.add(path)
		}
	}
}

func sameNumber(a, b json.Number) bool {
	if a == b {
		return true
	}
	x, okx := new(big.Float).SetString(string(a))
	y, oky := new(big.Float).SetString(string(b))
	return okx && oky && x.Cmp(y) == 0
}
