package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Defaults of [Config].
const (
	DefaultTick            = 50 * time.Millisecond
	DefaultLateWindow      = 5 * time.Minute
	DefaultMaxOpenRequests = 100_000
	DefaultMaxPollRecords  = 10_000
)

// role names the aggregator in dead letters.
const role = "aggregator"

// headerType says what a record is, for tools that do not decode Avro.
const headerType = "sg-type"

// Config configures an [Aggregator]. A zero field takes its default.
type Config struct {
	// Role is how to reach Kafka, the topics, and the rest every role
	// shares: the aggregator consumes Topics.Results(), replies to the
	// manifest's ReplyTo (when it starts with Topics.Replies(), else to
	// Topics.Replies()), dead-letters to Topics.DLQ() and keeps its state
	// in Topics.State(), a compacted topic with as many partitions as
	// Topics.Results(). Group defaults to Topics.Prefix + "aggregator".
	kafkaconfig.Role
	// Merges maps a route to the merge of its replies; routes not listed
	// use DefaultMerge.
	Merges map[schemas.Route]Merge
	// DefaultMerge defaults to Collect().
	DefaultMerge Merge
	// Tick is the longest the aggregator waits for records before it
	// checks its timers anyway; a timer due sooner wakes it at its time.
	// Default 50ms.
	Tick time.Duration
	// LateWindow is how long a completed request is remembered so that late
	// and duplicate results (and a second manifest) for it are dropped and
	// counted rather than treated as new: from its deadline, or from its
	// reply when that came at or past the deadline. A manifest read past its
	// deadline plus LateWindow is dead-lettered as manifest-expired, never
	// answered, so that no manifest read again is answered twice. Keep it
	// longer than the clock skew between scatterers and aggregators.
	// Default 5m. Memory grows with the requests completed within one
	// window.
	LateWindow time.Duration
	// MaxOpenRequests bounds the requests this instance gathers at once
	// (manifest read, not replied to), and so its memory. When its open
	// requests reach it, the aggregator pauses fetching the results topic
	// (kgo's PauseFetchTopics); its deadlines go on firing and completing
	// requests, and it resumes fetching once they are down to 90% of the
	// limit. Manifests and results share the topic, so while paused no
	// result arrives either: open requests complete at their deadlines,
	// with what they had. A batch polled before the pause is applied whole,
	// so the instance holds at most MaxOpenRequests - 1 + MaxPollRecords
	// open requests, plus those a partition assignment restores from the
	// changelog (restored, never refused). Default DefaultMaxOpenRequests
	// (100,000); negative: no limit.
	MaxOpenRequests int
	// MaxPollRecords caps the records of one batch, and so what one batch
	// can add beyond MaxOpenRequests. Default DefaultMaxPollRecords
	// (10,000); negative: no cap (a batch takes what the client buffered).
	MaxPollRecords int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// setDefaults returns c with its empty fields filled in, sharing nothing
// the caller could see change: Merges is a new map.
func (c Config) setDefaults() Config {
	c.Role = c.Role.WithDefaults("aggregator")
	c.Merges = maps.Clone(c.Merges)
	if c.DefaultMerge == nil {
		c.DefaultMerge = Collect()
	}
	if c.Tick == 0 {
		c.Tick = DefaultTick
	}
	if c.LateWindow == 0 {
		c.LateWindow = DefaultLateWindow
	}
	if c.MaxOpenRequests == 0 {
		c.MaxOpenRequests = DefaultMaxOpenRequests
	}
	if c.MaxPollRecords == 0 {
		c.MaxPollRecords = DefaultMaxPollRecords
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports every problem with c at once; a zero field that takes a
// default is not a problem. It changes nothing.
func (c Config) Validate() error {
	var errs []error
	if err := c.Role.Validate(); err != nil {
		errs = append(errs, err)
	}
	for route, m := range c.Merges {
		if m == nil {
			errs = append(errs, fmt.Errorf("merges: route %q has a nil merge", route))
		}
	}
	if c.Tick < 0 {
		errs = append(errs, fmt.Errorf("tick: %s is negative", c.Tick))
	}
	if c.LateWindow < 0 {
		errs = append(errs, fmt.Errorf("late window: %s is negative", c.LateWindow))
	}
	return errors.Join(errs...)
}

// Stats counts what an Aggregator did, in batches that were committed (a
// batch that aborts will be consumed again and is counted then).
type Stats struct {
	Manifests       int64 // manifests consumed
	ResultsReceived int64 // results consumed
	// Duplicates counts results for a part that already had one, and
	// manifests for a request already open or done.
	Duplicates int64
	// Late counts results for a request already replied to.
	Late int64
	// OrphansHeld is a gauge: results held because their manifest has not
	// come yet.
	OrphansHeld int64
	// OrphansExpired counts held results dead-lettered because their
	// manifest never came (or came expired).
	OrphansExpired int64
	// ManifestsExpired counts manifests dead-lettered because they were
	// read past their deadline plus LateWindow (see Config.LateWindow).
	ManifestsExpired int64
	// Replies by status.
	RepliesComplete int64
	RepliesPartial  int64
	RepliesFailed   int64
	// Open is a gauge: requests awaiting completion.
	Open int64
	// OpenPeak is the most requests this instance held open at once,
	// counted after each batch's records (before its timers fire) and after
	// each restore.
	OpenPeak int64
	// Paused is a gauge: fetching results is paused because Open reached
	// Config.MaxOpenRequests. Pauses counts the pauses.
	Paused bool
	Pauses int64
	// DeadLettered counts records written to the DLQ.
	DeadLettered int64
	// ChangelogRecords counts records written to the changelog (the state
	// topic), tombstones included.
	ChangelogRecords int64
	// Restored counts what assigned partitions brought back from the
	// changelog: open requests, requests replied to and still in their late
	// window, and results held before their manifest.
	RestoredOpen int64
	RestoredDone int64
	RestoredHeld int64
	// RestoreSkipped counts changelog entries a restore could not use:
	// undecodable, or left over from a request that had moved on.
	RestoreSkipped int64
	// HedgesIssued counts tasks re-issued to another processor because a
	// part had not answered by its route's hedge delay; HedgesDenied the
	// parts whose hedge the route's budget refused (once per part, however
	// often it is tried again; some are re-issued later); HedgesWon the parts whose
	// answer came from a hedge (attempt 2) rather than the first attempt.
	HedgesIssued int64
	HedgesDenied int64
	HedgesWon    int64
	// CatchUpsExpired counts the times a partition's due timers stopped
	// waiting for it to be read up to their due time (the deadline rule),
	// or up to its backlog after a restore or an aborted batch, and fired
	// at the bound with what was read: deadlines that may have marked
	// MISSING parts whose results were in the topic.
	CatchUpsExpired int64
}

type stats struct {
	manifests, results, duplicates, late atomic.Int64
	orphansHeld, orphansExpired          atomic.Int64
	manifestsExpired                     atomic.Int64
	complete, partial, failed            atomic.Int64
	open, deadLettered, changelog        atomic.Int64
	restoredOpen, restoredDone           atomic.Int64
	restoredHeld, restoreSkipped         atomic.Int64
	hedgesIssued, hedgesDenied           atomic.Int64
	hedgesWon, catchUpsExpired           atomic.Int64
	pauses, openPeak                     atomic.Int64
	paused                               atomic.Bool
}

// peak raises openPeak to open.
func (s *stats) peak(open int64) {
	for {
		p := s.openPeak.Load()
		if open <= p || s.openPeak.CompareAndSwap(p, open) {
			return
		}
	}
}

func (s *stats) add(c counters) {
	s.manifests.Add(c.manifests)
	s.results.Add(c.results)
	s.duplicates.Add(c.duplicates)
	s.late.Add(c.late)
	s.orphansExpired.Add(c.orphansExpired)
	s.manifestsExpired.Add(c.manifestsExpired)
	s.complete.Add(c.complete)
	s.partial.Add(c.partial)
	s.failed.Add(c.failed)
	s.deadLettered.Add(c.deadLettered)
	s.changelog.Add(c.changelog)
	s.hedgesIssued.Add(c.hedgesIssued)
	s.hedgesDenied.Add(c.hedgesDenied)
	s.hedgesWon.Add(c.hedgesWon)
	s.catchUpsExpired.Add(c.catchUpsExpired)
}

func (s *stats) addRestored(n restored) {
	s.restoredOpen.Add(int64(n.open))
	s.restoredDone.Add(int64(n.done))
	s.restoredHeld.Add(int64(n.held))
	s.restoreSkipped.Add(int64(n.skipped))
}

// Aggregator gathers results by correlation id and replies once per
// request. Run it with Run; Stats and Ready are safe to call at any time.
type Aggregator struct {
	cfg Config
	log *slog.Logger
	hop *kafka.Hop

	// mu guards m, fatal and recs: batches run on Run's goroutine,
	// partition assignments on the client's rebalance goroutine.
	mu sync.Mutex
	m  *machine
	// fatal is why a partition could not be restored; the next batch
	// returns it and Run fails.
	fatal error
	// recs holds the changelog records of the batch in flight, reused
	// from batch to batch.
	recs []kgo.Record
	// partitions caches the partition counts of tasks topics, for hedges,
	// and when a first attempt's result of each of their partitions was
	// last read; routes finds them by route.
	partitions   map[string]*taskPartitions
	routes       map[schemas.Route]*taskPartitions
	lookupFailed map[string]lookupFailure
	// lookupCount looks up a topic's partition count: lookupPartitions
	// (tests give their own).
	lookupCount func(ctx context.Context, topic string, timeout time.Duration) (int, error)
	// keyBuf is the key of a record to partition, reused.
	keyBuf kgo.Record
	// paused says that fetching the results topic is paused on client
	// pausedOn (since pausedAt) because the open requests reached
	// Config.MaxOpenRequests; see backpressure.
	paused   bool
	pausedOn *kgo.Client
	pausedAt time.Time
	// alarm wakes the hop's poll (wake) when the earliest timer is due
	// before the next tick, so that a deadline or a hedge fires at its time
	// rather than up to a tick late on a partition with few records. Its
	// function only sends without blocking.
	alarm *time.Timer
	// topics knows which reply-to topics exist.
	topics kafka.TopicCache
	// trouble is set by the client's hook when a broker could not be
	// reached (brokerTrouble), and taken by the next batch.
	trouble atomic.Bool
	// fetches learns which fetches the brokers answered (a client hook);
	// lastBatch is when the last batch began (unix ns), after its poll.
	fetches   *fetchRounds
	lastBatch int64
	wake      chan struct{}

	// quit is closed when Run is stopping, to cancel a restore in
	// progress: the client's callbacks get the client's context, which
	// ends only after the group was left, which waits for them.
	quit     chan struct{}
	quitOnce sync.Once
	// joined is set once the group has assigned partitions (perhaps none);
	// restoring counts partitions assigned and not restored yet.
	joined    atomic.Bool
	restoring atomic.Int32

	// bg counts the goroutines that learn restored partitions' end
	// offsets (catchUp); Run waits for them.
	bg sync.WaitGroup

	stats stats
	obs   *observer // metrics and spans; guarded by mu
	ran   atomic.Bool
}

// New validates cfg and builds the aggregator's Kafka client; Run joins
// the group.
func New(cfg Config) (*Aggregator, error) {
	cfg = cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("aggregator config: %w", err)
	}
	a := &Aggregator{cfg: cfg, log: cfg.Logger.With("role", role), quit: make(chan struct{}), partitions: map[string]*taskPartitions{}, routes: map[schemas.Route]*taskPartitions{}, lookupFailed: map[string]lookupFailure{},
		wake: make(chan struct{}, 1)}
	a.fetches = newFetchRounds(cfg.Now)
	a.lookupCount = a.lookupPartitions
	a.alarm = time.AfterFunc(time.Hour, func() {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	})
	a.alarm.Stop()
	obs, err := newObserver(&cfg)
	if err != nil {
		return nil, fmt.Errorf("aggregator metrics: %w", err)
	}
	a.obs = obs
	a.m = newMachine(cfg.LateWindow, a.mergeFor)
	// The offsets are committed once per interval (under exactly-once the
	// transactions between commit them where they were), and a crash
	// consumes again everything since: the changelog of the requests need
	// only be written then, folding what the interval's batches did to
	// each request into one record (or none, for a request opened and
	// completed within it).
	a.m.perInterval = cfg.OffsetCommitInterval > 0
	// Under exactly-once the interval's changelog also leaves out the open
	// requests the interval created: their partitions commit at the first
	// record of the oldest (Batch.Commit), and a crash consumes them again.
	// A request shorter than about one interval then writes only its
	// done-list line.
	a.m.young = a.m.perInterval && cfg.Guarantee == kafkaconfig.ExactlyOnce
	hcfg := kafka.HopConfig{
		Client:          cfg.Client,
		Group:           cfg.Group,
		Topics:          []string{cfg.Topics.Results()},
		Guarantee:       cfg.Guarantee,
		TransactionalID: cfg.Group + "-" + cfg.InstanceID,
		InstanceID:      cfg.InstanceID,
		DeadLetters:     cfg.Topics.DLQ(),
		CommitInterval:  max(cfg.OffsetCommitInterval, 0),
		HoldsState:      a.m.perInterval,
		TransactionGap:  cfg.TransactionGap,
		SessionTimeout:  cfg.SessionTimeout,
		Role:            "aggregator",
		TracerProvider:  cfg.TracerProvider,
		Metrics:         cfg.Metrics,
		Tick:            cfg.Tick,
		MaxPollRecords:  max(cfg.MaxPollRecords, 0),
		Wake:            a.wake,
		OnAssigned:      a.assigned,
		OnRevoked:       a.revoked,
		Logger:          a.log,
		// Changelog records go to the partition of the results they
		// describe; hedged tasks to the partition after their key's.
		ManualPartitionTopics:   []string{cfg.Topics.State()},
		ManualPartitionPrefixes: []string{cfg.Topics.Tasks("")},
		// For the deadline rule: a partition whose fetch failed, or any
		// partition after a broker could not be reached, must not be
		// taken for read up to a drained poll, nor one whose leader has
		// not answered a fetch since (machine.fire). Fetches wait at
		// most 100ms for records, so that an idle broker answers soon
		// after a deadline too.
		Opts: []kgo.Opt{kgo.KeepRetryableFetchErrors(), kgo.WithHooks(brokerTrouble{&a.trouble}, a.fetches),
			kgo.FetchMaxWait(fetchMaxWait)},
	}
	if cfg.Guarantee != kafkaconfig.ExactlyOnce {
		hcfg.TransactionalID = ""
	}
	hop, err := kafka.NewHop(hcfg)
	if err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	a.hop = hop
	return a, nil
}

func (a *Aggregator) mergeFor(route schemas.Route) Merge {
	if m, ok := a.cfg.Merges[route]; ok {
		return m
	}
	return a.cfg.DefaultMerge
}

// Run consumes results and replies until ctx is done or a batch fails. On
// return the batch in flight has been committed or aborted, the group has
// been left and the client closed; the in-memory state of every partition is
// dropped (it lives on in the changelog). Run fails if a partition's state
// cannot be restored. Run may be called once.
func (a *Aggregator) Run(ctx context.Context) error {
	if !a.ran.CompareAndSwap(false, true) {
		return errors.New("aggregator: Run called twice; build a new Aggregator with New")
	}
	stop := context.AfterFunc(ctx, a.stopRestores)
	defer stop()
	defer a.alarm.Stop()
	process := func(ctx context.Context, b *kafka.Batch) error {
		err := a.process(ctx, b)
		if err != nil && !errors.Is(err, kafka.ErrAbort) {
			a.stopRestores() // Run is about to leave the group
		}
		return err
	}
	err := a.hop.Run(ctx, process, a.end)
	a.stopRestores()
	a.bg.Wait()
	if err != nil {
		return fmt.Errorf("aggregator: %w", err)
	}
	return nil
}

func (a *Aggregator) stopRestores() { a.quitOnce.Do(func() { close(a.quit) }) }

// Ready reports, as an error saying what is missing, whether the aggregator
// serves every partition it was assigned: it is settled in its group (see
// the package kafka's Hop.Settled: an assignment, no rebalance for a
// second), has restored the state of each of its partitions
// from the changelog, and has not failed. An instance with no partitions
// (more instances than partitions) is ready. Safe to call at any time.
func (a *Aggregator) Ready() error {
	if !a.joined.Load() {
		return errors.New("not yet a member of its consumer group with an assignment")
	}
	if n := a.restoring.Load(); n > 0 {
		return fmt.Errorf("restoring the state of %d partitions from the changelog", n)
	}
	a.mu.Lock()
	fatal := a.fatal
	a.mu.Unlock()
	if fatal != nil {
		return fmt.Errorf("failed: %w", fatal)
	}
	return a.hop.Settled()
}

// Stats returns the current counts.
func (a *Aggregator) Stats() Stats {
	s := &a.stats
	return Stats{
		Manifests:        s.manifests.Load(),
		ResultsReceived:  s.results.Load(),
		Duplicates:       s.duplicates.Load(),
		Late:             s.late.Load(),
		OrphansHeld:      s.orphansHeld.Load(),
		OrphansExpired:   s.orphansExpired.Load(),
		ManifestsExpired: s.manifestsExpired.Load(),
		RepliesComplete:  s.complete.Load(),
		RepliesPartial:   s.partial.Load(),
		RepliesFailed:    s.failed.Load(),
		Open:             s.open.Load(),
		OpenPeak:         s.openPeak.Load(),
		Paused:           s.paused.Load(),
		Pauses:           s.pauses.Load(),
		DeadLettered:     s.deadLettered.Load(),

		ChangelogRecords: s.changelog.Load(),
		RestoredOpen:     s.restoredOpen.Load(),
		RestoredDone:     s.restoredDone.Load(),
		RestoredHeld:     s.restoredHeld.Load(),
		RestoreSkipped:   s.restoreSkipped.Load(),

		HedgesIssued: s.hedgesIssued.Load(),
		HedgesDenied: s.hedgesDenied.Load(),
		HedgesWon:    s.hedgesWon.Load(),

		CatchUpsExpired: s.catchUpsExpired.Load(),
	}
}

// process applies one batch to the state machine and fires due timers. It
// runs on Run's goroutine.
func (a *Aggregator) process(ctx context.Context, b *kafka.Batch) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fatal != nil {
		return a.fatal
	}
	m := a.m
	if m.dirty() {
		// The previous batch neither consumed nor produced anything, so the
		// hop did not end it: it committed trivially.
		a.committed(m.commit())
	}
	now := a.cfg.Now()
	// Whether the poll took all the client had fetched: for the deadline
	// rule (machine.polled), once the batch's records are read.
	drained := a.hop.Client().BufferedFetchRecords() == 0
	results := a.cfg.Topics.Results()
	var unowned []int32
	b.Fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if p.Topic == results && len(p.Records) > 0 && m.parts[p.Partition] == nil {
			unowned = append(unowned, p.Partition)
		}
	})
	if len(unowned) > 0 {
		// Revoked after the poll, or assigned and not restored (a shutdown
		// interrupted the restore): these records must not be committed
		// without their state. Consume them again; the next poll has none
		// of a revoked partition.
		a.log.Info("records of partitions without state; batch consumed again", "partitions", unowned)
		return kafka.ErrAbort
	}
	if a.trouble.Swap(false) {
		// A broker could not be reached: which partitions it held up is
		// not known, so none is taken for read up to a drained poll
		// before a fetch of it was read again.
		for _, ps := range m.parts {
			ps.seen = false
		}
	}
	for p, ps := range m.parts {
		// A leader that changed answers with a stale high watermark for a
		// while (partitionState.led). The client moves a partition's
		// fetches to a new leader only after its metadata says so, so a
		// fetch of this batch from the new leader is not trusted.
		if leader, epoch, err := a.hop.Client().PartitionLeader(results, p); err == nil {
			ps.led(leader, epoch, now.UnixNano())
		}
	}
	b.Fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if p.Topic != results {
			return
		}
		ps := m.parts[p.Partition]
		if ps == nil {
			return // no records: nothing to consume again
		}
		if p.Err != nil {
			// Not fetched (a leader moving, a replica catching up): the
			// client retries it.
			ps.fetchFailed(now.UnixNano())
			return
		}
		// What the fetch saw of the partition's end, for the deadline
		// rule: free with every fetch, no round trip.
		ps.fetched(p.LastStableOffset, len(p.Records) > 0)
		if len(p.Records) == 0 {
			return
		}
		var ts, size int64
		for _, rec := range p.Records {
			a.handle(ctx, m, ps, now, rec)
			ts = max(ts, rec.Timestamp.UnixNano())
			size += int64(len(rec.Key) + len(rec.Value))
		}
		last := p.Records[len(p.Records)-1].Offset
		ps.read(last, ts, size)
		m.bytes += size
		m.readTo(p.Partition, last)
	})
	// The fetches the brokers answered whose records were polled before
	// this batch's poll began, so read now: written before the last
	// batch began, which was before that poll.
	if a.lastBatch != 0 {
		a.fetches.polledBefore(a.lastBatch, m.answer)
	}
	a.lastBatch = now.UnixNano()
	if drained {
		m.polled(now.UnixNano())
	}
	a.stats.peak(m.gauges().open)
	// While fetching is paused nothing more is read: due timers fire with
	// what was.
	m.follow = !a.paused
	m.tick(now)
	hold := m.perInterval && !b.StateDue()
	for i := range m.out {
		o := &m.out[i]
		if o.task == nil && o.src != nil && a.cfg.Guarantee == kafkaconfig.ExactlyOnce {
			// A dead letter is written once: a batch that holds would
			// write it again after a crash. (A hedge issued again after a
			// crash is one more attempt of its part, which the first OK
			// result answers, as any hedge.)
			hold = false
		}
		rec, err := a.record(ctx, o, now)
		if err != nil {
			clear(m.out)
			m.out = m.out[:0]
			return err
		}
		if rec == nil {
			continue // a hedge that cannot be sent
		}
		a.obs.output(*o, rec, now)
		b.Produce(rec)
	}
	clear(m.out)
	m.out = m.out[:0]
	if hold {
		if err := m.completions(); err != nil {
			return err
		}
		b.HoldState()
	} else if err := m.changelog(); err != nil {
		return err
	}
	for p, at := range m.commitAt {
		b.Commit(a.cfg.Topics.Results(), p, kafka.CommitOffset{Offset: at, Epoch: -1})
	}
	a.produceChangelog(b)
	if b.Len() == 0 && b.Fetches.NumRecords() == 0 {
		// The hop ends only batches that consumed or produced something.
		a.committed(m.commit())
	}
	a.arm()
	return nil
}

