// Package client is the request-reply side of scattergather for Go services:
// it produces a Request and waits for its one Reply.
//
// Usage:
//
//	c, err := client.New(ctx, client.Config{
//		Client: kafkaconfig.Client{Brokers: []string{"127.0.0.1:9092"}},
//		Topics: kafkaconfig.Topics{Prefix: "sg."},
//	})
//	if err != nil { ... }
//	defer c.Close()
//	reply, err := c.Do(ctx, "search", []byte(`{"query":"red shoes"}`), client.Options{})
//	if errors.Is(err, client.ErrTimeout) { ... } // no reply by timeout + grace
//
// # How replies find their caller
//
// Each Client reads its reply topic without a consumer group: a group would
// split the reply partitions between the instances of a service, and a reply
// would reach an instance that is not waiting for it. Instead every Client
// is assigned every partition of the reply topic, positioned before New
// returns at the end each partition had then, and hands each reply to the
// waiter registered under its correlation id (the record key); replies for
// other clients are skipped without being decoded. Because the positions are
// fixed before the first request can be sent, no reply is lost to the
// "auto.offset.reset=latest" race of a consumer that resolves its position
// lazily (a known failure of Spring Kafka's ReplyingKafkaTemplate). Partitions
// added to the reply topic after New are not read.
//
// Any number of Clients may run at once, in one process or many. Each reads
// every reply on its topic, so the reply traffic a service reads grows with
// its instance count; that is fine at moderate rates. At high rates give each
// instance its own reply topic (Config.ReplyTopic, e.g. "sg.replies.<pod>",
// created with Config.CreateReplyTopic): the request carries it as reply-to
// and the aggregator answers there, so an instance reads only its own
// replies. Use a stable name per instance so that a restarted instance
// reuses its topic rather than leaving one behind.
//
// # Deadlines, cancellation and resources
//
// Await returns when the reply comes, when its ctx ends (ctx.Err()
// wrapped), or when the request's timeout plus Config.Grace has passed
// ([ErrTimeout] wrapped): a request whose reply never comes is an error, not
// a hang. A request costs one map entry and one buffered channel, no
// goroutine; the entry is removed when the reply is handed over, when Await
// gives up, and, for a Pending that is never awaited, by the reply loop once
// its deadline has passed. [Client.InFlight] counts the entries.
//
// A Client is safe for concurrent use. It owns one goroutine, the reply
// loop, started by New and stopped by Close.
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/tracing"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// ErrTimeout is returned (wrapped) by Await and Do when no reply came within
// the request's timeout plus Config.Grace. The pipeline answers every request
// by its timeout, so this means a role is down or far behind.
var ErrTimeout = errors.New("no reply in time")

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("client closed")

// Config configures a Client.
type Config struct {
	Client kafkaconfig.Client
	Topics kafkaconfig.Topics
	// ReplyTopic is where this client's replies go; default
	// Topics.Replies(). Another topic must start with Topics.Replies() (the
	// aggregator answers only there), e.g. "sg.replies.orders-7", and exist,
	// unless CreateReplyTopic is set.
	ReplyTopic string
	// CreateReplyTopic creates ReplyTopic with one partition (and the
	// broker's default replication) when it does not exist.
	CreateReplyTopic bool
	// DefaultTimeout is used when Options.Timeout is zero; default 5s. It
	// is sent with the request so the pipeline answers by then.
	DefaultTimeout time.Duration
	// Grace is how long past the request's timeout Await waits for the
	// reply before giving up with ErrTimeout; default 2s.
	Grace  time.Duration
	Logger *slog.Logger
}

