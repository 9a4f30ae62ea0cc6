package bench

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Status is how one request of a bench ended.
type Status int

// The statuses: the reply's status, or NoReply.
const (
	Complete Status = iota
	Partial
	Failed
	// NoReply: the request could not be sent, or no reply came within the
	// request's timeout plus the client's grace period.
	NoReply
	numStatus
)

func (s Status) String() string {
	switch s {
	case Complete:
		return "COMPLETE"
	case Partial:
		return "PARTIAL"
	case Failed:
		return "FAILED"
	case NoReply:
		return "NO REPLY"
	}
	return "UNKNOWN"
}

// Outcome is what one request came back with.
type Outcome struct {
	Status Status
	// Tasks is the number of parts that were answered (OK, ERROR or EXPIRED).
	Tasks int
	// Err says why there was no reply.
	Err error
}

// Sample is one interval of a phase's time series, by completion time.
type Sample struct {
	// T is the end of the interval in seconds since the phase started.
	T float64 `json:"t_s"`
	// Stage is warmup, measure or drain: where the interval ended.
	Stage        string  `json:"stage"`
	Sent         int64   `json:"sent"`
	RequestsPerS float64 `json:"requests_per_s"`
	TasksPerS    float64 `json:"tasks_per_s"`
	InFlight     int64   `json:"in_flight"`
	// Latencies of the replies that arrived in the interval.
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// recorder gathers what the requests of one phase came back with. Latency
// is measured from each request's intended send time (see load.go), so a
// request that had to wait to be sent counts its wait. Safe for concurrent
// use.
type recorder struct {
	start time.Time // the phase started
	from  time.Time // warmup ended: requests intended from now on are measured

	mu sync.Mutex
	// to ends the throughput window [from, to): replies completed in it
	// count towards the throughput. Zero until known.
	to            time.Time
	measured      *hdrhistogram.Histogram // latencies of measured requests
	interval      *hdrhistogram.Histogram // latencies of replies since the last tick
	intervalDone  int64
	intervalTasks int64
	lastTick      time.Time
	sent, done    int64
	winDone       int64 // replies completed within [from, to)
	winTasks      int64
	outcomes      [numStatus]int64 // of measured requests
	measuredReqs  int64
	measuredTasks int64
	warmupReqs    int64
	errSample     error // the first NoReply error, to show the user
	samples       []Sample
}

func newRecorder(start, from time.Time) *recorder {
	return &recorder{start: start, from: from, lastTick: start, measured: newHist(), interval: newHist()}
}

// setTo ends the throughput window at to.
func (r *recorder) setTo(to time.Time) {
	r.mu.Lock()
	r.to = to
	r.mu.Unlock()
}

func (r *recorder) window() (from, to time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.from, r.to
}

// sent counts a request handed to the target.
func (r *recorder) sendStarted() {
	r.mu.Lock()
	r.sent++
	r.mu.Unlock()
}

// finish records a request intended at intended that ended at now.
func (r *recorder) finish(intended, now time.Time, measured bool, o Outcome) {
	lat := now.Sub(intended)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done++
	if measured {
		r.measuredReqs++
		r.outcomes[o.Status]++
	} else {
		r.warmupReqs++
	}
	if o.Status == NoReply {
		if r.errSample == nil {
			r.errSample = o.Err
		}
		return
	}
	record(r.interval, lat)
	r.intervalDone++
	r.intervalTasks += int64(o.Tasks)
	if measured {
		record(r.measured, lat)
		r.measuredTasks += int64(o.Tasks)
	}
	if !now.Before(r.from) && (r.to.IsZero() || now.Before(r.to)) {
		r.winDone++
		r.winTasks += int64(o.Tasks)
	}
}

// tick closes the interval that ends at now and returns its sample. The
// sample joins the series when keep is set.
func (r *recorder) tick(now time.Time, keep bool) Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	secs := now.Sub(r.lastTick).Seconds()
	s := Sample{T: now.Sub(r.start).Seconds(), Sent: r.sent, InFlight: r.sent - r.done}
	// The interval's stage is where it started.
	switch began := r.lastTick; {
	case began.Before(r.from):
		s.Stage = "warmup"
	case r.to.IsZero() || began.Before(r.to):
		s.Stage = "measure"
	default:
		s.Stage = "drain"
	}
	if secs > 0 {
		s.RequestsPerS = float64(r.intervalDone) / secs
		s.TasksPerS = float64(r.intervalTasks) / secs
	}
	p := percentiles(r.interval)
	s.P50, s.P90, s.P99, s.Max = p.P50, p.P90, p.P99, p.Max
	r.interval.Reset()
	r.intervalDone, r.intervalTasks = 0, 0
	r.lastTick = now
	if keep {
		r.samples = append(r.samples, s)
	}
	return s
}

// progress is what the live progress line shows.
type progress struct {
	sent, done, inFlight int64
	runningP99           float64 // over the measured requests so far, ms
}

func (r *recorder) progress() progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := progress{sent: r.sent, done: r.done, inFlight: r.sent - r.done}
	if r.measured.TotalCount() > 0 {
		p.runningP99 = usToMS(r.measured.ValueAtPercentile(99))
	}
	return p
}

// result is the recorder's share of a Phase.
type result struct {
	requestsPerS, tasksPerS float64
	windowSecs              float64
	latency                 Percentiles
	dist                    []DistPoint
	outcomes                [numStatus]int64
	measuredReqs            int64
	measuredTasks           int64
	warmupReqs              int64
	errSample               error
	samples                 []Sample
}

func (r *recorder) result() result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := result{
		latency:       percentiles(r.measured),
		dist:          distribution(r.measured),
		outcomes:      r.outcomes,
		measuredReqs:  r.measuredReqs,
		measuredTasks: r.measuredTasks,
		warmupReqs:    r.warmupReqs,
		errSample:     r.errSample,
		samples:       append([]Sample(nil), r.samples...),
	}
	if !r.to.IsZero() {
		res.windowSecs = r.to.Sub(r.from).Seconds()
	}
	if res.windowSecs > 0 {
		res.requestsPerS = float64(r.winDone) / res.windowSecs
		res.tasksPerS = float64(r.winTasks) / res.windowSecs
	}
	return res
}
