package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// The baseline chain is what Kafka and franz-go can do with the records of
// one request, and nothing else: the floor the pipeline is measured
// against.
//
//	source ─request─> requests ─> hop 1 ─fanout tasks─> tasks.bench ─> hop 2 (handler) ─fanout results─> results
//	  ─> hop 3 (count parts) ─one reply─> replies ─> sink
//
// Each hop is a textbook franz-go consume-produce loop: under exactly-once a
// GroupTransactSession (one transaction per polled batch, read_committed),
// under at-least-once a group consumer that produces the batch's output,
// waits for the acks and commits. The source and the sink are the client's
// counterparts: a produce per request, and a group-less read_committed
// consumer of the replies. Records have the pipeline's keys (correlation
// id; the shard on a split route's tasks) and headers, and values of the
// pipeline's sizes, opaque bytes rather than Avro: the difference between
// the two chains is what the pipeline does on top of Kafka (encoding,
// routing, the manifest, the aggregator's state and merge, the hop).
//
// Hop 3 keeps, per correlation id, which parts it has seen; it does not roll
// that back when a transaction aborts (a rebalance in the middle of a
// bench), which the pipeline's aggregator does.

// Value layout of the baseline's records: part index (2 bytes), the
// correlation id's length (1 byte) and bytes, then padding to the size.
const valueHeader = 3

func encodeValue(size int, part int, id []byte) []byte {
	v := make([]byte, max(size, valueHeader+len(id)))
	binary.BigEndian.PutUint16(v, uint16(part))
	v[2] = byte(len(id))
	copy(v[valueHeader:], id)
	return v
}

func decodeValue(v []byte) (part int, id []byte, err error) {
	if len(v) < valueHeader || len(v) < valueHeader+int(v[2]) {
		return 0, nil, fmt.Errorf("baseline record of %d bytes is too short", len(v))
	}
	return int(binary.BigEndian.Uint16(v)), v[valueHeader : valueHeader+int(v[2])], nil
}

// chain is the running baseline.
type chain struct {
	topics  kafkaconfig.Topics
	sizes   recordSizes
	fanout  int
	mode    scatterer.Mode
	counter *recordCounter
	timeout time.Duration
	// hdrRequest are the headers of a request record.
	hdrRequest []kgo.RecordHeader

	src  *kgo.Client
	sink *kgo.Client
	hops []*rawHop

	mu      sync.Mutex
	waiters map[string]chan struct{}

	stop context.CancelFunc
	wg   sync.WaitGroup
	errs []error // of the hops, under mu
}

