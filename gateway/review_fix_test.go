package gateway

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/metrics"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// fixGateway runs a gateway with one split route against brokers until the
// test ends and returns it with its base URL.
func fixGateway(t *testing.T, brokers []string, prefix string, mod func(*Config)) (*Gateway, string) {
	t.Helper()
	cc := kafkaconfig.Client{Brokers: brokers, ClientID: "gateway-fix-test"}
	topics := kafkaconfig.Topics{Prefix: prefix}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Client: cc, Topics: topics, Listener: ln, Logger: slog.New(slog.DiscardHandler),
		Routes: []scatterer.Route{{Name: "echo", Mode: scatterer.Split, Fanout: 1}}}
	if mod != nil {
		mod(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gateway: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("gateway did not stop within 30s")
		}
	})
	return g, "http://" + ln.Addr().String()
}

// kfakeGateway is fixGateway on the test's broker with its topics made.
func kfakeGateway(t *testing.T, mod func(*Config)) (*Gateway, string) {
	t.Helper()
	return gatewayOn(t, testkafka.New(t), mod)
}

// gatewayOn is fixGateway on c with its topics made, once ready.
func gatewayOn(t *testing.T, c *testkafka.Cluster, mod func(*Config)) (*Gateway, string) {
	t.Helper()
	topics := kafkaconfig.Topics{Prefix: c.Prefix}
	for _, name := range []string{topics.Requests(), topics.Replies(), topics.Results()} {
		if _, err := c.Admin(t).CreateTopic(t.Context(), 3, -1, nil, name); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	g, url := fixGateway(t, c.Brokers, c.Prefix, mod)
	deadline := time.Now().Add(20 * time.Second)
	for g.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready after 20s: %v", g.Ready())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return g, url
}

// openEvents opens an event stream; its body is closed when the test ends.
func openEvents(t *testing.T, ctx context.Context, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// TestReplyAfterEviction: a request evicted from the reply cache (size 1)
// before its reply came still gets that reply on an event stream opened
// before the eviction, and a ?wait= long-poll begun before it returns the
// reply when it comes, not at the end of its wait.
func TestReplyAfterEviction(t *testing.T) {
	g, url := kfakeGateway(t, func(c *Config) {
		c.MaxCachedRequests = 1
		c.ReplyGrace = 200 * time.Millisecond
	})
	now := time.Now()
	if _, err := g.store.submit("a", "echo", now, now.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}

	// The stream of a, open before b evicts a.
	res := openEvents(t, t.Context(), url+"/v1/requests/a/events")
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("events: %d %s", res.StatusCode, b)
	}
	body := bufio.NewReader(res.Body)
	if line, err := body.ReadString('\n'); err != nil || !strings.HasPrefix(line, ": events of request a") {
		t.Fatalf("first line %q, %v", line, err)
	}

	// A long-poll of a, begun before the eviction.
	type answer struct {
		status int
		took   time.Duration
		err    error
	}
	polled := make(chan answer, 1)
	var started sync.WaitGroup
	started.Add(1)
	go func() {
		start := time.Now()
		req, err := http.NewRequestWithContext(t.Context(), "GET", url+"/v1/requests/a?wait=20s", nil)
		if err != nil {
			polled <- answer{err: err}
			return
		}
		started.Done()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			polled <- answer{err: err}
			return
		}
		res.Body.Close()
		polled <- answer{status: res.StatusCode, took: time.Since(start)}
	}()
	started.Wait()
	// Nothing shows that the handler has reached its wait on a's done
	// channel; give it time to (a long-poll arriving after the eviction
	// would get a 404 and fail the test, not pass it).
	time.Sleep(500 * time.Millisecond)

	if _, err := g.store.submit("b", "echo", time.Now(), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, ok := g.store.get("a"); ok {
		t.Fatal("a was not evicted by b")
	}
	g.store.replied(reply("a"), time.Now(), time.Now())

	rest, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(rest, []byte("event: reply\nid: a\n")) || !bytes.Contains(rest, []byte(`"status":"COMPLETE"`)) {
		t.Errorf("stream of an evicted request did not end with its reply:\n%s", rest)
	}
	select {
	case a := <-polled:
		if a.err != nil || a.status != http.StatusOK || a.took > 10*time.Second {
			t.Errorf("long-poll: status %d after %s, %v; want 200 when the reply comes", a.status, a.took, a.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("long-poll did not return")
	}
}

// TestStoreOrphans: an entry evicted for room before its reply passes its
// done channel to the next entry of its id; orphans stay within bounds.
func TestStoreOrphans(t *testing.T) {
	s := newStore(1, 1<<20, time.Minute)
	a, _ := s.submit("a", "r", t0, t0.Add(time.Second))
	s.submit("b", "r", t0, t0.Add(time.Second)) // evicts a
	s.replied(reply("a"), t0, t0)               // a again, with its reply; evicts b
	if !closed(a.done) {
		t.Fatal("the reply of an evicted request did not wake its waiters")
	}
	for i := range 100 {
		s.submit(schemas.CorrelationID(rune('c'+i)), "r", t0, t0)
	}
	if len(s.orphans) > 1 || len(s.orphanQ) > 4 {
		t.Errorf("orphans %d, queue %d: not bounded by max entries", len(s.orphans), len(s.orphanQ))
	}
	s.expire(t0.Add(2 * time.Minute))
	if len(s.orphans) != 0 {
		t.Errorf("%d orphans older than retention", len(s.orphans))
	}
}

// TestTokenReloadMonotonic: the file is read again authReload after the
// last time on the monotonic clock, whatever the wall clock says. (A wall
// clock stepped back cannot be made in a test; this pins the schedule.)
func TestTokenReloadMonotonic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "tokens")
		writeFile(t, path, "aaaaaaaaaaaaaaaaaaaa\n")
		tk, err := loadTokens(path, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, path, "bbbbbbbbbbbbbbbbbbbb\n")
		time.Sleep(authReload - time.Millisecond)
		if tk.valid("bbbbbbbbbbbbbbbbbbbb") {
			t.Fatal("reloaded before authReload")
		}
		time.Sleep(time.Millisecond)
		if !tk.valid("bbbbbbbbbbbbbbbbbbbb") || tk.valid("aaaaaaaaaaaaaaaaaaaa") {
			t.Fatal("not reloaded after authReload")
		}
	})
}

