package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ErrAbort may be returned by a [ProcessFunc] to abort the batch: nothing it
// produced is kept and its records are consumed again, by this instance or
// by the next owner of their partitions. Run then returns nil if its context
// is done (a shutdown in the middle of a batch) and goes on otherwise.
var ErrAbort = errors.New("abort batch")

// HopConfig configures a [Hop].
type HopConfig struct {
	Client ClientConfig
	// Group is the consumer group; required.
	Group string
	// Topics are consumed by the group; required.
	Topics []string
	// Guarantee defaults to ExactlyOnce.
	Guarantee Guarantee
	// TransactionalID is required with ExactlyOnce. Keep it stable per
	// instance (e.g. group + instance name) so a restarted instance fences
	// its zombie predecessor.
	TransactionalID string
	// InstanceID, when set, makes the client a static member of its group
	// (group.instance.id): an instance restarted with the same id, or a
	// client the hop rebuilds, takes the place of its predecessor and gets
	// its partitions back without a rebalance. A static member does not
	// leave the group when its client closes, so Run leaves explicitly (a
	// LeaveGroup naming the instance id) when it stops; a crashed instance
	// keeps its partitions until the session timeout (10s) or its restart.
	// Two live instances with one id fence each other: the older gets
	// FENCED_INSTANCE_ID and its Run ends with that error.
	InstanceID string
	// RestartBackoff is the wait before the hop builds a new client after
	// an error it can recover from (see Run); it doubles with every
	// restart that follows without a committed batch in between, up to
	// MaxRestartBackoff. Defaults 250ms and 10s.
	RestartBackoff, MaxRestartBackoff time.Duration
	// Metrics, when set, receives scattergather_hop_restarts_total{group}:
	// how often the hop built a new client after an error.
	Metrics prometheus.Registerer
	// Tick bounds how long Run waits for records before it calls the
	// ProcessFunc with none, so that timers can fire on idle partitions.
	// Zero waits for records.
	Tick time.Duration
	// DrainTimeout bounds how long the batch in flight may take to finish
	// after Run's context is done; default 10s. Past it the batch's context
	// is cancelled and the batch should return ErrAbort.
	DrainTimeout time.Duration
	// OnAssigned is called, from the client's rebalance goroutine, when
	// partitions are assigned; Run does not process records of them before it
	// returns.
	OnAssigned func(ctx context.Context, cl *kgo.Client, assigned map[string][]int32)
	// OnRevoked is called when partitions are revoked or lost.
	OnRevoked func(ctx context.Context, cl *kgo.Client, revoked map[string][]int32)
	// Logger for the hop's own events; nil discards them.
	Logger *slog.Logger
	// ManualPartitionTopics are topics whose records go to the partition
	// their Record.Partition names, e.g. a changelog co-partitioned with a
	// consumed topic. Records to other topics are partitioned by key as
	// usual. Setting it replaces a partitioner given in Client.Opts.
	ManualPartitionTopics []string
	// ManualPartitionPrefixes does the same for every topic whose name
	// starts with one of them, e.g. the tasks.<route> topics to which an
	// aggregator sends hedged tasks.
	ManualPartitionPrefixes []string
	// Wake, when set, ends Run's wait for records early: a receive on it
	// makes the poll in progress return, so that a role that works between
	// polls (the processor's pipeline) can commit what it finished without
	// waiting for new records. Send without blocking on a channel with a
	// buffer of one.
	Wake <-chan struct{}
	// MaxPollRecords caps the records of one batch; records the client
	// has buffered beyond it wait for the next poll. Zero takes everything
	// buffered (what one fetch per broker returned). A role that bounds
	// what it holds (the aggregator's open requests) relies on it to
	// bound what one batch adds.
	MaxPollRecords int
	// FinalBatch makes Run, once its context is done, call the ProcessFunc
	// once more with no records (unless the last batch already started
	// after it was done) and commit what it produced, before it leaves the
	// group: a role that keeps work in flight across batches finishes it
	// there, within DrainTimeout.
	FinalBatch bool
	// DeadLetters is the dead-letter topic. A record of a batch that Kafka
	// refuses for good (its topic does not exist or may not be written, it
	// is too large, the broker calls it invalid) is replaced there by its
	// dead letter (Role names the role in its sg-dlq-role header), and the
	// batch is written again without it; see reject.go. Empty: such a
	// record aborts the batch and ends Run.
	DeadLetters string
	// Role names the role in the dead letters the hop writes.
	Role string
	// Opts are passed to the client after the hop's options.
	Opts []kgo.Opt
}

