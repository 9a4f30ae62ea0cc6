package metrics

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// valueOf reads a counter's or gauge's value.
func valueOf(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// TestSharedVectors: instances registering the same vector on one registry
// share it; a conflicting definition is an error, and nil registers nothing.
func TestSharedVectors(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := NewShared(reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewShared(reg)
	if err != nil {
		t.Fatal(err)
	}
	if a.Replies != b.Replies {
		t.Error("a second NewShared on one registry built its own vector")
	}
	a.Replies.WithLabelValues("r", "COMPLETE").Inc()
	b.Replies.WithLabelValues("r", "COMPLETE").Inc()
	if got := valueOf(t, a.Replies.WithLabelValues("r", "COMPLETE")); got != 2 {
		t.Errorf("shared counter = %v, want 2", got)
	}
	if _, err := NewCounterVec(reg, "replies_total", "other help", "route"); err == nil {
		t.Error("a conflicting definition was accepted")
	}
	if s, err := NewShared(nil); err != nil || s.Replies == nil {
		t.Errorf("nil registerer: %v", err)
	}
}

func TestDelta(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	x, y := Delta{G: g}, Delta{G: g}
	x.Set(3)
	y.Set(4)
	x.Set(1)
	if got := valueOf(t, g); got != 5 {
		t.Errorf("gauge = %v, want 1+4", got)
	}
}

func TestServer(t *testing.T) {
	reg := NewRegistry()
	var ready error = errors.New("waiting for the group")
	srv, err := NewServer(ServerConfig{Addr: "127.0.0.1:0", Gatherer: reg, Registerer: reg,
		Checks: []Check{{Name: "role", Ready: func() error { return ready }}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	go func() { done <- srv.Run(t.Context()) }()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + srv.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		path string
		code int
		body string
	}{
		{"/healthz", 200, "ok"},
		{"/readyz", 503, "role: waiting for the group"},
		{"/metrics", 200, "scattergather_ready{check=\"role\"} 0"},
		{"/metrics", 200, "go_goroutines"},
		{"/nope", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, body := get(tt.path)
			if code != tt.code || !strings.Contains(body, tt.body) {
				t.Errorf("GET %s = %d %q, want %d containing %q", tt.path, code, body, tt.code, tt.body)
			}
		})
	}
	ready = nil
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz after the check passes: %d", code)
	}
	if _, err := NewServer(ServerConfig{Addr: srv.Addr(), Gatherer: reg}); err == nil {
		t.Error("a second server on a taken address started")
	}
}

func TestServerConfig(t *testing.T) {
	if _, err := NewServer(ServerConfig{}); err == nil || !strings.Contains(err.Error(), "addr") || !strings.Contains(err.Error(), "gatherer") {
		t.Errorf("empty config: %v, want errors naming addr and gatherer", err)
	}
}

func TestKafkaHooksPerClient(t *testing.T) {
	if NewKafkaMetrics(nil).Hooks("x") != nil {
		t.Error("nil registry gave hooks")
	}
	k := NewKafkaMetrics(prometheus.NewRegistry())
	h := k.Hooks("processor")
	if a, b := h(), h(); len(a) != 1 || len(b) != 1 || a[0] == b[0] {
		t.Error("two clients got the same kprom hooks")
	}
}
