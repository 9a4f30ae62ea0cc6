package metrics

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace starts the name of every scattergather metric.
const Namespace = "scattergather"

// UnknownRoute is the route label of a request whose route is not
// configured: label values come only from the route table.
const UnknownRoute = "_unknown"

// Histogram buckets, in seconds.
var (
	// RequestBuckets span a request's life: 1ms to a minute.
	RequestBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	// RestoreBuckets span a partition's state restore: 1ms to 5 minutes.
	RestoreBuckets = []float64{.001, .01, .1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
)

// NewRegistry returns a registry with the Go runtime, process and build
// info collectors: the registry of one process.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	return reg
}

// register registers c on reg and returns the collector to use: c, or the
// equal collector registered before (another instance of a role in the same
// process), so that instances share one vector. A nil reg registers nothing
// and returns c, which then counts without being exported.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	var zero C
	return zero, fmt.Errorf("register metric: %w", err)
}

// NewCounterVec returns the counter vector named Namespace_name on reg (see
// register: instances in one process share it).
func NewCounterVec(reg prometheus.Registerer, name, help string, labels ...string) (*prometheus.CounterVec, error) {
	return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels))
}

// NewCounter returns the counter named Namespace_name on reg.
func NewCounter(reg prometheus.Registerer, name, help string) (prometheus.Counter, error) {
	return register(reg, prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}))
}

// NewGauge returns the gauge named Namespace_name on reg. Instances sharing
// it must move it with Add, not Set (see Delta).
func NewGauge(reg prometheus.Registerer, name, help string) (prometheus.Gauge, error) {
	return register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}))
}

// NewGaugeVec returns the gauge vector named Namespace_name on reg.
func NewGaugeVec(reg prometheus.Registerer, name, help string, labels ...string) (*prometheus.GaugeVec, error) {
	return register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, labels))
}

// NewHistogramVec returns the histogram vector named Namespace_name on reg.
func NewHistogramVec(reg prometheus.Registerer, name, help string, buckets []float64, labels ...string) (*prometheus.HistogramVec, error) {
	return register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets}, labels))
}

// NewHistogram returns the histogram named Namespace_name on reg.
func NewHistogram(reg prometheus.Registerer, name, help string, buckets []float64) (prometheus.Histogram, error) {
	return register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets}))
}

// Delta moves a gauge shared by several instances by each instance's
// change, so that it holds their sum. Not safe for concurrent use: each
// instance owns its Delta and sets it under its own lock.
type Delta struct {
	G    prometheus.Gauge
	last float64
}

// Set makes this instance's share of the gauge v.
func (d *Delta) Set(v float64) {
	if d.G == nil || v == d.last {
		return
	}
	d.G.Add(v - d.last)
	d.last = v
}

// Shared is the set of vectors several roles write: the scatterer and the
// aggregator both reply, every role dead-letters and aborts batches.
type Shared struct {
	// Replies counts committed replies by route and outcome (COMPLETE,
	// PARTIAL, FAILED).
	Replies *prometheus.CounterVec
	// RequestDuration observes, per reply, the time from the request's
	// submitted-at to the commit of its reply.
	RequestDuration *prometheus.HistogramVec
	// DeadLetters counts committed dead letters by role and reason.
	DeadLetters *prometheus.CounterVec
	// BatchesAborted counts batches that were not committed, by role.
	BatchesAborted *prometheus.CounterVec
}

// NewShared registers (or finds) the shared vectors on reg; nil reg gives
// vectors that count without being exported.
func NewShared(reg prometheus.Registerer) (*Shared, error) {
	var (
		s    Shared
		errs [4]error
	)
	s.Replies, errs[0] = NewCounterVec(reg, "replies_total",
		"Replies written, by route and outcome (COMPLETE, PARTIAL, FAILED); FAILED includes the scatterer's answers to rejected requests.",
		"route", "outcome")
	s.RequestDuration, errs[1] = NewHistogramVec(reg, "request_duration_seconds",
		"Time from a request's submitted-at to the commit of its reply, by route and outcome.",
		RequestBuckets, "route", "outcome")
	s.DeadLetters, errs[2] = NewCounterVec(reg, "dead_letters_total",
		"Records written to the dead-letter topic, by the role that rejected them and the reason.",
		"role", "reason")
	s.BatchesAborted, errs[3] = NewCounterVec(reg, "batches_aborted_total",
		"Consumed batches that were not committed (rebalance, shutdown, produce failure); their records are consumed again.",
		"role")
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	return &s, nil
}
