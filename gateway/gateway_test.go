package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/gateway"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

func TestMain(m *testing.M) { testkafka.Main(m) }

const testRoutes = `{"routes":[
	{"name":"echo","mode":"split","fanout":2,"max_fanout":8,"timeout":"10s","max_timeout":"1m","merge":{"kind":"collect"}},
	{"name":"quotes","mode":"broadcast","recipients":["fast","slow","stuck"],"timeout":"5s","merge":{"kind":"collect"}}
]}`

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("SG_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// env is a broker with the pipeline's topics under the test's prefix.
type env struct {
	cluster *testkafka.Cluster
	cc      kafkaconfig.Client
	topics  kafkaconfig.Topics
	table   *routes.Table
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := testkafka.New(t)
	table, err := routes.Parse([]byte(testRoutes))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{cluster: c, cc: kafkaconfig.Client{Brokers: c.Brokers, ClientID: "gateway-test"}, topics: kafkaconfig.Topics{Prefix: c.Prefix}, table: table}
	if err := stack.EnsureTopics(t.Context(), e.cc, e.topics, layout, table.Names()); err != nil {
		t.Fatalf("topics: %v", err)
	}
	return e
}

var layout = kafkaconfig.Layout{Partitions: 3, ResultPartitions: 3, ReplicationFactor: -1}

// answerAfter answers {"from": name} after d, or fails when ctx ends first.
func answerAfter(name string, d time.Duration) processor.Handler {
	return processor.HandlerFunc(func(ctx context.Context, t schemas.Task) ([]byte, error) {
		select {
		case <-time.After(d):
			return fmt.Appendf(nil, `{"from":%q}`, name), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}

// startPipeline runs every role until the test ends: echo on the split
// route; on the broadcast route "fast" answers at once, "slow" after
// 400ms, "stuck" never.
func (e *env) startPipeline(t *testing.T) {
	t.Helper()
	st, err := stack.New(t.Context(), stack.Config{
		Client: e.cc, Topics: e.topics, Layout: layout, Routes: e.table, Guarantee: kafkaconfig.ExactlyOnce, Logger: testLogger(t),
		Processors: []stack.ProcessorSpec{
			{Route: "echo", Handler: processor.Echo()},
			{Route: "quotes", Recipient: "fast", Handler: answerAfter("fast", 0)},
			{Route: "quotes", Recipient: "slow", Handler: answerAfter("slow", 400*time.Millisecond)},
			{Route: "quotes", Recipient: "stuck", Handler: answerAfter("stuck", time.Hour),
				Tune: func(c *processor.Config) { c.DrainTimeout = 100 * time.Millisecond }},
		},
	})
	if err != nil {
		t.Fatalf("stack: %v", err)
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
	// As a deployment waits on /readyz: tests with deadlines of a second
	// or two would otherwise race the groups' first join, which on a
	// loaded real broker takes seconds (TestEvents on Kafka 4.4 got every
	// part MISSING).
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var pending []string
		for _, c := range st.Checks() {
			if err := c.Ready(); err != nil {
				pending = append(pending, c.Name+": "+err.Error())
			}
		}
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pipeline not ready after 60s: %s", strings.Join(pending, "; "))
		}
	}
}

// gw is a running gateway.
type gw struct {
	*gateway.Gateway
	url  string
	stop func() error // idempotent; what Run returned
}

func (e *env) startGateway(t *testing.T, mod func(*gateway.Config)) *gw {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srs, err := e.table.ScattererRoutes()
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.Config{Client: e.cc, Topics: e.topics, Routes: srs, Listener: ln, Logger: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	s := &gw{Gateway: g, url: "http://" + ln.Addr().String()}
	s.stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("gateway did not stop within 30s")
		}
	})
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	return s
}

// waitReady polls Ready (the admin port's /readyz check) until it passes.
func (s *gw) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s.Ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready after 20s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer %d %q is not JSON: %v", r.status, r.body, err)
	}
}

var httpClient = &http.Client{Timeout: 60 * time.Second}