// startChain creates the baseline's topics and starts its hops, source and
// sink.
func startChain(ctx context.Context, cfg *Config, topics kafkaconfig.Topics, sizes recordSizes, h processor.Handler) (*chain, error) {
	c := &chain{topics: topics, sizes: sizes, fanout: cfg.Fanout, mode: cfg.Mode, counter: newRecordCounter(topics),
		timeout: cfg.Timeout, waiters: map[string]chan struct{}{}}
	cc := withCounter(cfg.Client, c.counter)
	route := cfg.Route
	layout := cfg.Layout
	if cfg.External {
		// The roles run elsewhere with their own layout: use the broker's
		// defaults for nothing, and the flags' partition counts.
		layout = kafkaconfig.Layout{Partitions: max(layout.Partitions, 1), ResultPartitions: max(layout.ResultPartitions, 1), ReplicationFactor: layout.ReplicationFactor}
	}
	specs := []kafkaconfig.TopicSpec{
		{Name: topics.Requests(), Partitions: layout.Partitions, ReplicationFactor: layout.ReplicationFactor},
		{Name: topics.Tasks(route), Partitions: layout.Partitions, ReplicationFactor: layout.ReplicationFactor},
		{Name: topics.Results(), Partitions: layout.ResultPartitions, ReplicationFactor: layout.ReplicationFactor},
		{Name: topics.Replies(), Partitions: layout.Partitions, ReplicationFactor: layout.ReplicationFactor},
	}
	admCl, err := kafka.NewClient(cfg.Client)
	if err != nil {
		return nil, err
	}
	_, err = kafkaconfig.EnsureTopics(ctx, kadm.NewClient(admCl), specs)
	admCl.Close()
	if err != nil {
		return nil, fmt.Errorf("topics: %w", err)
	}
	hdrRequest, hdrTask := sizes.Request.headers(""), sizes.Task.headers("task")
	hdrResult, hdrReply := sizes.Result.headers("result"), sizes.Reply.headers("reply")
	c.hdrRequest = hdrRequest
	fail := func(err error) (*chain, error) {
		c.shutdown()
		deleteTopics(ctx, cfg, topics.Prefix)
		return nil, err
	}

	// Hop 1: a request in, its tasks out.
	partKeys := make([][]byte, cfg.Fanout)
	for i := range partKeys {
		partKeys[i] = []byte(scatterer.ShardID(i))
	}
	tasksTopic := topics.Tasks(route)
	scatter := func(_ context.Context, f kgo.Fetches, emit func(*kgo.Record)) error {
		f.EachRecord(func(r *kgo.Record) {
			if c.mode == scatterer.Broadcast {
				emit(&kgo.Record{Topic: tasksTopic, Key: r.Key, Value: encodeValue(sizes.Task.Value, 0, r.Key), Headers: hdrTask})
				return
			}
			for i := range c.fanout {
				emit(&kgo.Record{Topic: tasksTopic, Key: partKeys[i], Value: encodeValue(sizes.Task.Value, i, r.Key), Headers: hdrTask})
			}
		})
		return nil
	}
	hop, err := newRawHop(cc, cfg.Guarantee, cfg.transactionGap(), topics.Prefix+"hop1", "0", topics.Requests(), scatter, cfg.Logger)
	if err != nil {
		return fail(err)
	}
	c.hops = append(c.hops, hop)

	// Hop 2: a task in, the handler, a result out; one group per recipient
	// on a broadcast route, Processors instances in each.
	payload := cfg.payload()
	groups := []int{-1}
	if cfg.Mode == scatterer.Broadcast {
		groups = groups[:0]
		for i := range cfg.Fanout {
			groups = append(groups, i)
		}
	}
	for _, recipient := range groups {
		group := topics.Prefix + "hop2"
		if recipient >= 0 {
			group += "." + string(recipientID(recipient))
		}
		process := func(ctx context.Context, f kgo.Fetches, emit func(*kgo.Record)) error {
			return handlePartitions(ctx, f, func(ctx context.Context, r *kgo.Record) error {
				part, id, err := decodeValue(r.Value)
				if err != nil {
					return err
				}
				if recipient >= 0 {
					part = recipient
				}
				// The handler runs as it does in the pipeline; its output
				// is not sent (the result's size is the pipeline's).
				if _, err := h.Handle(ctx, schemas.Task{CorrelationID: schemas.CorrelationID(id), PartID: partID(c.mode, part),
					PartCount: c.fanout, Route: schemas.Route(route), Payload: payload, Attempt: 1}); err != nil {
					return fmt.Errorf("handler: %w", err)
				}
				key := append([]byte(nil), id...)
				emit(&kgo.Record{Topic: topics.Results(), Key: key, Value: encodeValue(sizes.Result.Value, part, nil), Headers: hdrResult})
				return nil
			})
		}
		for i := range cfg.Processors {
			hop, err := newRawHop(cc, cfg.Guarantee, cfg.transactionGap(), group, fmt.Sprint(i), tasksTopic, process, cfg.Logger)
			if err != nil {
				return fail(err)
			}
			c.hops = append(c.hops, hop)
		}
	}

	// Hop 3: results in, a reply out when every part is in.
	seen := map[string][]uint64{}
	counts := map[string]int{}
	gather := func(_ context.Context, f kgo.Fetches, emit func(*kgo.Record)) error {
		var err error
		f.EachRecord(func(r *kgo.Record) {
			part, _, derr := decodeValue(r.Value)
			if derr != nil {
				err = derr
				return
			}
			id := string(r.Key)
			bits := seen[id]
			if bits == nil {
				bits = make([]uint64, (c.fanout+63)/64)
				seen[id] = bits
			}
			if part >= c.fanout || bits[part/64]&(1<<(part%64)) != 0 {
				return // a duplicate (at-least-once) or a stray part
			}
			bits[part/64] |= 1 << (part % 64)
			counts[id]++
			if counts[id] == c.fanout {
				delete(seen, id)
				delete(counts, id)
				emit(&kgo.Record{Topic: topics.Replies(), Key: r.Key, Value: encodeValue(sizes.Reply.Value, 0, nil), Headers: hdrReply})
			}
		})
		return err
	}
	if hop, err = newRawHop(cc, cfg.Guarantee, cfg.transactionGap(), topics.Prefix+"hop3", "0", topics.Results(), gather, cfg.Logger); err != nil {
		return fail(err)
	}
	c.hops = append(c.hops, hop)

	// The source and the sink, as the client has them.
	if c.src, err = kafka.NewClient(cc); err != nil {
		return fail(err)
	}
	ends, err := endOffsets(ctx, kadm.NewClient(c.src), topics.Replies())
	if err != nil {
		return fail(err)
	}
	start := map[string]map[int32]kgo.Offset{topics.Replies(): {}}
	ends.Each(func(o kadm.ListedOffset) { start[o.Topic][o.Partition] = kgo.NewOffset().At(o.Offset) })
	if c.sink, err = kafka.NewClient(cfg.Client, kgo.ConsumePartitions(start), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(200*time.Millisecond)); err != nil {
		return fail(err)
	}

	hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	c.stop = stop
	for _, h := range c.hops {
		// Each hop's goroutine returns when shutdown cancels hctx, or on
		// an error, which close reports.
		c.wg.Go(func() {
			if err := h.run(hctx); err != nil {
				c.mu.Lock()
				c.errs = append(c.errs, err)
				c.mu.Unlock()
			}
		})
	}
	// The sink's goroutine returns when shutdown cancels hctx.
	c.wg.Go(func() { c.readReplies(hctx) })
	return c, nil
}

