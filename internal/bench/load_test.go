package bench

import (
	"context"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestScheduleDoesNotDrift(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		rate float64
		i    int
		want time.Duration
	}{
		{rate: 3, i: 1, want: 333333333},
		{rate: 3, i: 3, want: time.Second},
		{rate: 3, i: 3_000_000, want: 1_000_000 * time.Second},
		{rate: 7, i: 7_000_001, want: 1_000_000*time.Second + 142857143},
		{rate: 0.5, i: 2, want: 4 * time.Second},
	}
	for _, tt := range tests {
		s := newSchedule(start, Load{Rate: tt.rate, Duration: time.Second})
		if got := s.at(tt.i).Sub(start); got != tt.want {
			t.Errorf("rate %v: request %d intended at +%v, want +%v", tt.rate, tt.i, got, tt.want)
		}
	}
}

// sendLog records what a sendFunc was called with.
type sendLog struct {
	mu       sync.Mutex
	intended []time.Time
	sentAt   []time.Time
	measured int
	lat      []time.Duration // from intended to the end of the call
}

func (l *sendLog) send(work time.Duration) sendFunc {
	return func(ctx context.Context, intended time.Time, measured bool) {
		now := time.Now()
		select {
		case <-time.After(work):
		case <-ctx.Done():
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		l.intended = append(l.intended, intended)
		l.sentAt = append(l.sentAt, now)
		l.lat = append(l.lat, time.Since(intended))
		if measured {
			l.measured++
		}
	}
}

func TestOpenLoop(t *testing.T) {
	tests := []struct {
		name        string
		load        Load
		work        time.Duration
		maxInFlight int
		wantSent    int
		wantMeas    int
		// wantLastLat is the latency of the last request: with a cap of 1
		// in flight and work slower than the rate, every request waits for
		// the one before, and the wait counts.
		wantLastLat time.Duration
		wantLag     bool
	}{
		{
			name: "on schedule", load: Load{Rate: 100, Duration: time.Second, Warmup: 500 * time.Millisecond},
			work: 30 * time.Millisecond, maxInFlight: 1000, wantSent: 150, wantMeas: 100, wantLastLat: 30 * time.Millisecond,
		},
		{
			name: "by request count", load: Load{Rate: 50, Requests: 20, Warmup: 100 * time.Millisecond},
			work: time.Millisecond, maxInFlight: 1000, wantSent: 25, wantMeas: 20, wantLastLat: time.Millisecond,
		},
		{
			// 10 requests intended 10ms apart, each taking 25ms, one at a
			// time: request i is sent at 25ms·i and ends at 25ms·(i+1), so
			// the last one's latency is 250ms - 90ms = 160ms, not 25ms.
			name: "a cap does not hide queueing", load: Load{Rate: 100, Duration: 100 * time.Millisecond},
			work: 25 * time.Millisecond, maxInFlight: 1, wantSent: 10, wantMeas: 10, wantLastLat: 160 * time.Millisecond, wantLag: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				if err := tt.load.Validate(); err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				s := newSchedule(start, tt.load)
				var log sendLog
				st := runOpenLoop(t.Context(), s, tt.maxInFlight, log.send(tt.work))
				if st.sent != tt.wantSent || len(log.intended) != tt.wantSent {
					t.Fatalf("sent %d (%d returned), want %d", st.sent, len(log.intended), tt.wantSent)
				}
				if log.measured != tt.wantMeas {
					t.Errorf("measured %d, want %d", log.measured, tt.wantMeas)
				}
				interval := time.Duration(float64(time.Second) / tt.load.Rate)
				for i := range log.intended {
					// Requests may finish out of order; intended times
					// are on the grid whatever happened.
					off := log.intended[i].Sub(start)
					if off%interval != 0 || off < 0 || off >= time.Duration(tt.wantSent)*interval {
						t.Fatalf("intended send at +%v is off the %v grid", off, interval)
					}
					if !tt.wantLag && !log.sentAt[i].Equal(log.intended[i]) {
						t.Fatalf("request intended at +%v sent at +%v", off, log.sentAt[i].Sub(start))
					}
				}
				var last time.Duration
				for _, l := range log.lat {
					last = max(last, l)
				}
				if last != tt.wantLastLat {
					t.Errorf("longest latency = %v, want %v", last, tt.wantLastLat)
				}
				if (st.maxLag > 0) != tt.wantLag {
					t.Errorf("max send lag = %v, want lag: %v", st.maxLag, tt.wantLag)
				}
			})
		})
	}
}

func TestOpenLoopStopsOnCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(95*time.Millisecond, cancel)
		var log sendLog
		st := runOpenLoop(ctx, newSchedule(time.Now(), Load{Rate: 100, Duration: time.Hour}), 10, log.send(time.Hour))
		// Requests at 0, 10, ..., 90 ms; each returns when ctx ends.
		if st.sent != 10 {
			t.Errorf("sent %d, want 10", st.sent)
		}
	})
}

func TestClosedLoop(t *testing.T) {
	tests := []struct {
		name     string
		workers  int
		warmup   time.Duration
		dur      time.Duration
		requests int
		wantSent int
		wantMeas int
	}{
		// 4 workers, 10ms each: 400 requests in a second.
		{name: "by duration", workers: 4, warmup: 100 * time.Millisecond, dur: time.Second, wantSent: 440, wantMeas: 400},
		{name: "by request count", workers: 3, warmup: 20 * time.Millisecond, requests: 10, wantSent: 16, wantMeas: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				from := start.Add(tt.warmup)
				var (
					log   sendLog
					lasts []time.Time
				)
				st := runClosedLoop(t.Context(), tt.workers, from, from.Add(tt.dur), tt.requests,
					func(t time.Time) { lasts = append(lasts, t) }, log.send(10*time.Millisecond))
				if st.sent != tt.wantSent || log.measured != tt.wantMeas {
					t.Errorf("sent %d, measured %d; want %d, %d", st.sent, log.measured, tt.wantSent, tt.wantMeas)
				}
				if tt.requests > 0 && len(lasts) != 1 {
					t.Errorf("onLast called %d times, want once", len(lasts))
				}
				for i := range log.intended {
					if !log.sentAt[i].Equal(log.intended[i]) {
						t.Fatalf("closed loop request sent at %v, intended %v", log.sentAt[i], log.intended[i])
					}
				}
			})
		})
	}
}

