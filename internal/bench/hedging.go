package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// Defaults of Hedging.
const (
	DefaultStragglerRate        = 0.01
	DefaultStragglerDelay       = 500 * time.Millisecond
	DefaultHedgePercentile      = 95
	DefaultProcessorConcurrency = 8
)

// Hedging configures CompareHedging: the stragglers, and how the third
// phase hedges them.
type Hedging struct {
	// StragglerRate is the fraction of tasks whose sleep is StragglerDelay
	// longer, in the second and third phases; default 1%, 500ms.
	StragglerRate  float64       `json:"straggler_rate"`
	StragglerDelay time.Duration `json:"straggler_delay"`
	// Hedge is the route's hedging in the third phase; default a 95th
	// percentile delay (scatterer.Hedge's defaults for the rest: a 10ms
	// floor, 100 samples, a 5% budget).
	Hedge scatterer.Hedge `json:"hedge"`
	// ProcessorConcurrency is the processors' Config.Concurrency in every
	// phase; default 8. Hedging needs it above 1: with 1, a processor
	// commits a polled batch as a whole, so a straggler holds back every
	// result of its batch, the hedge's included.
	ProcessorConcurrency int `json:"processor_concurrency"`
}

func (h *Hedging) validate() error {
	var errs []error
	if h.StragglerRate == 0 {
		h.StragglerRate = DefaultStragglerRate
	}
	if h.StragglerDelay == 0 {
		h.StragglerDelay = DefaultStragglerDelay
	}
	if h.StragglerRate < 0 || h.StragglerRate > 1 || math.IsNaN(h.StragglerRate) {
		errs = append(errs, fmt.Errorf("straggler rate: %v, want (0, 1]", h.StragglerRate))
	}
	if h.StragglerDelay < 0 {
		errs = append(errs, fmt.Errorf("straggler delay: %s is negative", h.StragglerDelay))
	}
	if h.Hedge.Delay == 0 && h.Hedge.Percentile == 0 {
		h.Hedge.Percentile = DefaultHedgePercentile
	}
	if err := h.Hedge.Validate(); err != nil {
		errs = append(errs, err)
	}
	if h.ProcessorConcurrency == 0 {
		h.ProcessorConcurrency = DefaultProcessorConcurrency
	}
	if h.ProcessorConcurrency < 1 || h.ProcessorConcurrency > processor.MaxConcurrency {
		errs = append(errs, fmt.Errorf("processor concurrency: %d, want 1..%d", h.ProcessorConcurrency, processor.MaxConcurrency))
	}
	return errors.Join(errs...)
}

// HedgingSummary is the "hedging" object of the JSON report.
type HedgingSummary struct {
	P99MSNoStragglers float64 `json:"p99_ms_no_stragglers"`
	P99MSUnhedged     float64 `json:"p99_ms_unhedged"`
	P99MSHedged       float64 `json:"p99_ms_hedged"`
	// ExtraTasksPct is the hedged phase's hedges over the tasks its
	// scatterer issued, in percent, warmup included.
	ExtraTasksPct float64 `json:"extra_tasks_pct"`
	// HedgedOverNoStragglers is p99 hedged over p99 without stragglers.
	HedgedOverNoStragglers float64 `json:"p99_hedged_over_no_stragglers"`
	// The hedged phase's counts (warmup included).
	TasksIssued  int64 `json:"tasks_issued"`
	HedgesIssued int64 `json:"hedges_issued"`
	HedgesDenied int64 `json:"hedges_denied"`
	HedgesWon    int64 `json:"hedges_won"`
}

// HedgingReport is what CompareHedging measured: one phase per scenario.
type HedgingReport struct {
	Hedging      HedgingSummary `json:"hedging"`
	NoStragglers *Phase         `json:"no_stragglers"`
	Unhedged     *Phase         `json:"unhedged"`
	Hedged       *Phase         `json:"hedged"`
	Stragglers   Hedging        `json:"stragglers_and_hedging"`
	Settings     Settings       `json:"settings"`
	Env          Env            `json:"environment"`
}

