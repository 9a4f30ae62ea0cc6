package bench

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// A fresh broker (a JVM just started, or kfake with empty logs) takes 10-15
// s to reach its steady rate: the first phase measured on it would run at
// 40-70% of its speed at first, and the pipeline is always the first phase.
// settle sends the phase's load, unmeasured, in rounds of settleRound until
// settleAgree rounds in a row agree within settleTolerance, or Config.Settle
// has passed, before the first phase's warmup and measured window. Three
// rounds, not two: a ramp with a plateau of a few seconds is not taken for
// the steady rate.
const (
	settleRound     = 2 * time.Second
	settleAgree     = 3
	settleTolerance = 0.10
	// settleSlackMS: open-loop p50s this close agree whatever their ratio
	// (a few ms apart is noise, not warm-up).
	settleSlackMS = 1.0
)

// Settled is what the settle rounds before the first phase saw.
type Settled struct {
	// Seconds spent settling, and whether the last three rounds agreed
	// (false: Config.Settle ran out first).
	Seconds float64 `json:"seconds"`
	Steady  bool    `json:"steady"`
	// Rounds are the rounds' figures in order: replies per second in a
	// closed loop, p50 latency in ms in an open loop (whose rate is fixed).
	Rounds []float64 `json:"rounds"`
	Metric string    `json:"metric"`
}

// settle runs rounds of pr's load until steady or max has passed.
func (pr *phaseRun) settle(ctx context.Context, max time.Duration) (*Settled, error) {
	s := &Settled{Metric: "requests_per_s"}
	if pr.load.Rate > 0 {
		s.Metric = "p50_ms"
	}
	start := time.Now()
	for time.Since(start) < max {
		round := *pr
		round.name, round.progress = pr.name+" settle", nil
		round.load = Load{Rate: pr.load.Rate, Concurrency: pr.load.Concurrency, MaxInFlight: pr.load.MaxInFlight, Duration: settleRound}
		ph, err := round.run(ctx)
		if err != nil {
			return nil, err
		}
		v := ph.RequestsPerS
		if pr.load.Rate > 0 {
			v = ph.P50
		}
		s.Rounds = append(s.Rounds, v)
		if pr.progress != nil {
			fmt.Fprintf(pr.progress, "%s: settling, round %d: %s %.1f\n", pr.name, len(s.Rounds), s.Metric, v)
		}
		slack := 0.0
		if pr.load.Rate > 0 {
			slack = settleSlackMS
		}
		if n := len(s.Rounds); n >= settleAgree && agree(slices.Max(s.Rounds[n-settleAgree:]), slices.Min(s.Rounds[n-settleAgree:]), slack) {
			s.Steady = true
			break
		}
	}
	s.Seconds = time.Since(start).Seconds()
	return s, nil
}

// agree reports whether a and b differ by at most settleTolerance of the
// larger, or by at most slack.
func agree(a, b, slack float64) bool {
	hi, lo := max(a, b), min(a, b)
	return hi-lo <= slack || (hi-lo)/hi <= settleTolerance
}