// Validate reports every problem with c at once.
func (c *HopConfig) Validate() error {
	var errs []error
	if err := c.Client.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Group == "" {
		errs = append(errs, errors.New("group: empty"))
	}
	if len(c.Topics) == 0 {
		errs = append(errs, errors.New("topics: none to consume"))
	}
	if c.Guarantee == "" {
		c.Guarantee = ExactlyOnce
	}
	if _, err := ParseGuarantee(string(c.Guarantee)); err != nil {
		errs = append(errs, err)
	}
	if c.Guarantee == ExactlyOnce && c.TransactionalID == "" {
		errs = append(errs, errors.New("transactional id: required for exactly-once"))
	}
	if c.Tick < 0 {
		errs = append(errs, fmt.Errorf("tick: %s is negative", c.Tick))
	}
	if c.MaxPollRecords < 0 {
		errs = append(errs, fmt.Errorf("max poll records: %d is negative", c.MaxPollRecords))
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.RestartBackoff <= 0 {
		c.RestartBackoff = 250 * time.Millisecond
	}
	if c.MaxRestartBackoff <= 0 {
		c.MaxRestartBackoff = 10 * time.Second
	}
	c.MaxRestartBackoff = max(c.MaxRestartBackoff, c.RestartBackoff)
	return errors.Join(errs...)
}

// Batch is what one poll returned, and what processing it produced.
type Batch struct {
	Fetches kgo.Fetches

	mu       sync.Mutex
	out      []*kgo.Record
	state    []*kgo.Record
	commits  map[string]map[int32]CommitOffset
	deferred bool
}

// Defer says the batch has nothing to commit now: its records stay in
// flight with the role, which commits them (Batch.Commit) with a later
// batch. The hop ends a deferred batch that produced nothing without a
// transaction or an offset commit, and without calling the EndFunc; a
// deferred batch that produced records is committed as usual. Safe for
// concurrent use.
func (b *Batch) Defer() {
	b.mu.Lock()
	b.deferred = true
	b.mu.Unlock()
}

// CommitOffset is where a batch commits one partition when the role does
// not commit everything it polled: the role keeps records in flight across
// batches and commits only up to the first one it has not finished (see
// [Batch.Commit]).
type CommitOffset struct {
	// Offset is the next record to consume from the partition.
	Offset int64
	// Epoch is the leader epoch of the record at Offset, or -1.
	Epoch int32
	// Metadata is stored with the committed offset, and read back with
	// kadm's FetchOffsets. Kafka caps it (offset.metadata.max.bytes,
	// default 4096 bytes).
	Metadata string
}

// Commit makes the batch commit topic/partition at o instead of after the
// last record polled from it. It applies only to a partition the hop's
// group consumes and has polled; other partitions commit as usual. Offsets
// must not move backwards from a batch to the next. Under exactly-once the
// offset and metadata are in the batch's transaction; when it aborts, the
// client goes back to the last committed offsets, so every record polled
// since is consumed again. Safe for concurrent use.
func (b *Batch) Commit(topic string, partition int32, o CommitOffset) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.commits == nil {
		b.commits = map[string]map[int32]CommitOffset{}
	}
	if b.commits[topic] == nil {
		b.commits[topic] = map[int32]CommitOffset{}
	}
	b.commits[topic][partition] = o
}

// committing reports whether Commit was called.
func (b *Batch) committing() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.commits) > 0
}

// Produce adds r to the records to write with this batch: in one transaction
// with the batch's offsets under exactly-once, before the offsets are
// committed under at-least-once. Safe for concurrent use.
func (b *Batch) Produce(r *kgo.Record) {
	b.mu.Lock()
	b.out = append(b.out, r)
	b.mu.Unlock()
}

// ProduceState adds r, a record of the role's state (a changelog), to the
// records to write with this batch. Under exactly-once it is in the batch's
// transaction like any other. Under at-least-once it is written only after
// every record added with Produce is acknowledged, and before the offsets
// are committed: a crash may lose the state record of output that was
// written, never keep one whose output was lost. Safe for concurrent use.
func (b *Batch) ProduceState(r *kgo.Record) {
	b.mu.Lock()
	b.state = append(b.state, r)
	b.mu.Unlock()
}

// Len returns the number of records produced so far, state records
// included.
func (b *Batch) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.out) + len(b.state)
}

// ProcessFunc handles one batch. It is called on Run's goroutine; it may fan
// work out to goroutines of its own but must wait for them before returning.
// A batch with no records is passed when Tick elapses. Returning ErrAbort (or
// an error wrapping it) aborts the batch; any other error aborts it and stops
// Run.
type ProcessFunc func(ctx context.Context, b *Batch) error

// EndFunc learns whether a batch's output and offsets were committed. When
// committed is false, everything the batch changed must be undone: its
// records will be consumed again.
type EndFunc func(committed bool)

// Hop is one consume-transform-produce step of the pipeline.
type Hop struct {
	cfg  HopConfig
	log  *slog.Logger
	opts []kgo.Opt // every client's options

	// The client and, under exactly-once, its session: Run's goroutine
	// replaces them when it restarts (see Run); current is the client for
	// Client, from any goroutine.
	cl      *kgo.Client
	sess    *kgo.GroupTransactSession // nil under at-least-once
	current atomic.Pointer[kgo.Client]
	closed  bool // Run's goroutine: cl is closed
	fresh   bool // Run's goroutine: cl has not initialised its producer yet

	// Restarts: in all (Restarts), and in a row without a committed
	// batch (Run's goroutine), which sets the backoff.
	restarts    atomic.Int64
	restartsVec prometheus.Counter // nil without HopConfig.Metrics
	rejectedVec *prometheus.CounterVec
	consecutive int

	// idle is held, under exactly-once, while a batch that consumed no
	// records is processed and its transaction ends; a revocation waits for
	// it, so that output computed for a partition is committed before the
	// partition's next owner can take it over.
	// It is a semaphore so that a revocation can stop waiting when the
	// client is abandoned (Abandon): the batch in flight may then never end.
	idle      chan struct{}
	abandoned chan struct{}
	abandon   sync.Once

	// Group membership, kept by the rebalance callbacks for Membership.
	joined     atomic.Bool
	partitions atomic.Int64

	// sessFlagged is set, under exactly-once, when a revocation or loss
	// reached our callbacks and no GroupTransactSession.End has run since.
	// The session passes on only the first revocation (and the first
	// loss) until End resets it (franz-go v1.22.3, txn.go), so a hop that
	// ends its batches without End (nothing to commit, or the produce-only
	// transaction of an idle batch) would miss every later one: its role
	// would keep the state of partitions it no longer owns. A flagged hop
	// ends its next batch with End. rebalanced wakes a poll for that.
	sessFlagged atomic.Bool
	rebalanced  chan struct{}

	// synced learns each sync's whole assignment, and owned is what the
	// callbacks gave the role. The session can still swallow a revocation
	// that comes while its End runs (it checks its flag after End unlocks
	// and before End resets it), so at every assignment and client close
	// the hop revokes what the role owns beyond the group's word.
	synced *syncTracker
	ownMu  sync.Mutex
	owned  map[string]map[int32]bool
}