// TestTokenFileHalfWritten: a changed token file that does not end with a
// newline (caught while written in place) is refused with a warning, and
// the tokens read before stay; once complete it is read.
func TestTokenFileHalfWritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "tokens")
		writeFile(t, path, "aaaaaaaaaaaaaaaaaaaa\n")
		var logs syncBuf
		tk, err := loadTokens(path, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		const full, cut = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "bbbbbbbbbbbbbbbbbbbb"
		writeFile(t, path, "aaaaaaaaaaaaaaaaaaaa\n"+cut)
		time.Sleep(authReload)
		if tk.valid(cut) || !tk.valid("aaaaaaaaaaaaaaaaaaaa") {
			t.Error("a half-written token file was read")
		}
		if !strings.Contains(logs.String(), "does not end with a newline") {
			t.Errorf("no warning: %q", logs.String())
		}
		writeFile(t, path, "aaaaaaaaaaaaaaaaaaaa\n"+full+"\n")
		time.Sleep(authReload)
		if !tk.valid(full) || tk.valid(cut) {
			t.Error("the completed token file was not read")
		}
	})
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestEventsBrokerDown: with a broker that takes connections and never
// answers (a hung or cut-off broker), an event stream is refused 503
// broker-unavailable within the lookup bound, for several callers at once
// (none queues behind another's lookup).
func TestEventsBrokerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held sync.WaitGroup
	held.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // read nothing, answer nothing
		}
	})
	t.Cleanup(func() {
		ln.Close()
		held.Wait()
	})
	addr := ln.Addr().String()
	g, url := fixGateway(t, []string{addr}, "sg.", nil)
	g.listTimeout = 500 * time.Millisecond
	now := time.Now()
	if _, err := g.store.submit("a", "echo", now, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			start := time.Now()
			req, err := http.NewRequestWithContext(ctx, "GET", url+"/v1/requests/a/events", nil)
			if err != nil {
				t.Error(err)
				return
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("events with the broker down: %v after %s", err, time.Since(start))
				return
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if took := time.Since(start); res.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(b, []byte(CodeBrokerUnavailable)) || took > 5*time.Second {
				t.Errorf("events with the broker down: %d %s after %s; want 503 %s within 5s", res.StatusCode, b, took, CodeBrokerUnavailable)
			}
		})
	}
	wg.Wait()
}

