package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// The plots are self-contained HTML pages with inline SVG: no script, no
// network, they open anywhere and can be attached to an issue.

const (
	colorPipeline = "#1f6feb"
	colorBaseline = "#d1242f"
	colorP50      = "#2da44e"
	colorMax      = "#8250df"
)

// line is one series of a chart.
type line struct {
	name   string
	color  string
	dashed bool
	pts    [][2]float64
}

// chart is a line chart with linear axes, or a "nines" x axis for latency
// distributions (x = -log10(1 - percentile/100)).
type chart struct {
	title, xLabel, yLabel string
	lines                 []line
	nines                 bool
	// xNames label integer x positions 0..n-1 (a sweep's points).
	xNames []string
	// shade is an x range drawn grey (the warmup).
	shade [2]float64
	// fromZero starts the x axis at 0 (time series).
	fromZero bool
}

// niceStep returns a round tick step for a range.
func niceStep(span float64, ticks int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(ticks)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

func ninesX(p float64) float64 {
	if p >= 100 {
		p = 99.9999
	}
	return -math.Log10(1 - p/100)
}

func fmtTick(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e9 {
		return fmt.Sprintf("%.0f", v)
	}
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// svg renders the chart.
func (c chart) svg() string {
	const (
		height      = 320
		left        = 70
		top, bottom = 36, 48
	)
	// The legend sits on the right; long names (a sweep's points) widen it.
	longest := 0
	for _, l := range c.lines {
		longest = max(longest, len(l.name))
	}
	right := max(150, 50+7*longest)
	width := 610 + right
	pw, ph := float64(width-left-right), float64(height-top-bottom)
	var xmin, xmax, ymax float64 = math.Inf(1), math.Inf(-1), 0
	for _, l := range c.lines {
		for _, p := range l.pts {
			x := p[0]
			if c.nines {
				x = ninesX(x)
			}
			xmin, xmax = math.Min(xmin, x), math.Max(xmax, x)
			ymax = math.Max(ymax, p[1])
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`, width, height, width, height)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" font-weight="bold">%s</text>`, left, html.EscapeString(c.title))
	if math.IsInf(xmin, 0) {
		fmt.Fprintf(&b, `<text x="%d" y="%d">no data</text></svg>`, left, top+40)
		return b.String()
	}
	if c.nines || c.fromZero {
		xmin = 0
	}
	if c.xNames != nil {
		xmin, xmax = -0.5, float64(len(c.xNames))-0.5
	}
	if xmax <= xmin {
		xmax = xmin + 1
	}
	if ymax <= 0 {
		ymax = 1
	}
	ystep := niceStep(ymax, 5)
	ymax = math.Ceil(ymax/ystep) * ystep
	sx := func(x float64) float64 { return float64(left) + (x-xmin)/(xmax-xmin)*pw }
	sy := func(y float64) float64 { return float64(top) + ph - y/ymax*ph }

	if c.shade[1] > c.shade[0] {
		x0, x1 := sx(math.Max(c.shade[0], xmin)), sx(math.Min(c.shade[1], xmax))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%.0f" fill="#eee"/>`, x0, top, x1-x0, ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#888" font-size="11">warmup</text>`, x0+3, top+12)
	}
	// Y grid and labels.
	for y := 0.0; y <= ymax+ystep/2; y += ystep {
		fmt.Fprintf(&b, `<line x1="%d" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, left, float64(left)+pw, sy(y), sy(y))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, left-6, sy(y)+4, fmtTick(y))
	}
	// X ticks.
	switch {
	case c.nines:
		for _, t := range []struct {
			x    float64
			name string
		}{{0, "0%"}, {ninesX(50), "50%"}, {1, "90%"}, {2, "99%"}, {3, "99.9%"}, {4, "99.99%"}, {5, "99.999%"}, {6, "100%"}} {
			if t.x > xmax+1e-9 {
				break
			}
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%.0f" stroke="#ddd"/>`, sx(t.x), sx(t.x), top, float64(top)+ph)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`, sx(t.x), float64(top)+ph+16, t.name)
		}
	case c.xNames != nil:
		for i, n := range c.xNames {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`, sx(float64(i)), float64(top)+ph+16, html.EscapeString(n))
		}
	default:
		step := niceStep(xmax-xmin, 8)
		for x := math.Ceil(xmin/step) * step; x <= xmax+step/1000; x += step {
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.0f" y2="%.0f" stroke="#999"/>`, sx(x), sx(x), float64(top)+ph, float64(top)+ph+4)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`, sx(x), float64(top)+ph+16, fmtTick(x))
		}
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`, left, top, pw, ph)
	fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">%s</text>`, float64(left)+pw/2, height-8, html.EscapeString(c.xLabel))
	fmt.Fprintf(&b, `<text transform="translate(16 %.0f) rotate(-90)" text-anchor="middle">%s</text>`, float64(top)+ph/2, html.EscapeString(c.yLabel))
	// Lines and legend.
	for i, l := range c.lines {
		var pts []string
		for _, p := range l.pts {
			x := p[0]
			if c.nines {
				x = ninesX(x)
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", sx(x), sy(p[1])))
		}
		dash := ""
		if l.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`, l.color, dash, strings.Join(pts, " "))
		if len(l.pts) <= 12 {
			for _, p := range pts {
				xy := strings.Split(p, ",")
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`, xy[0], xy[1], l.color)
			}
		}
		ly := top + 14 + i*18
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`, width-right+10, width-right+34, ly-4, ly-4, l.color, dash)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`, width-right+40, ly, html.EscapeString(l.name))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func seriesLine(name, color string, dashed bool, s []Sample, y func(Sample) float64) line {
	l := line{name: name, color: color, dashed: dashed}
	for _, x := range s {
		l.pts = append(l.pts, [2]float64{x.T, y(x)})
	}
	return l
}