// syncTracker is the group balancer (cooperative-sticky, kgo's default),
// noting the whole assignment of each sync: OnPartitionsAssigned is passed
// only what was added.
type syncTracker struct {
	kgo.GroupBalancer
	last atomic.Pointer[map[string][]int32]
}

func (t *syncTracker) ParseSyncAssignment(b []byte) (map[string][]int32, error) {
	m, err := t.GroupBalancer.ParseSyncAssignment(b)
	if err == nil {
		c := make(map[string][]int32, len(m))
		for topic, ps := range m {
			c[topic] = slices.Clone(ps)
		}
		t.last.Store(&c)
	}
	return m, err
}

// own adds (or removes) partitions to what the role owns.
func (h *Hop) own(m map[string][]int32, add bool) {
	h.ownMu.Lock()
	defer h.ownMu.Unlock()
	for topic, ps := range m {
		for _, p := range ps {
			if add {
				if h.owned[topic] == nil {
					h.owned[topic] = map[int32]bool{}
				}
				h.owned[topic][p] = true
			} else {
				delete(h.owned[topic], p)
			}
		}
	}
}

// unowned returns what the role owns beyond keep (all it owns when keep
// is nil).
func (h *Hop) unowned(keep map[string][]int32) map[string][]int32 {
	h.ownMu.Lock()
	defer h.ownMu.Unlock()
	var out map[string][]int32
	for topic, ps := range h.owned {
		for p := range ps {
			if keep == nil || !slices.Contains(keep[topic], p) {
				if out == nil {
					out = map[string][]int32{}
				}
				out[topic] = append(out[topic], p)
			}
		}
	}
	for _, ps := range out {
		slices.Sort(ps)
	}
	return out
}

// assigned hands as to the role's OnAssigned, after revoking what the role
// owns beyond the sync's whole assignment (see Hop.synced).
func (h *Hop) assigned(ctx context.Context, cl *kgo.Client, as map[string][]int32) {
	if last := h.synced.last.Load(); last != nil {
		if stale := h.unowned(*last); len(stale) > 0 {
			h.log.Warn("revoking partitions whose revocation the transaction session did not pass on", "group", h.cfg.Group, "partitions", stale)
			h.revoke(ctx, cl, stale, false)
		}
	}
	if h.cfg.OnAssigned != nil {
		h.cfg.OnAssigned(ctx, cl, as)
	}
	h.own(as, true)
	h.partitions.Add(countPartitions(as))
	h.joined.Store(true)
}

// revoke hands rev to the role's OnRevoked (under exactly-once after the
// idle batch in flight, see Hop.idle) and forgets it.
func (h *Hop) revoke(ctx context.Context, cl *kgo.Client, rev map[string][]int32, lost bool) {
	rev = h.ownedOf(rev)
	if h.cfg.OnRevoked != nil && len(rev) > 0 {
		if h.cfg.Guarantee == ExactlyOnce {
			select {
			case h.idle <- struct{}{}:
				defer func() { <-h.idle }()
			case <-h.abandoned:
			}
		}
		h.cfg.OnRevoked(ctx, cl, rev)
	}
	h.own(rev, false)
	h.partitions.Add(-countPartitions(rev))
	if lost {
		h.joined.Store(false)
	}
}

// ownedOf returns the part of m the role owns.
func (h *Hop) ownedOf(m map[string][]int32) map[string][]int32 {
	h.ownMu.Lock()
	defer h.ownMu.Unlock()
	out := map[string][]int32{}
	for topic, ps := range m {
		for _, p := range ps {
			if h.owned[topic][p] {
				out[topic] = append(out[topic], p)
			}
		}
	}
	return out
}

// Membership reports whether the hop's client is a member of its group
// with an assignment (possibly empty: a group may have more members than
// partitions), and how many partitions it holds. It is false before the
// first assignment, after the session is lost and after Run returns. Safe
// for concurrent use.
func (h *Hop) Membership() (joined bool, partitions int) {
	return h.joined.Load(), int(h.partitions.Load())
}

func countPartitions(m map[string][]int32) int64 {
	n := 0
	for _, ps := range m {
		n += len(ps)
	}
	return int64(n)
}

