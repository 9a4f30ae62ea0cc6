package bench

import (
	"fmt"
	"math"
	"testing"
	"time"
)

func TestPercentiles(t *testing.T) {
	within := func(t *testing.T, name string, got, want float64) {
		t.Helper()
		// Three significant digits: within 0.1%, plus rounding to 1µs.
		if math.Abs(got-want) > want*0.001+0.001 {
			t.Errorf("%s = %v ms, want %v ms", name, got, want)
		}
	}
	tests := []struct {
		name string
		fill func(record func(time.Duration))
		want Percentiles
	}{
		{
			name: "empty",
			fill: func(func(time.Duration)) {},
			want: Percentiles{},
		},
		{
			name: "1 to 1000 ms",
			fill: func(rec func(time.Duration)) {
				for i := 1; i <= 1000; i++ {
					rec(time.Duration(i) * time.Millisecond)
				}
			},
			want: Percentiles{P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000, Mean: 500.5},
		},
		{
			name: "one slow request among fast ones",
			fill: func(rec func(time.Duration)) {
				for range 9999 {
					rec(2 * time.Millisecond)
				}
				rec(3 * time.Second)
			},
			want: Percentiles{P50: 2, P90: 2, P99: 2, P999: 2, Max: 3000, Mean: 2.2998},
		},
		{
			name: "out of range values are clamped, not dropped",
			fill: func(rec func(time.Duration)) {
				rec(-time.Second)
				rec(time.Hour)
			},
			want: Percentiles{P50: 0.001, P90: 600000, P99: 600000, P999: 600000, Max: 600000, Mean: 300000},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHist()
			tt.fill(func(d time.Duration) { record(h, d) })
			got := percentiles(h)
			within(t, "p50", got.P50, tt.want.P50)
			within(t, "p90", got.P90, tt.want.P90)
			within(t, "p99", got.P99, tt.want.P99)
			within(t, "p99.9", got.P999, tt.want.P999)
			within(t, "max", got.Max, tt.want.Max)
			within(t, "mean", got.Mean, tt.want.Mean)
		})
	}
}

func TestDistribution(t *testing.T) {
	tests := []struct {
		samples  int
		wantLast float64 // the highest percentile below 100 that is reported
	}{
		{samples: 0},
		{samples: 10, wantLast: 90},
		{samples: 100, wantLast: 99},
		{samples: 1000, wantLast: 99.9},
		{samples: 100000, wantLast: 99.999},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d samples", tt.samples), func(t *testing.T) {
			h := newHist()
			for i := 1; i <= tt.samples; i++ {
				record(h, time.Duration(i)*time.Microsecond)
			}
			d := distribution(h)
			if tt.samples == 0 {
				if d != nil {
					t.Fatalf("distribution of nothing = %v, want nil", d)
				}
				return
			}
			if d[0].Percentile != 0 || d[len(d)-1].Percentile != 100 {
				t.Fatalf("distribution runs from %v to %v, want 0 to 100", d[0].Percentile, d[len(d)-1].Percentile)
			}
			if last := d[len(d)-2].Percentile; last != tt.wantLast {
				t.Errorf("highest percentile below 100 = %v, want %v (what %d samples support)", last, tt.wantLast, tt.samples)
			}
			for i := 1; i < len(d); i++ {
				if d[i].LatencyMS < d[i-1].LatencyMS || d[i].Percentile <= d[i-1].Percentile {
					t.Fatalf("distribution not increasing at %d: %v then %v", i, d[i-1], d[i])
				}
			}
			if max := d[len(d)-1].LatencyMS; math.Abs(max-float64(tt.samples)/1000) > float64(tt.samples)/1e6+0.001 {
				t.Errorf("max = %v ms, want %v ms", max, float64(tt.samples)/1000)
			}
		})
	}
}