// arm sets the alarm for the earliest timer if it is due before the next
// tick; a.mu is held.
func (a *Aggregator) arm() {
	next := a.m.nextDue()
	if next == 0 {
		return
	}
	if d := time.Duration(next - a.cfg.Now().UnixNano()); d < a.cfg.Tick {
		a.alarm.Reset(max(d, 0))
	}
}

// handle decodes one record of the results topic and applies it.
func (a *Aggregator) handle(ctx context.Context, m *machine, ps *partitionState, now time.Time, rec *kgo.Record) {
	kind, err := schemas.KindOf(rec.Value)
	if err != nil {
		m.deadLetter(rec, decodeReason(err), err)
		return
	}
	switch kind {
	case schemas.KindManifest:
		mf, err := schemas.DecodeManifest(rec.Value)
		if err != nil {
			m.deadLetter(rec, decodeReason(err), err)
			return
		}
		if string(rec.Key) != string(mf.CorrelationID) {
			m.deadLetter(rec, "key-mismatch", fmt.Errorf("manifest %s keyed %q: records of a request must be keyed by its correlation id", mf.CorrelationID, rec.Key))
			return
		}
		a.obs.manifest(mf, rec)
		a.sawManifest(mf, now)
		m.manifest(ps, now, mf, rec)
	case schemas.KindResult:
		res, err := schemas.DecodeResult(rec.Value)
		if err != nil {
			m.deadLetter(rec, decodeReason(err), err)
			return
		}
		if string(rec.Key) != string(res.CorrelationID) {
			m.deadLetter(rec, "key-mismatch", fmt.Errorf("result %s/%s keyed %q: records of a request must be keyed by its correlation id", res.CorrelationID, res.PartID, rec.Key))
			return
		}
		a.sawResult(res, now)
		m.result(ps, now, res, rec)
	case schemas.KindTask:
		if kafka.Header(rec, headerType) != typeHedgeTemplate {
			m.deadLetter(rec, "wrong-schema", fmt.Errorf("a task record on the results topic that is not a hedge template"))
			return
		}
		t, err := schemas.DecodeTask(rec.Value)
		if err != nil {
			m.deadLetter(rec, decodeReason(err), err)
			return
		}
		if string(rec.Key) != string(t.CorrelationID) {
			m.deadLetter(rec, "key-mismatch", fmt.Errorf("hedge template %s keyed %q: records of a request must be keyed by its correlation id", t.CorrelationID, rec.Key))
			return
		}
		a.follow(ctx, t.Route)
		m.template(ps, now, t, rec)
	default:
		m.deadLetter(rec, "wrong-schema", fmt.Errorf("a %s record on the results topic, want a manifest, a result or a hedge template", kind))
	}
}