// NewHop builds the hop's client and joins nothing yet: the group is joined
// on the first poll in Run.
func NewHop(cfg HopConfig) (*Hop, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("hop config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []kgo.Opt{
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.SessionTimeout(10 * time.Second),
		kgo.HeartbeatInterval(time.Second),
		kgo.RebalanceTimeout(30 * time.Second),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}
	if cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(cfg.InstanceID))
	}
	if len(cfg.ManualPartitionTopics) > 0 || len(cfg.ManualPartitionPrefixes) > 0 {
		opts = append(opts, kgo.RecordPartitioner(manualFor(cfg.ManualPartitionTopics, cfg.ManualPartitionPrefixes, kgo.StickyKeyPartitioner(nil))))
	}
	h := &Hop{cfg: cfg, log: log, idle: make(chan struct{}, 1), abandoned: make(chan struct{}), rebalanced: make(chan struct{}, 1),
		synced: &syncTracker{GroupBalancer: kgo.CooperativeStickyBalancer()}, owned: map[string]map[int32]bool{}}
	opts = append(opts, kgo.Balancers(h.synced))
	// The callbacks also track the membership for readiness (Membership);
	// kgo calls OnPartitionsAssigned after every join, even with nothing
	// assigned.
	opts = append(opts, kgo.OnPartitionsAssigned(h.assigned))
	revoked := func(lost bool) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(ctx context.Context, cl *kgo.Client, rev map[string][]int32) {
			if cfg.Guarantee == ExactlyOnce {
				h.sessFlagged.Store(true)
				select {
				case h.rebalanced <- struct{}{}:
				default:
				}
			}
			h.revoke(ctx, cl, rev, lost)
		}
	}
	opts = append(opts, kgo.OnPartitionsRevoked(revoked(false)), kgo.OnPartitionsLost(revoked(true)))
	switch cfg.Guarantee {
	case ExactlyOnce:
		opts = append(opts, kgo.TransactionalID(cfg.TransactionalID), kgo.TransactionTimeout(30*time.Second))
	default:
		opts = append(opts, kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll())
	}
	h.opts = append(opts, cfg.Opts...)
	if cfg.Metrics != nil {
		vec, err := registerCounterVec(cfg.Metrics, prometheus.CounterOpts{Namespace: "scattergather", Name: "hop_restarts_total",
			Help: "Kafka clients a consume-produce hop closed and built again after an error it can recover from (a producer fenced, the member removed from its group), by consumer group."},
			"group")
		if err != nil {
			return nil, fmt.Errorf("hop %s: register metric: %w", cfg.Group, err)
		}
		h.restartsVec = vec.WithLabelValues(cfg.Group)
		if h.rejectedVec, err = registerCounterVec(cfg.Metrics, prometheus.CounterOpts{Namespace: "scattergather", Name: "records_rejected_total",
			Help: "Output records Kafka refused for good (unknown topic, not authorised, too large, invalid), each written as a dead letter instead, by consumer group and reason."},
			"group", "reason"); err != nil {
			return nil, fmt.Errorf("hop %s: register metric: %w", cfg.Group, err)
		}
	}
	if err := h.connect(); err != nil {
		return nil, err
	}
	return h, nil
}

// connect builds the hop's client (and session) from h.opts.
func (h *Hop) connect() error {
	// The client config's options come first, the hop's after them; the
	// client config's own hooks are built anew for every client.
	opts := append(h.cfg.Client.Options(), h.opts...)
	var (
		cl  *kgo.Client
		err error
	)
	if h.cfg.Guarantee == ExactlyOnce {
		var sess *kgo.GroupTransactSession
		if sess, err = kgo.NewGroupTransactSession(opts...); err == nil {
			h.sess, cl = sess, sess.Client()
			h.sessFlagged.Store(false)
		}
	} else {
		cl, err = kgo.NewClient(opts...)
	}
	if err != nil {
		return fmt.Errorf("hop %s: %w", h.cfg.Group, err)
	}
	h.cl, h.closed, h.fresh = cl, false, true
	h.current.Store(cl)
	return nil
}

// Restarts returns how often the hop has built a new client after an error
// it recovered from. Safe for concurrent use.
func (h *Hop) Restarts() int64 { return h.restarts.Load() }

// Client returns the hop's client, e.g. for metrics or admin requests. Do not
// use it to poll, commit or manage transactions. After a restart (see Run)
// it returns the new client: do not keep it across batches. Safe for
// concurrent use.
func (h *Hop) Client() *kgo.Client { return h.current.Load() }

// Run polls and processes batches until ctx is done or processing fails. On
// return the batch in flight has been committed or aborted and the client has
// left the group and closed.
//
// Run rides out the errors a live instance can recover from: its producer
// fenced or its epoch bumped (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH: a
// transaction outlived its timeout during a long pause, or another client
// initialised the transactional id), its member removed from the group
// (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION: a session timeout under load), a
// coordinator that moved or a broker that did not answer. The batch is
// aborted as for ErrAbort (the EndFunc learns it was not committed), the
// client is closed, which revokes every partition (OnRevoked runs as on a
// rebalance), and after RestartBackoff a new client initialises the same
// transactional id (a new producer epoch) and joins the group again (with
// InstanceID, as the same static member). The restart is logged at warn
// level and counted (Restarts, scattergather_hop_restarts_total). Errors
// that do not heal by trying again end Run: an error of the ProcessFunc,
// authentication and authorisation failures, a topic that does not exist,
// a configuration the broker rejects, and FENCED_INSTANCE_ID (another live
// instance has this InstanceID).
func (h *Hop) Run(ctx context.Context, process ProcessFunc, end EndFunc) (err error) {
	defer func() { h.close(ctx) }()
	ended := func(committed bool) {
		if committed {
			h.consecutive = 0
		}
		end(committed)
	}
	for {
		if ctx.Err() != nil {
			if h.cfg.FinalBatch {
				if err := h.runBatch(ctx, kgo.Fetches{}, process, ended); err != nil && !errors.Is(err, ErrAbort) {
					if !restartable(err) {
						return err
					}
					h.log.Warn("final batch aborted; its records will be consumed again", "group", h.cfg.Group, "err", err)
				}
			}
			return nil
		}
		if h.fresh {
			h.fresh = false
			if err := h.initProducer(ctx); err != nil {
				switch {
				case ctx.Err() != nil:
					return nil
				case !restartable(err) || h.isAbandoned():
					return err
				}
				if ok, err := h.restart(ctx, err); !ok {
					return err
				}
				continue
			}
		}
		fetches := h.poll(ctx)
		if fetches.IsClientClosed() {
			return nil
		}
		var groupErr error
		fetches.EachError(func(topic string, p int32, ferr error) {
			if _, ok := errors.AsType[*kgo.ErrGroupSession](ferr); ok && !restartable(ferr) && groupErr == nil {
				// kgo retries its group management forever and only
				// reports the error here: FENCED_INSTANCE_ID (another
				// live instance has our InstanceID), or an authorisation
				// failure, would leave this instance a member of nothing.
				groupErr = fmt.Errorf("group %s: %w", h.cfg.Group, ferr)
				return
			}
			if !errors.Is(ferr, context.Canceled) && !errors.Is(ferr, context.DeadlineExceeded) {
				h.log.Warn("fetch error", "group", h.cfg.Group, "topic", topic, "partition", p, "err", ferr)
			}
		})
		if groupErr != nil {
			return groupErr
		}
		final := ctx.Err() != nil // this batch is the final one
		if err := h.runBatch(ctx, fetches, process, ended); err != nil {
			switch {
			case errors.Is(err, ErrAbort):
				continue
			case !restartable(err) || h.isAbandoned():
				return err
			case ctx.Err() != nil:
				// Stopping anyway: the batch was aborted, and the
				// partitions' next owner consumes it again.
				h.log.Warn("last batch aborted on the way out; its records will be consumed again", "group", h.cfg.Group, "err", err)
				return nil
			}
			if ok, err := h.restart(ctx, err); !ok {
				return err
			}
			continue
		}
		if final {
			return nil
		}
	}
}

