package gateway_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/gateway"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func writeTokens(t *testing.T, path string, lines ...string) {
	t.Helper()
	// Written aside and renamed, as a secret mount or a careful operator
	// does, so a reload never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// TestAuth: with a token file, every /v1/ endpoint needs one of its
// tokens; 401s carry a JSON error and WWW-Authenticate; paths outside /v1/
// are 404 either way; the file is reloaded (rotation without a restart);
// no token reaches the logs.
func TestAuth(t *testing.T) {
	const (
		old   = "old-token-0123456789abcdef"
		fresh = "fresh-token-9876543210fedcba"
		next  = "next.token_~+/AAAAAAAAAAAA=="
	)
	e := newEnv(t)
	e.startPipeline(t)
	file := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, file, "# rotated monthly", old, "", "  "+fresh+"  ")
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	s := e.startGateway(t, func(c *gateway.Config) {
		c.AuthTokenFile = file
		c.Metrics = reg
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})

	unauthorized := func(t *testing.T, method, path string, header map[string]string, challenge string) {
		t.Helper()
		res := do(t, method, s.url+path, strings.NewReader(`{}`), header)
		wantStatus(t, res, http.StatusUnauthorized)
		var eb gateway.ErrorBody
		res.json(t, &eb)
		if eb.Code != gateway.CodeUnauthorized || eb.Error == "" {
			t.Errorf("401 body %s", res.body)
		}
		if got := res.header.Get("WWW-Authenticate"); got != challenge {
			t.Errorf("WWW-Authenticate %q, want %q", got, challenge)
		}
		for _, tok := range []string{old, fresh} {
			if strings.Contains(string(res.body), tok) {
				t.Errorf("401 body %s holds a token", res.body)
			}
		}
	}
	const (
		plain   = `Bearer realm="scattergather"`
		invalid = `Bearer realm="scattergather", error="invalid_token"`
	)
	for _, tc := range []struct {
		name, method, path string
		header             map[string]string
		challenge          string
	}{
		{"post without a token", "POST", "/v1/routes/echo/requests", nil, plain},
		{"routes without a token", "GET", "/v1/routes", nil, plain},
		{"route without a token", "GET", "/v1/routes/echo", nil, plain},
		{"request without a token", "GET", "/v1/requests/x", nil, plain},
		{"events without a token", "GET", "/v1/requests/x/events", nil, plain},
		{"unknown route without a token", "POST", "/v1/routes/nope/requests", nil, plain},
		{"unknown API path without a token", "GET", "/v1/secret", nil, plain},
		{"wrong method without a token", "DELETE", "/v1/routes", nil, plain},
		{"basic auth", "GET", "/v1/routes", map[string]string{"Authorization": "Basic " + old}, plain},
		{"bearer without a token", "GET", "/v1/routes", map[string]string{"Authorization": "Bearer "}, plain},
		{"token without a scheme", "GET", "/v1/routes", map[string]string{"Authorization": old}, plain},
		{"wrong token", "GET", "/v1/routes", bearer("not-a-token-of-this-gateway"), invalid},
		{"a token's prefix", "GET", "/v1/routes", bearer(old[:len(old)-1]), invalid},
		{"a token and more", "GET", "/v1/routes", bearer(old + "x"), invalid},
		{"the comment line", "GET", "/v1/routes", bearer("# rotated monthly"), invalid},
	} {
		t.Run(tc.name, func(t *testing.T) { unauthorized(t, tc.method, tc.path, tc.header, tc.challenge) })
	}

	t.Run("either token serves the API", func(t *testing.T) {
		for _, tok := range []string{old, fresh} {
			wantStatus(t, do(t, "GET", s.url+"/v1/routes", nil, bearer(tok)), http.StatusOK)
			res := do(t, "POST", s.url+"/v1/routes/echo/requests?wait=20s", strings.NewReader(`{"q":1}`),
				map[string]string{"Authorization": "bearer " + tok, "Content-Type": "application/json"}) // the scheme is case-insensitive
			wantStatus(t, res, http.StatusOK)
			var v client.ReplyView
			res.json(t, &v)
			if v.Status != "COMPLETE" {
				t.Fatalf("reply %s", res.body)
			}
			loc := "/v1/requests/" + v.CorrelationID
			wantStatus(t, do(t, "GET", s.url+loc, nil, bearer(tok)), http.StatusOK)
			unauthorized(t, "GET", loc, nil, plain)
		}
	})
	t.Run("bad input is judged after the token", func(t *testing.T) {
		wantStatus(t, do(t, "POST", s.url+"/v1/routes/nope/requests", nil, bearer(old)), http.StatusNotFound)
		wantStatus(t, do(t, "POST", s.url+"/v1/routes/echo/requests?timeout=x", nil, bearer(old)), http.StatusBadRequest)
	})
	t.Run("outside /v1/ is 404 either way", func(t *testing.T) {
		wantStatus(t, do(t, "GET", s.url+"/", nil, nil), http.StatusNotFound)
		wantStatus(t, do(t, "GET", s.url+"/healthz", nil, nil), http.StatusNotFound)
	})
	t.Run("rotation", func(t *testing.T) {
		writeTokens(t, file, fresh, next)
		deadline := time.Now().Add(10 * time.Second)
		for {
			oldStatus := do(t, "GET", s.url+"/v1/routes", nil, bearer(old)).status
			nextStatus := do(t, "GET", s.url+"/v1/routes", nil, bearer(next)).status
			if oldStatus == http.StatusUnauthorized && nextStatus == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("10s after the rotation: old token %d, next token %d; want 401, 200", oldStatus, nextStatus)
			}
			time.Sleep(50 * time.Millisecond)
		}
		wantStatus(t, do(t, "GET", s.url+"/v1/routes", nil, bearer(fresh)), http.StatusOK)
		// A file broken while the gateway runs keeps the tokens it had.
		writeTokens(t, file, "short")
		deadline = time.Now().Add(10 * time.Second)
		for !strings.Contains(logs.String(), "auth token file not reloaded") {
			if time.Now().After(deadline) {
				t.Fatal("no warning 10s after the token file broke")
			}
			wantStatus(t, do(t, "GET", s.url+"/v1/routes", nil, bearer(next)), http.StatusOK)
			time.Sleep(50 * time.Millisecond)
		}
		wantStatus(t, do(t, "GET", s.url+"/v1/routes", nil, bearer(next)), http.StatusOK)
	})

	if got := counter(t, reg, "scattergather_gateway_http_requests_total", "endpoint", "GET /v1/routes", "code", "401"); got < 5 {
		t.Errorf("401s on GET /v1/routes counted %v", got)
	}
	if got := counter(t, reg, "scattergather_gateway_auth_failures_total", "reason", "invalid"); got < 4 {
		t.Errorf("auth_failures_total{reason=invalid} = %v", got)
	}
	if got := counter(t, reg, "scattergather_gateway_auth_failures_total", "reason", "missing"); got < 10 {
		t.Errorf("auth_failures_total{reason=missing} = %v", got)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "auth=true") {
		t.Errorf("the start-up log does not say auth is on:\n%s", out)
	}
	for _, tok := range []string{old, fresh, next, "short"} {
		if strings.Contains(out, tok) {
			t.Errorf("a token is in the logs:\n%s", out)
		}
	}
}

