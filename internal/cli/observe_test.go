package cli

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLogFlagsOnEveryRole: every command that logs takes --log-level and
// --log-format and rejects bad values before it connects to anything.
func TestLogFlagsOnEveryRole(t *testing.T) {
	base := map[string][]string{
		"scatterer": nil, "processor": {"--route", "echo"}, "aggregator": nil, "topics": nil, "dev": nil, "demo": nil,
	}
	for name, extra := range base {
		t.Run(name, func(t *testing.T) {
			for _, bad := range [][]string{{"--log-format", "xml"}, {"--log-level", "loud"}} {
				var out, errOut bytes.Buffer
				args := append(append([]string{name, "--brokers", "127.0.0.1:1"}, extra...), bad...)
				if name == "dev" || name == "demo" {
					args = append([]string{name}, bad...)
				}
				code := Main(t.Context(), args, Commands(), &out, &errOut)
				if code == 0 || !strings.Contains(errOut.String(), "log") {
					t.Errorf("%v: exit %d, stderr %q; want an error about the log flag", args, code, errOut.String())
				}
			}
		})
	}
}

// TestMetricsAddrTaken: a role whose metrics address is taken says so and
// names the flag.
func TestMetricsAddrTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var out, errOut bytes.Buffer
	code := Main(t.Context(), []string{"aggregator", "--brokers", "127.0.0.1:1", "--create-topics=false", "--metrics-addr", ln.Addr().String()},
		Commands(), &out, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), "--metrics-addr") {
		t.Errorf("exit %d, stderr %q; want an error naming --metrics-addr", code, errOut.String())
	}
}

func TestParseOnly(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		ok   bool
	}{
		{[]string{"processor", "--route", "search", "--handler", "search"}, map[string]string{"SG_METRICS_ADDR": "0.0.0.0:9090"}, true},
		{[]string{"scatterer", "--no-such-flag"}, nil, false},
		{[]string{"aggregator"}, map[string]string{"SG_TICK": "often"}, false},
		{[]string{"nope"}, nil, false},
		{[]string{"aggregator", "extra"}, nil, false},
	}
	for _, tt := range tests {
		_, fs, err := ParseOnly(tt.args, tt.env)
		if (err == nil) != tt.ok {
			t.Errorf("ParseOnly(%v, %v) = %v, want ok=%v", tt.args, tt.env, err, tt.ok)
		}
		if tt.ok && tt.env["SG_METRICS_ADDR"] != "" && fs.Lookup("metrics-addr").Value.String() != tt.env["SG_METRICS_ADDR"] {
			t.Errorf("env not applied: %s", fs.Lookup("metrics-addr").Value)
		}
	}
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// lockedBuffer is a bytes.Buffer a running command writes while the test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runCommand runs Main with args as a user would, until the test ends:
// then it cancels the context (Ctrl-C) and checks the command stopped with
// exit code 0 within 30s. It returns the command's standard error.
func runCommand(t *testing.T, args []string) (stderr *lockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	var out, errOut lockedBuffer
	go func() { done <- Main(ctx, args, Commands(), &out, &errOut) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("%s exited %d: %s", args[0], code, errOut.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop within 30s of its context", args[0])
		}
	})
	return &errOut
}

// waitReadyz polls http://addr/readyz until it answers 200, for 60s at
// most.
func waitReadyz(t *testing.T, addr string, stderr *lockedBuffer) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := 0, ""
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			body = err.Error()
		} else {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			code, body = resp.StatusCode, string(b)
		}
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz not 200 within 60s: %d %s; stderr: %s", addr, code, body, stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDevServesMetrics runs the dev command as a user would and checks its
// one /metrics endpoint: not ready, then ready once every role joined, with
// the metrics of every role; Ctrl-C (the context) stops it cleanly.
func TestDevServesMetrics(t *testing.T) {
	metricsAddr := freeAddr(t)
	args := []string{"dev", "--broker-addr", "127.0.0.1:0", "--data-dir", "", "--metrics-addr", metricsAddr,
		"--lag-interval", "100ms", "--log-level", "warn", "--kafka-log-level", "none"}
	if _, fs, err := ParseOnly([]string{"dev"}, nil); err == nil && fs.Lookup("gateway-addr") != nil {
		args = append(args, "--gateway-addr", "")
	}
	stderr := runCommand(t, args)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + metricsAddr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitReadyz(t, metricsAddr, stderr)
	deadline := time.Now().Add(60 * time.Second)
	var body string
	for {
		_, body = get("/metrics")
		if strings.Contains(body, `scattergather_consumer_lag{group="sg.aggregator"`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{
		`scattergather_requests_scattered_total{route="search"} 0`,
		`scattergather_tasks_processed_total{recipient="initech",route="quotes",status="OK"} 0`,
		`scattergather_open_requests 0`,
		`scattergather_ready{check="scatterer"} 1`,
		`scattergather_ready{check="aggregator 0"} 1`,
		`scattergather_consumer_lag{group="sg.aggregator"`,
		`scattergather_kafka_connects_total{client="1",node_id="seed_0",role="aggregator"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("dev /metrics lacks %s", want)
		}
	}
}