// initProducer initialises a new client's transactional producer before
// it joins the group (exactly-once; see below for at-least-once). That fences
// the previous incarnation of the transactional id and has the broker
// abort the transaction it left open, so that nothing this instance reads
// on assignment waits for that transaction's timeout: with static
// membership a restarted instance is assigned its partitions at once, and
// the aggregator's restore reads its changelog read_committed in the
// assignment callback. franz-go would otherwise initialise the producer
// only at the first transaction, after the callback.
//
// At least once there is no producer to initialise: the client pings the
// brokers instead, so that an error no new client heals (a broker
// certificate it does not trust) ends Run at once, as it does exactly once.
// kgo's KIP-848 group loop retries dial errors, TLS ones included, and
// reports them only after many attempts. Other ping errors (a broker not
// up yet) are left to kgo's own retries, as before.
func (h *Hop) initProducer(ctx context.Context) error {
	if h.sess == nil {
		if err := h.cl.Ping(ctx); err != nil && !restartable(err) {
			return fmt.Errorf("connect to the brokers of %s: %w", h.cfg.Group, err)
		}
		return nil
	}
	if _, _, err := h.cl.ProducerID(ctx); err != nil {
		return fmt.Errorf("init producer id of %s: %w", h.cfg.TransactionalID, err)
	}
	return nil
}

// LogClientRestart is the message of the warning Run logs when it builds a
// new client (the chaos harness counts them in the role logs).
const LogClientRestart = "kafka client failed; closing it and building a new one"

// restart closes the client after cause, waits the backoff and builds a
// new one. It returns false when Run must stop instead: ctx ended or the
// hop was abandoned meanwhile (nil error), or the new client could not be
// built.
func (h *Hop) restart(ctx context.Context, cause error) (ok bool, err error) {
	h.consecutive++
	n := h.restarts.Add(1)
	if h.restartsVec != nil {
		h.restartsVec.Inc()
	}
	backoff := h.cfg.RestartBackoff
	for i := 1; i < h.consecutive && backoff < h.cfg.MaxRestartBackoff; i++ {
		backoff *= 2
	}
	backoff = min(backoff, h.cfg.MaxRestartBackoff)
	h.log.Warn(LogClientRestart, "group", h.cfg.Group,
		"err", cause, "restarts", n, "in_a_row", h.consecutive, "backoff", backoff)
	// Closing revokes every partition (OnRevoked), as a rebalance would; a
	// static member keeps its place in the group for the new client.
	h.closeClient()
	t := time.NewTimer(backoff)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, nil
	case <-h.abandoned:
		return false, nil
	case <-t.C:
	}
	if err := h.connect(); err != nil {
		return false, fmt.Errorf("restart: %w", err)
	}
	if h.isAbandoned() {
		// Abandon may have closed the old client, not this one.
		h.closeClient()
		return false, nil
	}
	return true, nil
}

// restartable reports whether err, which ended a batch, may heal with a new
// client: every Kafka error but those of authentication, authorisation,
// configuration, a missing topic and a fenced static member. Errors of the
// ProcessFunc never are.
func restartable(err error) bool {
	if _, ok := errors.AsType[*processError](err); ok {
		return false
	}
	if errors.Is(err, kgo.ErrClientClosed) {
		return false
	}
	if certificateError(err) {
		return false
	}
	for _, fatal := range fatalErrors {
		if errors.Is(err, fatal) {
			return false
		}
	}
	return true
}

// certificateError reports whether err is a broker certificate that failed
// verification (unknown CA, a name it does not cover, expired): a wrong
// --tls-ca-file or --tls-server-name, which no new client heals. kgo does
// not retry a dial that fails so, but Run would build new clients forever
// (backing off to MaxRestartBackoff) with the role never ready.
func certificateError(err error) bool {
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return true
	}
	_, ok := errors.AsType[x509.CertificateInvalidError](err)
	return ok
}

// fatalErrors end Run: trying again with a new client does not help.
var fatalErrors = []error{
	kerr.SaslAuthenticationFailed, kerr.UnsupportedSaslMechanism, kerr.IllegalSaslState,
	kerr.TopicAuthorizationFailed, kerr.GroupAuthorizationFailed, kerr.ClusterAuthorizationFailed,
	kerr.TransactionalIDAuthorizationFailed, kerr.DelegationTokenAuthorizationFailed,
	kerr.UnknownTopicOrPartition, kerr.UnknownTopicID, kerr.InvalidTopicException,
	kerr.UnsupportedVersion, kerr.UnsupportedForMessageFormat, kerr.UnsupportedCompressionType,
	kerr.InvalidConfig, kerr.InvalidTransactionTimeout, kerr.InvalidSessionTimeout, kerr.InvalidGroupID,
	kerr.InvalidRequiredAcks, kerr.PolicyViolation,
	kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord, kerr.CorruptMessage,
	kerr.FencedInstanceID,
}

