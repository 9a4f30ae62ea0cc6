// Package client is the request-reply side of scattergather for Go services:
// it produces a Request and waits for its one Reply.
//
// Each Client reads the replies topic without a consumer group, from the end
// of every partition as it was when New returned, and hands each reply to the
// waiter with its correlation id; replies for other clients are skipped. The
// reply consumer is assigned and positioned before New returns, so no reply
// can be missed to an "auto.offset.reset=latest" race. Every client reads
// every reply, which is fine for many clients at moderate rates; at high
// rates give each client its own reply topic (Config.ReplyTopic).
//
// Usage:
//
//	c, err := client.New(ctx, client.Config{
//		Client: kafka.ClientConfig{Brokers: []string{"127.0.0.1:9092"}},
//		Topics: kafka.Topics{Prefix: "sg."},
//	})
//	if err != nil { ... }
//	defer c.Close()
//	reply, err := c.Do(ctx, "search", []byte(`{"query":"red shoes"}`), client.Options{})
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/schemas"
)

// ErrTimeout is returned (wrapped) when no reply came within the request's
// timeout plus the grace period.
var ErrTimeout = errors.New("no reply in time")

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("client closed")

// Config configures a Client.
type Config struct {
	Client kafka.ClientConfig
	Topics kafka.Topics
	// ReplyTopic is where this client's replies go; default Topics.Replies().
	// Another topic must start with Topics.Replies() and exist.
	ReplyTopic string
	// DefaultTimeout is used when Options.Timeout is zero; default 5s. It
	// is sent with the request so the pipeline answers by then.
	DefaultTimeout time.Duration
	// Grace is how long past the request's timeout Await waits for the
	// reply before giving up with ErrTimeout; default 2s.
	Grace  time.Duration
	Logger *slog.Logger
}

// Validate fills defaults and reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Client.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.ReplyTopic == "" {
		c.ReplyTopic = c.Topics.Replies()
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = 5 * time.Second
	}
	if c.DefaultTimeout < 0 {
		errs = append(errs, fmt.Errorf("default timeout %s is negative", c.DefaultTimeout))
	}
	if c.Grace == 0 {
		c.Grace = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// Options are per request.
type Options struct {
	// Timeout of the request; zero takes Config.DefaultTimeout.
	Timeout time.Duration
	// Fanout asks a split route for this many parts; zero takes the route's.
	Fanout      int
	ContentType string
	Headers     map[string]string
	// CorrelationID to use; empty generates one.
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
	ch       chan schemas.Reply // buffered 1
	deadline time.Time
}

// New connects, positions the reply consumer at the end of the reply topic,
// and starts reading replies. The reply loop runs until Close.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	producer, err := kafka.NewClient(cfg.Client)
	if err != nil {
		return nil, err
	}
	ends, err := kadm.NewClient(producer).ListEndOffsets(ctx, cfg.ReplyTopic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		producer.Close()
		return nil, fmt.Errorf("client: find the end of %s: %w", cfg.ReplyTopic, err)
	}
	start := map[string]map[int32]kgo.Offset{cfg.ReplyTopic: {}}
	ends.Each(func(o kadm.ListedOffset) {
		start[o.Topic][o.Partition] = kgo.NewOffset().At(o.Offset)
	})
	if len(start[cfg.ReplyTopic]) == 0 {
		producer.Close()
		return nil, fmt.Errorf("client: reply topic %s has no partitions (does it exist?)", cfg.ReplyTopic)
	}
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

// readReplies hands each reply to its waiter; it exits when Close cancels ctx.
func (c *Client) readReplies(ctx context.Context) {
	defer close(c.done)
	for {
		fetches := c.replies.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
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
	}
}

// Pending is a submitted request whose reply has not been awaited yet.
type Pending struct {
	ID      schemas.CorrelationID
	c       *Client
	w       *waiter
	timeout time.Duration
}

// Submit produces a request and returns without waiting for the reply.
func (c *Client) Submit(ctx context.Context, route schemas.Route, payload []byte, opts Options) (*Pending, error) {
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = c.cfg.DefaultTimeout
	}
	id := opts.CorrelationID
	if id == "" {
		id = NewCorrelationID()
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
		Timeout:       timeout,
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
	if err := c.producer.ProduceSync(ctx, rec).FirstErr(); err != nil {
		c.forget(id)
		return nil, fmt.Errorf("submit %s: %w", id, err)
	}
	return &Pending{ID: id, c: c, w: w, timeout: timeout}, nil
}

// Await waits for the reply of p until ctx is done or the request's timeout
// plus the grace period passes.
func (p *Pending) Await(ctx context.Context) (schemas.Reply, error) {
	t := time.NewTimer(time.Until(p.w.deadline))
	defer t.Stop()
	select {
	case r := <-p.w.ch:
		return r, nil
	case <-ctx.Done():
		p.c.forget(p.ID)
		return schemas.Reply{}, fmt.Errorf("await %s: %w", p.ID, ctx.Err())
	case <-t.C:
		p.c.forget(p.ID)
		return schemas.Reply{}, fmt.Errorf("await %s: %w after %s", p.ID, ErrTimeout, p.timeout+p.c.cfg.Grace)
	case <-p.c.done:
		return schemas.Reply{}, fmt.Errorf("await %s: %w", p.ID, ErrClosed)
	}
}

// Do submits a request and waits for its reply.
func (c *Client) Do(ctx context.Context, route schemas.Route, payload []byte, opts Options) (schemas.Reply, error) {
	p, err := c.Submit(ctx, route, payload, opts)
	if err != nil {
		return schemas.Reply{}, err
	}
	return p.Await(ctx)
}

func (c *Client) forget(id schemas.CorrelationID) {
	c.mu.Lock()
	delete(c.waiters, id)
	c.mu.Unlock()
}

// InFlight returns the number of requests waiting for a reply.
func (c *Client) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// Close stops the reply loop and closes both Kafka clients. Pending Awaits
// return ErrClosed.
func (c *Client) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
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