func decodeReason(err error) string {
	if de, ok := errors.AsType[*schemas.DecodeError](err); ok {
		return de.Reason
	}
	return "malformed"
}

// record turns an output of the machine into a record to produce.
// A reply too large is changed in o to the FAILED reply that is sent, so
// that the metrics count what the caller gets.
func (a *Aggregator) record(ctx context.Context, o *output, now time.Time) (*kgo.Record, error) {
	if o.task != nil {
		return a.hedgeRecord(ctx, *o.task, o.hedgeAfter, now)
	}
	if o.src != nil {
		a.log.Warn("record dead-lettered", "correlation_id", string(o.src.Key), "reason", o.reason, "partition", o.src.Partition, "offset", o.src.Offset, "err", o.err)
		return kafka.DeadLetter(a.cfg.Topics.DLQ(), o.src, role, o.reason, o.err), nil
	}
	topic := a.cfg.Topics.Replies()
	if o.replyTo != "" {
		if strings.HasPrefix(o.replyTo, topic) {
			topic = o.replyTo
		} else {
			a.log.Warn("reply-to is not a replies topic; replying to the default", "correlation_id", o.reply.CorrelationID, "reply_to", o.replyTo, "topic", topic)
		}
	}
	rec, err := a.replyRecord(topic, *o)
	if err != nil {
		return nil, err
	}
	if !kafka.Fits(rec) {
		// Kafka would refuse it: the reply says so, without its payload,
		// and keeps every part's status.
		size := kafka.RecordSize(rec)
		a.log.Warn("reply too large; answering FAILED without its payload", "correlation_id", o.reply.CorrelationID, "bytes", size)
		o.reply = tooLargeReply(o.reply, size)
		if rec, err = a.replyRecord(topic, *o); err != nil {
			return nil, err
		}
	}
	if topic != a.cfg.Topics.Replies() {
		// A reply to a topic that does not exist (deleted since the
		// scatterer checked it) is a dead letter, not a produce error
		// that holds back the batch's other replies.
		exists, err := a.topics.Exists(ctx, a.hop.Client(), topic)
		if err != nil {
			a.log.Warn("reply-to topic lookup failed; replying there anyway", "correlation_id", o.reply.CorrelationID, "topic", topic, "err", err)
		} else if !exists {
			a.log.Warn("reply-to topic does not exist; reply dead-lettered", "correlation_id", o.reply.CorrelationID, "topic", topic)
			return kafka.DeadLetterOutput(a.cfg.Topics.DLQ(), rec, role, ReasonUnknownReplyTopic,
				fmt.Errorf("reply-to topic %q does not exist", topic)), nil
		}
	}
	return rec, nil
}