// processError is an error of the ProcessFunc: it ends Run.
type processError struct{ err error }

func (e *processError) Error() string { return "process batch: " + e.err.Error() }
func (e *processError) Unwrap() error { return e.err }

func (h *Hop) poll(ctx context.Context) kgo.Fetches {
	if h.cfg.Tick > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.cfg.Tick)
		defer cancel()
	}
	var rebalanced <-chan struct{} // a nil channel never wakes
	if h.sess != nil {
		rebalanced = h.rebalanced
	}
	if h.cfg.Wake != nil || rebalanced != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		exited := make(chan struct{})
		// Exits when the poll returns (or a wake ends it). The poll waits
		// for it, so that it cannot take a wake meant for the next poll.
		go func() {
			defer close(exited)
			select {
			case <-h.cfg.Wake:
				cancel()
			case <-rebalanced:
				cancel()
			case <-ctx.Done():
			}
		}()
		defer func() {
			cancel()
			<-exited
		}()
	}
	if n := h.cfg.MaxPollRecords; n > 0 {
		if h.sess != nil {
			return h.sess.PollRecords(ctx, n)
		}
		return h.cl.PollRecords(ctx, n)
	}
	if h.sess != nil {
		return h.sess.PollFetches(ctx)
	}
	return h.cl.PollFetches(ctx)
}

// runBatch processes one batch and commits or aborts it. The batch runs on a
// context that outlives ctx by DrainTimeout so that a shutdown finishes the
// work in flight when it can.
func (h *Hop) runBatch(ctx context.Context, fetches kgo.Fetches, process ProcessFunc, end EndFunc) error {
	if h.sess == nil {
		defer h.cl.AllowRebalance()
	}
	idle := h.sess != nil && fetches.NumRecords() == 0
	unlockIdle := func() {}
	if idle {
		h.idle <- struct{}{}
		unlockIdle = sync.OnceFunc(func() { <-h.idle })
		defer unlockIdle()
	}
	bctx, cancel := drainContext(ctx, h.cfg.DrainTimeout)
	defer cancel()

	b := &Batch{Fetches: fetches}
	perr := process(bctx, b)
	// A flagged session must see End (see Hop.sessFlagged): the batch
	// takes the transaction's full path even with nothing to commit.
	flagged := h.sess != nil && h.sessFlagged.Load()
	if !flagged && perr == nil && len(b.out) == 0 && len(b.state) == 0 && !b.committing() && (fetches.NumRecords() == 0 || b.deferred) {
		return nil
	}
	if idle && !b.committing() && !flagged {
		return h.endProduceOnly(ctx, bctx, b, perr, end)
	}
	if idle {
		// A transaction that commits offsets is aborted by a revocation
		// (the session sees it); it must not hold the lock a revocation
		// waits for, since the session's callbacks hold the lock End
		// needs while they call ours.
		unlockIdle()
	}
	if h.sess != nil {
		return h.endTransaction(ctx, bctx, b, perr, end)
	}
	return h.commitAfterProduce(ctx, bctx, b, perr, end)
}

func (h *Hop) endTransaction(ctx, bctx context.Context, b *Batch, perr error, end EndFunc) error {
	if perr != nil {
		// Nothing was produced yet: there is no transaction to abort, but the
		// polled records must be consumed again.
		h.rewind(b)
		end(false)
		return h.batchError(ctx, perr)
	}
	if len(b.out) == 0 && len(b.state) == 0 && len(h.cl.UncommittedOffsets()) == 0 && !h.sessFlagged.Load() {
		// Nothing to write and nothing to commit (a role's own commit
		// offsets equal the committed ones): franz-go would end no
		// transaction, yet hold its session's lock for 500ms, since no
		// TxnOffsetCommit response told it the broker has KIP-447.
		end(true)
		return nil
	}
	// A record Kafka refuses for good aborts this attempt only: the
	// transaction is ended without the session (which would rewind the
	// consumer to the committed offsets) and begun again with a dead
	// letter in the record's place (see reject.go).
	out := slices.Concat(b.out, b.state)
	var (
		prodErr error
		failed  []failedRecord
	)
	for round := 0; ; round++ {
		if err := h.sess.Begin(); err != nil {
			end(false)
			return fmt.Errorf("begin transaction: %w", err)
		}
		failed, prodErr = h.produceAll(bctx, out)
		if prodErr == nil || round == maxRejectRounds {
			break
		}
		next, ok := h.replaceRejected(out, failed)
		if !ok {
			break
		}
		if err := h.abortAttempt(bctx); err != nil {
			end(false)
			return fmt.Errorf("end transaction: %w", errors.Join(err, prodErr))
		}
		out = next
	}
	try := kgo.TryCommit
	if prodErr != nil {
		try = kgo.TryAbort
	}
	// End resets the session's revocation flags: a revocation after this
	// point flags the hop again.
	h.sessFlagged.Store(false)
	committed, err := h.sess.End(b.commitContext(bctx), try)
	end(committed)
	switch {
	case err != nil:
		return fmt.Errorf("end transaction: %w", errors.Join(err, prodErr))
	case allRejected(failed):
		// Even the dead letters were refused: retrying cannot help.
		return fmt.Errorf("write dead letters to %q: %w", h.cfg.DeadLetters, prodErr)
	case prodErr != nil:
		h.log.Warn("transaction aborted", "group", h.cfg.Group, "err", prodErr)
	case !committed:
		h.log.Info("transaction aborted by a rebalance; records will be consumed again", "group", h.cfg.Group)
	}
	return nil
}