func do(t *testing.T, method, url string, body io.Reader, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, url, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

func post(t *testing.T, url, body string) response {
	t.Helper()
	return do(t, "POST", url, strings.NewReader(body), map[string]string{"Content-Type": "application/json"})
}

func wantStatus(t *testing.T, r response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
}

func part(t *testing.T, v client.ReplyView, id string) client.PartView {
	t.Helper()
	for _, p := range v.Parts {
		if p.PartID == id {
			return p
		}
	}
	t.Fatalf("reply has no part %s: %+v", id, v.Parts)
	return client.PartView{}
}

// TestSync: ?wait= answers 200 with the reply, its status and its part
// markers, for JSON and raw payloads, complete and partial.
func TestSync(t *testing.T) {
	e := newEnv(t)
	e.startPipeline(t)
	s := e.startGateway(t, nil)

	t.Run("complete", func(t *testing.T) {
		res := post(t, s.url+"/v1/routes/echo/requests?wait=20s&fanout=3", `{"q": "red shoes"}`)
		wantStatus(t, res, http.StatusOK)
		var v client.ReplyView
		res.json(t, &v)
		if v.Status != "COMPLETE" || res.header.Get(gateway.HeaderReplyStatus) != "COMPLETE" || len(v.Parts) != 3 {
			t.Fatalf("reply %s", res.body)
		}
		if res.header.Get(gateway.HeaderCorrelationID) != v.CorrelationID || v.CorrelationID == "" {
			t.Errorf("correlation id header %q, body %q", res.header.Get(gateway.HeaderCorrelationID), v.CorrelationID)
		}
		if string(v.Payload) != `[{"q":"red shoes"},{"q":"red shoes"},{"q":"red shoes"}]` {
			t.Errorf("payload %s", v.Payload)
		}
	})
	t.Run("raw bytes", func(t *testing.T) {
		res := do(t, "POST", s.url+"/v1/routes/echo/requests?wait=20s&fanout=1", strings.NewReader("plain text"),
			map[string]string{"Content-Type": "text/plain"})
		wantStatus(t, res, http.StatusOK)
		var v client.ReplyView
		res.json(t, &v)
		if v.Status != "COMPLETE" || string(v.Payload) != `["plain text"]` {
			t.Fatalf("reply %s", res.body)
		}
	})
	t.Run("partial", func(t *testing.T) {
		res := post(t, s.url+"/v1/routes/quotes/requests?wait=20s&timeout=1s", `{"amount": 1000}`)
		wantStatus(t, res, http.StatusOK)
		var v client.ReplyView
		res.json(t, &v)
		if v.Status != "PARTIAL" || res.header.Get(gateway.HeaderReplyStatus) != "PARTIAL" {
			t.Fatalf("reply %s", res.body)
		}
		if p := part(t, v, "fast"); p.Status != "OK" {
			t.Errorf("fast: %+v", p)
		}
		if p := part(t, v, "slow"); p.Status != "OK" {
			t.Errorf("slow: %+v", p)
		}
		if p := part(t, v, "stuck"); p.Status != "MISSING" && p.Status != "EXPIRED" {
			t.Errorf("stuck: %+v, want MISSING or EXPIRED", p)
		}
	})
	t.Run("wait shorter than the request", func(t *testing.T) {
		res := post(t, s.url+"/v1/routes/quotes/requests?wait=100ms&timeout=3s", `{}`)
		wantStatus(t, res, http.StatusAccepted)
		var p gateway.PendingBody
		res.json(t, &p)
		if p.Status != "PENDING" || res.header.Get("Location") != "/v1/requests/"+p.CorrelationID {
			t.Fatalf("pending %s, Location %q", res.body, res.header.Get("Location"))
		}
	})
}

// TestAsync: without wait, 202 and a Location that answers 202 until the
// reply is there and 200 then; ?wait= on the GET long-polls.
func TestAsync(t *testing.T) {
	e := newEnv(t)
	e.startPipeline(t)
	s := e.startGateway(t, nil)

	res := post(t, s.url+"/v1/routes/quotes/requests?timeout=1s", `{"amount": 5}`)
	wantStatus(t, res, http.StatusAccepted)
	var p gateway.PendingBody
	res.json(t, &p)
	loc := res.header.Get("Location")
	if loc == "" || loc != p.Location || p.Events != loc+"/events" || p.Route != "quotes" || p.Deadline.Sub(p.SubmittedAt) != time.Second {
		t.Fatalf("202 answer %s with Location %q", res.body, loc)
	}
	first := do(t, "GET", s.url+loc, nil, nil)
	wantStatus(t, first, http.StatusAccepted) // "stuck" holds it for its second

	deadline := time.Now().Add(20 * time.Second)
	for {
		res = do(t, "GET", s.url+loc, nil, nil)
		if res.status == http.StatusOK {
			break
		}
		wantStatus(t, res, http.StatusAccepted)
		if time.Now().After(deadline) {
			t.Fatal("no reply after 20s of polling")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var v client.ReplyView
	res.json(t, &v)
	if v.CorrelationID != p.CorrelationID || v.Status != "PARTIAL" {
		t.Fatalf("reply %s", res.body)
	}

	// Long poll: the GET waits for the reply. The quotes route, whose
	// "stuck" recipient holds the request for its second, is never
	// answered before the POST's 202 (echo may be: its reply can reach the
	// gateway's tail within the produce's round trip).
	res = post(t, s.url+"/v1/routes/quotes/requests?timeout=1s", `{"amount": 5}`)
	wantStatus(t, res, http.StatusAccepted)
	res = do(t, "GET", s.url+res.header.Get("Location")+"?wait=20s", nil, nil)
	wantStatus(t, res, http.StatusOK)
	res.json(t, &v)
	if v.Status != "PARTIAL" {
		t.Fatalf("reply %s", res.body)
	}
}

type event struct {
	name, id string
	data     []byte
}

// readEvents reads a Server-Sent Events stream until it ends.
func readEvents(t *testing.T, url string) []event {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("events: %d %s %s", res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	var (
		out []event
		cur event
	)
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.name != "" {
				out = append(out, cur)
			}
			cur = event{}
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = []byte(strings.TrimPrefix(line, "data: "))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read events: %v", err)
	}
	return out
}

func eventNames(evs []event) string {
	var names []string
	for _, e := range evs {
		names = append(names, e.name+"/"+e.id)
	}
	return strings.Join(names, " ")
}

// TestEvents: the stream sends the manifest, each part as it arrives, then
// the reply; opened after the reply, it still replays the parts.
func TestEvents(t *testing.T) {
	e := newEnv(t)
	e.startPipeline(t)
	s := e.startGateway(t, nil)

	res := post(t, s.url+"/v1/routes/quotes/requests?timeout=1500ms", `{"amount": 7}`)
	wantStatus(t, res, http.StatusAccepted)
	var p gateway.PendingBody
	res.json(t, &p)
	start := time.Now()
	evs := readEvents(t, s.url+p.Events)
	took := time.Since(start)

	if len(evs) < 4 || evs[0].name != gateway.EventManifest || evs[len(evs)-1].name != gateway.EventReply {
		t.Fatalf("events %s, want manifest, parts, reply", eventNames(evs))
	}
	var m gateway.ManifestEvent
	if err := json.Unmarshal(evs[0].data, &m); err != nil || strings.Join(m.Parts, ",") != "fast,slow,stuck" || m.CorrelationID != p.CorrelationID {
		t.Fatalf("manifest %s (%v)", evs[0].data, err)
	}
	// fast answers at once, slow after 400ms: they arrive in that order;
	// stuck never answers (or answers EXPIRED at the deadline).
	var parts []gateway.PartEvent
	for _, ev := range evs[1 : len(evs)-1] {
		if ev.name != gateway.EventPart {
			t.Fatalf("events %s", eventNames(evs))
		}
		var pe gateway.PartEvent
		if err := json.Unmarshal(ev.data, &pe); err != nil {
			t.Fatal(err)
		}
		if pe.PartID != ev.id {
			t.Errorf("event id %q for part %q", ev.id, pe.PartID)
		}
		parts = append(parts, pe)
	}
	if len(parts) < 2 || parts[0].PartID != "fast" || parts[1].PartID != "slow" ||
		parts[0].Status != "OK" || string(parts[0].Payload) != `{"from":"fast"}` {
		t.Fatalf("parts %s", eventNames(evs))
	}
	var v client.ReplyView
	if err := json.Unmarshal(evs[len(evs)-1].data, &v); err != nil || v.Status != "PARTIAL" || v.CorrelationID != p.CorrelationID {
		t.Fatalf("reply event %s (%v)", evs[len(evs)-1].data, err)
	}
	if took > 15*time.Second {
		t.Errorf("stream took %s for a 1.5s request", took)
	}

	// After the reply: the parts the reply counts, then the reply, at once.
	// The live stream may have shown stuck's EXPIRED result if it came
	// before the reply reached the gateway; a result that came after the
	// reply was made (the reply marks stuck MISSING) is late, and the late
	// stream leaves it out.
	status := map[string]string{}
	for _, pv := range v.Parts {
		status[pv.PartID] = pv.Status
	}
	want := []event{evs[0]}
	for _, ev := range evs[1 : len(evs)-1] {
		if status[ev.id] != "MISSING" {
			want = append(want, ev)
		}
	}
	want = append(want, evs[len(evs)-1])
	again := readEvents(t, s.url+p.Events)
	if eventNames(again) != eventNames(want) {
		t.Errorf("late stream %s, want %s", eventNames(again), eventNames(want))
	}
}

// TestErrors: every input problem is a JSON error naming it, with its code.
func TestErrors(t *testing.T) {
	e := newEnv(t)
	e.startPipeline(t)
	s := e.startGateway(t, func(c *gateway.Config) { c.MaxBodyBytes = 1024; c.MaxWait = 30 * time.Second })
	s.waitReady(t)
	dup := post(t, s.url+"/v1/routes/echo/requests", `{}`)
	wantStatus(t, dup, http.StatusAccepted)
	dupID := dup.header.Get(gateway.HeaderCorrelationID)

	big := strings.Repeat("x", 2000)
	for _, tc := range []struct {
		name, method, path, body string
		header                   map[string]string
		chunked                  bool
		status                   int
		code, says               string
	}{
		{name: "unknown route", path: "/v1/routes/nope/requests", status: 404, code: gateway.CodeUnknownRoute, says: `route "nope" is not configured; routes: echo, quotes`},
		{name: "timeout not a duration", path: "/v1/routes/echo/requests?timeout=abc", status: 400, code: gateway.CodeInvalidTimeout, says: `timeout "abc" is not a duration`},
		{name: "timeout negative", path: "/v1/routes/echo/requests?timeout=-1s", status: 400, code: gateway.CodeInvalidTimeout, says: "timeout -1s must be positive"},
		{name: "timeout zero", path: "/v1/routes/echo/requests?timeout=0s", status: 400, code: gateway.CodeInvalidTimeout, says: "must be positive"},
		{name: "timeout over the route's max", path: "/v1/routes/echo/requests?timeout=2m", status: 400, code: gateway.CodeInvalidTimeout, says: "timeout 2m0s exceeds route echo's maximum of 1m0s"},
		{name: "timeout below a millisecond", path: "/v1/routes/echo/requests?timeout=500us", status: 400, code: gateway.CodeInvalidTimeout, says: "timeout 500µs is below the smallest, 1ms"},
		{name: "unknown query parameter", path: "/v1/routes/echo/requests?timout=2s", status: 400, code: gateway.CodeBadRequest, says: `unknown query parameter "timout"; this endpoint takes timeout, fanout, wait`},
		{name: "repeated query parameter", path: "/v1/routes/echo/requests?timeout=1s&timeout=2s", status: 400, code: gateway.CodeBadRequest, says: "query parameter timeout is given 2 times"},
		{name: "bad query escape", path: "/v1/routes/echo/requests?timeout=%zz", status: 400, code: gateway.CodeBadRequest, says: "query string: invalid URL escape"},
		{name: "semicolon in query", path: "/v1/routes/echo/requests?timeout=1s;fanout=2", status: 400, code: gateway.CodeBadRequest, says: "query string: invalid semicolon separator"},
		{name: "unknown query parameter on get", method: "GET", path: "/v1/requests/" + dupID + "?timeout=1s", status: 400, code: gateway.CodeBadRequest, says: `unknown query parameter "timeout"; this endpoint takes wait`},
		{name: "fanout not a number", path: "/v1/routes/echo/requests?fanout=two", status: 400, code: gateway.CodeInvalidFanout, says: `fanout "two" is not a whole number`},
		{name: "fanout zero", path: "/v1/routes/echo/requests?fanout=0", status: 400, code: gateway.CodeInvalidFanout, says: "fanout 0 is outside 1..8 for route echo"},
		{name: "fanout over max", path: "/v1/routes/echo/requests?fanout=9", status: 400, code: gateway.CodeInvalidFanout, says: "outside 1..8"},
		{name: "fanout with a sign", path: "/v1/routes/echo/requests?fanout=%2B3", status: 400, code: gateway.CodeInvalidFanout, says: `fanout "+3" is not a whole number`},
		{name: "fanout with leading zeros", path: "/v1/routes/echo/requests?fanout=003", status: 400, code: gateway.CodeInvalidFanout, says: `fanout "003" is not a whole number`},
		{name: "query on events", method: "GET", path: "/v1/requests/" + dupID + "/events?wait=5s", status: 400, code: gateway.CodeBadRequest, says: `unknown query parameter "wait"; this endpoint takes none`},
		{name: "query on routes", method: "GET", path: "/v1/routes?x=1", status: 400, code: gateway.CodeBadRequest, says: "this endpoint takes none"},
		{name: "query on a route", method: "GET", path: "/v1/routes/echo?x=1", status: 400, code: gateway.CodeBadRequest, says: "this endpoint takes none"},
		{name: "fanout on broadcast", path: "/v1/routes/quotes/requests?fanout=2", status: 400, code: gateway.CodeInvalidFanout, says: "broadcast route quotes always has its 3 recipients"},
		{name: "wait not a duration", path: "/v1/routes/echo/requests?wait=soon", status: 400, code: gateway.CodeInvalidWait, says: `wait "soon"`},
		{name: "wait over max", path: "/v1/routes/echo/requests?wait=1h", status: 400, code: gateway.CodeInvalidWait, says: "exceeds the maximum of 30s"},
		{name: "body too large", path: "/v1/routes/echo/requests", body: big, status: 413, code: gateway.CodeBodyTooLarge, says: "body of 2000 bytes exceeds the limit of 1024"},
		{name: "chunked body too large", path: "/v1/routes/echo/requests", body: big, chunked: true, status: 413, code: gateway.CodeBodyTooLarge, says: "exceeds the limit of 1024 bytes"},
		{name: "invalid JSON", path: "/v1/routes/echo/requests", body: `{"q":`, header: map[string]string{"Content-Type": "application/json"}, status: 400, code: gateway.CodeInvalidJSON, says: "not valid JSON"},
		{name: "bad content type", path: "/v1/routes/echo/requests", body: `{}`, header: map[string]string{"Content-Type": "a/b; =x"}, status: 400, code: gateway.CodeBadRequest, says: "Content-Type"},
		{name: "bad correlation id", path: "/v1/routes/echo/requests", body: `{}`, header: map[string]string{gateway.HeaderCorrelationID: "has space"}, status: 400, code: gateway.CodeInvalidID, says: `"has space"`},
		{name: "known correlation id", path: "/v1/routes/echo/requests", body: `{}`, header: map[string]string{gateway.HeaderCorrelationID: dupID}, status: 409, code: gateway.CodeDuplicateID, says: dupID},
		{name: "unknown request", method: "GET", path: "/v1/requests/nosuchid", status: 404, code: gateway.CodeUnknownRequest, says: "request nosuchid is unknown"},
		{name: "unknown request events", method: "GET", path: "/v1/requests/nosuchid/events", status: 404, code: gateway.CodeUnknownRequest, says: "nosuchid"},
		{name: "unknown route info", method: "GET", path: "/v1/routes/nope", status: 404, code: gateway.CodeUnknownRoute, says: "nope"},
		{name: "bad wait on get", method: "GET", path: "/v1/requests/" + dupID + "?wait=-1s", status: 400, code: gateway.CodeInvalidWait, says: "negative"},
		{name: "unknown path", method: "GET", path: "/v2/x", status: 404, code: gateway.CodeNotFound, says: "no endpoint GET /v2/x"},
		{name: "unknown API path", method: "GET", path: "/v1/nothing", status: 404, code: gateway.CodeNotFound, says: "no endpoint GET /v1/nothing"},
		{name: "healthz is on the admin port", method: "GET", path: "/healthz", status: 404, code: gateway.CodeNotFound, says: "/healthz is not served on the API's address but on the admin address"},
		{name: "readyz is on the admin port", method: "GET", path: "/readyz", status: 404, code: gateway.CodeNotFound, says: "--admin-addr"},
		{name: "metrics are on the admin port", method: "GET", path: "/metrics", status: 404, code: gateway.CodeNotFound, says: "--admin-addr"},
		{name: "wrong method", method: "GET", path: "/v1/routes/echo/requests", status: 405, code: gateway.CodeMethodNotAllowed, says: "use POST"},
		{name: "wrong method on a request", method: "DELETE", path: "/v1/requests/" + dupID, status: 405, code: gateway.CodeMethodNotAllowed, says: "use GET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "POST"
			}
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(strings.NewReader(tc.body)) // unknown length: sent chunked
			}
			res := do(t, method, s.url+tc.path, body, tc.header)
			wantStatus(t, res, tc.status)
			var eb gateway.ErrorBody
			res.json(t, &eb)
			if eb.Code != tc.code || !strings.Contains(eb.Error, tc.says) {
				t.Errorf("error %+v, want code %s saying %q", eb, tc.code, tc.says)
			}
			if ct := res.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
}

// TestBrokerUnavailable: with no broker, a POST is a 503 with Retry-After
// (the gateway itself stays up), and so is a lookup it cannot answer yet.
func TestBrokerUnavailable(t *testing.T) {
	check := func(t *testing.T, s *gw) {
		t.Helper()
		start := time.Now()
		res := post(t, s.url+"/v1/routes/echo/requests?wait=5s", `{"q":1}`)
		wantStatus(t, res, http.StatusServiceUnavailable)
		var eb gateway.ErrorBody
		res.json(t, &eb)
		if eb.Code != gateway.CodeBrokerUnavailable || !strings.Contains(eb.Error, "Kafka is unavailable") || res.header.Get("Retry-After") != "3" {
			t.Errorf("answer %s, Retry-After %q", res.body, res.header.Get("Retry-After"))
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("503 took %s", took)
		}
	}
	t.Run("nothing listens", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := ln.Addr().String()
		ln.Close()
		table, _ := routes.Parse([]byte(testRoutes))
		e := &env{cc: kafkaconfig.Client{Brokers: []string{closed}}, topics: kafkaconfig.Topics{Prefix: "sg."}, table: table}
		s := e.startGateway(t, func(c *gateway.Config) { c.ProduceTimeout = time.Second; c.RetryAfter = 2500 * time.Millisecond })
		check(t, s)
		res := do(t, "GET", s.url+"/v1/requests/abc", nil, nil)
		wantStatus(t, res, http.StatusServiceUnavailable)
		if res.header.Get("Retry-After") == "" || !strings.Contains(string(res.body), gateway.CodeBrokerUnavailable) {
			t.Errorf("lookup: %s", res.body)
		}
		if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "connecting") {
			t.Errorf("Ready() = %v, want connecting", err)
		}
		if res := do(t, "GET", s.url+"/v1/routes", nil, nil); res.status != http.StatusOK {
			t.Errorf("routes need no broker: %d", res.status)
		}
	})
	t.Run("broker stopped", func(t *testing.T) {
		e := newEnv(t)
		if e.cluster.Fake == nil {
			t.Skip("stopping the broker needs the in-process kfake broker; 'nothing listens' covers real Kafka")
		}
		e.startPipeline(t)
		s := e.startGateway(t, func(c *gateway.Config) { c.ProduceTimeout = time.Second; c.RetryAfter = 3 * time.Second })
		wantStatus(t, post(t, s.url+"/v1/routes/echo/requests?wait=20s", `{}`), http.StatusOK)
		e.cluster.Fake.Close()
		check(t, s)
	})
}

// TestRestart: a gateway started after a request was answered (through
// another gateway, or a Go client) finds the reply on the replies topic;
// one whose window is shorter than the reply's age does not.
func TestRestart(t *testing.T) {
	e := newEnv(t)
	e.startPipeline(t)
	first := e.startGateway(t, nil)
	res := post(t, first.url+"/v1/routes/echo/requests?wait=20s", `{"before":"restart"}`)
	wantStatus(t, res, http.StatusOK)
	id := res.header.Get(gateway.HeaderCorrelationID)
	if err := first.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	// A request answered while no gateway ran, sent by a Go client.
	cl, err := client.New(t.Context(), client.Config{Client: e.cc, Topics: e.topics})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	reply, err := cl.Do(t.Context(), "echo", []byte(`{"by":"client"}`), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// And one still pending when the new gateway starts.
	pending, err := cl.Submit(t.Context(), "quotes", []byte(`{}`), client.Options{Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	second := e.startGateway(t, nil)
	second.waitReady(t)
	for _, want := range []struct{ id, status string }{{id, "COMPLETE"}, {string(reply.CorrelationID), "COMPLETE"}} {
		res := do(t, "GET", second.url+"/v1/requests/"+want.id, nil, nil)
		wantStatus(t, res, http.StatusOK)
		var v client.ReplyView
		res.json(t, &v)
		if v.CorrelationID != want.id || v.Status != want.status {
			t.Errorf("reply %s", res.body)
		}
	}
	res = do(t, "GET", second.url+"/v1/requests/"+string(pending.ID), nil, nil)
	wantStatus(t, res, http.StatusAccepted)
	res = do(t, "GET", second.url+"/v1/requests/"+string(pending.ID)+"?wait=20s", nil, nil)
	wantStatus(t, res, http.StatusOK)

	// A window that ends before the first reply: unknown.
	short := e.startGateway(t, func(c *gateway.Config) { c.ReplyRetention = time.Millisecond })
	short.waitReady(t)
	time.Sleep(5 * time.Millisecond) // the window is 1ms: everything above is older
	res = do(t, "GET", short.url+"/v1/requests/"+id, nil, nil)
	wantStatus(t, res, http.StatusNotFound)
}

// TestRoutesList: GET /v1/routes describes the table.
func TestRoutesList(t *testing.T) {
	table, _ := routes.Parse([]byte(testRoutes))
	e := &env{cc: kafkaconfig.Client{Brokers: []string{"127.0.0.1:1"}}, topics: kafkaconfig.Topics{Prefix: "sg."}, table: table}
	s := e.startGateway(t, nil)
	res := do(t, "GET", s.url+"/v1/routes", nil, nil)
	wantStatus(t, res, http.StatusOK)
	var body struct{ Routes []gateway.RouteBody }
	res.json(t, &body)
	if len(body.Routes) != 2 {
		t.Fatalf("routes %s", res.body)
	}
	echo, quotes := body.Routes[0], body.Routes[1]
	if echo.Name != "echo" || echo.Mode != "split" || echo.Fanout != 2 || echo.MaxFanout != 8 || echo.TimeoutMS != 10000 ||
		echo.MaxTimeout != 60000 || echo.Requests != "/v1/routes/echo/requests" {
		t.Errorf("echo %+v", echo)
	}
	if quotes.Mode != "broadcast" || strings.Join(quotes.Recipients, ",") != "fast,slow,stuck" || quotes.Fanout != 0 {
		t.Errorf("quotes %+v", quotes)
	}
	res = do(t, "GET", s.url+"/v1/routes/quotes", nil, nil)
	wantStatus(t, res, http.StatusOK)
}

// TestShutdown: a caller waiting for a reply when the gateway stops gets a
// 202 with the Location at once, and Run returns.
func TestShutdown(t *testing.T) {
	e := newEnv(t)
	e.startPipeline(t)
	s := e.startGateway(t, nil)
	got := make(chan response, 1)
	go func() {
		req, _ := http.NewRequest("POST", s.url+"/v1/routes/quotes/requests?wait=50s&timeout=40s", strings.NewReader(`{}`))
		req.Header.Set(gateway.HeaderCorrelationID, "shutdown-1")
		res, err := httpClient.Do(req)
		if err != nil {
			got <- response{status: -1, body: []byte(err.Error())}
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		got <- response{status: res.StatusCode, header: res.Header, body: b}
	}()
	// Once the gateway knows the request, its POST is being handled: it
	// waits for "stuck", or soon will.
	deadline := time.Now().Add(20 * time.Second)
	for do(t, "GET", s.url+"/v1/requests/shutdown-1", nil, nil).status != http.StatusAccepted {
		if time.Now().After(deadline) {
			t.Fatal("the POST did not reach the gateway within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	if err := s.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown took %s", took)
	}
	res := <-got
	wantStatus(t, res, http.StatusAccepted)
	if res.header.Get("Location") == "" {
		t.Errorf("no Location on the answer cut by shutdown")
	}
}

// TestConcurrentPosts: many callers at once through one gateway each get
// their own reply.
func TestConcurrentPosts(t *testing.T) {
	e := newEnv(t)
	e.startPipeline(t)
	s := e.startGateway(t, nil)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", s.url+"/v1/routes/echo/requests?wait=30s&fanout=1", bytes.NewReader(fmt.Appendf(nil, `{"i":%d}`, i)))
			res, err := httpClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer res.Body.Close()
			var v client.ReplyView
			if err := json.NewDecoder(res.Body).Decode(&v); err != nil || res.StatusCode != 200 || string(v.Payload) != fmt.Sprintf(`[{"i":%d}]`, i) {
				errs <- fmt.Errorf("caller %d: %d %s (%v)", i, res.StatusCode, v.Payload, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestMetricsAndTrace: answers are counted by endpoint pattern and code,
// and a caller's traceparent travels on the request record.
func TestMetricsAndTrace(t *testing.T) {
	e := newEnv(t)
	e.startPipeline(t)
	reg := prometheus.NewRegistry()
	s := e.startGateway(t, func(c *gateway.Config) { c.Metrics = reg })
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	res := do(t, "POST", s.url+"/v1/routes/echo/requests?wait=20s", strings.NewReader(`{}`),
		map[string]string{"Content-Type": "application/json", "traceparent": tp})
	wantStatus(t, res, http.StatusOK)
	wantStatus(t, post(t, s.url+"/v1/routes/nope/requests", `{}`), http.StatusNotFound)
	wantStatus(t, do(t, "GET", s.url+"/nowhere", nil, nil), http.StatusNotFound)

	for _, c := range []struct{ endpoint, code string }{
		{"POST /v1/routes/{route}/requests", "200"},
		{"POST /v1/routes/{route}/requests", "404"},
		{"other", "404"},
	} {
		got := counter(t, reg, "scattergather_gateway_http_requests_total", "endpoint", c.endpoint, "code", c.code)
		if got != 1 {
			t.Errorf("requests_total{%s,%s} = %v, want 1", c.endpoint, c.code, got)
		}
	}

	// The request record carries the caller's traceparent.
	rec := e.requestRecord(t, res.header.Get(gateway.HeaderCorrelationID))
	if got := header(rec, "traceparent"); got != tp {
		t.Fatalf("request record traceparent %q, want the caller's %q (headers %v)", got, tp, rec.Headers)
	}
}

// requestRecord reads the requests topic from the start until the record
// of id, and returns it.
func (e *env) requestRecord(t *testing.T, id string) *kgo.Record {
	t.Helper()
	cl := e.cluster.Client(t, kgo.ConsumeTopics(e.topics.Requests()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		var found *kgo.Record
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if string(r.Key) == id {
				found = r
			}
		})
		if found != nil {
			return found
		}
	}
	t.Fatalf("request record %s not found", id)
	return nil
}

// header returns the value of r's header key; empty if it has none.
func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// counter returns the value of the counter name on reg whose labels
// include the given name, value pairs; 0 if there is none.
func counter(t *testing.T, reg *prometheus.Registry, name string, labelPairs ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labelPairs); i += 2 {
				if labels[labelPairs[i]] != labelPairs[i+1] {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestGatewaySpan: with a TracerProvider the gateway records a server span
// per submitted request, the child of the caller's traceparent, and the
// request record carries that span's context, so the scatterer's span is
// its child; the span names the route.
func TestGatewaySpan(t *testing.T) {
	e := newEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	s := e.startGateway(t, func(c *gateway.Config) { c.TracerProvider = tp })
	const caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	res := do(t, "POST", s.url+"/v1/routes/echo/requests", strings.NewReader(`{}`),
		map[string]string{"Content-Type": "application/json", "traceparent": caller})
	wantStatus(t, res, http.StatusAccepted)
	id := res.header.Get(gateway.HeaderCorrelationID)

	var span sdktrace.ReadOnlySpan
	for deadline := time.Now().Add(10 * time.Second); span == nil; time.Sleep(10 * time.Millisecond) {
		if ended := rec.Ended(); len(ended) > 0 {
			span = ended[0]
		} else if time.Now().After(deadline) {
			t.Fatal("no span ended")
		}
	}
	if got := span.SpanContext().TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("span trace id %s, want the caller's", got)
	}
	if got := span.Parent().SpanID().String(); got != "00f067aa0ba902b7" {
		t.Errorf("span parent %s, want the caller's span", got)
	}
	if span.SpanKind() != trace.SpanKindServer || span.Name() != "POST /v1/routes/{route}/requests" {
		t.Errorf("span %q of kind %v", span.Name(), span.SpanKind())
	}
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + span.SpanContext().SpanID().String() + "-01"
	if got := header(e.requestRecord(t, id), "traceparent"); got != want {
		t.Fatalf("request record traceparent %q, want the gateway span's %s", got, want)
	}
}