// ReasonUnknownReplyTopic is the dead-letter reason of a reply whose
// reply-to topic does not exist.
const ReasonUnknownReplyTopic = "unknown-reply-topic"

// ReasonReplyTooLarge begins the error of a reply that was too large for a
// record (kafkaconfig.MaxRecordBytes) and is sent FAILED without its payload.
const ReasonReplyTooLarge = "reply-too-large"

// tooLargeReply returns r, of size bytes, FAILED without its payload: the
// parts keep their statuses, their errors cut to 1 KiB.
func tooLargeReply(r schemas.Reply, size int) schemas.Reply {
	r.Error = fmt.Sprintf("%s: the merged reply of %d bytes exceeds the %d bytes a record may take (it was %s)",
		ReasonReplyTooLarge, size, kafka.MaxRecordBytes, r.Status)
	r.Status, r.Payload = schemas.ReplyFailed, nil
	r.Parts = slices.Clone(r.Parts)
	for i := range r.Parts {
		if e := r.Parts[i].Error; len(e) > 1024 {
			r.Parts[i].Error = e[:1024]
		}
	}
	return r
}

// replyRecord encodes o's reply for topic.
func (a *Aggregator) replyRecord(topic string, o output) (*kgo.Record, error) {
	v, err := schemas.EncodeReply(o.reply)
	if err != nil {
		return nil, fmt.Errorf("reply %s: %w", o.reply.CorrelationID, err)
	}
	rec := &kgo.Record{
		Topic:   topic,
		Key:     []byte(o.reply.CorrelationID),
		Value:   v,
		Headers: []kgo.RecordHeader{{Key: headerType, Value: []byte("reply")}},
	}
	if len(o.hedged) > 0 {
		ids := make([]string, len(o.hedged))
		for i, id := range o.hedged {
			ids[i] = string(id)
		}
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: HeaderHedged, Value: []byte(strings.Join(ids, ","))})
	}
	return rec, nil
}