// CompareHedging runs the pipeline three times in one run, one phase after
// the other on the same broker with the same load (cfg.Load) and the sleep
// handler (cfg.Handler's delays): without stragglers, with stragglers
// (h.StragglerRate of the tasks sleep h.StragglerDelay longer), and with
// the same stragglers on a hedged route (h.Hedge). Every phase's roles run
// in this process on topics of their own. It returns the three phases and
// their p99 latencies, and the hedged phase's extra tasks.
func CompareHedging(ctx context.Context, cfg Config, h Hedging) (*HedgingReport, error) {
	if cfg.External {
		return nil, errors.New("compare hedging: the roles must run in this process (not --external): each phase has its own handler and route")
	}
	if cfg.Mode == scatterer.Broadcast {
		return nil, errors.New("compare hedging: hedging is for split routes")
	}
	cfg.Handler.Name = "sleep"
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bench config: %w", err)
	}
	if err := h.validate(); err != nil {
		return nil, fmt.Errorf("compare hedging: %w", err)
	}
	rep := &HedgingReport{Stragglers: h, Settings: cfg.settings(), Env: environment()}
	base := cfg.Topics.Prefix + "bench." + cfg.RunID + ".hedging."
	for _, sc := range []struct {
		name      string
		straggler bool
		hedge     bool
		out       **Phase
	}{
		{"no-stragglers", false, false, &rep.NoStragglers},
		{"unhedged", true, false, &rep.Unhedged},
		{"hedged", true, true, &rep.Hedged},
	} {
		ph, st, err := runHedgingPhase(ctx, &cfg, &h, kafkaconfig.Topics{Prefix: base + sc.name + "."}, sc.name, sc.straggler, sc.hedge)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sc.name, err)
		}
		*sc.out = ph
		if sc.hedge {
			s := &rep.Hedging
			s.TasksIssued = st.tasks
			s.HedgesIssued, s.HedgesDenied, s.HedgesWon = st.hedges.HedgesIssued, st.hedges.HedgesDenied, st.hedges.HedgesWon
			if st.tasks > 0 {
				s.ExtraTasksPct = 100 * float64(st.hedges.HedgesIssued) / float64(st.tasks)
			}
		}
	}
	s := &rep.Hedging
	s.P99MSNoStragglers, s.P99MSUnhedged, s.P99MSHedged = rep.NoStragglers.P99, rep.Unhedged.P99, rep.Hedged.P99
	if s.P99MSNoStragglers > 0 {
		s.HedgedOverNoStragglers = s.P99MSHedged / s.P99MSNoStragglers
	}
	return rep, nil
}

// phaseStats are the role counters of a phase.
type phaseStats struct {
	tasks  int64
	hedges struct{ HedgesIssued, HedgesDenied, HedgesWon int64 }
}

