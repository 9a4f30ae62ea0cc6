package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

func TestMain(m *testing.M) { testkafka.Main(m) }

// pipeline is a running stack on its own topic prefix.
type pipeline struct {
	cluster *testkafka.Cluster
	cc      kafkaconfig.Client
	topics  kafkaconfig.Topics
	stack   *stack.Stack
	client  *client.Client
	stop    context.CancelFunc
	done    chan error
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("SG_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// startPipeline builds the stack of cfg on c (Client, Topics, Layout and,
// unless set, Logger are filled in; cfg.Client.Hooks are kept) and runs it until the
// test ends. A cfg.Client with Brokers reaches c through those, with its
// Security: a secured listener of the same cluster (security_test.go).
func startPipeline(t *testing.T, c *testkafka.Cluster, cfg stack.Config) *pipeline {
	t.Helper()
	cc := kafkaconfig.Client{Brokers: c.Brokers, ClientID: "e2e", Hooks: cfg.Client.Hooks}
	if len(cfg.Client.Brokers) > 0 {
		cc.Brokers, cc.Security = cfg.Client.Brokers, cfg.Client.Security
	}
	cfg.Client = cc
	cfg.Topics = kafkaconfig.Topics{Prefix: c.Prefix}
	if cfg.Layout.Partitions == 0 {
		cfg.Layout = kafkaconfig.Layout{Partitions: 4, ResultPartitions: 4, ReplicationFactor: -1}
	}
	if cfg.Guarantee == "" {
		cfg.Guarantee = kafkaconfig.ExactlyOnce
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	ctx := t.Context()
	st, err := stack.New(ctx, cfg)
	if err != nil {
		t.Fatalf("build stack: %v", err)
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	p := &pipeline{cluster: c, cc: cc, topics: cfg.Topics, stack: st, stop: stop, done: make(chan error, 1)}
	go func() { p.done <- st.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("stack: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("stack did not stop within 30s")
		}
	})
	waitReady(t, st)
	cl, err := client.New(ctx, client.Config{Client: cc, Topics: cfg.Topics, DefaultTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(cl.Close)
	p.client = cl
	return p
}

// waitReady waits until every role of st has joined its group and holds
// its assignment, as a deployment waits on /readyz before sending traffic.
// Tests with short request timeouts would otherwise race the first group
// join, which on a real broker can take seconds.
func waitReady(t *testing.T, st *stack.Stack) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pending []string
		for _, c := range st.Checks() {
			if err := c.Ready(); err != nil {
				pending = append(pending, fmt.Sprintf("%s: %v", c.Name, err))
			}
		}
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stack not ready after 30s: %s", strings.Join(pending, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitEchoes waits for the reply of each pending request i sent with
// payload "i" on a split route of the echo handler, and checks that it is
// COMPLETE with the echo of every part: ["i","i",...], fanout times.
func awaitEchoes(t *testing.T, pending []*client.Pending, fanout int) {
	t.Helper()
	for i, pp := range pending {
		reply, err := pp.Await(t.Context())
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		want := "[" + strings.TrimSuffix(strings.Repeat(fmt.Sprintf(`"%d",`, i), fanout), ",") + "]"
		if reply.Status != schemas.ReplyComplete || string(reply.Payload) != want {
			t.Fatalf("request %d: %s %s (error %q), want COMPLETE %s", i, reply.Status, reply.Payload, reply.Error, want)
		}
	}
}

// table parses a route table literal.
func table(t testing.TB, js string) *routes.Table {
	t.Helper()
	tb, err := routes.Parse([]byte(js))
	if err != nil {
		t.Fatalf("routes: %v", err)
	}
	return tb
}

// readAll reads every record of topic (read_committed) from the start until
// it has seen want records or the timeout passes.
func readAll(t testing.TB, c *testkafka.Cluster, topic string, want int, timeout time.Duration) []*kgo.Record {
	t.Helper()
	cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

// replies decodes every reply on the pipeline's replies topic, waiting for
// at least want of them, then a settle period for any extra.
func (p *pipeline) replies(t testing.TB, want int, settle time.Duration) map[schemas.CorrelationID][]schemas.Reply {
	t.Helper()
	recs := readAll(t, p.cluster, p.topics.Replies(), want, 30*time.Second)
	if settle > 0 {
		recs = readAll(t, p.cluster, p.topics.Replies(), len(recs)+1, settle)
	}
	out := map[schemas.CorrelationID][]schemas.Reply{}
	for _, r := range recs {
		reply, err := schemas.DecodeReply(r.Value)
		if err != nil {
			t.Fatalf("decode reply: %v", err)
		}
		out[reply.CorrelationID] = append(out[reply.CorrelationID], reply)
	}
	return out
}

func isTimeout(err error) bool { return errors.Is(err, client.ErrTimeout) }

// waitFor polls cond until it holds or 10s pass.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return // the caller's assertion reports what is wrong
		}
		time.Sleep(10 * time.Millisecond)
	}
}
