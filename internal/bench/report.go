package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes v (a *Report or a *SweepReport) as indented JSON to the
// file at path.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// headline describes the shape of the run in one line.
func (s Settings) headline() string {
	procs := "processor"
	if s.Processors != 1 {
		procs += "s"
	}
	per := ""
	if s.Mode == "broadcast" {
		per = " per recipient"
	}
	return fmt.Sprintf("%s fan-out %d, payload %d B, handler %s, %d %s%s, %d/%d partitions, %s",
		s.Mode, s.Fanout, s.PayloadBytes, s.Handler, s.Processors, procs, per, s.Partitions, s.ResultPartitions, s.Guarantee)
}

// WriteTable writes the report as a table for people.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "\nscattergather bench: %s\n", r.Settings.headline())
	fmt.Fprintf(w, "load: %s; broker: %s", r.Settings.Load, r.Settings.Broker)
	if r.Env.LoadAvg != "" {
		fmt.Fprintf(w, "; machine load before: %s (%d CPUs)", r.Env.LoadAvg, r.Env.CPUs)
	}
	fmt.Fprintf(w, "; commit %s\n", r.Env.Commit)
	if st := r.Settled; st != nil {
		verdict := "steady"
		if !st.Steady {
			verdict = "NOT steady (the limit came first: the figures may still rise)"
		}
		rounds := make([]string, len(st.Rounds))
		for i, v := range st.Rounds {
			rounds[i] = fmt.Sprintf("%.1f", v)
		}
		fmt.Fprintf(w, "settled before the pipeline: %.0fs, %s; %s per 2s round: %s\n", st.Seconds, verdict, st.Metric, strings.Join(rounds, " "))
	}
	if r.Settings.External {
		fmt.Fprintln(w, "roles: external; the pipeline's MB/s is not counted and its CPU is the client's alone, so those have no ratio")
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	b := r.Baseline
	head := "\tpipeline\t"
	if b != nil {
		head += "baseline\tratio\t"
	}
	fmt.Fprintln(tw, head)
	row := func(name string, pv float64, bv func(*Phase) float64, format string, ratio bool) {
		line := name + "\t" + fmt.Sprintf(format, pv) + "\t"
		if b != nil {
			v := bv(b)
			line += fmt.Sprintf(format, v) + "\t"
			if ratio && v > 0 {
				line += fmt.Sprintf("%.2f", pv/v)
			}
			line += "\t"
		}
		fmt.Fprintln(tw, line)
	}
	p := &r.Phase
	own := !r.Settings.External // figures of the whole chain, comparable
	row("requests/s", p.RequestsPerS, func(x *Phase) float64 { return x.RequestsPerS }, "%.1f", true)
	row("tasks/s", p.TasksPerS, func(x *Phase) float64 { return x.TasksPerS }, "%.1f", true)
	row("MB/s written", p.MBPerS, func(x *Phase) float64 { return x.MBPerS }, "%.2f", own)
	row("latency p50 ms", p.P50, func(x *Phase) float64 { return x.P50 }, "%.2f", true)
	row("latency p90 ms", p.P90, func(x *Phase) float64 { return x.P90 }, "%.2f", true)
	row("latency p99 ms", p.P99, func(x *Phase) float64 { return x.P99 }, "%.2f", true)
	row("latency p99.9 ms", p.P999, func(x *Phase) float64 { return x.P999 }, "%.2f", true)
	row("latency max ms", p.Max, func(x *Phase) float64 { return x.Max }, "%.2f", true)
	row("measured requests", float64(p.Requests), func(x *Phase) float64 { return float64(x.Requests) }, "%.0f", false)
	row("COMPLETE", float64(p.Complete), func(x *Phase) float64 { return float64(x.Complete) }, "%.0f", false)
	row("PARTIAL", float64(p.Partial), func(x *Phase) float64 { return float64(x.Partial) }, "%.0f", false)
	row("FAILED", float64(p.Failed), func(x *Phase) float64 { return float64(x.Failed) }, "%.0f", false)
	row("no reply", float64(p.NoReply), func(x *Phase) float64 { return float64(x.NoReply) }, "%.0f", false)
	row("CPU s in window", p.CPUSeconds, func(x *Phase) float64 { return x.CPUSeconds }, "%.2f", own)
	row("CPU cores busy", p.CPUCores, func(x *Phase) float64 { return x.CPUCores }, "%.2f", own)
	row("CPU µs/request", p.CPUPerRequestUS, func(x *Phase) float64 { return x.CPUPerRequestUS }, "%.0f", own)
	if p.MachineCores > 0 {
		row("machine cores busy", p.MachineCores, func(x *Phase) float64 { return x.MachineCores }, "%.2f", true)
		row("machine idle %", p.MachineIdlePct, func(x *Phase) float64 { return x.MachineIdlePct }, "%.1f", false)
		row("machine CPU µs/request", p.MachineCPUPerRequestUS, func(x *Phase) float64 { return x.MachineCPUPerRequestUS }, "%.0f", true)
	}
	if r.Settings.Rate > 0 {
		row("max send lag ms", p.MaxSendLagMS, func(x *Phase) float64 { return x.MaxSendLagMS }, "%.1f", false)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if note := saturationNote(p, b); note != "" {
		fmt.Fprintf(w, "\n%s\n", note)
	}
	if len(p.Records) > 0 {
		fmt.Fprintf(w, "\nrecords written per request: pipeline %s", recordsLine(p.Records))
		if b != nil && len(b.Records) > 0 {
			fmt.Fprintf(w, "; baseline %s", recordsLine(b.Records))
		}
		fmt.Fprintln(w)
	}
	if len(p.KafkaRequests) > 0 {
		fmt.Fprintf(w, "Kafka requests per request: pipeline %s", requestsLine(p.KafkaRequests))
		if b != nil && len(b.KafkaRequests) > 0 {
			fmt.Fprintf(w, "; baseline %s", requestsLine(b.KafkaRequests))
		}
		fmt.Fprintln(w)
	}
	if p.NoReply > 0 {
		fmt.Fprintf(w, "\n%d pipeline requests got no reply (first: %s); latencies count answered requests only\n", p.NoReply, p.NoReplyError)
	}
	if b != nil && b.NoReply > 0 {
		fmt.Fprintf(w, "\n%d baseline requests got no reply (first: %s)\n", b.NoReply, b.NoReplyError)
	}
	if r.Settings.Rate > 0 && p.MaxSendLagMS > 100 {
		fmt.Fprintf(w, "\nthe load generator sent some requests up to %.0f ms late (in-flight cap or CPU); their latency counts the wait\n", p.MaxSendLagMS)
	}
	return nil
}

func recordsLine(m map[string]RecordStat) string {
	order := map[string]int{}
	for i, n := range kindNames {
		order[n] = i
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return order[names[i]] < order[names[j]] })
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%.2f %s (%.0f B)", m[n].PerRequest, n, m[n].AvgBytes)
	}
	return strings.Join(parts, ", ")
}