// distLine plots a distribution of n samples. Its maximum (percentile 100)
// is drawn where the last sample sits, at percentile 100·(1-1/n), rather
// than at the edge of the axis.
func distLine(name, color string, dashed bool, d []DistPoint, n int64) line {
	l := line{name: name, color: color, dashed: dashed}
	for _, p := range d {
		x := p.Percentile
		if x >= 100 && n > 1 {
			x = 100 * (1 - 1/float64(n))
		}
		l.pts = append(l.pts, [2]float64{x, p.LatencyMS})
	}
	return l
}

const pageHead = `<!doctype html>
<html><head><meta charset="utf-8"><title>%s</title>
<style>
body { font-family: sans-serif; margin: 24px; color: #1f2328; }
h1 { font-size: 20px; } p.meta { color: #555; }
table { border-collapse: collapse; margin: 12px 0 24px; }
td, th { border: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
svg { display: block; margin: 8px 0 20px; }
</style></head><body>
`

// PlotReport writes the charts of one run as an HTML page: throughput and
// latency percentiles over time, and the latency distribution, for the
// pipeline and (when run) the baseline.
func PlotReport(w io.Writer, r *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, pageHead, "scattergather bench")
	fmt.Fprintf(&b, "<h1>scattergather bench: %s</h1>\n", html.EscapeString(r.Settings.headline()))
	fmt.Fprintf(&b, `<p class="meta">load: %s; broker: %s; started %s; machine load before: %s (%d CPUs); %s; commit %s</p>`+"\n",
		html.EscapeString(r.Settings.Load), html.EscapeString(r.Settings.Broker), r.Env.StartedAt.Format("2006-01-02 15:04:05 UTC"),
		html.EscapeString(r.Env.LoadAvg), r.Env.CPUs, r.Env.GoVersion, html.EscapeString(r.Env.Commit))
	writeSummary(&b, r)
	warm := [2]float64{0, r.Settings.WarmupS}

	tp := chart{title: "Throughput over time", xLabel: "seconds since the phase started", yLabel: "tasks/s", shade: warm, fromZero: true}
	tp.lines = append(tp.lines, seriesLine("pipeline", colorPipeline, false, r.Series, func(s Sample) float64 { return s.TasksPerS }))
	if r.Baseline != nil {
		tp.lines = append(tp.lines, seriesLine("baseline", colorBaseline, true, r.Baseline.Series, func(s Sample) float64 { return s.TasksPerS }))
	}
	b.WriteString(tp.svg())

	lt := chart{title: "Latency over time (replies in each second)", xLabel: "seconds since the phase started", yLabel: "ms", shade: warm, fromZero: true}
	lt.lines = append(lt.lines,
		seriesLine("pipeline p50", colorP50, false, r.Series, func(s Sample) float64 { return s.P50 }),
		seriesLine("pipeline p99", colorPipeline, false, r.Series, func(s Sample) float64 { return s.P99 }),
		seriesLine("pipeline max", colorMax, false, r.Series, func(s Sample) float64 { return s.Max }))
	if r.Baseline != nil {
		lt.lines = append(lt.lines,
			seriesLine("baseline p50", colorP50, true, r.Baseline.Series, func(s Sample) float64 { return s.P50 }),
			seriesLine("baseline p99", colorBaseline, true, r.Baseline.Series, func(s Sample) float64 { return s.P99 }))
	}
	b.WriteString(lt.svg())

	dc := chart{title: "Latency distribution (measured requests; the last point is the maximum)", xLabel: "percentile", yLabel: "ms", nines: true}
	dc.lines = append(dc.lines, distLine("pipeline", colorPipeline, false, r.Distribution, r.Requests-r.NoReply))
	if r.Baseline != nil {
		dc.lines = append(dc.lines, distLine("baseline", colorBaseline, true, r.Baseline.Distribution, r.Baseline.Requests-r.Baseline.NoReply))
	}
	b.WriteString(dc.svg())
	b.WriteString("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func writeSummary(b *strings.Builder, r *Report) {
	b.WriteString("<table><tr><th></th><th>pipeline</th>")
	if r.Baseline != nil {
		b.WriteString("<th>baseline</th><th>ratio</th>")
	}
	b.WriteString("</tr>\n")
	row := func(name string, get func(*Phase) float64, format string) {
		fmt.Fprintf(b, "<tr><td>%s</td><td>"+format+"</td>", name, get(&r.Phase))
		if r.Baseline != nil {
			bv := get(r.Baseline)
			ratio := ""
			// Counts depend on how long each phase ran: no ratio; nor for
			// what is not counted alike when the roles run elsewhere.
			whole := !r.Settings.External || !strings.HasPrefix(name, "CPU") && !strings.HasPrefix(name, "MB/s")
			if bv > 0 && format != "%.0f" && whole {
				ratio = fmt.Sprintf("%.2f", get(&r.Phase)/bv)
			}
			fmt.Fprintf(b, "<td>"+format+"</td><td>%s</td>", bv, ratio)
		}
		b.WriteString("</tr>\n")
	}
	row("requests/s", func(p *Phase) float64 { return p.RequestsPerS }, "%.1f")
	row("tasks/s", func(p *Phase) float64 { return p.TasksPerS }, "%.1f")
	row("MB/s written", func(p *Phase) float64 { return p.MBPerS }, "%.2f")
	row("p50 ms", func(p *Phase) float64 { return p.P50 }, "%.2f")
	row("p90 ms", func(p *Phase) float64 { return p.P90 }, "%.2f")
	row("p99 ms", func(p *Phase) float64 { return p.P99 }, "%.2f")
	row("p99.9 ms", func(p *Phase) float64 { return p.P999 }, "%.2f")
	row("max ms", func(p *Phase) float64 { return p.Max }, "%.2f")
	row("COMPLETE", func(p *Phase) float64 { return float64(p.Complete) }, "%.0f")
	row("PARTIAL", func(p *Phase) float64 { return float64(p.Partial) }, "%.0f")
	row("FAILED", func(p *Phase) float64 { return float64(p.Failed) }, "%.0f")
	row("no reply", func(p *Phase) float64 { return float64(p.NoReply) }, "%.0f")
	row("CPU cores busy", func(p *Phase) float64 { return p.CPUCores }, "%.2f")
	row("CPU µs/request", func(p *Phase) float64 { return p.CPUPerRequestUS }, "%.1f")
	if r.Phase.MachineCores > 0 {
		row("machine cores busy", func(p *Phase) float64 { return p.MachineCores }, "%.2f")
		row("machine idle %", func(p *Phase) float64 { return p.MachineIdlePct }, "%.0f") // no ratio
		row("machine CPU µs/request", func(p *Phase) float64 { return p.MachineCPUPerRequestUS }, "%.1f")
	}
	b.WriteString("</table>\n")
}

