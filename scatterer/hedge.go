package scatterer

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/schemas"
)

// Hedged tasks: when a part of a split request has not answered after a
// delay, the aggregator, which knows which parts are missing, re-issues it
// once (attempt 2) to another partition of tasks.<route>, so another
// processor; the first result wins. The scatterer makes that possible: for
// a route with a Hedge it writes, after the manifest and in the same
// transaction, the request's task as a "hedge template" to the results
// topic, keyed by the correlation id, so that it reaches the aggregator
// that owns the request: one Task with an empty part id when every part
// has the same payload (the Shards split), else one Task per part. Its
// HeaderHedge carries the route's hedge settings, so that the aggregator
// needs no route table of its own.

// Record headers of a hedge template on the results topic.
const (
	// HeaderHedge carries the route's hedge settings, as Hedge.String
	// writes them.
	HeaderHedge = "sg-hedge"
	// TypeHedgeTemplate is the HeaderType of a hedge template.
	TypeHedgeTemplate = "hedge-template"
)

// Defaults of Hedge.
const (
	DefaultHedgeBudget     = 0.05
	DefaultHedgeMinSamples = 100
	DefaultHedgeMinDelay   = 10 * time.Millisecond
)

// Hedge says when the aggregator re-issues a part of a split request that
// has not answered. Set Delay, Percentile or both.
type Hedge struct {
	// Delay is a fixed hedge delay from the request's submission. With a
	// Percentile it is the delay used until MinSamples latencies are known.
	Delay time.Duration
	// Percentile, in (0, 100), makes the delay adaptive: the route's
	// observed task latency (from the request's submission to a first
	// attempt's result reaching the aggregator) at that percentile, e.g.
	// 95, once MinSamples latencies are known; never below MinDelay.
	Percentile float64
	// MinDelay is the floor of an adaptive delay; default 10ms.
	MinDelay time.Duration
	// MinSamples is how many latencies an adaptive delay needs; default
	// 100. Until then Delay is used, or no hedge is sent if it is zero.
	MinSamples int
	// Budget caps hedges as a fraction of the route's tasks, in (0, 1]:
	// each task issued earns Budget tokens (up to a burst of
	// max(1, 1000 × Budget)), each hedge costs one. Default 0.05: at most
	// 5% extra tasks.
	Budget float64
}

func (h Hedge) withDefaults() Hedge {
	if h.MinDelay == 0 {
		h.MinDelay = DefaultHedgeMinDelay
	}
	if h.MinSamples == 0 {
		h.MinSamples = DefaultHedgeMinSamples
	}
	if h.Budget == 0 {
		h.Budget = DefaultHedgeBudget
	}
	return h
}

// Validate reports every problem with h at once.
func (h Hedge) Validate() error {
	var errs []error
	if h.Delay < 0 {
		errs = append(errs, fmt.Errorf("hedge delay: %s is negative", h.Delay))
	}
	if math.IsNaN(h.Percentile) || h.Percentile < 0 || h.Percentile >= 100 {
		errs = append(errs, fmt.Errorf("hedge percentile: %v, want above 0 and below 100", h.Percentile))
	}
	if h.Delay == 0 && h.Percentile == 0 {
		errs = append(errs, errors.New("hedge: set a delay, a percentile or both"))
	}
	if h.MinDelay < 0 {
		errs = append(errs, fmt.Errorf("hedge min delay: %s is negative", h.MinDelay))
	}
	if h.MinSamples < 0 {
		errs = append(errs, fmt.Errorf("hedge min samples: %d is negative", h.MinSamples))
	}
	if math.IsNaN(h.Budget) || h.Budget < 0 || h.Budget > 1 {
		errs = append(errs, fmt.Errorf("hedge budget: %v, want a fraction of the tasks in (0, 1]", h.Budget))
	}
	return errors.Join(errs...)
}

// String writes h as HeaderHedge carries it, defaults filled in:
// "delay=20ms;percentile=95;min-delay=10ms;min-samples=100;budget=0.05".
// aggregator.ParseHedge reads it.
func (h Hedge) String() string {
	h = h.withDefaults()
	return fmt.Sprintf("delay=%s;percentile=%s;min-delay=%s;min-samples=%d;budget=%s",
		h.Delay, strconv.FormatFloat(h.Percentile, 'g', -1, 64), h.MinDelay, h.MinSamples,
		strconv.FormatFloat(h.Budget, 'g', -1, 64))
}

// hedgeTemplates returns the hedge templates of p's tasks: one task with an
// empty part id when the tasks differ in nothing but their part id, else
// every task.
func hedgeTemplates(p Plan) []schemas.Task {
	if len(p.Tasks) == 0 {
		return nil
	}
	first := p.Tasks[0]
	for _, t := range p.Tasks[1:] {
		if !bytes.Equal(t.Payload, first.Payload) || t.ContentType != first.ContentType || !maps.Equal(t.Headers, first.Headers) {
			return p.Tasks
		}
	}
	first.PartID = ""
	return []schemas.Task{first}
}

// hedgeRecords encodes p's hedge templates for the results topic.
func (s *Scatterer) hedgeRecords(p Plan) ([]*kgo.Record, error) {
	spec := []byte(p.Route.Hedge.String())
	var out []*kgo.Record
	for _, t := range hedgeTemplates(p) {
		v, err := schemas.EncodeTask(t)
		if err != nil {
			return nil, fmt.Errorf("hedge template %s: %w", t.CorrelationID, err)
		}
		out = append(out, &kgo.Record{Topic: s.cfg.Topics.Results(), Key: []byte(t.CorrelationID), Value: v,
			Headers: []kgo.RecordHeader{{Key: HeaderType, Value: []byte(TypeHedgeTemplate)}, {Key: HeaderHedge, Value: spec}}})
	}
	return out, nil
}

// validHedge checks a route's Hedge.
func (r Route) validHedge() error {
	if r.Hedge == nil {
		return nil
	}
	if r.Mode != Split {
		return fmt.Errorf("route %s: hedging is for split routes: a broadcast part has one recipient group, there is no other processor to ask", r.Name)
	}
	if err := r.Hedge.Validate(); err != nil {
		return fmt.Errorf("route %s: %w", r.Name, err)
	}
	return nil
}
