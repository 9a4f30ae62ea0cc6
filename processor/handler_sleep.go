package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/scattergather/scattergather/schemas"
)

// SleepConfig configures the [Sleep] handler.
type SleepConfig struct {
	// Delay is how long each try sleeps; when MaxDelay > Delay, a try sleeps
	// a uniform random time in [Delay, MaxDelay] instead.
	Delay, MaxDelay time.Duration
	// FailureRate is the fraction of tries, in [0, 1], that fail (after
	// their sleep) with ErrInjected.
	FailureRate float64
	// StragglerRate is the fraction of tries, in [0, 1], that sleep
	// StragglerDelay longer: the slow shards that hedging is for.
	StragglerRate  float64
	StragglerDelay time.Duration
	// Seed seeds the random draws. With a given seed, the n-th try handled
	// draws the same numbers every run (which task that is depends on
	// scheduling when tasks run concurrently).
	Seed int64
}

// Validate reports every problem with c at once.
func (c SleepConfig) Validate() error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"delay", c.Delay}, {"max delay", c.MaxDelay}, {"straggler delay", c.StragglerDelay}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %s is negative", d.name, d.v))
		}
	}
	if c.MaxDelay > 0 && c.MaxDelay < c.Delay {
		errs = append(errs, fmt.Errorf("max delay: %s is below delay %s", c.MaxDelay, c.Delay))
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"failure rate", c.FailureRate}, {"straggler rate", c.StragglerRate}} {
		if math.IsNaN(r.v) || r.v < 0 || r.v > 1 {
			errs = append(errs, fmt.Errorf("%s: %v is not in [0, 1]", r.name, r.v))
		}
	}
	if c.StragglerRate > 0 && c.StragglerDelay == 0 {
		errs = append(errs, errors.New("straggler delay: zero with a straggler rate above 0"))
	}
	return errors.Join(errs...)
}

// ErrInjected is the error of a try that the [Sleep] handler fails on
// purpose. It is not permanent, so the processor retries it.
var ErrInjected = errors.New("sleep: injected failure")

// SleepResult is the payload of the [Sleep] handler.
type SleepResult struct {
	Part    schemas.PartID `json:"part"`
	SleptMS int64          `json:"slept_ms"`
}

// Sleep returns a synthetic handler for benchmarks and fault tests: each try
// sleeps as cfg says, fails at cfg.FailureRate, and otherwise answers with
// the JSON of a [SleepResult], {"part":"shard-3","slept_ms":12}, rather than
// the payload, so that a benchmark sees which part answered and how slowly.
// A try honours ctx: when ctx ends during the sleep it returns ctx.Err().
// The handler is safe for concurrent use.
func Sleep(cfg SleepConfig) (Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sleep handler: %w", err)
	}
	return &sleeper{cfg: cfg, rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x51ee9))}, nil
}

type sleeper struct {
	cfg SleepConfig

	mu  sync.Mutex // guards rng
	rng *rand.Rand
}

// draw returns one try's sleep and whether it fails.
func (s *sleeper) draw() (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.cfg.Delay
	if s.cfg.MaxDelay > s.cfg.Delay {
		d += time.Duration(s.rng.Int64N(int64(s.cfg.MaxDelay-s.cfg.Delay) + 1))
	}
	// Always draw both, so that one rate does not shift the other's draws.
	straggle, fail := s.rng.Float64() < s.cfg.StragglerRate, s.rng.Float64() < s.cfg.FailureRate
	if straggle {
		d += s.cfg.StragglerDelay
	}
	return d, fail
}

func (s *sleeper) Handle(ctx context.Context, t schemas.Task) ([]byte, error) {
	d, fail := s.draw()
	if d > 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail {
		return nil, ErrInjected
	}
	return json.Marshal(SleepResult{Part: t.PartID, SleptMS: d.Milliseconds()})
}