// setDefaults returns c with its empty fields filled in.
func (c Config) setDefaults() Config {
	if c.Topics.Prefix == "" {
		c.Topics.Prefix = kafkaconfig.DefaultPrefix
	}
	if c.ReplyTopic == "" {
		c.ReplyTopic = c.Topics.Replies()
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = 5 * time.Second
	}
	if c.Grace == 0 {
		c.Grace = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every problem with c at once; a zero field that takes a
// default is not a problem. It changes nothing.
func (c Config) Validate() error {
	var errs []error
	if err := c.Client.Validate(); err != nil {
		errs = append(errs, err)
	}
	d := c.setDefaults() // the reply topic is checked against the prefix it will have
	if !strings.HasPrefix(d.ReplyTopic, d.Topics.Replies()) {
		errs = append(errs, fmt.Errorf("reply topic %q must start with %q", d.ReplyTopic, d.Topics.Replies()))
	}
	if c.DefaultTimeout < 0 {
		errs = append(errs, fmt.Errorf("default timeout %s is negative", c.DefaultTimeout))
	}
	if c.Grace < 0 {
		errs = append(errs, fmt.Errorf("grace %s is negative", c.Grace))
	}
	return errors.Join(errs...)
}

// Options are per request.
type Options struct {
	// Timeout of the request; zero takes Config.DefaultTimeout. The
	// pipeline answers by then (PARTIAL or FAILED if parts are missing).
	Timeout time.Duration
	// RouteTimeout sends the request without a timeout, so that its
	// route's applies (the route table's timeout, default 5s, which the
	// client does not know). Timeout (or Config.DefaultTimeout) is then
	// only how long Await waits for the reply, plus Config.Grace: make it
	// at least the route's.
	RouteTimeout bool
	// Fanout asks a split route for this many parts; zero takes the route's.
	Fanout int
	// ContentType of the payload; default application/json.
	ContentType string
	// Headers travel with the request into every task.
	Headers map[string]string
	// CorrelationID to use; empty generates one. It must not be in flight
	// on this client already.
	CorrelationID schemas.CorrelationID
}

// Client sends requests and waits for their replies. Safe for concurrent use.
type Client struct {
	cfg      Config
	producer *kgo.Client
	replies  *kgo.Client

	mu      sync.Mutex
	waiters map[schemas.CorrelationID]*waiter
	closed  bool

	stop context.CancelFunc
	done chan struct{} // closed when the reply loop exits
}

type waiter struct {
	ch       chan schemas.Reply // buffered 1: the reply loop never blocks on it
	deadline time.Time
}

// sweepEvery is how often the reply loop drops waiters past their deadline
// (a Pending that nobody awaits).
const sweepEvery = time.Second

// New connects, positions the reply consumer at the end of the reply topic,
// and starts reading replies. The reply loop runs until Close. ctx bounds
// only the setup.
func New(ctx context.Context, cfg Config) (*Client, error) {
	cfg = cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	start, err := replyOffsets(ctx, cfg)
	if err != nil {
		return nil, err
	}
	producer, err := kafka.NewClient(cfg.Client)
	if err != nil {
		return nil, err
	}
	// Explicit partitions at explicit offsets: nothing is resolved lazily,
	// so a reply written the instant after New returns is read.
	replies, err := kafka.NewClient(cfg.Client,
		kgo.ConsumePartitions(start),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	if err != nil {
		producer.Close()
		return nil, err
	}
	loopCtx, stop := context.WithCancel(context.Background())
	c := &Client{
		cfg:      cfg,
		producer: producer,
		replies:  replies,
		waiters:  map[schemas.CorrelationID]*waiter{},
		stop:     stop,
		done:     make(chan struct{}),
	}
	go c.readReplies(loopCtx)
	return c, nil
}

// setupWait bounds how long New waits for a reply topic that was just
// created to be served: a broker creates topics asynchronously.
const setupWait = 10 * time.Second

var errNoPartitions = errors.New("no partitions")

// replyOffsets creates the reply topic if asked to and returns the end
// offset of each of its partitions. It retries "unknown topic" and "no
// leader" answers for up to setupWait (or until ctx ends).
func replyOffsets(ctx context.Context, cfg Config) (map[string]map[int32]kgo.Offset, error) {
	// A client of its own, whose metadata is not cached for the default
	// 5s, so a retry sees a topic that appeared meanwhile.
	cl, err := kafka.NewClient(cfg.Client, kgo.MetadataMinAge(100*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if cfg.CreateReplyTopic {
		if err := createTopic(ctx, adm, cfg.ReplyTopic); err != nil {
			return nil, err
		}
	}
	wait := 100 * time.Millisecond
	giveUp := time.Now().Add(setupWait)
	for {
		ends, err := adm.ListEndOffsets(ctx, cfg.ReplyTopic)
		if err == nil {
			err = ends.Error()
		}
		if err == nil {
			start := map[string]map[int32]kgo.Offset{cfg.ReplyTopic: {}}
			ends.Each(func(o kadm.ListedOffset) {
				start[o.Topic][o.Partition] = kgo.NewOffset().At(o.Offset)
			})
			if len(start[cfg.ReplyTopic]) > 0 {
				return start, nil
			}
			err = errNoPartitions
		}
		retriable := errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.LeaderNotAvailable) ||
			errors.Is(err, kerr.NotLeaderForPartition) || errors.Is(err, errNoPartitions)
		if !retriable || time.Now().Add(wait).After(giveUp) {
			return nil, fmt.Errorf("client: find the end of reply topic %s (does it exist?): %w", cfg.ReplyTopic, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("client: find the end of reply topic %s: %w (last: %v)", cfg.ReplyTopic, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// createTopic creates topic with one partition unless it exists.
func createTopic(ctx context.Context, adm *kadm.Client, topic string) error {
	resp, err := adm.CreateTopic(ctx, 1, -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("client: create reply topic %s: %w", topic, err)
	}
	return nil
}

// readReplies hands each reply to its waiter and drops waiters nobody
// awaits; it exits when Close cancels ctx.
func (c *Client) readReplies(ctx context.Context) {
	defer close(c.done)
	lastSweep := time.Now()
	for {
		// Bounded, so that the sweep runs also when no reply comes.
		pctx, cancel := context.WithTimeout(ctx, sweepEvery)
		fetches := c.replies.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches = dropDeadlineErrors(fetches)
		fetches.EachError(func(t string, p int32, err error) {
			c.cfg.Logger.Warn("reply fetch error", "topic", t, "partition", p, "err", err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			id := schemas.CorrelationID(r.Key)
			c.mu.Lock()
			w, ok := c.waiters[id]
			if ok {
				delete(c.waiters, id)
			}
			c.mu.Unlock()
			if !ok {
				return
			}
			reply, err := schemas.DecodeReply(r.Value)
			if err != nil {
				c.cfg.Logger.Warn("undecodable reply", "correlation_id", id, "err", err)
				reply = schemas.Reply{CorrelationID: id, Status: schemas.ReplyFailed, Error: "undecodable reply: " + err.Error()}
			}
			w.ch <- reply
		})
		if now := time.Now(); now.Sub(lastSweep) >= sweepEvery {
			lastSweep = now
			c.sweep(now)
		}
	}
}

// dropDeadlineErrors removes the error a poll reports when its bounded
// context ends without records.
func dropDeadlineErrors(fs kgo.Fetches) kgo.Fetches {
	if len(fs) == 1 && len(fs[0].Topics) == 1 && len(fs[0].Topics[0].Partitions) == 1 {
		if err := fs[0].Topics[0].Partitions[0].Err; errors.Is(err, context.DeadlineExceeded) {
			return nil
		}
	}
	return fs
}

// sweep drops the waiters whose deadline has passed. An Await still
// running on one of them times out on its own timer.
func (c *Client) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, w := range c.waiters {
		if now.After(w.deadline) {
			delete(c.waiters, id)
		}
	}
}

// Pending is a submitted request whose reply has not been awaited yet.
type Pending struct {
	ID      schemas.CorrelationID
	Route   schemas.Route
	Timeout time.Duration // the request's timeout, or with RouteTimeout how long Await waits
	c       *Client
	w       *waiter

	mu    sync.Mutex // guards reply, got
	reply schemas.Reply
	got   bool
}

// Submit produces a request and returns without waiting for the reply. ctx
// bounds the produce only. The reply is registered for before the request
// is produced, so it cannot arrive unseen.
func (c *Client) Submit(ctx context.Context, route schemas.Route, payload []byte, opts Options) (*Pending, error) {
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = c.cfg.DefaultTimeout
	}
	if timeout < 0 {
		return nil, fmt.Errorf("submit to %s: timeout %s is negative", route, timeout)
	}
	id := opts.CorrelationID
	if id == "" {
		id = NewCorrelationID()
	}
	sent := timeout
	if opts.RouteTimeout {
		sent = 0 // the scatterer takes the route's
	}
	ct := opts.ContentType
	if ct == "" {
		ct = "application/json"
	}
	now := time.Now()
	req := schemas.Request{
		CorrelationID: id,
		Route:         route,
		Payload:       payload,
		ContentType:   ct,
		Timeout:       sent,
		Headers:       opts.Headers,
		SubmittedAt:   now,
	}
	if opts.Fanout != 0 {
		n := opts.Fanout
		req.Fanout = &n
	}
	if c.cfg.ReplyTopic != c.cfg.Topics.Replies() {
		req.ReplyTo = c.cfg.ReplyTopic
	}
	v, err := schemas.EncodeRequest(req)
	if err != nil {
		return nil, fmt.Errorf("submit %s: %w", id, err)
	}
	w := &waiter{ch: make(chan schemas.Reply, 1), deadline: now.Add(timeout + c.cfg.Grace)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if _, dup := c.waiters[id]; dup {
		c.mu.Unlock()
		return nil, fmt.Errorf("submit %s: correlation id already in flight", id)
	}
	c.waiters[id] = w
	c.mu.Unlock()

	rec := &kgo.Record{Topic: c.cfg.Topics.Requests(), Key: []byte(id), Value: v}
	// The caller's trace goes on through the pipeline: a span in ctx (an
	// OpenTelemetry span of the service that calls) becomes the parent of
	// the scatterer's span, as a traceparent from an HTTP caller does
	// through the gateway.
	tracing.Inject(ctx, rec)
	if err := c.producer.ProduceSync(ctx, rec).FirstErr(); err != nil {
		c.forget(id, w)
		return nil, fmt.Errorf("submit %s: %w", id, err)
	}
	return &Pending{ID: id, Route: route, Timeout: timeout, c: c, w: w}, nil
}

// Deadline is when Await gives up: the request's timeout plus the grace.
func (p *Pending) Deadline() time.Time { return p.w.deadline }

// Await waits for the reply of p until ctx is done, the request's timeout
// plus the grace period passes (ErrTimeout), or the Client is closed
// (ErrClosed). Once it has returned the reply, later calls return it again.
func (p *Pending) Await(ctx context.Context) (schemas.Reply, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.got {
		return p.reply, nil
	}
	t := time.NewTimer(time.Until(p.w.deadline))
	defer t.Stop()
	select {
	case r := <-p.w.ch:
		p.reply, p.got = r, true
		return r, nil
	case <-ctx.Done():
		p.c.forget(p.ID, p.w)
		return schemas.Reply{}, fmt.Errorf("await %s: %w", p.ID, ctx.Err())
	case <-t.C:
		p.c.forget(p.ID, p.w)
		return schemas.Reply{}, fmt.Errorf("await %s on route %s: %w: timeout %s plus grace %s passed", p.ID, p.Route, ErrTimeout, p.Timeout, p.c.cfg.Grace)
	case <-p.c.done:
		return schemas.Reply{}, fmt.Errorf("await %s: %w", p.ID, ErrClosed)
	}
}

// Do submits a request and waits for its reply; see Submit and Await.
func (c *Client) Do(ctx context.Context, route schemas.Route, payload []byte, opts Options) (schemas.Reply, error) {
	p, err := c.Submit(ctx, route, payload, opts)
	if err != nil {
		return schemas.Reply{}, err
	}
	return p.Await(ctx)
}

// forget drops the waiter of id if it is still w (the id may have been
// reused by a later Submit once w was gone).
func (c *Client) forget(id schemas.CorrelationID, w *waiter) {
	c.mu.Lock()
	if c.waiters[id] == w {
		delete(c.waiters, id)
	}
	c.mu.Unlock()
}

// InFlight returns the number of requests waiting for a reply.
func (c *Client) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// Close stops the reply loop and closes both Kafka clients. Pending Awaits
// return ErrClosed. Close is idempotent.
func (c *Client) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.waiters = map[schemas.CorrelationID]*waiter{}
	c.mu.Unlock()
	c.stop()
	<-c.done
	c.replies.Close()
	c.producer.Close()
}

// NewCorrelationID returns a random 128-bit id in hex.
func NewCorrelationID() schemas.CorrelationID {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return schemas.CorrelationID(hex.EncodeToString(b[:]))
}
