package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Load is the offered load of a bench phase.
//
// Open loop (Rate > 0): requests are sent on a fixed schedule, the i-th at
// start + i/Rate, whether or not earlier ones have been answered, each from
// its own goroutine. A request's latency runs from that intended send time,
// not from when it was actually sent: when the system (or the load
// generator) falls behind, the wait counts, and queueing is not hidden
// ("coordinated omission").
//
// Closed loop (Rate == 0): Concurrency workers each send a request and wait
// for its reply before sending the next. This finds the maximum throughput;
// its latencies are those of a system never offered more than Concurrency
// requests at once.
type Load struct {
	// Rate is the open-loop rate in requests per second; 0 runs closed loop.
	Rate float64
	// Concurrency is the number of closed-loop workers; default 16.
	Concurrency int
	// Duration is how long requests are measured, after Warmup. Ignored
	// when Requests is set.
	Duration time.Duration
	// Requests, when above 0, is how many requests are measured, after
	// Warmup: open loop takes Requests/Rate seconds.
	Requests int
	// Warmup is how long requests are sent, and not measured, first.
	Warmup time.Duration
	// MaxInFlight caps the open loop's requests in flight; default 10000.
	// At the cap the schedule waits, and the wait counts in the latency.
	MaxInFlight int
}

// Defaults of Load.
const (
	DefaultConcurrency = 16
	DefaultMaxInFlight = 10000
)

// Validate fills in defaults and reports every problem with l at once.
func (l *Load) Validate() error {
	var errs []error
	if l.Rate < 0 || math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0) {
		errs = append(errs, fmt.Errorf("rate: %v, want a number of requests per second above 0 (or 0 for a closed loop)", l.Rate))
	}
	if l.Rate > 0 && l.Concurrency > 0 {
		errs = append(errs, fmt.Errorf("rate %v and concurrency %d: choose an open loop (rate) or a closed loop (concurrency)", l.Rate, l.Concurrency))
	}
	if l.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("concurrency: %d is negative", l.Concurrency))
	}
	if l.Rate == 0 && l.Concurrency == 0 {
		l.Concurrency = DefaultConcurrency
	}
	if l.Requests < 0 {
		errs = append(errs, fmt.Errorf("requests: %d is negative", l.Requests))
	}
	if l.Requests == 0 && l.Duration <= 0 {
		errs = append(errs, fmt.Errorf("duration: %s, want above 0 (or a number of requests)", l.Duration))
	}
	if l.Warmup < 0 {
		errs = append(errs, fmt.Errorf("warmup: %s is negative", l.Warmup))
	}
	if l.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("max in flight: %d is negative", l.MaxInFlight))
	}
	if l.MaxInFlight == 0 {
		l.MaxInFlight = DefaultMaxInFlight
	}
	return errors.Join(errs...)
}

// Describe says the load in words, e.g. "open loop at 500 req/s".
func (l Load) Describe() string {
	s := fmt.Sprintf("closed loop, %d in flight", l.Concurrency)
	if l.Rate > 0 {
		s = fmt.Sprintf("open loop at %g req/s", l.Rate)
	}
	if l.Requests > 0 {
		return fmt.Sprintf("%s, %d requests after %s warmup", s, l.Requests, l.Warmup)
	}
	return fmt.Sprintf("%s, %s after %s warmup", s, l.Duration, l.Warmup)
}

// sendFunc sends one request and waits for its outcome. intended is when
// it was meant to be sent; measured says whether it is past the warmup.
type sendFunc func(ctx context.Context, intended time.Time, measured bool)

// schedule is the open loop's timetable.
type schedule struct {
	start    time.Time
	from     time.Time // warmup ends
	interval float64   // nanoseconds between intended sends
	// end: nothing is intended at or after it.
	end time.Time
}

func newSchedule(start time.Time, l Load) schedule {
	s := schedule{start: start, from: start.Add(l.Warmup), interval: float64(time.Second) / l.Rate}
	d := l.Duration
	if l.Requests > 0 {
		d = time.Duration(math.Ceil(float64(l.Requests) * s.interval))
	}
	s.end = s.from.Add(d)
	return s
}

// at returns the intended send time of request i. It is computed from i,
// not by adding intervals, so that rounding does not drift.
func (s schedule) at(i int) time.Time {
	return s.start.Add(time.Duration(math.Round(float64(i) * s.interval)))
}

// genStats is what the load generator saw of itself.
type genStats struct {
	sent int
	// maxLag is the longest time a request was sent after its intended
	// time: above a few milliseconds, the load generator itself (or the
	// in-flight cap) held requests back, and their latency shows it.
	maxLag time.Duration
}

// runOpenLoop sends one request per schedule slot, each on its own
// goroutine, at most maxInFlight at once, until the schedule ends or ctx is
// done; it returns when every request it sent has returned.
func runOpenLoop(ctx context.Context, s schedule, maxInFlight int, send sendFunc) genStats {
	var (
		st  genStats
		wg  sync.WaitGroup
		sem = make(chan struct{}, maxInFlight)
	)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
loop:
	for i := 0; ; i++ {
		t := s.at(i)
		if !t.Before(s.end) {
			break
		}
		if d := time.Until(t); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break loop
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		st.maxLag = max(st.maxLag, time.Since(t))
		st.sent++
		measured := !t.Before(s.from)
		// Each request's goroutine returns when its reply (or its
		// timeout) came; wg.Wait below waits for all of them.
		wg.Go(func() {
			defer func() { <-sem }()
			send(ctx, t, measured)
		})
	}
	wg.Wait()
	return st
}

// runClosedLoop runs workers that each send a request and wait for it,
// until end (when requests is 0) or until requests measured requests have
// been sent. onLast is called when the last measured request is sent in
// the second case. It returns when every worker has returned.
func runClosedLoop(ctx context.Context, workers int, from, end time.Time, requests int, onLast func(time.Time), send sendFunc) genStats {
	var (
		wg       sync.WaitGroup
		sent     atomic.Int64
		measured atomic.Int64
	)
	for range workers {
		// A worker returns when the load ends or ctx is done.
		wg.Go(func() {
			for ctx.Err() == nil {
				now := time.Now()
				if requests == 0 && !now.Before(end) {
					return
				}
				m := !now.Before(from)
				if m && requests > 0 {
					n := measured.Add(1)
					if n > int64(requests) {
						return
					}
					if n == int64(requests) {
						onLast(now)
					}
				}
				sent.Add(1)
				send(ctx, now, m)
			}
		})
	}
	wg.Wait()
	return genStats{sent: int(sent.Load())}
}