// requestsLine lists the requests per request by API, the most first,
// those under 0.01 per request left out.
func requestsLine(m map[string]RequestStat) string {
	names := make([]string, 0, len(m))
	var total float64
	for n, st := range m {
		total += st.PerRequest
		if st.PerRequest >= 0.01 {
			names = append(names, n)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := m[names[i]].PerRequest, m[names[j]].PerRequest
		return a > b || a == b && names[i] < names[j]
	})
	parts := make([]string, 0, len(names)+1)
	parts = append(parts, fmt.Sprintf("%.2f in all", total))
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%.2f %s", m[n].PerRequest, n))
	}
	return strings.Join(parts, ", ")
}

// saturatedIdlePct is the machine's idle share below which its CPUs are
// taken to bound the throughput.
const saturatedIdlePct = 15

// saturationNote says how to read a ratio when the machine's CPUs were
// all but saturated: a closed loop then runs as fast as the CPUs allow,
// and the throughput ratio follows the ratio of machine CPU per request
// rather than anything about latency. Empty when there is nothing to say.
func saturationNote(p, b *Phase) string {
	if p.MachineCores == 0 || p.MachineIdlePct >= saturatedIdlePct {
		return ""
	}
	if b == nil || b.MachineCores == 0 {
		return fmt.Sprintf("the machine's CPUs were %.0f%% idle: they bound this throughput", p.MachineIdlePct)
	}
	if b.MachineIdlePct >= saturatedIdlePct || b.MachineCPUPerRequestUS == 0 {
		return fmt.Sprintf("the machine's CPUs were %.0f%% idle in the pipeline's window and %.0f%% in the baseline's", p.MachineIdlePct, b.MachineIdlePct)
	}
	return fmt.Sprintf("the machine's CPUs were %.0f%% and %.0f%% idle: both chains ran as fast as the CPUs allowed, so the tasks/s ratio follows the machine CPU per request (baseline/pipeline %.2f)",
		p.MachineIdlePct, b.MachineIdlePct, b.MachineCPUPerRequestUS/p.MachineCPUPerRequestUS)
}
