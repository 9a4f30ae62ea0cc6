// Package routes reads the route table that the scattergather binary shares
// between its roles: how each route scatters (scatterer), how its parts are
// merged (aggregator), and which handler answers it (processor).
//
// The file is JSON:
//
//	{"routes": [
//	  {"name": "search", "mode": "split", "fanout": 8, "timeout": "2s",
//	   "merge": {"kind": "topk", "field": "score", "k": 10, "tiebreak": "id"}},
//	  {"name": "quotes", "mode": "broadcast", "recipients": ["acme", "globex"],
//	   "timeout": "1s", "merge": {"kind": "best", "field": "rate", "order": "min"}},
//	  {"name": "lookup", "mode": "split", "fanout": 16, "policy": "quorum:12",
//	   "hedge_percentile": 95, "hedge_delay": "50ms", "hedge_budget": 0.05}
//	]}
package routes

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// Table is a parsed route file.
type Table struct {
	Routes []Route `json:"routes"`
}

// Route is one entry of the file.
type Route struct {
	Name       string    `json:"name"`
	Mode       string    `json:"mode"`
	Split      string    `json:"split,omitempty"` // "shards" (default) or "json-array"
	Fanout     int       `json:"fanout,omitempty"`
	MaxFanout  int       `json:"max_fanout,omitempty"`
	Recipients []string  `json:"recipients,omitempty"`
	Timeout    Duration  `json:"timeout,omitempty"`
	MaxTimeout Duration  `json:"max_timeout,omitempty"`
	Policy     string    `json:"policy,omitempty"`
	Merge      MergeSpec `json:"merge"`
	// Hedging (split routes): set hedge_delay, hedge_percentile or both;
	// see scatterer.Hedge.
	HedgeDelay      Duration `json:"hedge_delay,omitempty"`
	HedgePercentile float64  `json:"hedge_percentile,omitempty"`
	HedgeMinDelay   Duration `json:"hedge_min_delay,omitempty"`
	HedgeMinSamples int      `json:"hedge_min_samples,omitempty"`
	HedgeBudget     float64  `json:"hedge_budget,omitempty"`
}

// hedged reports whether r sets any hedge field.
func (r Route) hedged() bool {
	return r.HedgeDelay != 0 || r.HedgePercentile != 0 || r.HedgeMinDelay != 0 || r.HedgeMinSamples != 0 || r.HedgeBudget != 0
}

// MergeSpec names a built-in merge and its settings.
type MergeSpec struct {
	Kind     string `json:"kind"` // collect (default), topk, best
	Field    string `json:"field,omitempty"`
	K        int    `json:"k,omitempty"`
	Tiebreak string `json:"tiebreak,omitempty"`
	Order    string `json:"order,omitempty"` // best: min (default) or max
}

// Duration is a time.Duration written as a Go duration string ("1.5s").
type Duration time.Duration

// UnmarshalJSON reads "1.5s" or a number of milliseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var ms int64
	if err := json.Unmarshal(b, &ms); err != nil {
		return fmt.Errorf("duration %s: want a string like \"2s\" or milliseconds", b)
	}
	*d = Duration(time.Duration(ms) * time.Millisecond)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Parse reads a route table and checks every route, reporting every problem
// at once. Unknown fields are errors, so a typo does not silently fall back
// to a default.
func Parse(b []byte) (*Table, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var t Table
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("route table%s: %w", position(b, err), err)
	}
	if dec.More() {
		return nil, errors.New("route table: trailing data after the JSON object")
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("route table: %w", err)
	}
	return &t, nil
}

// Load reads and parses the route file at path.
func Load(path string) (*Table, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("route table: %w", err)
	}
	t, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// Validate reports every problem with t at once.