// endProduceOnly runs the transaction of a batch that consumed nothing (a
// tick's timers fired) with the client's own EndTransaction. With no offsets
// to commit it needs no group generation check, and GroupTransactSession.End
// would cost 500ms: without a TxnOffsetCommit response it cannot tell that
// the broker supports KIP-447 and holds the session's lock that long
// (franz-go v1.22.3). A revocation waits for it (see Hop.idle).
func (h *Hop) endProduceOnly(ctx, bctx context.Context, b *Batch, perr error, end EndFunc) error {
	if perr != nil {
		end(false)
		return h.batchError(ctx, perr)
	}
	if err := h.sess.Begin(); err != nil {
		end(false)
		return fmt.Errorf("begin transaction: %w", err)
	}
	out := slices.Concat(b.out, b.state)
	var (
		prodErr error
		failed  []failedRecord
	)
	for round := 0; ; round++ {
		failed, prodErr = h.produceAll(bctx, out)
		if prodErr == nil || round == maxRejectRounds {
			break
		}
		next, ok := h.replaceRejected(out, failed)
		if !ok {
			break
		}
		if err := h.abortAttempt(bctx); err != nil {
			end(false)
			return fmt.Errorf("end transaction: %w", errors.Join(err, prodErr))
		}
		if err := h.sess.Begin(); err != nil {
			end(false)
			return fmt.Errorf("begin transaction: %w", err)
		}
		out = next
	}
	try := kgo.TryCommit
	if prodErr != nil {
		try = kgo.TryAbort
		if err := h.cl.AbortBufferedRecords(bctx); err != nil {
			prodErr = errors.Join(prodErr, err)
		}
	}
	if err := h.cl.EndTransaction(bctx, try); err != nil {
		end(false)
		return fmt.Errorf("end transaction: %w", errors.Join(err, prodErr))
	}
	end(try == kgo.TryCommit)
	if allRejected(failed) {
		return fmt.Errorf("write dead letters to %q: %w", h.cfg.DeadLetters, prodErr)
	}
	if prodErr != nil {
		h.log.Warn("transaction aborted", "group", h.cfg.Group, "err", prodErr)
	}
	return nil
}

func (h *Hop) commitAfterProduce(ctx, bctx context.Context, b *Batch, perr error, end EndFunc) error {
	if perr != nil {
		h.rewind(b)
		end(false)
		return h.batchError(ctx, perr)
	}
	// Output first, then state: see Batch.ProduceState.
	for _, out := range [][]*kgo.Record{b.out, b.state} {
		// What was written stays written; a record Kafka refuses for good
		// is replaced by its dead letter (see reject.go).
		for round := 0; len(out) > 0; round++ {
			failed, err := h.produceAll(bctx, out)
			if err == nil {
				break
			}
			var ok bool
			if round < maxRejectRounds {
				out, ok = h.replaceRejected(nil, failed)
			}
			if !ok {
				// Some records may have been written: they will be written
				// again when the batch is consumed again, which is what
				// at-least-once allows.
				end(false)
				return fmt.Errorf("produce: %w", err)
			}
		}
	}
	if err := h.commitOffsets(bctx, b); err != nil {
		end(false)
		return fmt.Errorf("commit offsets: %w", err)
	}
	end(true)
	return nil
}

// commitOffsets commits what b consumed (at-least-once): the polled
// position of every partition, except where b set its own (Batch.Commit).
func (h *Hop) commitOffsets(ctx context.Context, b *Batch) error {
	if !b.committing() {
		return h.cl.CommitUncommittedOffsets(ctx)
	}
	offsets := h.cl.UncommittedOffsets()
	b.mu.Lock()
	for t, ps := range b.commits {
		for p, o := range ps {
			if _, ok := offsets[t][p]; ok {
				offsets[t][p] = kgo.EpochOffset{Epoch: o.Epoch, Offset: o.Offset}
			}
		}
	}
	b.mu.Unlock()
	var err error
	h.cl.CommitOffsetsSync(b.commitContext(ctx), offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, cerr error) {
		if cerr != nil {
			err = cerr
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil && err == nil {
					err = fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, perr)
				}
			}
		}
	})
	return err
}

// commitContext returns ctx with the hooks that put b's own commit offsets
// (Batch.Commit) into the offset commit request, transactional or not.
func (b *Batch) commitContext(ctx context.Context) context.Context {
	b.mu.Lock()
	commits := b.commits
	b.mu.Unlock()
	if len(commits) == 0 {
		return ctx
	}
	ctx = kgo.PreTxnCommitFnContext(ctx, func(req *kmsg.TxnOffsetCommitRequest) error {
		for i := range req.Topics {
			t := &req.Topics[i]
			for j := range t.Partitions {
				p := &t.Partitions[j]
				if o, ok := commits[t.Topic][p.Partition]; ok {
					p.Offset, p.LeaderEpoch, p.Metadata = o.Offset, o.Epoch, &o.Metadata
				}
			}
		}
		return nil
	})
	return kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			t := &req.Topics[i]
			for j := range t.Partitions {
				p := &t.Partitions[j]
				if o, ok := commits[t.Topic][p.Partition]; ok {
					p.Offset, p.LeaderEpoch, p.Metadata = o.Offset, o.Epoch, &o.Metadata
				}
			}
		}
		return nil
	})
}

