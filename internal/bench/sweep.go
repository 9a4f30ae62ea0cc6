package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/scatterer"
)

// SweepKeys are the settings a sweep can vary.
var SweepKeys = []string{"fanout", "processors", "payload-bytes", "partitions", "result-partitions", "rate", "concurrency", "guarantee", "mode"}

// SweepDim is one swept setting and its values, e.g. fanout=1,4,16,64.
type SweepDim struct {
	Key    string
	Values []string
}

func (d SweepDim) String() string { return d.Key + "=" + strings.Join(d.Values, ",") }

// ParseSweep parses "key=v1,v2,...", checking the key and every value.
func ParseSweep(s string) (SweepDim, error) {
	key, vals, ok := strings.Cut(s, "=")
	d := SweepDim{Key: strings.TrimSpace(key)}
	if !ok || d.Key == "" {
		return d, fmt.Errorf("sweep %q: want key=v1,v2,... with key one of %s", s, strings.Join(SweepKeys, ", "))
	}
	for _, v := range strings.Split(vals, ",") {
		if v = strings.TrimSpace(v); v != "" {
			d.Values = append(d.Values, v)
		}
	}
	if len(d.Values) == 0 {
		return d, fmt.Errorf("sweep %q: no values", s)
	}
	var errs []error
	for _, v := range d.Values {
		var c Config
		if err := d.apply(&c, v); err != nil {
			errs = append(errs, err)
		}
	}
	return d, errors.Join(errs...)
}

// apply sets d's setting in c to v.
func (d SweepDim) apply(c *Config, v string) error {
	atoi := func() (int, error) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("sweep %s: %q is not a whole number", d.Key, v)
		}
		return n, nil
	}
	var err error
	var n int
	switch d.Key {
	case "fanout":
		n, err = atoi()
		c.Fanout = n
	case "processors":
		n, err = atoi()
		c.Processors = n
	case "payload-bytes":
		n, err = atoi()
		c.PayloadBytes = n
	case "partitions":
		n, err = atoi()
		c.Layout.Partitions = int32(n)
	case "result-partitions":
		n, err = atoi()
		c.Layout.ResultPartitions = int32(n)
	case "concurrency":
		n, err = atoi()
		c.Load.Concurrency, c.Load.Rate = n, 0
	case "rate":
		f, perr := strconv.ParseFloat(v, 64)
		if perr != nil || f <= 0 {
			return fmt.Errorf("sweep rate: %q is not a rate above 0", v)
		}
		c.Load.Rate, c.Load.Concurrency = f, 0
	case "guarantee":
		g, gerr := kafkaconfig.ParseGuarantee(v)
		if gerr != nil {
			return fmt.Errorf("sweep guarantee: %w", gerr)
		}
		c.Guarantee = g
	case "mode":
		if v != string(scatterer.Split) && v != string(scatterer.Broadcast) {
			return fmt.Errorf("sweep mode: %q, want split or broadcast", v)
		}
		c.Mode = scatterer.Mode(v)
	default:
		return fmt.Errorf("sweep key %q: want one of %s", d.Key, strings.Join(SweepKeys, ", "))
	}
	return err
}

// SweepReport holds the reports of every point of a sweep.
type SweepReport struct {
	Sweep  []string  `json:"sweep"`
	Points []*Report `json:"points"`
}

// points returns the cartesian product of dims as labelled settings.
func points(dims []SweepDim) [][][2]string {
	out := [][][2]string{nil}
	for _, d := range dims {
		var next [][][2]string
		for _, p := range out {
			for _, v := range d.Values {
				next = append(next, append(append([][2]string(nil), p...), [2]string{d.Key, v}))
			}
		}
		out = next
	}
	return out
}

// Sweep runs one bench per combination of the dims' values, each with its
// own topics, and returns all reports. onPoint, if not nil, is called after
// each point.
func Sweep(ctx context.Context, cfg Config, dims []SweepDim, onPoint func(*Report)) (*SweepReport, error) {
	if cfg.RunID == "" {
		c := cfg
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("bench config: %w", err)
		}
		cfg.RunID = c.RunID
	}
	sr := &SweepReport{}
	for _, d := range dims {
		sr.Sweep = append(sr.Sweep, d.String())
	}
	for _, pt := range points(dims) {
		c := cfg
		var labels []string
		for _, kv := range pt {
			if err := (SweepDim{Key: kv[0]}).apply(&c, kv[1]); err != nil {
				return sr, err
			}
			labels = append(labels, kv[0]+"="+kv[1])
		}
		c.Label = strings.Join(labels, ",")
		rep, err := Run(ctx, c)
		if err != nil {
			return sr, fmt.Errorf("sweep point %s: %w", c.Label, err)
		}
		sr.Points = append(sr.Points, rep)
		cfg.Settle = 0 // the broker is warm after the first point
		if onPoint != nil {
			onPoint(rep)
		}
	}
	return sr, nil
}

// WriteTable writes one row per point. "gain" is the pipeline's tasks/s
// over the previous point's: where it falls to about 1 or below, more
// parallelism stopped paying off. The point with the most tasks/s is
// marked "peak".
func (sr *SweepReport) WriteTable(w io.Writer) error {
	if len(sr.Points) == 0 {
		return nil
	}
	first := sr.Points[0]
	fmt.Fprintf(w, "\nscattergather bench sweep %s\n", strings.Join(sr.Sweep, " × "))
	fmt.Fprintf(w, "first point: %s; load: %s; broker: %s\n\n", first.Settings.headline(), first.Settings.Load, first.Settings.Broker)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	hasBase := first.Baseline != nil
	head := "point\treq/s\ttasks/s\tgain\tp50 ms\tp99 ms\tcomplete\tpartial+failed+none\tCPU µs/req\t"
	if hasBase {
		head += "base tasks/s\tbase p99 ms\tratio tasks/s\tratio p99\t"
	}
	fmt.Fprintln(tw, head+"\t")
	best := 0
	for i, p := range sr.Points {
		if p.TasksPerS > sr.Points[best].TasksPerS {
			best = i
		}
	}
	for i, p := range sr.Points {
		gain := "-"
		if i > 0 && sr.Points[i-1].TasksPerS > 0 {
			gain = fmt.Sprintf("×%.2f", p.TasksPerS/sr.Points[i-1].TasksPerS)
		}
		line := fmt.Sprintf("%s\t%.1f\t%.1f\t%s\t%.2f\t%.2f\t%d\t%d\t%.0f\t", p.Settings.Label, p.RequestsPerS, p.TasksPerS, gain,
			p.P50, p.P99, p.Complete, p.Partial+p.Failed+p.NoReply, p.CPUPerRequestUS)
		if hasBase && p.Baseline != nil {
			line += fmt.Sprintf("%.1f\t%.2f\t%.2f\t%.2f\t", p.Baseline.TasksPerS, p.Baseline.P99, p.RatioTasksPerS, p.RatioP99)
		}
		mark := ""
		if i == best {
			mark = "peak"
		}
		fmt.Fprintln(tw, line+mark+"\t")
	}
	return tw.Flush()
}