// scalar returns the value of the unlabeled gauge or counter name on reg,
// -1 if absent.
func scalar(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// TestAuthConfig: a token file that cannot serve is an error at New that
// names the file and line, never the token.
func TestAuthConfig(t *testing.T) {
	dir := t.TempDir()
	table, err := routes.Parse([]byte(testRoutes))
	if err != nil {
		t.Fatal(err)
	}
	srs, err := table.ScattererRoutes()
	if err != nil {
		t.Fatal(err)
	}
	const secret = "s3cret-with-a space-inside-it"
	for _, tc := range []struct {
		name, content, says string
	}{
		{"missing", "", "no such file"},
		{"empty", "\n", "no token in it"},
		{"only comments", "# none yet\n\n", "no token in it"},
		{"short", "0123456789abcdefXYZ\nabc\n", "line 2: a token of 3 characters, want at least 16"},
		{"bad characters", "ok-token-0123456789\n" + secret + "\n", "line 2: a token may hold only"},
		{"equals inside", "abc=def0123456789012\n", "line 1: a token may hold only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if tc.name != "missing" {
				if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := gateway.New(gateway.Config{Client: kafkaconfig.Client{Brokers: []string{"127.0.0.1:1"}}, Routes: srs, AuthTokenFile: path})
			if err == nil || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), path) {
				t.Fatalf("New: %v; want an error naming %s and saying %q", err, path, tc.says)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "0123456789abcdef") {
				t.Errorf("the error shows a token: %v", err)
			}
		})
	}
}

