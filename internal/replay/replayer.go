package replay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// Headers the replay adds to every replayed request's Request.Headers; the
// scatterer copies them into every task and the manifest, so a handler can
// tell a replayed task from a live one (and, say, skip side effects).
const (
	// HeaderReplayOf is the original's correlation id (also in
	// Request.ReplayOf and Reply.ReplayOf).
	HeaderReplayOf = "sg-replay-of"
	// HeaderReplayRun is the run id (also in Request.ReplayRun).
	HeaderReplayRun = "sg-replay-run"
	// HeaderOriginalSubmittedAt is the original's submitted-at, RFC3339
	// with nanoseconds, UTC.
	HeaderOriginalSubmittedAt = "sg-original-submitted-at"
	// HeaderOriginalTimeout is the original's relative timeout in
	// milliseconds ("0": the route's default), which the replay keeps.
	HeaderOriginalTimeout = "sg-original-timeout-ms"
	// HeaderOriginalSource is where the original was read:
	// "<topic>/<partition>/<offset>".
	HeaderOriginalSource = "sg-original-source"
)

// Reasons a record in the range is not replayed, as counted in
// RunState.Skipped.
const (
	SkipUndecodable = "undecodable" // not a Request
	SkipReplay      = "replay"      // itself a replay (see Config.IncludeReplays)
	SkipRoute       = "route"       // not one of Config.Routes
)

// Defaults of [Config].
const (
	DefaultBatchSize          = 500
	DefaultTransactionTimeout = 10 * time.Second
)