// runHedgingPhase runs one phase of CompareHedging on its own topics.
func runHedgingPhase(ctx context.Context, cfg *Config, h *Hedging, topics kafkaconfig.Topics, name string, straggle, hedge bool) (ph *Phase, st phaseStats, err error) {
	sc := processor.SleepConfig{Delay: cfg.Handler.Delay, MaxDelay: cfg.Handler.MaxDelay, Seed: time.Now().UnixNano()}
	if straggle {
		sc.StragglerRate, sc.StragglerDelay = h.StragglerRate, h.StragglerDelay
	}
	handler, err := processor.Sleep(sc)
	if err != nil {
		return nil, st, err
	}
	table, err := benchRoutes(cfg)
	if err != nil {
		return nil, st, err
	}
	if hedge {
		r := &table.Routes[0]
		r.HedgeDelay, r.HedgePercentile = routes.Duration(h.Hedge.Delay), h.Hedge.Percentile
		r.HedgeMinDelay, r.HedgeMinSamples, r.HedgeBudget = routes.Duration(h.Hedge.MinDelay), h.Hedge.MinSamples, h.Hedge.Budget
		if err := table.Validate(); err != nil {
			return nil, st, err
		}
	}
	counter := newRecordCounter(topics)
	cc := withCounter(cfg.Client, counter)
	route := schemas.Route(cfg.Route)
	stk, err := stack.New(ctx, stack.Config{Client: cc, Topics: topics, Layout: cfg.Layout, Routes: table, Guarantee: cfg.Guarantee,
		TransactionGap: cfg.TransactionGap,
		Processors: []stack.ProcessorSpec{{Route: route, Handler: handler, Instances: cfg.Processors,
			Tune: func(pc *processor.Config) { pc.Concurrency, pc.Ordering = h.ProcessorConcurrency, processor.OrderNone }}},
		Logger: cfg.Logger})
	if err != nil {
		deleteTopics(ctx, cfg, topics.Prefix)
		return nil, st, fmt.Errorf("pipeline: %w", err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	// The stack runs until stop.
	go func() { done <- stk.Run(sctx) }()
	defer func() {
		stop()
		if rerr := <-done; rerr != nil {
			err = errors.Join(err, fmt.Errorf("pipeline roles: %w", rerr))
		}
		deleteTopics(ctx, cfg, topics.Prefix)
	}()
	cl, err := client.New(ctx, client.Config{Client: cc, Topics: topics, DefaultTimeout: cfg.Timeout, Logger: cfg.Logger})
	if err != nil {
		return nil, st, fmt.Errorf("pipeline client: %w", err)
	}
	defer cl.Close()
	p := &pipeline{topics: topics, counter: counter, cl: cl, route: route, payload: cfg.payload(), opts: client.Options{Fanout: cfg.Fanout}}
	if err := waitReady(ctx, name, cfg.ReadyTimeout, p.send); err != nil {
		return nil, st, err
	}
	pr := phaseRun{name: name, load: cfg.Load, send: p.send, progress: cfg.Progress, tty: cfg.ProgressTTY, bytes: counter.total}
	if ph, err = pr.run(ctx); err != nil {
		return nil, st, err
	}
	ph.Records = counter.stats()
	ph.KafkaRequests = counter.requestStats()
	st.tasks = stk.Scatterer.Stats().Tasks
	for _, a := range stk.Aggregators {
		as := a.Stats()
		st.hedges.HedgesIssued += as.HedgesIssued
		st.hedges.HedgesDenied += as.HedgesDenied
		st.hedges.HedgesWon += as.HedgesWon
	}
	return ph, st, nil
}

// WriteTable prints the three phases and the summary.
func (r *HedgingReport) WriteTable(w io.Writer) error {
	s := r.Settings
	fmt.Fprintf(w, "stragglers and hedging: %s, fan-out %d, %s, sleep %s, %.3g%% stragglers +%s, processor concurrency %d, %s on %s\n",
		s.Mode, s.Fanout, s.Load, r.Settings.Handler.Delay, 100*r.Stragglers.StragglerRate, r.Stragglers.StragglerDelay,
		r.Stragglers.ProcessorConcurrency, s.Guarantee, s.Broker)
	fmt.Fprintf(w, "hedge: %s\n\n", r.Stragglers.Hedge.String())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\treq/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\tcomplete\tpartial\tfailed\tno reply\t")
	for _, ph := range []struct {
		name string
		p    *Phase
	}{{"no stragglers", r.NoStragglers}, {"stragglers", r.Unhedged}, {"stragglers, hedged", r.Hedged}} {
		p := ph.p
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t%d\t%d\t%d\t\n", ph.name, p.RequestsPerS, p.P50, p.P90, p.P99, p.P999, p.Max,
			p.Complete, p.Partial, p.Failed, p.NoReply)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	h := r.Hedging
	_, err := fmt.Fprintf(w, "\np99: %.1f ms without stragglers, %.1f ms with, %.1f ms hedged (%.2f× the no-straggler p99); hedges: %d issued (%.2f%% extra tasks of %d), %d won, %d denied by the budget\n",
		h.P99MSNoStragglers, h.P99MSUnhedged, h.P99MSHedged, h.HedgedOverNoStragglers, h.HedgesIssued, h.ExtraTasksPct, h.TasksIssued, h.HedgesWon, h.HedgesDenied)
	return err
}
