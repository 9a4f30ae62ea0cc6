package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/schemas"
)

// The states of the tail, as Ready reports them.
const (
	tailConnecting int32 = iota // the broker has not answered yet
	tailCatchingUp              // reading back the retention window
	tailReady                   // caught up; following
)

var tailStateNames = [...]string{"connecting", "catching-up", "ready"}

var errNoTopics = errors.New("topics do not exist")

// tail reads the requests and replies topics into the store: first back
// over ReplyRetention, then as they grow. It retries its setup until the
// broker answers, and returns when ctx ends.
func (g *Gateway) tail(ctx context.Context) {
	backoff := 250 * time.Millisecond
	for {
		err := g.tailOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		g.state.Store(tailConnecting)
		g.tailErr.Store(&err)
		level := slog.LevelWarn
		if errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, errNoTopics) {
			level = slog.LevelInfo // not created yet: normal while a pipeline starts
		}
		g.log.Log(ctx, level, "cannot read requests and replies yet; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// tailOnce positions a consumer at the start of the retention window of
// both topics, reads up to where they ended at the start (then the gateway
// is ready), and follows them until ctx ends or the setup fails.
func (g *Gateway) tailOnce(ctx context.Context) error {
	adm := kadm.NewClient(g.producer)
	topics := []string{g.cfg.Topics.Requests(), g.cfg.Topics.Replies()}
	since := time.Now().Add(-g.cfg.ReplyRetention)
	starts, err := adm.ListOffsetsAfterMilli(ctx, since.UnixMilli(), topics...)
	if err == nil {
		// Named, so that Ready says which topics to create.
		var missing []string
		for _, t := range topics {
			ps, ok := starts[t]
			if !ok {
				missing = append(missing, t)
				continue
			}
			for _, o := range ps {
				if errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
					missing = append(missing, t)
					break
				}
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%w: %s", errNoTopics, strings.Join(missing, ", "))
		}
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("list offsets at %s: %w", since.Format(time.RFC3339), err)
	}
	// The last stable offsets: what read_committed can see now. Reading up
	// to them is reading everything written before the start.
	ends, err := adm.ListCommittedOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	from := map[string]map[int32]kgo.Offset{}
	behind := map[string]map[int32]int64{} // partition → last offset to read
	for _, t := range topics {
		from[t], behind[t] = map[int32]kgo.Offset{}, map[int32]int64{}
	}
	starts.Each(func(o kadm.ListedOffset) {
		from[o.Topic][o.Partition] = kgo.NewOffset().At(o.Offset)
		if end, ok := ends.Lookup(o.Topic, o.Partition); ok && end.Offset > o.Offset {
			behind[o.Topic][o.Partition] = end.Offset - 1
		}
	})
	cl, err := kafka.NewClient(g.cfg.Client,
		kgo.ConsumePartitions(from),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Transaction markers count as progress: the last offset below
		// the stable offset is often a commit marker.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(250*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	left := 0
	for _, ps := range behind {
		left += len(ps)
	}
	g.state.Store(tailCatchingUp)
	if left == 0 {
		g.ready()
	}
	lastExpire := time.Now()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now()
		fetches.EachError(func(t string, p int32, err error) {
			if p >= 0 { // p -1 is the poll's own timeout
				g.log.Warn("fetch error", "topic", t, "partition", p, "err", err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			if last, ok := behind[r.Topic][r.Partition]; ok && r.Offset >= last {
				delete(behind[r.Topic], r.Partition)
				if left--; left == 0 {
					g.ready()
				}
			}
			if r.Attrs.IsControl() {
				return
			}
			g.observe(r, now)
		})
		if now.Sub(lastExpire) > time.Second {
			lastExpire = now
			g.store.expire(now)
			g.m.observeStore(g.store)
		}
	}
}

// ready marks the end of the catch-up.
func (g *Gateway) ready() {
	g.tailErr.Store(nil)
	if g.state.Swap(tailReady) != tailReady {
		n, b, _ := g.store.stats()
		g.log.Info("caught up with requests and replies", "window", g.cfg.ReplyRetention, "entries", n, "bytes", b)
	}
}

// observe records one request or reply read from Kafka.
func (g *Gateway) observe(r *kgo.Record, now time.Time) {
	switch r.Topic {
	case g.cfg.Topics.Requests():
		req, err := schemas.DecodeRequest(r.Value)
		if err != nil || req.CorrelationID == "" {
			return // the scatterer dead-letters it; nothing to answer here
		}
		if req.ReplyTo != "" && req.ReplyTo != g.cfg.Topics.Replies() {
			return // its reply goes to a topic the gateway does not read
		}
		submitted := req.SubmittedAt
		if submitted.IsZero() {
			submitted = r.Timestamp
		}
		timeout := req.Timeout
		if timeout <= 0 {
			if rt, ok := g.routes[req.Route]; ok {
				timeout = rt.Timeout
			}
		}
		var deadline time.Time
		if timeout > 0 {
			deadline = submitted.Add(timeout)
		}
		g.store.requested(req.CorrelationID, req.Route, submitted, deadline, r.Timestamp, now)
	case g.cfg.Topics.Replies():
		reply, err := schemas.DecodeReply(r.Value)
		if err != nil {
			g.log.Warn("undecodable reply", "key", string(r.Key), "partition", r.Partition, "offset", r.Offset, "err", err)
			return
		}
		// Released first, so that a caller who has the reply may submit
		// again at once.
		g.inflight.release(reply.CorrelationID)
		g.store.replied(reply, r.Timestamp, now)
	}
}