// Config configures a [Replayer]. Zero fields take the defaults below;
// Validate fills them in.
type Config struct {
	Client kafkaconfig.Client
	// Source names the topics the originals are read from:
	// Source.Requests().
	Source kafkaconfig.Topics
	// Target names the topics the replayed requests go to
	// (Target.Requests()) and the run's checkpoint topic
	// (CheckpointTopic(Target)); zero means Source: an in-place replay
	// through the production pipeline. Another prefix runs the replay
	// through a separate (shadow) pipeline.
	Target kafkaconfig.Topics
	// RunID names the run; empty generates one with NewRunID. If the
	// checkpoint topic already has this run, Run resumes it.
	RunID string
	// From and To bound a new run's range [From, To) of the source
	// topic; From is required for a new run, To defaults to Latest. A
	// resumed run keeps the range it resolved when it was created.
	From, To *Bound
	// Routes limits the replay to these routes; empty replays every route.
	Routes []schemas.Route
	// IncludeReplays replays requests that are themselves replays; by
	// default they are skipped, so that replaying a range twice, or a
	// range an in-place replay wrote to, does not replay replays.
	IncludeReplays bool
	// Rate caps the replayed requests per second; 0 is unlimited.
	Rate float64
	// BatchSize is the most requests per transaction; default 500. With
	// a Rate, batches hold at most a tenth of a second's worth.
	BatchSize int
	// TransactionTimeout is the producer's transaction timeout; default
	// 10s. A replay that dies inside a transaction holds back
	// read_committed readers of the target partitions (the scatterer)
	// until the broker aborts it after this long, or until the run is
	// resumed, which aborts it at once.
	TransactionTimeout time.Duration
	// ReplicationFactor of the checkpoint topic when Run creates it; 0
	// or -1 takes the broker's default.
	ReplicationFactor int16
	// Progress, when set, is called on Run's goroutine after every
	// committed batch and once at the end.
	Progress func(Progress)
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Validate fills in defaults and reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Client.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Source.Prefix == "" {
		c.Source.Prefix = kafkaconfig.DefaultPrefix
	}
	if c.Target.Prefix == "" {
		c.Target = c.Source
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.RunID == "" {
		c.RunID = NewRunID(c.Now())
	}
	if err := ValidRunID(c.RunID); err != nil {
		errs = append(errs, err)
	}
	if c.From != nil && c.To != nil && c.From.Kind == AtTime && c.To.Kind == AtTime && c.To.Time.Before(c.From.Time) {
		errs = append(errs, fmt.Errorf("range: to %s is before from %s", c.To, c.From))
	}
	for _, r := range c.Routes {
		if err := kafkaconfig.ValidRouteName(string(r)); err != nil {
			errs = append(errs, fmt.Errorf("routes: %w", err))
		}
	}
	switch {
	case math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) || c.Rate < 0:
		errs = append(errs, fmt.Errorf("rate: %v, want a positive number of requests per second or 0 for unlimited", c.Rate))
	}
	switch {
	case c.BatchSize == 0:
		c.BatchSize = DefaultBatchSize
	case c.BatchSize < 0:
		errs = append(errs, fmt.Errorf("batch size: %d is negative", c.BatchSize))
	}
	switch {
	case c.TransactionTimeout == 0:
		c.TransactionTimeout = DefaultTransactionTimeout
	case c.TransactionTimeout < time.Second:
		errs = append(errs, fmt.Errorf("transaction timeout: %s, want at least 1s", c.TransactionTimeout))
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = -1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// Progress is a replay's progress, reported through Config.Progress.
type Progress struct {
	RunID string
	// Total is the number of offsets in the run's range; Advanced how many
	// were read so far (in every session of the run). Offsets include
	// transaction markers and skipped records, so Advanced reaches Total
	// while Submitted may stay below it.
	Total, Advanced int64
	// Submitted and Skipped count requests over every session of the run.
	Submitted, Skipped int64
	// Rate is requests submitted per second in this session.
	Rate float64
	// ETA is the time left at this session's pace; -1 when unknown.
	ETA time.Duration
	// Elapsed is the time since this session started.
	Elapsed time.Duration
	// Done: the whole range was replayed.
	Done bool
}

// Replayer re-submits a range of a requests topic. Run it once; it is not
// safe for concurrent use.
type Replayer struct {
	cfg    Config
	routes map[schemas.Route]bool
	state  *RunState

	// crashAfter, for tests, makes Run return errCrashed with the
	// transaction of batch crashAfter+1 open and its records flushed, and
	// leave the producer open in abandoned: a process that died mid-batch.
	crashAfter int
	abandoned  *kgo.Client
}

// errCrashed is what a crashAfter test crash returns.
var errCrashed = errors.New("simulated crash with a transaction open")

// New validates cfg; Run connects.
func New(cfg Config) (*Replayer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("replay config: %w", err)
	}
	r := &Replayer{cfg: cfg, routes: map[schemas.Route]bool{}}
	for _, rt := range cfg.Routes {
		r.routes[rt] = true
	}
	return r, nil
}

// RunID returns the run's id (generated by New if not given).
func (r *Replayer) RunID() string { return r.cfg.RunID }

// State returns the run's state as last committed by Run; nil before Run
// loaded or created it.
func (r *Replayer) State() *RunState {
	if r.state == nil {
		return nil
	}
	s := *r.state
	s.Partitions = slices.Clone(s.Partitions)
	s.Skipped = maps.Clone(s.Skipped)
	s.TargetStart = maps.Clone(s.TargetStart)
	return &s
}

// Run creates or resumes the run and re-submits its range until the range
// is done or ctx ends. Each batch of replayed requests is written in one
// Kafka transaction together with the run's checkpoint, so a crash or an
// interruption never leaves a request submitted without its checkpoint, or
// the reverse; a resumed run continues after the last committed batch. The
// producer's transactional id is derived from the run id
// ([TransactionalID]): starting the run fences any other session of it and
// aborts that session's open transaction.
//
// When ctx ends, Run finishes the batch in flight (commits or aborts it)
// and returns nil; State().Done says whether the range was completed.
func (r *Replayer) Run(ctx context.Context) (err error) {
	cfg := r.cfg
	cl, err := kafka.NewClient(cfg.Client,
		kgo.TransactionalID(TransactionalID(cfg.Target, cfg.RunID)),
		kgo.TransactionTimeout(cfg.TransactionTimeout),
		// The checkpoint topic may be created just now: see it soon.
		kgo.MetadataMinAge(100*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer func() {
		if errors.Is(err, errCrashed) {
			r.abandoned = cl
			return
		}
		cl.Close()
	}()
	adm := kadm.NewClient(cl)
	// EnsureTopics returns once a topic it created has its leader.
	if _, err := kafkaconfig.EnsureTopics(ctx, adm, []kafkaconfig.TopicSpec{{
		Name: CheckpointTopic(cfg.Target), Partitions: 1, ReplicationFactor: cfg.ReplicationFactor,
		Configs: map[string]string{"cleanup.policy": "compact"},
	}}); err != nil {
		return fmt.Errorf("replay %s: %w", cfg.RunID, err)
	}
	// Fence first, then read the checkpoint: once our producer id is
	// initialised, no earlier session of this run can commit, and the
	// transaction it had open has been aborted.
	if _, _, err := cl.ProducerID(ctx); err != nil {
		return fmt.Errorf("replay %s: fence earlier sessions of the run: %w", cfg.RunID, err)
	}
	st, err := r.load(ctx, adm)
	if err != nil {
		return err
	}
	r.state = st
	if st.Done {
		cfg.Logger.Info("replay run already complete", "run", st.RunID, "submitted", st.Submitted)
		r.report(st, time.Time{}, 0, 0)
		return nil
	}
	st.Sessions++
	if err := r.commit(ctx, cl, nil, st); err != nil {
		return err
	}
	return r.replay(ctx, cl, st)
}

// load returns the run's committed state, or a new state for a new run.
func (r *Replayer) load(ctx context.Context, adm *kadm.Client) (*RunState, error) {
	cfg := r.cfg
	st, err := LoadRun(ctx, cfg.Client, cfg.Target, cfg.RunID)
	switch {
	case err == nil:
		if st.SourceTopic != cfg.Source.Requests() || st.TargetTopic != cfg.Target.Requests() {
			return nil, fmt.Errorf("run %s replays %s into %s, not %s into %s: resume it with the same topic prefixes, or pick another run id",
				cfg.RunID, st.SourceTopic, st.TargetTopic, cfg.Source.Requests(), cfg.Target.Requests())
		}
		if cfg.From != nil && cfg.From.String() != st.From || cfg.To != nil && cfg.To.String() != st.To {
			cfg.Logger.Warn("resuming a run: its stored range wins over --from/--to", "run", cfg.RunID, "from", st.From, "to", st.To)
		}
		cfg.Logger.Info("resuming replay run", "run", st.RunID, "submitted", st.Submitted)
		return st, nil
	case !errors.Is(err, ErrRunNotFound):
		return nil, err
	}
	if cfg.From == nil {
		return nil, fmt.Errorf("run %s does not exist yet, and a new run needs a --from bound", cfg.RunID)
	}
	to := Bound{Kind: Latest}
	if cfg.To != nil {
		to = *cfg.To
	}
	now := cfg.Now()
	ranges, err := ResolveRange(ctx, adm, cfg.Source.Requests(), *cfg.From, to, now)
	if err != nil {
		return nil, err
	}
	twm, err := kafka.Watermarks(ctx, adm, cfg.Target.Requests())
	if err != nil {
		return nil, fmt.Errorf("target: %w (create the target pipeline's topics first, e.g. scattergather topics --topic-prefix %s)", err, cfg.Target.Prefix)
	}
	st = &RunState{
		Version: stateVersion, RunID: cfg.RunID,
		SourceTopic: cfg.Source.Requests(), TargetTopic: cfg.Target.Requests(),
		From: cfg.From.String(), To: to.String(), Partitions: ranges,
		IncludeReplays: cfg.IncludeReplays, TargetStart: map[int32]int64{},
		CreatedAt: now.UTC(), Skipped: map[string]int64{},
	}
	for _, rt := range cfg.Routes {
		st.Routes = append(st.Routes, string(rt))
	}
	for p, w := range twm {
		st.TargetStart[p] = w.Stable
	}
	total, _ := st.Total()
	cfg.Logger.Info("new replay run", "run", st.RunID, "source", st.SourceTopic, "target", st.TargetTopic,
		"from", st.From, "to", st.To, "offsets", total)
	return st, nil
}

// replay reads the rest of st's range and commits it batch by batch.
func (r *Replayer) replay(ctx context.Context, cl *kgo.Client, st *RunState) error {
	cfg := r.cfg
	if st.Skipped == nil {
		st.Skipped = map[string]int64{}
	}
	// A stored route filter wins, as the range does.
	r.routes = map[schemas.Route]bool{}
	for _, rt := range st.Routes {
		r.routes[schemas.Route(rt)] = true
	}
	index := make(map[int32]int, len(st.Partitions))
	for i, p := range st.Partitions {
		index[p.Partition] = i
	}
	rd, err := kafka.NewRangeReader(cfg.Client, st.SourceTopic, spans(st.Partitions))
	if err != nil {
		return err
	}
	defer rd.Close()

	limit := cfg.BatchSize
	if cfg.Rate > 0 {
		limit = max(1, min(limit, int(math.Ceil(cfg.Rate/10))))
	}
	var (
		start              = cfg.Now()
		_, advancedAtStart = st.Total()
		submitted          int64 // this session
		batch              = make([]*kgo.Record, 0, limit)
		dirty              bool
		batches            int
	)
	// flush commits the batch and the state; final marks the run done.
	flush := func(final bool) error {
		st.Done = final
		if batches == r.crashAfter && r.crashAfter > 0 {
			return r.crash(ctx, cl, batch)
		}
		if err := r.commit(ctx, cl, batch, st); err != nil {
			return err
		}
		batches++
		submitted += int64(len(batch))
		batch, dirty = batch[:0], false
		r.report(st, start, advancedAtStart, submitted)
		return r.pace(ctx, start, submitted)
	}
	// Between batches, a done ctx stops the run: the batch in flight has
	// been committed.
	for !rd.Done() && ctx.Err() == nil {
		recs, err := rd.Poll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return fmt.Errorf("replay %s: %w", st.RunID, err)
		}
		now := cfg.Now()
		for i, rec := range recs {
			out, skip, err := r.replayed(rec, st, now)
			if err != nil {
				return err
			}
			st.Partitions[index[rec.Partition]].Next = rec.Offset + 1
			dirty = true
			switch {
			case out != nil:
				batch = append(batch, out)
				st.Submitted++
			case skip != "":
				st.Skipped[skip]++
			}
			last := i == len(recs)-1
			if len(batch) < limit && !last {
				continue
			}
			if err := flush(last && rd.Done()); err != nil {
				if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
					break // interrupted while pacing, after the commit
				}
				return err
			}
			if ctx.Err() != nil {
				break
			}
		}
	}
	if !dirty && rd.Done() && !st.Done && ctx.Err() == nil {
		// Nothing left to read (an empty range, or the end was reached
		// without records): mark the run done.
		if err := flush(true); err != nil && !errors.Is(err, ctx.Err()) {
			return err
		}
	}
	r.report(st, start, advancedAtStart, submitted)
	if !st.Done {
		cfg.Logger.Info("replay interrupted; run it again with the same run id to resume", "run", st.RunID, "submitted", st.Submitted)
	}
	return nil
}

// replayed returns the replay of one source record, or why it is skipped
// ("" for a control record). Only our own encoding failing is an error.
func (r *Replayer) replayed(rec *kgo.Record, st *RunState, now time.Time) (*kgo.Record, string, error) {
	orig, skip := r.decide(rec, st)
	if orig == nil {
		return nil, skip, nil
	}
	return r.build(*orig, rec, st, now)
}

// decide returns the request a source record holds if it is to be
// replayed, else why not ("" for a control record).
func (r *Replayer) decide(rec *kgo.Record, st *RunState) (*schemas.Request, string) {
	if rec.Attrs.IsControl() {
		return nil, ""
	}
	orig, err := schemas.DecodeRequest(rec.Value)
	if err != nil {
		r.cfg.Logger.Debug("skipping an undecodable record", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return nil, SkipUndecodable
	}
	if orig.ReplayRun != nil && !st.IncludeReplays {
		return nil, SkipReplay
	}
	if len(r.routes) > 0 && !r.routes[orig.Route] {
		return nil, SkipRoute
	}
	return &orig, ""
}

// build returns the replay of orig, read from rec.
func (r *Replayer) build(orig schemas.Request, rec *kgo.Record, st *RunState, now time.Time) (*kgo.Record, string, error) {
	id := ReplayID(st.RunID, rec.Partition, rec.Offset)
	runID := st.RunID
	origID := orig.CorrelationID
	headers := make(map[string]string, len(orig.Headers)+5)
	maps.Copy(headers, orig.Headers)
	headers[HeaderReplayOf] = string(origID)
	headers[HeaderReplayRun] = runID
	headers[HeaderOriginalSubmittedAt] = orig.SubmittedAt.UTC().Format(time.RFC3339Nano)
	headers[HeaderOriginalTimeout] = strconv.FormatInt(orig.Timeout.Milliseconds(), 10)
	timeout := orig.Timeout
	if timeout == 0 {
		timeout = scatterer.DefaultTimeout
	}
	st.LongestTimeoutMS = max(st.LongestTimeoutMS, timeout.Milliseconds())
	headers[HeaderOriginalSource] = fmt.Sprintf("%s/%d/%d", rec.Topic, rec.Partition, rec.Offset)
	req := schemas.Request{
		CorrelationID: id,
		Route:         orig.Route,
		Payload:       orig.Payload,
		ContentType:   orig.ContentType,
		// The same relative timeout from a fresh submitted-at: the
		// deadline is set afresh, so a replay does not expire at once.
		Timeout:     orig.Timeout,
		Fanout:      orig.Fanout,
		Headers:     headers,
		SubmittedAt: now.UTC(),
		ReplayOf:    &origID,
		ReplayRun:   &runID,
		// ReplyTo is left empty: the replay's replies go to the target's
		// replies topic, where replay compare finds them, never to a
		// live client's own reply topic.
	}
	v, err := schemas.EncodeRequest(req)
	if err != nil {
		return nil, "", fmt.Errorf("replay %s of %s: %w", id, origID, err)
	}
	return &kgo.Record{Topic: st.TargetTopic, Key: []byte(id), Value: v, Headers: []kgo.RecordHeader{
		{Key: "sg-type", Value: []byte("request")},
		{Key: HeaderReplayRun, Value: []byte(runID)},
	}}, "", nil
}

// ReplayID is the correlation id of the replay, in run runID, of the request
// at offset of partition of the source topic. It is deterministic, so a
// replayed request can never get two ids.
func ReplayID(runID string, partition int32, offset int64) schemas.CorrelationID {
	return schemas.CorrelationID("rp-" + runID + "-" + strconv.Itoa(int(partition)) + "-" + strconv.FormatInt(offset, 10))
}

// commit writes batch and st in one transaction. It runs on a context that
// outlives ctx by the transaction timeout, so that an interruption finishes
// the batch rather than leaving it open.
func (r *Replayer) commit(ctx context.Context, cl *kgo.Client, batch []*kgo.Record, st *RunState) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.TransactionTimeout)
	defer cancel()
	st.UpdatedAt = r.cfg.Now().UTC()
	v, err := encodeState(st)
	if err != nil {
		return err
	}
	if err := cl.BeginTransaction(); err != nil {
		return fmt.Errorf("replay %s: begin transaction: %w", st.RunID, err)
	}
	perr := r.produce(dctx, cl, batch, &kgo.Record{Topic: CheckpointTopic(r.cfg.Target), Key: []byte(st.RunID), Value: v})
	if perr != nil {
		aerr := cl.EndTransaction(dctx, kgo.TryAbort)
		return errors.Join(fmt.Errorf("replay %s: produce batch: %w", st.RunID, perr), aerr)
	}
	if err := cl.EndTransaction(dctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("replay %s: commit batch (resume the run: its checkpoint says what was committed): %w", st.RunID, err)
	}
	return nil
}

