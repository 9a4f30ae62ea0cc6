package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scattergather/scattergather/internal/metrics"
)

// gatewayMetrics are the gateway's metrics (listed in the package doc).
// With a nil registerer they count without being exported.
type gatewayMetrics struct {
	requests  *prometheus.CounterVec
	durations *prometheus.HistogramVec
	cached    metrics.Delta // guarded by the tail goroutine, its only writer
	streams   prometheus.Gauge
	evictions prometheus.Counter
	lastEvict uint64 // tail goroutine only

	inFlightRejected prometheus.Counter
	authFailures     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*gatewayMetrics, error) {
	m := &gatewayMetrics{}
	var err error
	if m.requests, err = metrics.NewCounterVec(reg, "gateway_http_requests_total",
		"HTTP requests answered by the gateway, by endpoint pattern and status code.", "endpoint", "code"); err != nil {
		return nil, err
	}
	if m.durations, err = metrics.NewHistogramVec(reg, "gateway_http_request_duration_seconds",
		"Time to answer an HTTP request (waits and event streams included), by endpoint pattern.", metrics.RequestBuckets, "endpoint"); err != nil {
		return nil, err
	}
	cached, err := metrics.NewGauge(reg, "gateway_cached_requests", "Requests and replies the gateway keeps in memory.")
	if err != nil {
		return nil, err
	}
	m.cached.G = cached
	if m.streams, err = metrics.NewGauge(reg, "gateway_event_streams", "Open /events streams."); err != nil {
		return nil, err
	}
	if m.evictions, err = metrics.NewCounter(reg, "gateway_cache_evictions_total",
		"Cached requests dropped for room (MaxCachedRequests, MaxCacheBytes) before their retention ended."); err != nil {
		return nil, err
	}
	if m.inFlightRejected, err = metrics.NewCounter(reg, "gateway_in_flight_rejected_total",
		"POSTs answered 429 because MaxInFlight requests were in flight."); err != nil {
		return nil, err
	}
	if m.authFailures, err = metrics.NewCounterVec(reg, "gateway_auth_failures_total",
		"/v1/ requests answered 401, by reason: missing (no bearer token) or invalid (not one of the tokens).", "reason"); err != nil {
		return nil, err
	}
	return m, nil
}

// registerInFlight exports the in-flight count and the requests that left
// it at their expiry without a reply, read from f when scraped.
func registerInFlight(reg prometheus.Registerer, f *inflight) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metrics.Namespace, Name: "gateway_in_flight_requests",
			Help: "Requests this gateway submitted and has no reply for yet (limit: MaxInFlight)."},
			func() float64 { n, _ := f.count(time.Now()); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: metrics.Namespace, Name: "gateway_in_flight_expired_total",
			Help: "In-flight requests that stopped counting at their deadline plus the reply grace, no reply read by then."},
			func() float64 { _, e := f.count(time.Now()); return float64(e) }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// observeStore publishes the store's size; the tail calls it.
func (m *gatewayMetrics) observeStore(s *store) {
	n, _, evicted := s.stats()
	m.cached.Set(float64(n))
	if evicted > m.lastEvict {
		m.evictions.Add(float64(evicted - m.lastEvict))
		m.lastEvict = evicted
	}
}

// statusWriter records the status code of an answer. It passes Flush on,
// which event streams need.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// instrument serves r with mux and counts it under the pattern that
// matched (mux sets r.Pattern), a bounded label set; unmatched paths count
// as "other".
func (m *gatewayMetrics) instrument(w http.ResponseWriter, r *http.Request, mux *http.ServeMux) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	mux.ServeHTTP(sw, r)
	pattern := r.Pattern
	if pattern == "" || pattern == "/" {
		pattern = "other"
	}
	if sw.code == 0 {
		sw.code = http.StatusOK
	}
	m.requests.WithLabelValues(pattern, strconv.Itoa(sw.code)).Inc()
	m.durations.WithLabelValues(pattern).Observe(time.Since(start).Seconds())
}
