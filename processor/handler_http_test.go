package processor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

// httpServer starts an httptest server with h, closed when the test ends.
func httpServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// closedURL returns the URL of a loopback port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/x"
}

// hang answers after d, or when the caller gives up.
func hang(d time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// The server notices a caller gone only once the body is read.
		io.Copy(io.Discard, r.Body)
		select {
		case <-time.After(d):
			io.WriteString(w, `{"late":true}`)
		case <-r.Context().Done():
		}
	}
}

// failing answers status with body for the first n calls, then 200 with ok.
func failing(n int, status int, body, ok string) http.HandlerFunc {
	var calls atomic.Int32
	return func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= int32(n) {
			w.WriteHeader(status)
			io.WriteString(w, body)
			return
		}
		io.WriteString(w, ok)
	}
}

func httpTask(deadline time.Time) schemas.Task {
	return schemas.Task{CorrelationID: "corr-1", PartID: "acme", PartCount: 3, Route: "quotes",
		Payload: []byte(`{"amount":100}`), ContentType: "application/json", Deadline: deadline, Attempt: 1}
}

func TestHTTPConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  processor.HTTPConfig
		errs []string
	}{
		{name: "url", cfg: processor.HTTPConfig{URL: "http://svc:8080/quote"}},
		{name: "placeholders", cfg: processor.HTTPConfig{URL: "https://search-{part}.svc/{route}"}},
		{name: "per recipient only", cfg: processor.HTTPConfig{PerRecipient: map[string]string{"acme": "http://acme/q"}}},
		{name: "nothing", cfg: processor.HTTPConfig{}, errs: []string{"url: none given"}},
		{name: "everything wrong", cfg: processor.HTTPConfig{URL: "ftp://x", PerRecipient: map[string]string{"acme": "http:///nohost"},
			Timeout: -1, MaxResponseBytes: -1, Headers: map[string]string{"Bad Name": "v"}},
			errs: []string{`url: "ftp://x": scheme must be http or https`, `url of recipient acme: "http:///nohost": no host`,
				"timeout: -1ns is negative", "max response bytes: -1 is negative", `header "Bad Name"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := processor.HTTP(tc.cfg)
			if len(tc.errs) == 0 {
				if err != nil {
					t.Fatalf("HTTP: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("HTTP: no error")
			}
			for _, want := range tc.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// TestHTTPRequest: the task goes out as a POST with its payload, content
// type and the correlation headers, to the part's URL.
func TestHTTPRequest(t *testing.T) {
	var (
		mu  sync.Mutex
		got *http.Request
		in  []byte
	)
	srv := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, in = r, b
		mu.Unlock()
		io.WriteString(w, `{"rate":3.5}`)
	})
	deadline := time.Now().Add(time.Minute).UTC()
	h, err := processor.HTTP(processor.HTTPConfig{
		URL:          "http://unused.invalid/",
		PerRecipient: map[string]string{"acme": srv.URL + "/{route}/{part}"},
		Headers:      map[string]string{"Authorization": "Bearer x", processor.HeaderPartID: "overridden"},
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := h.Handle(t.Context(), httpTask(deadline))
	if err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if string(out) != `{"rate":3.5}` {
		t.Errorf("payload %q", out)
	}
	mu.Lock()
	defer mu.Unlock()
	for name, want := range map[string]string{
		"Content-Type":                "application/json",
		processor.HeaderCorrelationID: "corr-1",
		processor.HeaderPartID:        "acme",
		processor.HeaderPartCount:     "3",
		processor.HeaderRoute:         "quotes",
		processor.HeaderAttempt:       "1",
		processor.HeaderDeadline:      deadline.Format(time.RFC3339Nano),
		"Authorization":               "Bearer x",
	} {
		if v := got.Header.Get(name); v != want {
			t.Errorf("header %s = %q, want %q", name, v, want)
		}
	}
	if got.Method != http.MethodPost || got.URL.Path != "/quotes/acme" || string(in) != `{"amount":100}` {
		t.Errorf("request %s %s with body %q", got.Method, got.URL.Path, in)
	}
}

// TestHTTPOutcomes: how each kind of answer maps to a payload, a retryable
// error or a permanent one, and what the error says.
func TestHTTPOutcomes(t *testing.T) {
	long := strings.Repeat("x", 1000)
	for _, tc := range []struct {
		name      string
		srv       http.HandlerFunc // nil: nothing listens
		cfg       processor.HTTPConfig
		deadline  time.Duration
		payload   string
		permanent bool
		errs      []string // substrings of the error; none: success
		isErr     error
	}{
		{name: "ok", srv: failing(0, 0, "", `[1]`), payload: `[1]`},
		{name: "slow but in time", srv: func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(100 * time.Millisecond)
			io.WriteString(w, "done")
		}, payload: "done"},
		{name: "503", srv: failing(1, 503, "upstream\n  down", ""), errs: []string{"POST http://", ": 503 Service Unavailable: upstream down"}},
		{name: "429", srv: failing(1, 429, "slow down", ""), errs: []string{"429 Too Many Requests: slow down"}},
		{name: "408", srv: failing(1, 408, "", ""), errs: []string{"408 Request Timeout"}},
		{name: "400", srv: failing(1, 400, `{"error":"unknown field q"}`, ""), permanent: true,
			errs: []string{`400 Bad Request: {"error":"unknown field q"}`}},
		{name: "404", srv: failing(1, 404, "", ""), permanent: true, errs: []string{"404 Not Found"}},
		{name: "redirect not followed", srv: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}, permanent: true, errs: []string{"302 Found"}},
		{name: "long body cut", srv: failing(1, 500, long, ""), errs: []string{"500 Internal Server Error: " + long[:256] + " …"}},
		{name: "connection refused", errs: []string{"POST http://127.0.0.1:", "connection refused"}},
		{name: "try timeout", srv: hang(5 * time.Second), cfg: processor.HTTPConfig{Timeout: 50 * time.Millisecond},
			errs: []string{"no answer within 50ms"}},
		{name: "task deadline", srv: hang(5 * time.Second), deadline: 50 * time.Millisecond,
			errs: []string{"context deadline exceeded"}, isErr: context.DeadlineExceeded},
		{name: "response too large", srv: failing(0, 0, "", long), cfg: processor.HTTPConfig{MaxResponseBytes: 100},
			permanent: true, errs: []string{"200 OK with a body over the limit of 100 bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if tc.srv != nil {
				cfg.URL = httpServer(t, tc.srv).URL + "/q"
			} else {
				cfg.URL = closedURL(t)
			}
			h, err := processor.HTTP(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			out, err := h.Handle(ctx, httpTask(time.Now().Add(time.Minute)))
			if len(tc.errs) == 0 {
				if err != nil || string(out) != tc.payload {
					t.Fatalf("got %q, %v; want %q", out, err, tc.payload)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; payload %q", out)
			}
			if processor.IsPermanent(err) != tc.permanent {
				t.Errorf("permanent = %v, want %v: %v", processor.IsPermanent(err), tc.permanent, err)
			}
			for _, want := range tc.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if tc.isErr != nil && !errors.Is(err, tc.isErr) {
				t.Errorf("error %v is not %v", err, tc.isErr)
			}
		})
	}
}

// TestHTTPPipeline: a broadcast route whose recipients are HTTP services
// that answer, answer slowly, fail then recover, refuse the input, are down,
// or hang past the deadline. The one reply marks each part as it went.
func TestHTTPPipeline(t *testing.T) {
	c := testkafka.New(t)
	var flakyCalls atomic.Int32
	urls := map[string]string{
		"ok": httpServer(t, func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"from":"ok","part":%q}`, r.Header.Get(processor.HeaderPartID))
		}).URL,
		"slow": httpServer(t, func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(300 * time.Millisecond)
			io.WriteString(w, `{"from":"slow"}`)
		}).URL,
		"flaky": httpServer(t, func(w http.ResponseWriter, r *http.Request) {
			if flakyCalls.Add(1) == 1 {
				http.Error(w, "warming up", http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, `{"from":"flaky"}`)
		}).URL,
		"bad": httpServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "amount is required", http.StatusUnprocessableEntity)
		}).URL,
		"down": closedURL(t),
		"hang": httpServer(t, hang(time.Minute)).URL,
	}
	h, err := processor.HTTP(processor.HTTPConfig{PerRecipient: urls})
	if err != nil {
		t.Fatal(err)
	}
	table, err := routes.Parse([]byte(`{"routes":[{"name":"svc","mode":"broadcast",
		"recipients":["ok","slow","flaky","bad","down","hang"],"timeout":"2s","merge":{"kind":"collect"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var specs []stack.ProcessorSpec
	for _, r := range table.Routes[0].Recipients {
		specs = append(specs, stack.ProcessorSpec{Route: "svc", Recipient: schemas.PartID(r), Handler: h,
			Tune: func(c *processor.Config) { c.Backoff = 20 * time.Millisecond; c.MaxBackoff = 50 * time.Millisecond }})
	}
	cc := kafkaconfig.Client{Brokers: c.Brokers}
	topics := kafkaconfig.Topics{Prefix: c.Prefix}
	st, err := stack.New(t.Context(), stack.Config{Client: cc, Topics: topics, Routes: table, Guarantee: kafkaconfig.ExactlyOnce,
		Layout: kafkaconfig.Layout{Partitions: 2, ResultPartitions: 2, ReplicationFactor: -1}, Processors: specs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("stack: %v", err)
		}
	})
	cl, err := client.New(t.Context(), client.Config{Client: cc, Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	reply, err := cl.Do(t.Context(), "svc", []byte(`{"amount":100}`), client.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if reply.Status != schemas.ReplyPartial {
		t.Errorf("status %s, want PARTIAL", reply.Status)
	}
	for _, want := range []struct {
		part   schemas.PartID
		status []schemas.PartStatus
		errs   []string
	}{
		{part: "ok", status: []schemas.PartStatus{schemas.PartOK}},
		{part: "slow", status: []schemas.PartStatus{schemas.PartOK}},
		{part: "flaky", status: []schemas.PartStatus{schemas.PartOK}},
		{part: "bad", status: []schemas.PartStatus{schemas.PartError}, errs: []string{"422 Unprocessable Entity: amount is required"}},
		{part: "down", status: []schemas.PartStatus{schemas.PartError}, errs: []string{"failed on try 4 of 4", "connection refused"}},
		// The aggregator closes the request at its deadline; the
		// processor's EXPIRED result may come just before or just after.
		{part: "hang", status: []schemas.PartStatus{schemas.PartMissing, schemas.PartExpired}},
	} {
		p, ok := reply.Part(want.part)
		if !ok {
			t.Errorf("reply has no part %s", want.part)
			continue
		}
		okStatus := false
		for _, s := range want.status {
			okStatus = okStatus || p.Status == s
		}
		if !okStatus {
			t.Errorf("part %s: %s (%s), want one of %v", want.part, p.Status, p.Error, want.status)
		}
		for _, e := range want.errs {
			if !strings.Contains(p.Error, e) {
				t.Errorf("part %s: error %q does not contain %q", want.part, p.Error, e)
			}
		}
	}
	var merged []map[string]string
	if err := json.Unmarshal(reply.Payload, &merged); err != nil {
		t.Fatalf("payload %s: %v", reply.Payload, err)
	}
	if len(merged) != 3 || merged[0]["from"] != "ok" || merged[0]["part"] != "ok" {
		t.Errorf("merged payload %s, want the three OK parts, ok's naming its part", reply.Payload)
	}
	if n := flakyCalls.Load(); n != 2 {
		t.Errorf("flaky service called %d times, want 2 (one retry)", n)
	}
}