func TestPhase(t *testing.T) {
	tests := []struct {
		name      string
		load      Load
		work      time.Duration
		wantRate  float64
		wantP50   float64 // ms
		wantMeas  int64
		wantStage []string
	}{
		{
			name: "open loop", load: Load{Rate: 200, Duration: 3 * time.Second, Warmup: time.Second},
			work: 7 * time.Millisecond, wantRate: 200, wantP50: 7, wantMeas: 600,
			wantStage: []string{"warmup", "measure", "measure", "measure"},
		},
		{
			// 8 workers × 1/(20ms) = 400 requests/s.
			name: "closed loop", load: Load{Concurrency: 8, Duration: 2 * time.Second, Warmup: time.Second},
			work: 20 * time.Millisecond, wantRate: 400, wantP50: 20, wantMeas: 800,
			wantStage: []string{"warmup", "measure", "measure"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				if err := tt.load.Validate(); err != nil {
					t.Fatal(err)
				}
				var bytes int64
				var mu sync.Mutex
				pr := phaseRun{name: "test", load: tt.load,
					send: func(ctx context.Context) Outcome {
						time.Sleep(tt.work)
						mu.Lock()
						bytes += 1000
						mu.Unlock()
						return Outcome{Status: Complete, Tasks: 4}
					},
					bytes: func() int64 { mu.Lock(); defer mu.Unlock(); return bytes },
				}
				p, err := pr.run(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if math.Abs(p.RequestsPerS-tt.wantRate) > tt.wantRate*0.01 {
					t.Errorf("requests/s = %v, want %v", p.RequestsPerS, tt.wantRate)
				}
				if math.Abs(p.TasksPerS-4*tt.wantRate) > 4*tt.wantRate*0.01 {
					t.Errorf("tasks/s = %v, want %v", p.TasksPerS, 4*tt.wantRate)
				}
				if math.Abs(p.MBPerS-tt.wantRate*1000/1e6) > tt.wantRate*1000/1e6*0.02 {
					t.Errorf("MB/s = %v, want %v", p.MBPerS, tt.wantRate*1000/1e6)
				}
				if math.Abs(p.P50-tt.wantP50) > tt.wantP50*0.001 || math.Abs(p.P99-tt.wantP50) > tt.wantP50*0.001 {
					t.Errorf("p50, p99 = %v, %v ms, want %v", p.P50, p.P99, tt.wantP50)
				}
				if p.Requests != tt.wantMeas || p.Complete != tt.wantMeas || p.Tasks != 4*tt.wantMeas {
					t.Errorf("measured %d requests (%d complete, %d tasks), want %d", p.Requests, p.Complete, p.Tasks, tt.wantMeas)
				}
				if p.WindowS != tt.load.Duration.Seconds() {
					t.Errorf("window = %vs, want %v", p.WindowS, tt.load.Duration.Seconds())
				}
				var stages []string
				for _, s := range p.Series {
					stages = append(stages, s.Stage)
				}
				if len(stages) < len(tt.wantStage) || !equal(stages[:len(tt.wantStage)], tt.wantStage) {
					t.Errorf("series stages = %v, want %v first", stages, tt.wantStage)
				}
			})
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRecorderOutcomes(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	from := start.Add(time.Second)
	r := newRecorder(start, from)
	r.setTo(from.Add(time.Second))
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	// A warmup request answered in the window counts towards throughput,
	// not towards latency or outcomes.
	r.finish(at(900), at(1100), false, Outcome{Status: Complete, Tasks: 2})
	r.finish(at(1000), at(1010), true, Outcome{Status: Complete, Tasks: 2})
	r.finish(at(1100), at(1150), true, Outcome{Status: Partial, Tasks: 1})
	r.finish(at(1200), at(1300), true, Outcome{Status: Failed})
	r.finish(at(1300), at(13300), true, Outcome{Status: NoReply})
	// Answered after the window: latency counts, throughput does not.
	r.finish(at(1900), at(2100), true, Outcome{Status: Complete, Tasks: 2})
	res := r.result()
	if res.outcomes != [numStatus]int64{2, 1, 1, 1} {
		t.Errorf("outcomes = %v, want [2 1 1 1]", res.outcomes)
	}
	if res.requestsPerS != 4 || res.tasksPerS != 5 {
		t.Errorf("requests/s, tasks/s = %v, %v; want 4, 5", res.requestsPerS, res.tasksPerS)
	}
	if res.measuredReqs != 5 || res.warmupReqs != 1 {
		t.Errorf("measured, warmup = %d, %d; want 5, 1", res.measuredReqs, res.warmupReqs)
	}
	// Latencies of the answered measured requests: 10, 50, 100, 200 ms.
	if math.Abs(res.latency.Max-200) > 0.2 {
		t.Errorf("max = %v ms, want 200 (the no-reply request is not a latency)", res.latency.Max)
	}
	if math.Abs(res.latency.P50-50) > 0.05 {
		t.Errorf("p50 = %v ms, want 50", res.latency.P50)
	}
}