func (t *Table) Validate() error {
	if len(t.Routes) == 0 {
		return errors.New("no routes")
	}
	var errs []error
	seen := map[string]bool{}
	for _, r := range t.Routes {
		if seen[r.Name] {
			errs = append(errs, fmt.Errorf("route %s: listed twice", r.Name))
		}
		seen[r.Name] = true
		sr, err := r.Scatterer()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := sr.Validate(); err != nil {
			errs = append(errs, err)
		}
		if _, err := r.Merge.Build(); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", r.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Names lists the route names in file order.
func (t *Table) Names() []string {
	out := make([]string, len(t.Routes))
	for i, r := range t.Routes {
		out[i] = r.Name
	}
	return out
}

// Find returns the route named name.
func (t *Table) Find(name string) (Route, bool) {
	for _, r := range t.Routes {
		if r.Name == name {
			return r, true
		}
	}
	return Route{}, false
}

// CheckRecipient reports whether a processor may answer r's tasks as
// recipient: a broadcast route needs one of its recipients, a split route
// none (its tasks name their parts). The error names the route's
// recipients.
func (r Route) CheckRecipient(recipient string) error {
	switch {
	case r.Mode == "broadcast" && recipient == "":
		return fmt.Errorf("route %s broadcasts to %s: a processor must answer as one of them", r.Name, strings.Join(r.Recipients, ", "))
	case r.Mode == "broadcast" && !slices.Contains(r.Recipients, recipient):
		return fmt.Errorf("recipient %q is unknown to route %s, whose recipients are %s", recipient, r.Name, strings.Join(r.Recipients, ", "))
	case r.Mode != "broadcast" && recipient != "":
		return fmt.Errorf("recipient %q: route %s is a %s route and has no recipients (its tasks name their parts)", recipient, r.Name, r.Mode)
	}
	return nil
}

// Scatterer returns the scatterer's view of r.
func (r Route) Scatterer() (scatterer.Route, error) {
	sr := scatterer.Route{
		Name:       schemas.Route(r.Name),
		Mode:       scatterer.Mode(r.Mode),
		Fanout:     r.Fanout,
		MaxFanout:  r.MaxFanout,
		Timeout:    time.Duration(r.Timeout),
		MaxTimeout: time.Duration(r.MaxTimeout),
		Policy:     r.Policy,
	}
	for _, p := range r.Recipients {
		sr.Recipients = append(sr.Recipients, schemas.PartID(p))
	}
	if r.hedged() {
		sr.Hedge = &scatterer.Hedge{Delay: time.Duration(r.HedgeDelay), Percentile: r.HedgePercentile,
			MinDelay: time.Duration(r.HedgeMinDelay), MinSamples: r.HedgeMinSamples, Budget: r.HedgeBudget}
	}
	switch r.Split {
	case "", "shards":
	case "json-array":
		sr.Split = scatterer.JSONArray()
		if sr.Fanout == 0 {
			sr.Fanout = 1 // the payload decides; the default only has to be valid
		}
	default:
		return sr, fmt.Errorf("route %s: split %q, want shards or json-array", r.Name, r.Split)
	}
	return sr, nil
}

// ScattererRoutes returns every route for the scatterer.
func (t *Table) ScattererRoutes() ([]scatterer.Route, error) {
	out := make([]scatterer.Route, 0, len(t.Routes))
	for _, r := range t.Routes {
		sr, err := r.Scatterer()
		if err != nil {
			return nil, err
		}
		out = append(out, sr)
	}
	return out, nil
}

// Merges returns each route's merge for the aggregator.
func (t *Table) Merges() (map[schemas.Route]aggregator.Merge, error) {
	out := make(map[schemas.Route]aggregator.Merge, len(t.Routes))
	for _, r := range t.Routes {
		m, err := r.Merge.Build()
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", r.Name, err)
		}
		out[schemas.Route(r.Name)] = m
	}
	return out, nil
}

// Build returns the merge that s names.
func (s MergeSpec) Build() (aggregator.Merge, error) {
	switch s.Kind {
	case "", "collect":
		return aggregator.Collect(), nil
	case "topk":
		if s.Field == "" {
			return nil, errors.New("merge topk: field is required")
		}
		k := s.K
		if k == 0 {
			k = 10
		}
		return aggregator.TopK(s.Field, k, s.Tiebreak)
	case "best":
		if s.Field == "" {
			return nil, errors.New("merge best: field is required")
		}
		switch s.Order {
		case "", "min":
			return aggregator.Best(s.Field, false)
		case "max":
			return aggregator.Best(s.Field, true)
		}
		return nil, fmt.Errorf("merge best: order %q, want min or max", s.Order)
	}
	return nil, fmt.Errorf("merge kind %q, want collect, topk or best", s.Kind)
}

// position returns " at line L, column C" for a JSON error that carries an
// offset into b (the byte after the one at fault), and "" otherwise.
func position(b []byte, err error) string {
	var off int64
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		off = syn.Offset
	case errors.As(err, &typ):
		off = typ.Offset
	default:
		return ""
	}
	off = min(max(off-1, 0), int64(len(b)))
	line := 1 + bytes.Count(b[:off], []byte("\n"))
	col := off - int64(bytes.LastIndexByte(b[:off], '\n'))
	return fmt.Sprintf(" at line %d, column %d", line, col)
}