// produceChangelog adds the batch's changelog records to b, as state
// records: they are in the batch's transaction, or written after its
// replies under at-least-once (a crash between the two may repeat a reply,
// never lose one). a.mu must be held.
func (a *Aggregator) produceChangelog(b *kafka.Batch) {
	recs := a.m.log.recs
	a.m.delta.changelog = int64(len(recs))
	if cap(a.recs) < len(recs) {
		a.recs = make([]kgo.Record, len(recs), 2*len(recs))
	}
	// The previous batch's records are done with: the hop ended it.
	a.recs = a.recs[:len(recs)]
	topic := a.cfg.Topics.State()
	for i, s := range recs {
		a.recs[i] = kgo.Record{Topic: topic, Partition: s.partition, Key: s.key, Value: s.value}
		b.ProduceState(&a.recs[i])
	}
}

// end learns whether the batch committed; it runs on Run's goroutine.
func (a *Aggregator) end(committed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if committed {
		a.committed(a.m.commit())
		return
	}
	a.m.abort(a.cfg.Now().Add(catchUpMax).UnixNano())
	a.obs.abort()
	a.publishGauges()
	a.arm()
}

// committed publishes a committed batch's counts; a.mu must be held.
func (a *Aggregator) committed(c counters) {
	a.stats.add(c)
	a.publishGauges()
	a.obs.commit(a.Stats())
}

