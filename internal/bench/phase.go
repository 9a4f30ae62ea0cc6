package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// Phase is what one chain (the pipeline, or the baseline) did under the
// load. Throughput counts the replies that arrived in the measured window;
// latency and outcomes are those of the requests intended in it.
type Phase struct {
	Name string `json:"name"`
	// RequestsPerS and TasksPerS are replies and answered parts per second.
	RequestsPerS float64 `json:"requests_per_s"`
	TasksPerS    float64 `json:"tasks_per_s"`
	// MBPerS is the record bytes (key, value and headers) written to Kafka
	// per second by every hop of the chain, in MB (10^6 bytes); zero when
	// not known (roles running elsewhere).
	MBPerS float64 `json:"mb_per_s"`
	Percentiles
	// Outcomes of the measured requests.
	Complete int64 `json:"complete"`
	Partial  int64 `json:"partial"`
	Failed   int64 `json:"failed"`
	NoReply  int64 `json:"no_reply"`
	// NoReplyError is the first reason a request got no reply.
	NoReplyError string `json:"no_reply_error,omitempty"`
	// Requests and Tasks were measured; WarmupRequests were not.
	Requests       int64 `json:"requests"`
	Tasks          int64 `json:"tasks"`
	WarmupRequests int64 `json:"warmup_requests"`
	// WindowS is the length of the measured window in seconds.
	WindowS float64 `json:"window_s"`
	// CPUSeconds is the user+system CPU time of this whole process in the
	// window (roles, clients, and the broker when it is embedded), and
	// CPUCores that divided by the window.
	CPUSeconds float64 `json:"cpu_s"`
	CPUCores   float64 `json:"cpu_cores"`
	// CPUPerRequestUS is CPU microseconds per reply.
	CPUPerRequestUS float64 `json:"cpu_us_per_request"`
	// MachineCores is the CPUs the whole machine kept busy on average in
	// the window (every process: a broker of its own, other tenants),
	// MachineIdlePct its idle share, and MachineCPUPerRequestUS its busy
	// CPU microseconds per reply. On an otherwise idle machine that is
	// what a request costs the pipeline and its broker together; when
	// the idle share is near zero, the CPUs bound the throughput. Zero
	// where the system does not tell (/proc/stat is Linux's).
	MachineCores           float64 `json:"machine_cores_busy,omitempty"`
	MachineIdlePct         float64 `json:"machine_idle_pct,omitempty"`
	MachineCPUPerRequestUS float64 `json:"machine_cpu_us_per_request,omitempty"`
	// MaxSendLagMS is the longest an open-loop request was sent after its
	// intended time.
	MaxSendLagMS float64 `json:"max_send_lag_ms"`
	// Settled is what the settle rounds before this phase saw (the first
	// phase of a run with Config.Settle); nil otherwise.
	Settled *Settled `json:"settled,omitempty"`
	// Records are what the chain wrote to Kafka in the whole phase, by kind.
	Records map[string]RecordStat `json:"records,omitempty"`
	// KafkaRequests are the requests the chain's clients wrote to the
	// brokers in the whole phase, by API (Produce, Fetch, EndTxn, ...):
	// the round trips behind a request.
	KafkaRequests map[string]RequestStat `json:"kafka_requests,omitempty"`
	Series        []Sample               `json:"series"`
	Distribution  []DistPoint            `json:"distribution"`
}

// RecordStat counts the records of one kind written to Kafka.
type RecordStat struct {
	Count    int64   `json:"count"`
	AvgBytes float64 `json:"avg_bytes"`
	// PerRequest is Count divided by the requests sent in the phase.
	PerRequest float64 `json:"per_request"`
}

// RequestStat counts the requests of one API written to the brokers.
type RequestStat struct {
	Count int64 `json:"count"`
	// PerRequest is Count divided by the requests sent in the phase.
	PerRequest float64 `json:"per_request"`
}

// usage is a reading of the process's resources.
type usage struct {
	cpu     time.Duration
	machine machineCPU
	bytes   int64
}

// phaseRun is one phase to run.
type phaseRun struct {
	name string
	load Load
	send func(ctx context.Context) Outcome
	// bytes returns the bytes written to Kafka so far; nil if unknown.
	bytes func() int64
	// progress gets a status line per second; nil for none.
	progress io.Writer
	// tty: rewrite the progress line in place.
	tty bool
	// tick is the sampling interval; default 1s.
	tick time.Duration
}

func (pr *phaseRun) read() usage {
	u := usage{cpu: cpuTime(), machine: readMachineCPU()}
	if pr.bytes != nil {
		u.bytes = pr.bytes()
	}
	return u
}

