package bench

import (
	"math"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1µs to 10 minutes, with 3
// significant digits: a recorded value is within 0.1% of the true one.
const (
	histLowest  = 1
	histHighest = int64(10 * time.Minute / time.Microsecond)
	histDigits  = 3
)

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, histDigits)
}

// record adds d to h, clamped to the histogram's range so that no value is
// dropped: a latency past 10 minutes counts as 10 minutes.
func record(h *hdrhistogram.Histogram, d time.Duration) {
	us := d.Microseconds()
	us = min(max(us, histLowest), histHighest)
	_ = h.RecordValue(us) // in range, so it cannot fail
}

// Percentiles are latencies in milliseconds.
type Percentiles struct {
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

func usToMS(us int64) float64 { return float64(us) / 1000 }

// percentiles reads the percentiles of h; all zero when h is empty.
func percentiles(h *hdrhistogram.Histogram) Percentiles {
	if h.TotalCount() == 0 {
		return Percentiles{}
	}
	return Percentiles{
		P50:  usToMS(h.ValueAtPercentile(50)),
		P90:  usToMS(h.ValueAtPercentile(90)),
		P99:  usToMS(h.ValueAtPercentile(99)),
		P999: usToMS(h.ValueAtPercentile(99.9)),
		Max:  usToMS(h.Max()),
		Mean: math.Round(h.Mean()) / 1000,
	}
}

// DistPoint is one point of a latency distribution: Percentile percent of
// the requests took at most LatencyMS.
type DistPoint struct {
	Percentile float64 `json:"percentile"`
	LatencyMS  float64 `json:"latency_ms"`
}

// distQuantiles are the percentiles a distribution is read at: dense in the
// tail, where the interesting part of a latency distribution is.
var distQuantiles = []float64{
	0, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 92.5, 95, 96, 97, 97.5, 98, 98.5, 99,
	99.25, 99.5, 99.75, 99.9, 99.95, 99.99, 99.995, 99.999, 100,
}

// distribution reads h at distQuantiles, up to the resolution that the
// number of samples supports (99.99 needs 10,000 samples to mean anything).
func distribution(h *hdrhistogram.Histogram) []DistPoint {
	n := h.TotalCount()
	if n == 0 {
		return nil
	}
	var out []DistPoint
	for _, q := range distQuantiles {
		if q > 0 && q < 100 && float64(n)*(100-q)/100 < 1-1e-9 {
			continue
		}
		v := h.ValueAtPercentile(q)
		if q == 0 {
			v = h.Min()
		}
		out = append(out, DistPoint{Percentile: q, LatencyMS: usToMS(v)})
	}
	return out
}