// publishGauges publishes the gauges and pauses or resumes fetching by
// them; a.mu is held. It runs after every batch, before the next poll, and
// after partitions are assigned or revoked.
func (a *Aggregator) publishGauges() {
	g := a.m.gauges()
	a.stats.open.Store(g.open)
	a.stats.orphansHeld.Store(g.held)
	a.obs.gauges(g)
	a.stats.peak(g.open)
	a.backpressure(g.open)
}

// backpressure pauses fetching the results topic when this instance holds
// Config.MaxOpenRequests open requests, and resumes it once they are down
// to 90% of that; a.mu is held. The pause is the client's and is kept
// across rebalances (partitions assigned meanwhile are not fetched either),
// so it is decided afresh from the requests of the partitions held now
// whenever they change: after each batch, its abort, and each assignment
// or revocation. A poll while paused returns no records but still ends at
// the tick or the alarm, so deadlines keep firing.
func (a *Aggregator) backpressure(open int64) {
	limit := int64(a.cfg.MaxOpenRequests)
	if limit <= 0 {
		return
	}
	resumeAt := limit * 9 / 10
	topic := a.cfg.Topics.Results()
	cl := a.hop.Client()
	if a.paused && cl != a.pausedOn {
		// The hop built a new client (after its producer was fenced or
		// its member removed from the group): closing the old one revoked
		// every partition, and the new one fetches unpaused.
		a.paused = false
		a.stats.paused.Store(false)
		a.obs.pause(false)
	}
	switch {
	case !a.paused && open >= limit:
		cl.PauseFetchTopics(topic)
		a.paused, a.pausedOn, a.pausedAt = true, cl, time.Now()
		a.stats.paused.Store(true)
		a.stats.pauses.Add(1)
		a.obs.pause(true)
		a.log.Info("open requests at the limit: fetching results paused until deadlines complete some",
			"open", open, "limit", limit, "resume_at", resumeAt)
	case a.paused && open <= resumeAt:
		cl.ResumeFetchTopics(topic)
		a.paused, a.pausedOn = false, nil
		a.stats.paused.Store(false)
		a.obs.pause(false)
		a.log.Info("open requests below the limit: fetching results resumed",
			"open", open, "limit", limit, "paused_for", time.Since(a.pausedAt).Round(time.Millisecond))
	}
}