// TestStreamClientHasNoMetrics: the Kafka client of an event stream adds
// no per-client series to the registry.
func TestStreamClientHasNoMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	var (
		mu    sync.Mutex
		hooks int
	)
	newHooks := metrics.NewKafkaMetrics(reg).Hooks("gateway")
	g, url := kfakeGateway(t, func(c *Config) {
		c.Metrics = reg
		c.Client.NewHooks = func() []kgo.Hook {
			mu.Lock()
			hooks++
			mu.Unlock()
			return newHooks()
		}
	})
	now := time.Now()
	if _, err := g.store.submit("a", "echo", now, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	g.store.replied(reply("a"), now, now)
	mu.Lock()
	before := hooks
	mu.Unlock()
	for range 2 {
		res, err := http.Get(url + "/v1/requests/a/events")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !bytes.Contains(b, []byte("event: reply")) {
			t.Fatalf("events: %d %s", res.StatusCode, b)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if hooks != before {
		t.Errorf("%d stream clients got metrics hooks", hooks-before)
	}
}

// TestEventsTakeTheManifestDeadline: a stream of a request whose deadline
// the gateway does not know (seen on the topic with no timeout, for a route
// it does not serve) ends at the deadline its manifest gives, plus the
// grace, when no reply comes; it used to stay open for good.
func TestEventsTakeTheManifestDeadline(t *testing.T) {
	c := testkafka.New(t)
	topics := kafkaconfig.Topics{Prefix: c.Prefix}
	g, url := gatewayOn(t, c, func(c *Config) { c.ReplyGrace = 200 * time.Millisecond })
	now := time.Now()
	g.store.requested("hidden-1", "hidden", now, time.Time{}, now, now)
	mf, err := schemas.EncodeManifest(schemas.Manifest{CorrelationID: "hidden-1", Route: "hidden", Parts: []schemas.PartID{"a"},
		Deadline: now.Add(time.Second), Policy: "all", SubmittedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Client(t).ProduceSync(t.Context(), &kgo.Record{Topic: topics.Results(), Key: []byte("hidden-1"), Value: mf}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	res := openEvents(t, ctx, url+"/v1/requests/hidden-1/events")
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("the stream did not end within 15s (%v): %s", err, body)
	}
	if !bytes.Contains(body, []byte("event: manifest")) || !bytes.Contains(body, []byte(`"code":"no-reply"`)) {
		t.Errorf("stream %s, want the manifest then a no-reply error", body)
	}
	if took := time.Since(now); took > 10*time.Second {
		t.Errorf("the stream ended after %s, want about the manifest's deadline (1s) plus the grace", took)
	}
}

// TestSSEFieldsStayOnTheirLine: ids and comments with line breaks (a
// correlation or part id a Go client chose) cannot inject events.
func TestSSEFieldsStayOnTheirLine(t *testing.T) {
	rec := httptest.NewRecorder()
	out := sse{w: rec, f: rec}
	if err := out.comment("events of request a\nevent: reply\ndata: {}"); err != nil {
		t.Fatal(err)
	}
	if err := out.event(EventPart, "p\r\nevent: reply", map[string]string{"part": "p\nx"}); err != nil {
		t.Fatal(err)
	}
	got := rec.Body.String()
	if n := strings.Count("\n"+got, "\nevent: "); n != 1 {
		t.Errorf("%d events in %q, want 1", n, got)
	}
	for _, line := range strings.Split(got, "\n") {
		if line != "" && !strings.HasPrefix(line, ": ") && !strings.HasPrefix(line, "event: part") && !strings.HasPrefix(line, "data: ") {
			t.Errorf("line %q in %q", line, got)
		}
	}
}