// PlotSweep writes the charts of a sweep as an HTML page: throughput and
// latency by point, pipeline against baseline, and each point's latency
// distribution.
func PlotSweep(w io.Writer, sr *SweepReport) error {
	var b strings.Builder
	fmt.Fprintf(&b, pageHead, "scattergather bench sweep")
	if len(sr.Points) == 0 {
		b.WriteString("<p>no points</p></body></html>\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	first := sr.Points[0]
	fmt.Fprintf(&b, "<h1>scattergather bench sweep %s</h1>\n", html.EscapeString(strings.Join(sr.Sweep, " × ")))
	fmt.Fprintf(&b, `<p class="meta">first point: %s; load: %s; broker: %s; started %s; machine load before: %s (%d CPUs); commit %s</p>`+"\n",
		html.EscapeString(first.Settings.headline()), html.EscapeString(first.Settings.Load), html.EscapeString(first.Settings.Broker),
		first.Env.StartedAt.Format("2006-01-02 15:04:05 UTC"), html.EscapeString(first.Env.LoadAvg), first.Env.CPUs, html.EscapeString(first.Env.Commit))

	b.WriteString("<table><tr><th>point</th><th>req/s</th><th>tasks/s</th><th>p50 ms</th><th>p99 ms</th><th>base tasks/s</th><th>base p99 ms</th><th>ratio tasks/s</th><th>ratio p99</th></tr>\n")
	names := make([]string, len(sr.Points))
	tasks := chart{title: "Throughput by point", xLabel: "point", yLabel: "tasks/s"}
	lat := chart{title: "Latency by point", xLabel: "point", yLabel: "ms"}
	pt, bt := line{name: "pipeline", color: colorPipeline}, line{name: "baseline", color: colorBaseline, dashed: true}
	p50, p99 := line{name: "pipeline p50", color: colorP50}, line{name: "pipeline p99", color: colorPipeline}
	b50, b99 := line{name: "baseline p50", color: colorP50, dashed: true}, line{name: "baseline p99", color: colorBaseline, dashed: true}
	for i, p := range sr.Points {
		names[i] = p.Settings.Label
		x := float64(i)
		pt.pts = append(pt.pts, [2]float64{x, p.TasksPerS})
		p50.pts = append(p50.pts, [2]float64{x, p.P50})
		p99.pts = append(p99.pts, [2]float64{x, p.P99})
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%.1f</td><td>%.1f</td><td>%.2f</td><td>%.2f</td>", html.EscapeString(p.Settings.Label), p.RequestsPerS, p.TasksPerS, p.P50, p.P99)
		if p.Baseline != nil {
			bt.pts = append(bt.pts, [2]float64{x, p.Baseline.TasksPerS})
			b50.pts = append(b50.pts, [2]float64{x, p.Baseline.P50})
			b99.pts = append(b99.pts, [2]float64{x, p.Baseline.P99})
			fmt.Fprintf(&b, "<td>%.1f</td><td>%.2f</td><td>%.2f</td><td>%.2f</td>", p.Baseline.TasksPerS, p.Baseline.P99, p.RatioTasksPerS, p.RatioP99)
		} else {
			b.WriteString("<td></td><td></td><td></td><td></td>")
		}
		b.WriteString("</tr>\n")
	}
	b.WriteString("</table>\n")
	tasks.xNames, lat.xNames = names, names
	tasks.lines = append(tasks.lines, pt)
	lat.lines = append(lat.lines, p50, p99)
	if len(bt.pts) > 0 {
		tasks.lines = append(tasks.lines, bt)
		lat.lines = append(lat.lines, b50, b99)
	}
	b.WriteString(tasks.svg())
	b.WriteString(lat.svg())

	palette := []string{"#1f6feb", "#d1242f", "#2da44e", "#8250df", "#bf8700", "#0a7d8c", "#cf222e", "#57606a"}
	dc := chart{title: "Pipeline latency distribution by point", xLabel: "percentile", yLabel: "ms", nines: true}
	for i, p := range sr.Points {
		dc.lines = append(dc.lines, distLine(p.Settings.Label, palette[i%len(palette)], false, p.Distribution, p.Requests-p.NoReply))
	}
	b.WriteString(dc.svg())
	b.WriteString("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