// assigned restores the state of newly assigned partitions from the
// changelog. It runs on the client's rebalance goroutine, and the client
// starts fetching the partitions only once it returns (kgo calls
// OnPartitionsAssigned before it fetches their offsets), so no result of a
// partition is processed before its state is back. It does not hold a.mu
// while it reads: batches of the other partitions go on meanwhile.
func (a *Aggregator) assigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	defer a.joined.Store(true)
	parts := assigned[a.cfg.Topics.Results()]
	if len(parts) == 0 {
		return
	}
	a.restoring.Add(int32(len(parts)))
	defer a.restoring.Add(-int32(len(parts)))
	rctx, stop := a.restoreContext(ctx)
	defer stop()
	start := time.Now()
	states, n, err := a.restore(rctx, parts)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		if rctx.Err() != nil {
			a.log.Info("restore interrupted: stopping", "partitions", parts)
			return
		}
		a.fatal = fmt.Errorf("restore partitions %v from %s: %w", parts, a.cfg.Topics.State(), err)
		a.log.Error("restore failed; stopping", "partitions", parts, "err", err)
		return
	}
	// The timers of the restored partitions wait until their end offsets
	// are known and read (catchUp); the listing runs beside the fetches.
	now := a.cfg.Now()
	for _, ps := range states {
		ps.catchUp, ps.holdUntil = catchUnknown, now.Add(catchUpMax).UnixNano()
		a.m.install(ps)
	}
	a.bg.Add(1)
	go func() { // exits once every partition's end is known, at the hold's end, or when the client or Run stops; Run waits
		defer a.bg.Done()
		a.catchUp(ctx, cl, states, now.Add(catchUpMax))
	}()
	a.obs.restored(time.Since(start))
	a.stats.addRestored(n)
	a.publishGauges()
	a.log.Info("partitions assigned and restored", "topic", a.cfg.Topics.Results(), "partitions", parts,
		"open", n.open, "done", n.done, "orphans", n.orphans, "held", n.held, "skipped", n.skipped, "took", time.Since(start))
}

