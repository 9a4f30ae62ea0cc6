package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/scattergather/scattergather/internal/tracing"
)

// The hop: one consume-transform-produce loop for every role (Run), its
// configuration and its poll. The files beside it hold the rest, each with
// its invariant:
//
//	hop_batch.go   what one poll returned and what processing produced
//	hop_txn.go     ending a batch under exactly-once (one transaction)
//	hop_commit.go  ending a batch under at-least-once (produce, then commit)
//	reject.go      records Kafka refuses for good, replaced by dead letters
//	hop_client.go  the client's life: restarts, fatal errors, close, leave
//	hop_owned.go   what the role owns, and revocations franz-go swallows
//	hop_again.go   an aborted batch's records are consumed again: checked
//
// Every method of Hop that is not documented as safe for concurrent use
// runs on Run's goroutine.

// ErrAbort may be returned by a [ProcessFunc] to abort the batch: nothing it
// produced is kept and its records are consumed again, by this instance or
// by the next owner of their partitions. Run then returns nil if its context
// is done (a shutdown in the middle of a batch) and goes on otherwise.
var ErrAbort = errors.New("abort batch")

// HopConfig configures a [Hop].
type HopConfig struct {
	Client kafkaconfig.Client
	// Group is the consumer group; required.
	Group string
	// Topics are consumed by the group; required.
	Topics []string
	// Guarantee defaults to kafkaconfig.ExactlyOnce.
	Guarantee kafkaconfig.Guarantee
	// TransactionalID is required with exactly-once. Keep it stable per
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
	// SessionTimeout is the group's session timeout (kafkaconfig.Role);
	// default 10s.
	SessionTimeout time.Duration
	// HoldsState says the role may hold its state (Batch.HoldState) or
	// commit behind what it polled (Batch.Commit) in a batch that writes
	// state. Under exactly-once a batch that does not hold then commits the
	// offsets the earlier ones left, even with nothing to write, and Run
	// commits them before the client leaves (hop_hold.go).
	HoldsState bool
	// CommitInterval is, under at-least-once, the least time between two
	// offset commits: a batch whose output is acknowledged sooner after the
	// last commit leaves its offsets to the next commit, which comes with
	// the first batch past the interval, a revocation, or Run's end. A
	// crash then consumes more again, which at-least-once allows; a batch
	// saves the OffsetCommit round trip. Zero commits every batch.
	// Batches that set their own offsets (Batch.Commit) always commit.
	CommitInterval time.Duration
	// TransactionGap is, under exactly-once, the least time from the end
	// of a transaction to the poll for the next batch
	// (kafkaconfig.Role.TransactionGap); zero takes
	// kafkaconfig.DefaultTransactionGap, negative: none.
	TransactionGap time.Duration
	// TracerProvider, when set, gives the records of a traced request
	// kotel's publish and receive spans (tracing.Hooks).
	TracerProvider trace.TracerProvider
	// Opts are passed to the client after the hop's options.
	Opts []kgo.Opt
}