// endOffsets lists the end offsets of a topic that was just created: a
// real broker may not serve it for a moment, so an unknown partition is
// asked again, for up to 10 seconds.
func endOffsets(ctx context.Context, adm *kadm.Client, topic string) (kadm.ListedOffsets, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err == nil {
			err = ends.Error()
		}
		if err == nil {
			return ends, nil
		}
		if !errors.Is(err, kerr.UnknownTopicOrPartition) && !errors.Is(err, kerr.NotLeaderForPartition) && !errors.Is(err, kerr.LeaderNotAvailable) {
			return nil, fmt.Errorf("find the end of %s: %w", topic, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("find the end of %s: %w", topic, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// handlePartitions runs fn over the records of f with one goroutine per
// partition, records of a partition in order, as the processor does, and
// returns when all are done.
func handlePartitions(ctx context.Context, f kgo.Fetches, fn func(context.Context, *kgo.Record) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	f.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		wg.Go(func() {
			for _, r := range p.Records {
				if err := fn(ctx, r); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	})
	wg.Wait()
	return errors.Join(errs...)
}

func (c *chain) readReplies(ctx context.Context) {
	for {
		f := c.sink.PollFetches(ctx)
		if ctx.Err() != nil || f.IsClientClosed() {
			return
		}
		f.EachRecord(func(r *kgo.Record) {
			c.mu.Lock()
			ch, ok := c.waiters[string(r.Key)]
			delete(c.waiters, string(r.Key))
			c.mu.Unlock()
			if ok {
				ch <- struct{}{}
			}
		})
	}
}

// send produces one request and waits for its reply.
func (c *chain) send(ctx context.Context) Outcome {
	id := string(client.NewCorrelationID())
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.waiters[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.waiters, id)
		c.mu.Unlock()
	}
	rec := &kgo.Record{Topic: c.topics.Requests(), Key: []byte(id), Value: encodeValue(c.sizes.Request.Value, 0, nil), Headers: c.hdrRequest}
	if err := c.src.ProduceSync(ctx, rec).FirstErr(); err != nil {
		forget()
		return Outcome{Status: NoReply, Err: fmt.Errorf("produce request: %w", err)}
	}
	// As the client does: the request's timeout plus 2s of grace.
	t := time.NewTimer(c.timeout + 2*time.Second)
	defer t.Stop()
	select {
	case <-ch:
		return Outcome{Status: Complete, Tasks: c.fanout}
	case <-ctx.Done():
		forget()
		return Outcome{Status: NoReply, Err: ctx.Err()}
	case <-t.C:
		forget()
		return Outcome{Status: NoReply, Err: fmt.Errorf("no reply within %s", c.timeout+2*time.Second)}
	}
}

func (c *chain) measure(ctx context.Context, cfg *Config) (*Phase, error) {
	if err := waitReady(ctx, "baseline", cfg.ReadyTimeout, c.send); err != nil {
		return nil, errors.Join(err, c.hopErrors())
	}
	pr := phaseRun{name: "baseline", load: cfg.Load, send: c.send, bytes: c.counter.total, progress: cfg.Progress, tty: cfg.ProgressTTY}
	ph, err := pr.run(ctx)
	if err != nil {
		return nil, err
	}
	ph.Records = c.counter.stats()
	ph.KafkaRequests = c.counter.requestStats()
	return ph, c.hopErrors()
}

func (c *chain) hopErrors() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.errs...)
}

// shutdown stops the hops and the sink and closes every client.
func (c *chain) shutdown() {
	if c.stop != nil {
		c.stop()
	}
	c.wg.Wait()
	for _, h := range c.hops {
		h.close()
	}
	if c.sink != nil {
		c.sink.Close()
	}
	if c.src != nil {
		c.src.Close()
	}
}

func (c *chain) close(ctx context.Context, cfg *Config) error {
	c.shutdown()
	deleteTopics(ctx, cfg, c.topics.Prefix)
	return c.hopErrors()
}

// transformFunc turns a polled batch into records, passed to emit (safe for
// concurrent use).
type transformFunc func(ctx context.Context, f kgo.Fetches, emit func(*kgo.Record)) error

// rawHop is one consume-produce loop of the baseline, with the options of
// the pipeline's hop (internal/kafka.NewHop) and none of its machinery.
type rawHop struct {
	group     string
	cl        *kgo.Client
	sess      *kgo.GroupTransactSession // exactly-once only
	transform transformFunc
	log       *slog.Logger
	// lastCommit is when the at-least-once hop last committed its offsets,
	// lastEnd when the exactly-once hop last ended a transaction.
	lastCommit, lastEnd time.Time
	// gap is the exactly-once hop's least time from the end of a
	// transaction to its next poll (negative: none).
	gap time.Duration
}

func newRawHop(cc kafkaconfig.Client, g kafkaconfig.Guarantee, gap time.Duration, group, instance, topic string, t transformFunc, log *slog.Logger) (*rawHop, error) {
	opts := append(cc.Options(),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.SessionTimeout(10*time.Second),
		kgo.HeartbeatInterval(time.Second),
		kgo.RebalanceTimeout(30*time.Second),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	h := &rawHop{group: group, transform: t, log: log, gap: gap}
	var err error
	if g == kafkaconfig.ExactlyOnce {
		opts = append(opts, kgo.TransactionalID(group+"-"+instance), kgo.TransactionTimeout(30*time.Second))
		if h.sess, err = kgo.NewGroupTransactSession(opts...); err == nil {
			h.cl = h.sess.Client()
		}
	} else {
		opts = append(opts, kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll())
		h.cl, err = kgo.NewClient(opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("baseline hop %s: %w", group, err)
	}
	return h, nil
}

func (h *rawHop) close() {
	if h.sess != nil {
		h.sess.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.cl.CommitUncommittedOffsets(ctx); err != nil {
		h.log.Warn("baseline last commit", "group", h.group, "err", err)
	}
	h.cl.Close()
}

// run consumes, transforms and produces until ctx is done.
func (h *rawHop) run(ctx context.Context) error {
	for {
		var f kgo.Fetches
		if h.sess != nil {
			// As the pipeline's hops do (kafkaconfig.Role.TransactionGap,
			// Config.TransactionGap), poll the next batch no sooner than
			// that after the last transaction ended, so that the ratio
			// compares the same wait.
			if d := h.gap - time.Since(h.lastEnd); d > 0 {
				time.Sleep(d)
			}
			f = h.sess.PollFetches(ctx)
		} else {
			f = h.cl.PollFetches(ctx)
		}
		if ctx.Err() != nil || f.IsClientClosed() {
			if h.sess == nil {
				// A poll blocks rebalances until allowed again; leaving
				// the group on close is one.
				h.cl.AllowRebalance()
			}
			return nil
		}
		f.EachError(func(t string, p int32, err error) {
			h.log.Warn("baseline fetch error", "group", h.group, "topic", t, "partition", p, "err", err)
		})
		var err error
		if h.sess != nil {
			err = h.transact(ctx, f)
		} else {
			err = h.produceCommit(ctx, f)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("baseline hop %s: %w", h.group, err)
		}
	}
}

func (h *rawHop) transact(ctx context.Context, f kgo.Fetches) error {
	if f.NumRecords() == 0 {
		return nil
	}
	if err := h.sess.Begin(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	var (
		mu      sync.Mutex
		prodErr error
	)
	terr := h.transform(ctx, f, func(r *kgo.Record) {
		h.sess.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				prodErr = errors.Join(prodErr, err)
				mu.Unlock()
			}
		})
	})
	if err := h.cl.Flush(ctx); err != nil {
		return err
	}
	try := kgo.TryCommit
	if terr != nil || prodErr != nil {
		try = kgo.TryAbort
	}
	_, err := h.sess.End(ctx, try)
	h.lastEnd = time.Now()
	if err != nil {
		return fmt.Errorf("end transaction: %w", err)
	}
	return errors.Join(terr, prodErr)
}

func (h *rawHop) produceCommit(ctx context.Context, f kgo.Fetches) error {
	defer h.cl.AllowRebalance()
	if f.NumRecords() == 0 {
		return nil
	}
	var (
		mu  sync.Mutex
		out []*kgo.Record
	)
	if err := h.transform(ctx, f, func(r *kgo.Record) {
		mu.Lock()
		out = append(out, r)
		mu.Unlock()
	}); err != nil {
		return err
	}
	if err := h.cl.ProduceSync(ctx, out...).FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	// As the pipeline's hops do (kafkaconfig.Role.OffsetCommitInterval at
	// its default), commit at most every DefaultOffsetCommitInterval, so
	// that the ratio compares the same number of round trips.
	if time.Since(h.lastCommit) < kafkaconfig.DefaultOffsetCommitInterval {
		return nil
	}
	if err := h.cl.CommitUncommittedOffsets(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	h.lastCommit = time.Now()
	return nil
}