// catchUpMax bounds how long a restored partition's timers wait for its
// backlog to be read (partitionState.catchUp), and how long its end offset
// is asked for.
const catchUpMax = 2 * time.Second

// catchUpTry bounds one listing of end and committed offsets, so that a
// broker that does not answer holds back only its partitions' next try.
const catchUpTry = 500 * time.Millisecond

// catchUp learns, for each restored partition of states, what it must read
// before its timers fire: if the group had not consumed all of its results
// when it was assigned (a backlog the previous owner did not read: it
// crashed, or the partition had no owner for a while), its last stable
// offset then, so that a request whose deadline passed meanwhile is
// answered with the results that came in time rather than MISSING. It asks
// only for these partitions, the leaders of each separately, and asks
// again for those that did not answer (a leader down or moving) until
// until; meanwhile their timers wait (catchUnknown), and a fetch of the
// partition, which carries its last stable offset, may tell it first.
// What is still unknown at until fires with what was read, as after the
// hold's end.
func (a *Aggregator) catchUp(ctx context.Context, cl *kgo.Client, states map[int32]*partitionState, until time.Time) {
	ctx, stop := a.restoreContext(ctx)
	defer stop()
	pending := slices.Sorted(maps.Keys(states))
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		tctx, cancel := context.WithTimeout(ctx, catchUpTry)
		ends, committed, err := a.catchUpOffsets(tctx, cl, pending)
		cancel()
		a.mu.Lock()
		pending = slices.DeleteFunc(pending, func(p int32) bool {
			ps := states[p]
			if a.m.parts[p] != ps || ps.catchUp != catchUnknown {
				return true // revoked, or a fetch told it
			}
			end, ok := ends[p]
			if !ok {
				return false
			}
			ps.caughtUpTo(end, committed[p])
			return true
		})
		a.arm()
		a.mu.Unlock()
		if len(pending) == 0 {
			return
		}
		if ctx.Err() != nil {
			return
		}
		if time.Now().Add(backoff).After(until) {
			a.log.Warn("end offsets of restored partitions not known in time: their overdue deadlines fire with what was read",
				"partitions", pending, "attempts", attempt, "err", err)
			return
		}
		a.log.Debug("end offsets of restored partitions; trying again", "partitions", pending, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 400*time.Millisecond)
	}
}

// catchUpOffsets lists the last stable offsets of parts of the results
// topic (ListOffsets read_committed, to each partition's leader) and the
// group's committed offsets of them. It returns the partitions that
// answered both, and the errors of those that did not.
func (a *Aggregator) catchUpOffsets(ctx context.Context, cl *kgo.Client, parts []int32) (ends, committed map[int32]int64, err error) {
	results := a.cfg.Topics.Results()
	req := kmsg.NewPtrListOffsetsRequest()
	req.IsolationLevel = 1 // read_committed: the last stable offset
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = results
	for _, p := range parts {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.Timestamp = -1 // the end
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	var errs []error
	listed := map[int32]int64{}
	for _, sh := range cl.RequestSharded(ctx, req) {
		if sh.Err != nil {
			errs = append(errs, fmt.Errorf("list end offsets (broker %d): %w", sh.Meta.NodeID, sh.Err))
			continue
		}
		for _, t := range sh.Resp.(*kmsg.ListOffsetsResponse).Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					errs = append(errs, fmt.Errorf("list end offset of %s/%d: %w", t.Topic, p.Partition, err))
					continue
				}
				listed[p.Partition] = p.Offset
			}
		}
	}
	if len(listed) == 0 {
		return nil, nil, errors.Join(errs...)
	}
	offs, err := kadm.NewClient(cl).FetchOffsetsForTopics(ctx, a.cfg.Group, results)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		return nil, nil, errors.Join(append(errs, fmt.Errorf("committed offsets of %s: %w", a.cfg.Group, err))...)
	}
	committed = make(map[int32]int64, len(listed))
	for p := range listed {
		if c, ok := offs.Lookup(results, p); ok {
			committed[p] = c.At
		}
	}
	return listed, committed, errors.Join(errs...)
}

func (a *Aggregator) revoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	ps := revoked[a.cfg.Topics.Results()]
	if len(ps) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range ps {
		a.m.revoke(p)
	}
	a.publishGauges()
	a.log.Info("partitions revoked; their state is dropped (the changelog keeps it)", "topic", a.cfg.Topics.Results(), "partitions", ps)
}

// brokerTrouble is a kgo hook that notes a failed connection to a broker.
type brokerTrouble struct{ flag *atomic.Bool }

func (t brokerTrouble) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		t.flag.Store(true)
	}
}