// rewind sets each partition of fetches back to its first polled record, so
// that an aborted batch is consumed again. A batch that set its own commit
// offsets (Batch.Commit) may have records in flight from earlier polls:
// every partition goes back to its committed offset instead.
func (h *Hop) rewind(b *Batch) {
	if b.committing() {
		to := map[string]map[int32]kgo.EpochOffset{}
		for t, ps := range h.cl.CommittedOffsets() {
			to[t] = maps.Clone(ps)
		}
		if len(to) > 0 {
			h.cl.SetOffsets(to)
		}
		return
	}
	h.rewindFetches(b.Fetches)
}

func (h *Hop) rewindFetches(fetches kgo.Fetches) {
	to := map[string]map[int32]kgo.EpochOffset{}
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		r := p.Records[0]
		if to[p.Topic] == nil {
			to[p.Topic] = map[int32]kgo.EpochOffset{}
		}
		to[p.Topic][p.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
	})
	if len(to) > 0 {
		h.cl.SetOffsets(to)
	}
}

func (h *Hop) batchError(ctx context.Context, perr error) error {
	if errors.Is(perr, ErrAbort) {
		if ctx.Err() != nil {
			return nil
		}
		return perr
	}
	return &processError{perr}
}

// close closes the client for good when Run returns: a static member
// leaves its group explicitly, so that its partitions go to the others at
// once rather than after the session timeout.
func (h *Hop) close(ctx context.Context) {
	h.closeClient()
	if h.cfg.InstanceID == "" || h.isAbandoned() {
		return
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	if err := h.leave(lctx); err != nil {
		h.log.Warn("leave group as a static member; its partitions wait for the session timeout", "group", h.cfg.Group,
			"instance_id", h.cfg.InstanceID, "err", err)
	}
}

// leave removes the hop's static member from its group (LeaveGroup naming
// its instance id), through a client of its own: the hop's is closed.
func (h *Hop) leave(ctx context.Context) error {
	cc := h.cfg.Client
	cc.NewHooks = nil // no metrics for a client of one request
	cl, err := NewClient(cc)
	if err != nil {
		return err
	}
	defer cl.Close()
	resps, err := kadm.NewClient(cl).LeaveGroup(ctx, kadm.LeaveGroup(h.cfg.Group).InstanceIDs(h.cfg.InstanceID).
		Reason("instance stopping"))
	if err != nil {
		return err
	}
	var errs []error
	resps.EachError(func(r kadm.LeaveGroupResponse) {
		if !errors.Is(r.Err, kerr.UnknownMemberID) { // not in the group (any more)
			errs = append(errs, r.Err)
		}
	})
	return errors.Join(errs...)
}

// closeClient closes the client once; Close leaves the group (a dynamic
// member) and revokes every partition. With autocommit disabled
// (at-least-once) and in a transact session nothing is committed on the
// way out.
func (h *Hop) closeClient() {
	if h.closed {
		return
	}
	h.closed = true
	defer func() {
		// Closing revokes every partition; one whose revocation the
		// transaction session swallowed is revoked here.
		if stale := h.unowned(nil); len(stale) > 0 {
			h.log.Warn("revoking partitions whose revocation the transaction session did not pass on", "group", h.cfg.Group, "partitions", stale)
			h.revoke(context.Background(), h.cl, stale, true)
		}
		h.joined.Store(false)
		h.partitions.Store(0)
	}()
	if h.sess != nil {
		h.sess.Close()
		return
	}
	// At-least-once polls with BlockRebalanceOnPoll: a plain Close would
	// wait to leave the group behind a rebalance that this very poll
	// blocks, and hang when the batch in flight cannot finish.
	h.cl.CloseAllowingRebalance()
}

// Abandon closes the hop's client at once, from any goroutine, as a crash
// would leave it: Run's batch in flight may be stuck (an idempotent producer
// never gives up a batch that may have been written), so a revocation no
// longer waits for it, and nothing more is committed. Run then returns
// without building a new client or leaving the group. Tests use it to
// emulate a killed process; a role stops with its context.
func (h *Hop) Abandon() {
	h.abandon.Do(func() { close(h.abandoned) })
	h.current.Load().CloseAllowingRebalance()
}

func (h *Hop) isAbandoned() bool {
	select {
	case <-h.abandoned:
		return true
	default:
		return false
	}
}

// manualFor returns a partitioner that sends records of topics, and of
// topics starting with one of prefixes, to the partition they name and
// those of other topics through def.
func manualFor(topics, prefixes []string, def kgo.Partitioner) kgo.Partitioner {
	return manualPartitioner{topics: slices.Clone(topics), prefixes: slices.Clone(prefixes), def: def}
}

type manualPartitioner struct {
	topics   []string
	prefixes []string
	def      kgo.Partitioner
}

func (p manualPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if slices.Contains(p.topics, topic) || slices.ContainsFunc(p.prefixes, func(pre string) bool { return strings.HasPrefix(topic, pre) }) {
		return kgo.ManualPartitioner().ForTopic(topic)
	}
	return p.def.ForTopic(topic)
}

// drainContext returns a context that is cancelled d after parent is done.
func drainContext(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	stop := context.AfterFunc(parent, func() {
		t := time.AfterFunc(d, cancel)
		context.AfterFunc(ctx, func() { t.Stop() })
	})
	return ctx, func() {
		stop()
		cancel()
	}
}

// registerCounterVec registers a counter vector, or finds the equal one a
// hop of the same process registered before.
func registerCounterVec(reg prometheus.Registerer, opts prometheus.CounterOpts, labels ...string) (*prometheus.CounterVec, error) {
	vec := prometheus.NewCounterVec(opts, labels)
	if err := reg.Register(vec); err != nil {
		are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
		if !ok {
			return nil, err
		}
		if vec, ok = are.ExistingCollector.(*prometheus.CounterVec); !ok {
			return nil, err
		}
	}
	return vec, nil
}