// run offers the load to the chain and returns what it measured. It
// returns once every request has its outcome, or ctx's error.
func (pr *phaseRun) run(ctx context.Context) (*Phase, error) {
	if pr.tick == 0 {
		pr.tick = time.Second
	}
	start := time.Now()
	from := start.Add(pr.load.Warmup)
	rec := newRecorder(start, from)
	var sched schedule
	toKnown := pr.load.Rate > 0 || pr.load.Requests == 0
	if pr.load.Rate > 0 {
		sched = newSchedule(start, pr.load)
		rec.setTo(sched.end)
	} else if pr.load.Requests == 0 {
		rec.setTo(from.Add(pr.load.Duration))
	}
	lastSent := make(chan time.Time, 1)

	// The monitor samples the recorder every tick, prints the progress
	// line, and reads the CPU and bytes counters at both ends of the
	// window; it returns when stop is closed.
	var (
		wg       sync.WaitGroup
		stop     = make(chan struct{})
		atFrom   usage
		atTo     usage
		haveFrom bool
		haveTo   bool
	)
	wg.Go(func() {
		ticker := time.NewTicker(pr.tick)
		defer ticker.Stop()
		fromTimer := time.NewTimer(time.Until(from))
		defer fromTimer.Stop()
		var toC <-chan time.Time = lastSent
		if toKnown {
			_, to := rec.window()
			t := time.NewTimer(time.Until(to))
			defer t.Stop()
			toC = t.C
		}
		for {
			select {
			case now := <-ticker.C:
				pr.printProgress(rec.tick(now, true), rec.progress())
			case <-fromTimer.C:
				atFrom, haveFrom = pr.read(), true
			case <-toC:
				atTo, haveTo = pr.read(), true
				toC = nil
			case <-stop:
				return
			}
		}
	})

	send := func(ctx context.Context, intended time.Time, measured bool) {
		rec.sendStarted()
		o := pr.send(ctx)
		rec.finish(intended, time.Now(), measured, o)
	}
	var gs genStats
	if pr.load.Rate > 0 {
		gs = runOpenLoop(ctx, sched, pr.load.MaxInFlight, send)
	} else {
		end := from.Add(pr.load.Duration)
		gs = runClosedLoop(ctx, pr.load.Concurrency, from, end, pr.load.Requests, func(t time.Time) {
			rec.setTo(t)
			lastSent <- t
		}, send)
	}
	close(stop)
	wg.Wait()
	// The last interval is kept in the series unless it is too short for
	// its rates to mean much.
	rec.mu.Lock()
	last := rec.lastTick
	rec.mu.Unlock()
	now := time.Now()
	pr.printProgress(rec.tick(now, now.Sub(last) >= pr.tick/2), rec.progress())
	if pr.progress != nil && pr.tty {
		fmt.Fprintln(pr.progress)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !haveFrom || !haveTo {
		// The phase ended before its window did (every request was
		// answered before the warmup ended, say): read the counters now.
		now := pr.read()
		if !haveFrom {
			atFrom = now
		}
		atTo = now
		if _, to := rec.window(); to.IsZero() {
			rec.setTo(time.Now())
		}
	}

	res := rec.result()
	p := &Phase{
		Name:           pr.name,
		RequestsPerS:   res.requestsPerS,
		TasksPerS:      res.tasksPerS,
		Percentiles:    res.latency,
		Complete:       res.outcomes[Complete],
		Partial:        res.outcomes[Partial],
		Failed:         res.outcomes[Failed],
		NoReply:        res.outcomes[NoReply],
		Requests:       res.measuredReqs,
		Tasks:          res.measuredTasks,
		WarmupRequests: res.warmupReqs,
		WindowS:        res.windowSecs,
		MaxSendLagMS:   float64(gs.maxLag.Microseconds()) / 1000,
		Series:         res.samples,
		Distribution:   res.dist,
	}
	if res.errSample != nil {
		p.NoReplyError = res.errSample.Error()
	}
	if res.windowSecs > 0 {
		p.CPUSeconds = (atTo.cpu - atFrom.cpu).Seconds()
		p.CPUCores = p.CPUSeconds / res.windowSecs
		p.MBPerS = float64(atTo.bytes-atFrom.bytes) / res.windowSecs / 1e6
		if res.requestsPerS > 0 {
			p.CPUPerRequestUS = p.CPUSeconds * 1e6 / (res.requestsPerS * res.windowSecs)
		}
		if cores, idle, ok := atFrom.machine.busyCores(atTo.machine); ok {
			p.MachineCores, p.MachineIdlePct = cores, idle
			if res.requestsPerS > 0 {
				p.MachineCPUPerRequestUS = cores * 1e6 / res.requestsPerS
			}
		}
	}
	return p, nil
}

func (pr *phaseRun) printProgress(s Sample, p progress) {
	if pr.progress == nil {
		return
	}
	line := fmt.Sprintf("%-9s %5.0fs %-7s sent %8d  replied %8d  in flight %6d  %8.0f req/s  p99 %8.1f ms (last 1s) %8.1f ms (measured)",
		pr.name, s.T, s.Stage, p.sent, p.done, p.inFlight, s.RequestsPerS, s.P99, p.runningP99)
	if pr.tty {
		fmt.Fprintf(pr.progress, "\r\033[K%s", line)
		return
	}
	fmt.Fprintln(pr.progress, line)
}
