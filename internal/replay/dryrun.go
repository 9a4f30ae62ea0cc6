package replay

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
)

// Plan is what a run would replay: its range and the requests in it, per
// partition and per route, as DryRun counts them.
type Plan struct {
	SourceTopic string           `json:"source_topic"`
	TargetTopic string           `json:"target_topic"`
	From        string           `json:"from"`
	To          string           `json:"to"`
	Partitions  []PlanPartition  `json:"partitions"`
	Routes      map[string]int64 `json:"routes"`
	Requests    int64            `json:"requests"`
	Skipped     map[string]int64 `json:"skipped"`
}

// PlanPartition is one partition of a Plan.
type PlanPartition struct {
	PartitionRange
	Requests int64            `json:"requests"`
	Routes   map[string]int64 `json:"routes"`
	Skipped  map[string]int64 `json:"skipped,omitempty"`
}

// DryRun resolves the configured range now and reads it, counting what Run
// would re-submit per partition and route and what it would skip, without
// writing anything.
func (r *Replayer) DryRun(ctx context.Context) (*Plan, error) {
	cfg := r.cfg
	if cfg.From == nil {
		return nil, fmt.Errorf("dry run: a --from bound is required")
	}
	to := Bound{Kind: Latest}
	if cfg.To != nil {
		to = *cfg.To
	}
	cl, err := kafka.NewClient(cfg.Client)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ranges, err := ResolveRange(ctx, kadm.NewClient(cl), cfg.Source.Requests(), *cfg.From, to, cfg.Now())
	if err != nil {
		return nil, err
	}
	st := &RunState{RunID: cfg.RunID, IncludeReplays: cfg.IncludeReplays, TargetTopic: cfg.Target.Requests()}
	plan := &Plan{SourceTopic: cfg.Source.Requests(), TargetTopic: cfg.Target.Requests(), From: cfg.From.String(), To: to.String(),
		Routes: map[string]int64{}, Skipped: map[string]int64{}}
	index := map[int32]int{}
	for i, pr := range ranges {
		index[pr.Partition] = i
		plan.Partitions = append(plan.Partitions, PlanPartition{PartitionRange: pr, Routes: map[string]int64{}})
	}
	err = kafka.ReadRanges(ctx, cfg.Client, cfg.Source.Requests(), spans(ranges), func(rec *kgo.Record) error {
		pp := &plan.Partitions[index[rec.Partition]]
		pp.Next = rec.Offset + 1
		orig, skip := r.decide(rec, st)
		switch {
		case orig != nil:
			route := string(orig.Route)
			pp.Requests++
			pp.Routes[route]++
			plan.Requests++
			plan.Routes[route]++
		case skip != "":
			if pp.Skipped == nil {
				pp.Skipped = map[string]int64{}
			}
			pp.Skipped[skip]++
			plan.Skipped[skip]++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dry run: %w", err)
	}
	for i := range plan.Partitions {
		plan.Partitions[i].Next = plan.Partitions[i].End
	}
	return plan, nil
}

// Print writes the plan as tables: one line per partition, then per route.
func (p *Plan) Print(w io.Writer) error {
	fmt.Fprintf(w, "replay of %s [%s, %s) into %s: %d requests\n\n", p.SourceTopic, p.From, p.To, p.TargetTopic, p.Requests)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "PARTITION\tSTART\tEND\tOFFSETS\tREQUESTS\tSKIPPED")
	for _, pp := range p.Partitions {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%s\n", pp.Partition, pp.Start, pp.End, pp.End-pp.Start, pp.Requests, counts(pp.Skipped))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "ROUTE\tREQUESTS")
	for _, r := range slices.Sorted(maps.Keys(p.Routes)) {
		fmt.Fprintf(tw, "%s\t%d\n", r, p.Routes[r])
	}
	if len(p.Skipped) > 0 {
		fmt.Fprintf(tw, "\nskipped: %s (%s: not a request; %s: itself a replay, see --include-replays; %s: another route)\n",
			counts(p.Skipped), SkipUndecodable, SkipReplay, SkipRoute)
	}
	return tw.Flush()
}

// counts formats reason counts as "a=1 b=2", sorted, or "-".
func counts(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	s := ""
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if s != "" {
			s += " "
		}
		s += fmt.Sprintf("%s=%d", k, m[k])
	}
	return s
}