// TestMaxInFlight: end to end on the quotes route, whose "stuck" recipient
// never answers, so each request holds its slot until the aggregator
// replies at its deadline. At the limit a POST is a 429 naming it, with
// Retry-After; the reply frees the slot; the metrics count both.
func TestMaxInFlight(t *testing.T) {
	e := newEnv(t)
	e.startPipeline(t)
	reg := prometheus.NewRegistry()
	s := e.startGateway(t, func(c *gateway.Config) {
		c.MaxInFlight = 2
		c.Metrics = reg
		c.RetryAfter = 2 * time.Second
	})
	var locs []string
	for range 2 {
		res := post(t, s.url+"/v1/routes/quotes/requests?timeout=2s", `{}`)
		wantStatus(t, res, http.StatusAccepted)
		locs = append(locs, res.header.Get("Location"))
	}
	if got := scalar(t, reg, "scattergather_gateway_in_flight_requests"); got != 2 {
		t.Errorf("in_flight_requests = %v, want 2", got)
	}
	res := post(t, s.url+"/v1/routes/echo/requests?wait=5s", `{}`)
	wantStatus(t, res, http.StatusTooManyRequests)
	var eb gateway.ErrorBody
	res.json(t, &eb)
	if eb.Code != gateway.CodeTooManyInFlight || !strings.Contains(eb.Error, "2 requests submitted through this gateway await their replies, the limit") {
		t.Errorf("429 body %s", res.body)
	}
	if ra := res.header.Get("Retry-After"); ra != "2" {
		t.Errorf("Retry-After %q, want 2", ra)
	}
	// Lookups are not submissions: they are served at the limit.
	wantStatus(t, do(t, "GET", s.url+locs[0], nil, nil), http.StatusAccepted)
	wantStatus(t, do(t, "GET", s.url+"/v1/routes", nil, nil), http.StatusOK)

	// The first reply (PARTIAL, at its 2s deadline) frees a slot: once a
	// caller has it, it can submit again.
	res = do(t, "GET", s.url+locs[0]+"?wait=20s", nil, nil)
	wantStatus(t, res, http.StatusOK)
	res = post(t, s.url+"/v1/routes/echo/requests?wait=20s", `{"after":"reply"}`)
	wantStatus(t, res, http.StatusOK)
	var v client.ReplyView
	res.json(t, &v)
	if v.Status != "COMPLETE" {
		t.Errorf("reply %s", res.body)
	}
	wantStatus(t, do(t, "GET", s.url+locs[1]+"?wait=20s", nil, nil), http.StatusOK)
	if got := scalar(t, reg, "scattergather_gateway_in_flight_requests"); got != 0 {
		t.Errorf("in_flight_requests = %v after every reply, want 0", got)
	}
	if got := scalar(t, reg, "scattergather_gateway_in_flight_rejected_total"); got != 1 {
		t.Errorf("in_flight_rejected_total = %v, want 1", got)
	}
	if got := scalar(t, reg, "scattergather_gateway_in_flight_expired_total"); got != 0 {
		t.Errorf("in_flight_expired_total = %v, want 0: every reply came", got)
	}
	if got := counter(t, reg, "scattergather_gateway_http_requests_total", "endpoint", "POST /v1/routes/{route}/requests", "code", "429"); got != 1 {
		t.Errorf("429s counted %v, want 1", got)
	}
}

// TestMaxInFlightExpiry: with no aggregator, no reply comes; a request
// stops counting ReplyGrace after its deadline.
func TestMaxInFlightExpiry(t *testing.T) {
	e := newEnv(t) // topics, no pipeline
	reg := prometheus.NewRegistry()
	s := e.startGateway(t, func(c *gateway.Config) {
		c.MaxInFlight = 1
		c.ReplyGrace = 200 * time.Millisecond
		c.Metrics = reg
	})
	start := time.Now()
	wantStatus(t, post(t, s.url+"/v1/routes/echo/requests?timeout=300ms", `{}`), http.StatusAccepted)
	wantStatus(t, post(t, s.url+"/v1/routes/echo/requests?timeout=300ms", `{}`), http.StatusTooManyRequests)
	deadline := time.Now().Add(20 * time.Second)
	for {
		res := post(t, s.url+"/v1/routes/echo/requests?timeout=300ms", `{}`)
		if res.status == http.StatusAccepted {
			break
		}
		wantStatus(t, res, http.StatusTooManyRequests)
		if time.Now().After(deadline) {
			t.Fatal("the slot was not freed 20s after the deadline")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Errorf("slot freed after %s, before the deadline plus the grace (500ms)", took)
	}
	if got := scalar(t, reg, "scattergather_gateway_in_flight_expired_total"); got != 1 {
		t.Errorf("in_flight_expired_total = %v, want 1", got)
	}
	if got := scalar(t, reg, "scattergather_gateway_in_flight_rejected_total"); got < 1 {
		t.Errorf("in_flight_rejected_total = %v", got)
	}
}

func TestMaxInFlightConfig(t *testing.T) {
	table, _ := routes.Parse([]byte(testRoutes))
	srs, _ := table.ScattererRoutes()
	_, err := gateway.New(gateway.Config{Client: kafkaconfig.Client{Brokers: []string{"127.0.0.1:1"}}, Routes: srs, MaxInFlight: -1})
	if err == nil || !strings.Contains(err.Error(), "max in flight: -1 is negative") {
		t.Errorf("New: %v", err)
	}
}