// produce produces recs and the checkpoint and waits for all of them.
func (r *Replayer) produce(ctx context.Context, cl *kgo.Client, recs []*kgo.Record, checkpoint *kgo.Record) error {
	var (
		mu    sync.Mutex
		first error
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if first == nil {
				first = err
			}
			mu.Unlock()
		}
	}
	for _, rec := range recs {
		cl.Produce(ctx, rec, promise)
	}
	cl.Produce(ctx, checkpoint, promise)
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	return first
}

// crash is the crashAfter test hook: the batch's records are on the broker,
// in a transaction that nobody ends.
func (r *Replayer) crash(ctx context.Context, cl *kgo.Client, batch []*kgo.Record) error {
	if err := cl.BeginTransaction(); err != nil {
		return err
	}
	for _, rec := range batch {
		cl.Produce(ctx, rec, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	return errCrashed
}

// pace sleeps until submitted requests are due at the configured rate.
func (r *Replayer) pace(ctx context.Context, start time.Time, submitted int64) error {
	if r.cfg.Rate <= 0 {
		return nil
	}
	due := start.Add(time.Duration(float64(submitted) / r.cfg.Rate * float64(time.Second)))
	wait := due.Sub(r.cfg.Now())
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// report calls Config.Progress.
func (r *Replayer) report(st *RunState, start time.Time, advancedAtStart, submitted int64) {
	if r.cfg.Progress == nil {
		return
	}
	total, advanced := st.Total()
	p := Progress{RunID: st.RunID, Total: total, Advanced: advanced, Submitted: st.Submitted, ETA: -1, Done: st.Done}
	for _, n := range st.Skipped {
		p.Skipped += n
	}
	if !start.IsZero() {
		p.Elapsed = r.cfg.Now().Sub(start)
		if secs := p.Elapsed.Seconds(); secs > 0 {
			p.Rate = float64(submitted) / secs
			if perSec := float64(advanced-advancedAtStart) / secs; perSec > 0 {
				p.ETA = time.Duration(float64(total-advanced) / perSec * float64(time.Second))
			}
		}
	}
	if p.Done {
		p.ETA = 0
	}
	r.cfg.Progress(p)
}
