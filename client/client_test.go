package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

func TestMain(m *testing.M) { testkafka.Main(m) }

// env is a broker with the pipeline's topics under the test's prefix.
type env struct {
	cluster *testkafka.Cluster
	cc      kafkaconfig.Client
	topics  kafkaconfig.Topics
}

const echoRoutes = `{"routes":[{"name":"echo","mode":"split","fanout":1,"timeout":"30s","merge":{"kind":"collect"}}]}`

func newEnv(t *testing.T) env {
	t.Helper()
	c := testkafka.New(t)
	e := env{cluster: c, cc: kafkaconfig.Client{Brokers: c.Brokers, ClientID: "client-test"}, topics: kafkaconfig.Topics{Prefix: c.Prefix}}
	layout := kafkaconfig.Layout{Partitions: 4, ResultPartitions: 4, ReplicationFactor: -1}
	if err := stack.EnsureTopics(t.Context(), e.cc, e.topics, layout, []string{"echo"}); err != nil {
		t.Fatalf("topics: %v", err)
	}
	return e
}

// startEcho runs the whole pipeline with one echo route (one part per
// request, so the reply's payload is [<request payload>]) until the test
// ends.
func (e env) startEcho(t *testing.T) {
	t.Helper()
	table, err := routes.Parse([]byte(echoRoutes))
	if err != nil {
		t.Fatal(err)
	}
	st, err := stack.New(t.Context(), stack.Config{
		Client: e.cc, Topics: e.topics, Routes: table, Guarantee: kafkaconfig.ExactlyOnce,
		Layout:     kafkaconfig.Layout{Partitions: 4, ResultPartitions: 4, ReplicationFactor: -1},
		Processors: []stack.ProcessorSpec{{Route: "echo", Handler: processor.Echo()}},
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
}

func (e env) newClient(t *testing.T, mod func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.Config{Client: e.cc, Topics: e.topics}
	if mod != nil {
		mod(&cfg)
	}
	cl, err := client.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// waitFor polls cond until it holds or d passes, and reports whether it held.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// goroutines returns the live goroutines grouped by where they were
// created and what they run: "created by X | top frame".
func goroutines() map[string]int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	out := map[string]int{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		lines := strings.Split(strings.TrimSpace(g), "\n")
		if len(lines) < 2 {
			continue
		}
		top, created := lines[1], ""
		for _, l := range lines {
			if strings.HasPrefix(l, "created by ") {
				created, _, _ = strings.Cut(strings.TrimPrefix(l, "created by "), " in goroutine")
			}
		}
		top, _, _ = strings.Cut(top, "(")
		out[created+" | "+top]++
	}
	return out
}

// idleGoroutines is goroutines at rest: of each kind the most seen in five
// samples 50ms apart. A role's hop runs a goroutine beside each poll (to
// wake it), so one caught between two polls, in a batch, is one fewer than
// at rest: a baseline taken then makes the test see a leak of one that is
// not there (CI saw "+1 (*Hop).poll" once).
func idleGoroutines() map[string]int {
	out := goroutines()
	for range 4 {
		time.Sleep(50 * time.Millisecond)
		for k, v := range goroutines() {
			out[k] = max(out[k], v)
		}
	}
	return out
}

// kafkaSlack is how many more franz-go goroutines (kgo's fetch loops and
// connection readers, kfake's per-connection goroutines) may be alive after
// the requests than before: they come and go with fetch sessions and
// connections, whatever the client does. A leak per request would show as
// hundreds.
const kafkaSlack = 10

// settleGoroutines waits until the goroutines are back to baseline: no more
// of any kind outside franz-go, at most kafkaSlack more inside it. It fails
// the test naming the kinds that grew.
func settleGoroutines(t *testing.T, baseline map[string]int) {
	t.Helper()
	count := func(m map[string]int) (ours, kafka int) {
		for k, v := range m {
			if strings.Contains(k, "github.com/twmb/franz-go/") {
				kafka += v
			} else {
				ours += v
			}
		}
		return ours, kafka
	}
	bOurs, bKafka := count(baseline)
	var now map[string]int
	settled := waitFor(10*time.Second, func() bool {
		now = goroutines()
		ours, kafka := count(now)
		return ours <= bOurs && kafka <= bKafka+kafkaSlack
	})
	if settled {
		return
	}
	var grew []string
	for k, v := range now {
		if v > baseline[k] {
			grew = append(grew, fmt.Sprintf("%+d %s", v-baseline[k], k))
		}
	}
	ours, kafka := count(now)
	t.Fatalf("goroutines: %d outside franz-go (baseline %d), %d in it (baseline %d + %d); grown:\n%s",
		ours, bOurs, kafka, bKafka, kafkaSlack, strings.Join(grew, "\n"))
}

func echoPayload(tb testing.TB, r schemas.Reply) map[string]any {
	tb.Helper()
	var parts []map[string]any
	if err := json.Unmarshal(r.Payload, &parts); err != nil || len(parts) != 1 {
		tb.Fatalf("reply %s: payload %q is not a one-element array (%v)", r.CorrelationID, r.Payload, err)
	}
	return parts[0]
}

// TestConcurrentRequests: 1,000 callers at once, through one client and
// through four, each get their own reply; afterwards no waiter is left and
// the goroutine count is back to where it was before the requests.
func TestConcurrentRequests(t *testing.T) {
	for _, clients := range []int{1, 4} {
		t.Run(fmt.Sprintf("%d clients", clients), func(t *testing.T) {
			e := newEnv(t)
			e.startEcho(t)
			cls := make([]*client.Client, clients)
			for i := range cls {
				cls[i] = e.newClient(t, func(c *client.Config) { c.DefaultTimeout = 30 * time.Second })
			}
			// Warm up: connections, metadata and the roles' batches exist
			// before the baseline is taken, so that what remains after is
			// what the requests left behind.
			run := func(n int) []error {
				var wg sync.WaitGroup
				errs := make(chan error, n)
				for i := range n {
					wg.Go(func() {
						cl := cls[i%clients]
						nonce := client.NewCorrelationID()
						payload := fmt.Appendf(nil, `{"i":%d,"nonce":%q}`, i, nonce)
						reply, err := cl.Do(t.Context(), "echo", payload, client.Options{})
						if err != nil {
							errs <- fmt.Errorf("caller %d: %w", i, err)
							return
						}
						got := echoPayload(t, reply)
						if reply.Status != schemas.ReplyComplete || got["i"] != float64(i) || got["nonce"] != string(nonce) {
							errs <- fmt.Errorf("caller %d got someone else's or a bad reply: %s %s", i, reply.Status, reply.Payload)
						}
					})
				}
				wg.Wait()
				close(errs)
				var out []error
				for err := range errs {
					out = append(out, err)
				}
				return out
			}
			for _, err := range run(200) {
				t.Fatalf("warm-up: %v", err)
			}
			for _, cl := range cls {
				waitFor(5*time.Second, func() bool { return cl.InFlight() == 0 })
			}
			baseline := idleGoroutines()

			const n = 1000
			start := time.Now()
			for _, err := range run(n) {
				t.Error(err)
			}
			t.Logf("%d requests through %d client(s) in %s (%s broker)", n, clients, time.Since(start).Round(time.Millisecond), e.cluster.Kind)
			for i, cl := range cls {
				if got := cl.InFlight(); got != 0 {
					t.Errorf("client %d: %d waiters left", i, got)
				}
			}
			settleGoroutines(t, baseline)
		})
	}
}

// TestReplyWrittenImmediately: the reply consumer is positioned before New
// returns, so a reply written the instant a request is submitted (before
// the reply consumer can have fetched anything) is still read. A consumer
// that resolved "latest" lazily would miss it.
func TestReplyWrittenImmediately(t *testing.T) {
	e := newEnv(t)
	responder := e.cluster.Client(t, kgo.DefaultProduceTopic(e.topics.Replies()))
	for i := range 20 {
		cl := e.newClient(t, func(c *client.Config) { c.DefaultTimeout = 5 * time.Second; c.Grace = time.Second })
		p, err := cl.Submit(t.Context(), "echo", []byte(`{}`), client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		v, err := schemas.EncodeReply(schemas.Reply{CorrelationID: p.ID, Route: "echo", Status: schemas.ReplyComplete,
			Payload: fmt.Appendf(nil, "[%d]", i), SubmittedAt: time.Now(), CompletedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		if err := responder.ProduceSync(t.Context(), &kgo.Record{Key: []byte(p.ID), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		reply, err := p.Await(t.Context())
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if string(reply.Payload) != fmt.Sprintf("[%d]", i) {
			t.Fatalf("round %d: payload %s", i, reply.Payload)
		}
		cl.Close()
	}
}

// TestNoReply covers the ways a wait ends without a reply: the request's
// timeout plus grace (ErrTimeout), the caller's context (its error, not
// ErrTimeout), and Close (ErrClosed). No waiter outlives its wait.
func TestNoReply(t *testing.T) {
	e := newEnv(t) // topics only: nothing answers
	short := func(c *client.Config) { c.DefaultTimeout = 100 * time.Millisecond; c.Grace = 100 * time.Millisecond }

	t.Run("1000 timeouts", func(t *testing.T) {
		cl := e.newClient(t, short)
		if _, err := cl.Do(t.Context(), "echo", nil, client.Options{}); !errors.Is(err, client.ErrTimeout) {
			t.Fatalf("warm-up: %v, want ErrTimeout", err)
		}
		baseline := idleGoroutines()
		var wg sync.WaitGroup
		errs := make(chan error, 1000)
		start := time.Now()
		for range 1000 {
			wg.Go(func() {
				_, err := cl.Do(t.Context(), "echo", nil, client.Options{})
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if !errors.Is(err, client.ErrTimeout) {
				t.Fatalf("got %v, want ErrTimeout", err)
			}
			if !strings.Contains(err.Error(), "timeout 100ms plus grace 100ms passed") || !strings.Contains(err.Error(), "route echo") {
				t.Fatalf("timeout error does not say what passed: %v", err)
			}
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("1000 timeouts of 200ms took %s", took)
		}
		if n := cl.InFlight(); n != 0 {
			t.Errorf("%d waiters left after timeouts", n)
		}
		settleGoroutines(t, baseline)
	})

	t.Run("context cancelled", func(t *testing.T) {
		cl := e.newClient(t, nil)
		ctx, cancel := context.WithCancel(t.Context())
		p, err := cl.Submit(ctx, "echo", nil, client.Options{Timeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err = p.Await(ctx)
		if !errors.Is(err, context.Canceled) || errors.Is(err, client.ErrTimeout) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		if n := cl.InFlight(); n != 0 {
			t.Errorf("%d waiters left after cancel", n)
		}
	})

	t.Run("context deadline before the request's", func(t *testing.T) {
		cl := e.newClient(t, nil)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := cl.Do(ctx, "echo", nil, client.Options{Timeout: time.Minute})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want context.DeadlineExceeded", err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("returned after %s", took)
		}
		if n := cl.InFlight(); n != 0 {
			t.Errorf("%d waiters left", n)
		}
	})

	t.Run("never awaited", func(t *testing.T) {
		cl := e.newClient(t, short)
		p, err := cl.Submit(t.Context(), "echo", nil, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !waitFor(10*time.Second, func() bool { return cl.InFlight() == 0 }) {
			t.Fatalf("an abandoned request's waiter was not dropped after its deadline")
		}
		if _, err := p.Await(t.Context()); !errors.Is(err, client.ErrTimeout) {
			t.Fatalf("late Await: %v, want ErrTimeout", err)
		}
	})

	t.Run("closed", func(t *testing.T) {
		cl := e.newClient(t, nil)
		p, err := cl.Submit(t.Context(), "echo", nil, client.Options{Timeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(50*time.Millisecond, cl.Close)
		if _, err := p.Await(t.Context()); !errors.Is(err, client.ErrClosed) {
			t.Fatalf("Await on close: %v, want ErrClosed", err)
		}
		if _, err := cl.Submit(t.Context(), "echo", nil, client.Options{}); !errors.Is(err, client.ErrClosed) {
			t.Fatalf("Submit after close: %v, want ErrClosed", err)
		}
	})

	t.Run("duplicate correlation id", func(t *testing.T) {
		cl := e.newClient(t, nil)
		opts := client.Options{CorrelationID: "dup-1", Timeout: time.Minute}
		if _, err := cl.Submit(t.Context(), "echo", nil, opts); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Submit(t.Context(), "echo", nil, opts); err == nil || !strings.Contains(err.Error(), "already in flight") {
			t.Fatalf("second submit: %v, want an in-flight error", err)
		}
	})
}

// TestAwaitTwice: a reply once received is returned by every later Await.
func TestAwaitTwice(t *testing.T) {
	e := newEnv(t)
	e.startEcho(t)
	cl := e.newClient(t, nil)
	p, err := cl.Submit(t.Context(), "echo", []byte(`{"x":1}`), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := p.Await(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Await(t.Context())
	if err != nil || b.CorrelationID != a.CorrelationID || string(b.Payload) != string(a.Payload) {
		t.Fatalf("second Await: %v %+v", err, b)
	}
}

// TestOwnReplyTopic: a client with its own reply topic gets its replies
// there and none on the shared replies topic, next to a client on the
// shared topic.
func TestOwnReplyTopic(t *testing.T) {
	e := newEnv(t)
	e.startEcho(t)
	own := e.topics.Replies() + ".instance-a"
	a := e.newClient(t, func(c *client.Config) { c.ReplyTopic = own; c.CreateReplyTopic = true })
	b := e.newClient(t, nil)
	var ids []schemas.CorrelationID
	for i := range 5 {
		ra, err := a.Do(t.Context(), "echo", fmt.Appendf(nil, `{"a":%d}`, i), client.Options{})
		if err != nil {
			t.Fatalf("own topic: %v", err)
		}
		if got := echoPayload(t, ra); got["a"] != float64(i) {
			t.Fatalf("own topic: got %v", got)
		}
		ids = append(ids, ra.CorrelationID)
		if _, err := b.Do(t.Context(), "echo", fmt.Appendf(nil, `{"b":%d}`, i), client.Options{}); err != nil {
			t.Fatalf("shared topic: %v", err)
		}
	}
	// The shared topic holds b's 5 replies and none of a's.
	cl := e.cluster.Client(t, kgo.ConsumeTopics(e.topics.Replies()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	seen := 0
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			seen++
			for _, id := range ids {
				if string(r.Key) == string(id) {
					t.Errorf("reply %s for the own-topic client is on the shared topic", id)
				}
			}
		})
	}
	if seen != 5 {
		t.Errorf("shared replies topic has %d records, want 5", seen)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  client.Config
		want []string
	}{
		{"defaults", client.Config{Client: kafkaconfig.Client{Brokers: []string{"b:9092"}}}, nil},
		{"everything wrong", client.Config{Topics: kafkaconfig.Topics{Prefix: "p."}, ReplyTopic: "other", DefaultTimeout: -1, Grace: -1},
			[]string{"brokers", `reply topic "other" must start with "p.replies"`, "default timeout -1ns is negative", "grace -1ns is negative"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if tc.cfg.ReplyTopic != "" || tc.cfg.DefaultTimeout != 0 || tc.cfg.Grace != 0 {
					t.Fatalf("Validate changed the config: %+v", tc.cfg)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate: nil error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestNewWithoutReplyTopic: a reply topic that does not exist is waited
// for (a broker creates topics asynchronously), then a clear error.
func TestNewWithoutReplyTopic(t *testing.T) {
	c := testkafka.New(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err := client.New(ctx, client.Config{Client: kafkaconfig.Client{Brokers: c.Brokers}, Topics: kafkaconfig.Topics{Prefix: c.Prefix}})
	if err == nil || !strings.Contains(err.Error(), c.Prefix+"replies") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("New without the topic: %v", err)
	}
}

// TestRouteTimeout: with Options.RouteTimeout the request carries no
// timeout (the scatterer applies its route's), and Await waits for
// Options.Timeout plus the grace; without it the request carries Timeout.
func TestRouteTimeout(t *testing.T) {
	e := newEnv(t)
	c := e.newClient(t, func(cfg *client.Config) { cfg.Grace = 100 * time.Millisecond })
	route, _ := c.Submit(t.Context(), "echo", []byte(`{}`), client.Options{RouteTimeout: true, Timeout: 300 * time.Millisecond})
	own, _ := c.Submit(t.Context(), "echo", []byte(`{}`), client.Options{Timeout: 2 * time.Second})
	if route == nil || own == nil {
		t.Fatal("submit failed")
	}
	if d := time.Until(route.Deadline()); d > 400*time.Millisecond || d < 0 {
		t.Fatalf("Await gives up in %s, want within the 300ms wait plus the 100ms grace", d)
	}
	sent := map[schemas.CorrelationID]time.Duration{}
	for _, r := range e.readRequests(t, 2) {
		req, err := schemas.DecodeRequest(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		sent[req.CorrelationID] = req.Timeout
	}
	if sent[route.ID] != 0 || sent[own.ID] != 2*time.Second {
		t.Fatalf("timeouts sent: route's %s (want 0), own %s (want 2s)", sent[route.ID], sent[own.ID])
	}
}

// TestSubmitCarriesTheCallersTrace: a span context in Submit's ctx (the
// calling service's OpenTelemetry span) is written as the request's
// traceparent, so the scatterer's span continues the caller's trace; a ctx
// without one writes no traceparent.
func TestSubmitCarriesTheCallersTrace(t *testing.T) {
	e := newEnv(t)
	c := e.newClient(t, func(*client.Config) {})
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	traced, err := c.Submit(trace.ContextWithSpanContext(t.Context(), sc), "echo", []byte(`{}`), client.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := c.Submit(t.Context(), "echo", []byte(`{}`), client.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range e.readRequests(t, 2) {
		got[string(r.Key)] = ""
		for _, h := range r.Headers {
			if h.Key == "traceparent" {
				got[string(r.Key)] = string(h.Value)
			}
		}
	}
	if want := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"; got[string(traced.ID)] != want {
		t.Errorf("traceparent of the traced request %q, want %q", got[string(traced.ID)], want)
	}
	if got[string(plain.ID)] != "" {
		t.Errorf("traceparent of a request without a span %q, want none", got[string(plain.ID)])
	}
}

// readRequests reads the first n records of the requests topic.
func (e *env) readRequests(t *testing.T, n int) []*kgo.Record {
	t.Helper()
	rd := e.cluster.Client(t, kgo.ConsumeTopics(e.topics.Requests()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var recs []*kgo.Record
	for len(recs) < n {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		fs := rd.PollFetches(ctx)
		timedOut := ctx.Err() != nil
		cancel()
		if timedOut {
			t.Fatalf("read %d of %d requests", len(recs), n)
		}
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	return recs
}