// setDefaults fills in what c leaves unset; NewHop calls it on its copy.
func (c *HopConfig) setDefaults() {
	if c.Guarantee == "" {
		c.Guarantee = kafkaconfig.ExactlyOnce
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
}

// Validate reports every problem with c at once; it changes nothing. An
// empty Guarantee is exactly-once (setDefaults).
func (c HopConfig) Validate() error {
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
	g := c.Guarantee
	if g == "" {
		g = kafkaconfig.ExactlyOnce
	}
	if _, err := kafkaconfig.ParseGuarantee(string(g)); err != nil {
		errs = append(errs, err)
	}
	if g == kafkaconfig.ExactlyOnce && c.TransactionalID == "" {
		errs = append(errs, errors.New("transactional id: required for exactly-once"))
	}
	if c.Tick < 0 {
		errs = append(errs, fmt.Errorf("tick: %s is negative", c.Tick))
	}
	if c.MaxPollRecords < 0 {
		errs = append(errs, fmt.Errorf("max poll records: %d is negative", c.MaxPollRecords))
	}
	return errors.Join(errs...)
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
	// lastEnd is when the last transaction ended (Run's goroutine), for
	// HopConfig.TransactionGap.
	lastEnd time.Time

	// Restarts: in all (Restarts), and in a row without a committed
	// batch (Run's goroutine), which sets the backoff.
	restarts    atomic.Int64
	restartsVec prometheus.Counter // nil without HopConfig.Metrics
	rejectedVec *prometheus.CounterVec
	consecutive int
	// commitFails counts the batches in a row whose offset commit failed
	// with an error after which End aborted the transaction (Run's
	// goroutine; see offsetCommitAborted).
	commitFails int

	// idle is held, under exactly-once, while a batch that consumed no
	// records is processed and its transaction ends; a revocation waits for
	// it, so that output computed for a partition is committed before the
	// partition's next owner can take it over.
	// It is a semaphore so that a revocation can stop waiting when the
	// client is abandoned (Abandon): the batch in flight may then never end.
	idle      chan struct{}
	abandoned chan struct{}
	abandon   sync.Once

	// Group membership, kept by the rebalance callbacks for Membership,
	// and for Settled when the last rebalance callback ran (unix
	// nanoseconds).
	joined      atomic.Bool
	partitions  atomic.Int64
	rebalanceAt atomic.Int64

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
	// ownGen counts the changes of owned (Hop.resume).
	ownGen uint64
	// again marks, by partition, the first record an aborted batch read
	// (hop_again.go); ownMu guards it.
	again           map[string]map[int32]kgo.EpochOffset
	rewindsRepaired atomic.Int64
	repairedVec     prometheus.Counter // nil without HopConfig.Metrics

	// acked are offsets whose batches' output is acknowledged and that
	// are not committed yet (HopConfig.CommitInterval, at-least-once);
	// written on Run's goroutine, committed there or by a revocation.
	ackedMu    sync.Mutex
	acked      map[string]map[int32]kgo.EpochOffset
	lastCommit time.Time
	// holding: a batch since the last commit held its state
	// (Batch.HoldState, at-least-once); process and ended are Run's, for
	// flushHeld.
	holding atomic.Bool
	process ProcessFunc
	ended   EndFunc
}

// NewHop builds the hop's client and joins nothing yet: the group is joined
// on the first poll in Run.
func NewHop(cfg HopConfig) (*Hop, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("hop config: %w", err)
	}
	cfg.Topics = slices.Clone(cfg.Topics)
	cfg.Opts = slices.Clone(cfg.Opts)
	cfg.setDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []kgo.Opt{
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.SessionTimeout(cmp.Or(cfg.SessionTimeout, kafkaconfig.DefaultSessionTimeout)),
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
	opts = append(opts, kgo.OnPartitionsAssigned(h.assigned), kgo.OnOffsetsFetched(h.offsetsFetched))
	revoked := func(lost bool) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(ctx context.Context, cl *kgo.Client, rev map[string][]int32) {
			if cfg.Guarantee == kafkaconfig.ExactlyOnce {
				h.sessFlagged.Store(true)
				select {
				case h.rebalanced <- struct{}{}:
				default:
				}
			}
			if cfg.Guarantee != kafkaconfig.ExactlyOnce && cfg.CommitInterval > 0 {
				h.commitBeforeRevoke(ctx, lost)
			}
			h.revoke(ctx, cl, rev, lost)
		}
	}
	opts = append(opts, kgo.OnPartitionsRevoked(revoked(false)), kgo.OnPartitionsLost(revoked(true)))
	switch cfg.Guarantee {
	case kafkaconfig.ExactlyOnce:
		opts = append(opts, kgo.TransactionalID(cfg.TransactionalID), kgo.TransactionTimeout(30*time.Second))
	default:
		opts = append(opts, kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll())
	}
	if hooks := tracing.Hooks(cfg.TracerProvider); len(hooks) > 0 {
		opts = append(opts, kgo.WithHooks(hooks...))
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
		vec, err = registerCounterVec(cfg.Metrics, prometheus.CounterOpts{Namespace: "scattergather", Name: "hop_rewinds_repaired_total",
			Help: "Polls whose records of a partition started past where an aborted batch had read it from (the client was not set back), set back before the role saw them, by consumer group. Should stay 0."},
			"group")
		if err != nil {
			return nil, fmt.Errorf("hop %s: register metric: %w", cfg.Group, err)
		}
		h.repairedVec = vec.WithLabelValues(cfg.Group)
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
	if h.cfg.Guarantee == kafkaconfig.ExactlyOnce {
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
	h.process, h.ended = process, ended
	for {
		if ctx.Err() != nil {
			// Under exactly-once, offsets a role held are committed with
			// its state before the client leaves (hop_hold.go).
			if h.cfg.FinalBatch || h.commitsHeld() {
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
		h.waitGap(ctx)
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
			switch {
			case errors.Is(ferr, context.Canceled), errors.Is(ferr, context.DeadlineExceeded):
			case kerr.IsRetriable(ferr):
				// Kept by a role that asked for them (kgo's
				// KeepRetryableFetchErrors); the client retries them.
				h.log.Debug("fetch error, retried", "group", h.cfg.Group, "topic", topic, "partition", p, "err", ferr)
			default:
				h.log.Warn("fetch error", "group", h.cfg.Group, "topic", topic, "partition", p, "err", ferr)
			}
		})
		if groupErr != nil {
			return groupErr
		}
		if h.repairSkip(fetches) {
			continue
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

// waitGap waits, under exactly-once, until TransactionGap has passed since
// the last transaction ended: a transaction begun sooner would likely have
// its first produce held by the broker for 20ms (see
// kafkaconfig.Role.TransactionGap).
func (h *Hop) waitGap(ctx context.Context) {
	gap := cmp.Or(h.cfg.TransactionGap, kafkaconfig.DefaultTransactionGap)
	if h.sess == nil || gap < 0 || h.lastEnd.IsZero() {
		return
	}
	if d := gap - time.Since(h.lastEnd); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}

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

	b := &Batch{Fetches: fetches, stateDue: h.stateDue(ctx.Err() != nil)}
	perr := process(bctx, b)
	// A flagged session must see End (see Hop.sessFlagged): the batch
	// takes the transaction's full path even with nothing to commit.
	flagged := h.sess != nil && h.sessFlagged.Load()
	quiet := perr == nil && len(b.out) == 0 && len(b.state) == 0 && !b.committing() && (fetches.NumRecords() == 0 || b.deferred)
	// Under exactly-once a batch that does not hold commits the offsets
	// earlier batches held, even with nothing to write (hop_hold.go). Only
	// a quiet or idle batch could skip the session's End, so only there is
	// it asked.
	commitHeld := (quiet || idle) && !b.holding() && h.commitsHeld()
	if !flagged && !commitHeld && quiet {
		if b.holding() && h.sess == nil {
			h.holding.Store(true)
		}
		return nil
	}
	if idle && !b.committing() && !flagged && !commitHeld {
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

func (h *Hop) batchError(ctx context.Context, perr error) error {
	if errors.Is(perr, ErrAbort) {
		if ctx.Err() != nil {
			return nil
		}
		return perr
	}
	return &processError{perr}
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
