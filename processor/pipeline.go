package processor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// This file is the processor's pipeline, used when Config.Concurrency is
// above 1: the idea of Confluent's Parallel Consumer on the hop.
//
// Records stay in flight across polls. Each partition has a track: its
// records from the last committed offset on, in offset order, each queued,
// running, done (its result is ready), emitted (its result is in the batch
// in flight) or committed. Up to Concurrency workers per partition take
// queued records; under OrderKey a record waits until the record before it
// with the same key is done. A worker that finishes a record wakes the
// hop's poll, so the next batch (often one with no new records) carries the
// results that are ready and commits each partition at its first record
// not yet emitted, with the offsets above it that are emitted in the
// commit's metadata ("done set"). A slow record so holds back the offset
// of its partition, never the results of other records.
//
// Exactly-once: a result is in the same transaction as an offset commit
// that covers it, either below the committed offset or in the done set.
// After a failure the next owner (or this one, after an aborted batch)
// reads the done set back (kadm FetchOffsets, require-stable) and skips
// those records, so no record's result is written twice. A done set that
// would not fit Kafka's metadata limit is cut: the records left out are
// handled again after a failure, and their results are duplicates that
// the aggregator counts once.

// Bounds of the pipeline.
const (
	// minPending is the least number of records of one partition polled
	// and not yet handled (queued or running) before the partition's
	// fetching pauses; the bound is 8 × Concurrency above it.
	minPending = 256
	// heldPerPending is how many records of one partition may be held
	// between the committed offset and the polled position, per record of
	// the pending bound, before fetching pauses too. Handled records are
	// held behind a slow one until it is done: a straggler of 500ms on a
	// partition that takes 300 tasks/s holds 150, and stragglers that
	// overlap hold the offset longer. Pausing on them would hold back the
	// partition's new tasks (and the hedges sent there) for the
	// straggler's sake, which is what Concurrency is for not doing:
	// bench --compare-hedging at saturation (fan-out 16, 1% stragglers)
	// gave a hedged p99 of 612-724ms with 256 held at most, 227ms with
	// 1,024.
	heldPerPending = 4
	// maxDoneMetadata bounds the encoded done set, below Kafka's default
	// offset.metadata.max.bytes of 4096.
	maxDoneMetadata = 3000
	// doneSetPrefix starts the metadata of a commit the pipeline made.
	doneSetPrefix = "sg-done1:"
)

type topicPartition struct {
	topic     string
	partition int32
}

type entryState uint8

const (
	entQueued entryState = iota
	entRunning
	entDone      // the outcome is ready
	entEmitted   // the outcome is in the batch in flight
	entCommitted // the outcome is committed (or was, before a restart)
	entCutOff    // the handler was cut off by shutdown: never answered here
)

type entry struct {
	rec *kgo.Record // nil once committed
	// offset and epoch are rec's, kept when rec goes.
	offset int64
	epoch  int32
	key    string
	keyed  bool
	state  entryState
	o      outcome
}

// committed marks e committed and lets go of its task and outcome: only
// its offset is needed from now on (the commit point and the done set),
// and a partition holds up to heldPerPending × maxPending such entries
// behind a slow record, whose payloads (and the fetch buffers they point
// into) would otherwise stay in memory with them.
func (e *entry) committed() {
	e.state, e.rec, e.o = entCommitted, nil, outcome{}
}

// track is the pipeline's state of one partition.
type track struct {
	tp      topicPartition
	dropped bool // revoked or reset: workers stop, outcomes are dropped
	// cancels cancel the handlers of the track's workers, by worker.
	cancels map[int]context.CancelFunc
	worker  int // the last worker's number

	entries []*entry // from the committed offset, in offset order
	ready   []*entry // queued records that may start, first in first out
	keys    map[string][]*entry
	running int // workers
	// skip holds the offsets, at or above the committed offset, whose
	// results were committed before (the done set read back).
	skip map[int64]bool
	// base is the committed offset, -1 before the first commit.
	base int64
	// next is the offset after the last record added, -1 before the first:
	// after an aborted batch the client goes back to the committed offset,
	// and the records the track already has are not added again.
	next int64
	// resync, after an aborted batch, is the offset after the last record
	// the track had then; 0 once the client polled up to it again. Until
	// then the client does not count the partition as consumed past its
	// committed offset, so a transaction would carry no offset for it
	// (franz-go sends no TxnOffsetCommit for a partition it thinks is
	// committed): the track emits nothing meanwhile, and commits where it
	// did (so that a partial poll is not committed past a record in
	// flight).
	resync int64
}

// commitState is what a partition's last committed batch committed.
type commitState struct {
	offset int64
	done   []int64 // ascending, all >= offset
}

type pipeline struct {
	p          *Processor
	limit      int
	byKey      bool
	maxPending int
	wake       chan struct{}
	workers    sync.WaitGroup

	mu        sync.Mutex
	draining  bool
	fatal     error
	cl        *kgo.Client             // the hop's, to pause and resume fetching
	owned     map[topicPartition]bool // partitions assigned to us
	tracks    map[topicPartition]*track
	committed map[topicPartition]commitState
	// The batch in flight: what it emitted and what it commits.
	batch   []*entry
	commits map[topicPartition]commitState
	n       tally
	paused  map[topicPartition]bool
	// lastEnd is when the last batch ended, for the commit interval.
	lastEnd time.Time
}

func newPipeline(p *Processor) *pipeline {
	return &pipeline{
		p:          p,
		limit:      p.cfg.Concurrency,
		byKey:      p.cfg.Ordering == OrderKey,
		maxPending: max(minPending, 8*p.cfg.Concurrency),
		wake:       make(chan struct{}, 1),
		owned:      map[topicPartition]bool{},
		tracks:     map[topicPartition]*track{},
		committed:  map[topicPartition]commitState{},
		commits:    map[topicPartition]commitState{},
		paused:     map[topicPartition]bool{},
	}
}

// signal wakes the hop's poll without blocking.
func (pl *pipeline) signal() {
	select {
	case pl.wake <- struct{}{}:
	default:
	}
}

// process is the hop's ProcessFunc. base is the context handlers run
// under (Run's, without its cancellation: a shutdown drains them), runCtx
// Run's own, to see a shutdown.
func (pl *pipeline) process(runCtx, base context.Context, bctx context.Context, b *kafka.Batch) error {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.fatal != nil {
		return pl.fatal
	}
	// The hop builds a new client after some errors (kafka.Hop.Run).
	pl.cl = pl.p.hop.Client()
	b.Fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		tp := topicPartition{fp.Topic, fp.Partition}
		if len(fp.Records) == 0 || !pl.owned[tp] {
			return // revoked since the poll: its next owner handles it
		}
		t := pl.track(tp)
		for _, rec := range fp.Records {
			pl.add(t, rec)
		}
	})
	if runCtx.Err() != nil {
		if err := pl.drain(bctx); err != nil {
			return err
		}
	} else {
		for _, t := range pl.tracks {
			pl.start(base, t)
		}
		pl.pace(bctx)
	}
	pl.emit(b)
	pl.flowControl()
	return nil
}

// pace waits, when there is something to commit, until CommitInterval
// has passed since the last batch ended, so that transactions do not run
// back to back: Kafka 4.x then holds the next one's first produce 20ms
// while the last one's markers are written (kafkaconfig.Role.TransactionGap,
// which the hop waits before each poll, so that with both at 2ms pace
// adds nothing; a longer CommitInterval batches more). Measured on Kafka
// 4.4 at 320 tasks/s: a p50 result latency of 50ms back to back, about
// 20ms with 2ms between. Workers finishing meanwhile join the batch. pl.mu
// is held; pace releases it while it waits.
func (pl *pipeline) pace(bctx context.Context) {
	wait := pl.p.cfg.CommitInterval - time.Since(pl.lastEnd)
	if wait <= 0 || pl.p.cfg.Guarantee != kafkaconfig.ExactlyOnce || !pl.ready() {
		return
	}
	pl.mu.Unlock()
	t := time.NewTimer(wait)
	select {
	case <-t.C:
	case <-bctx.Done():
		t.Stop()
	}
	pl.mu.Lock()
}

// ready reports whether an outcome waits to be emitted. pl.mu is held.
func (pl *pipeline) ready() bool {
	for _, t := range pl.tracks {
		for _, e := range t.entries {
			if e.state == entDone {
				return true
			}
		}
	}
	return false
}

// track returns tp's track, creating it with the done set last committed.
func (pl *pipeline) track(tp topicPartition) *track {
	if t := pl.tracks[tp]; t != nil {
		return t
	}
	t := &track{tp: tp, keys: map[string][]*entry{}, skip: map[int64]bool{}, cancels: map[int]context.CancelFunc{}, base: -1, next: -1}
	if cs, ok := pl.committed[tp]; ok {
		t.base = cs.offset
		for _, o := range cs.done {
			t.skip[o] = true
		}
	}
	pl.tracks[tp] = t
	return t
}

// drop stops t: its workers stop taking records, its handlers are
// cancelled, and outcomes still to come are dropped. pl.mu is held.
func (pl *pipeline) drop(t *track) {
	t.dropped = true
	for _, cancel := range t.cancels {
		cancel()
	}
	if pl.tracks[t.tp] == t {
		delete(pl.tracks, t.tp)
	}
}

// add appends a polled record to t, unless t has it already.
func (pl *pipeline) add(t *track, rec *kgo.Record) {
	if t.resync > 0 && rec.Offset+1 >= t.resync {
		t.resync = 0
	}
	if rec.Offset < t.next {
		return // consumed again after an aborted batch: t has it
	}
	t.next = rec.Offset + 1
	e := &entry{rec: rec, offset: rec.Offset, epoch: rec.LeaderEpoch}
	t.entries = append(t.entries, e)
	if t.skip[rec.Offset] {
		// Its result was committed before: the done set says so.
		e.committed()
		return
	}
	if pl.byKey && rec.Key != nil {
		e.key, e.keyed = string(rec.Key), true
		q := t.keys[e.key]
		t.keys[e.key] = append(q, e)
		if len(q) > 0 {
			return // waits for the record before it with its key
		}
	}
	t.ready = append(t.ready, e)
}

// start starts workers on t while records are ready and the limit allows.
// pl.mu is held.
func (pl *pipeline) start(base context.Context, t *track) {
	for n := min(pl.limit-t.running, len(t.ready)); n > 0; n-- {
		ctx, cancel := context.WithCancel(base)
		t.worker++
		t.cancels[t.worker] = cancel
		t.running++
		pl.workers.Add(1)
		// Exits when t has no ready record, is dropped, or the pipeline
		// drains; Run waits for it (pipeline.wait).
		go pl.work(ctx, t, t.worker)
	}
}

// work handles ready records of t one after the other.
func (pl *pipeline) work(ctx context.Context, t *track, id int) {
	defer pl.workers.Done()
	pl.mu.Lock()
	defer func() {
		t.running--
		t.cancels[id]()
		delete(t.cancels, id)
		pl.mu.Unlock()
		pl.signal()
	}()
	for !t.dropped && !pl.draining && len(t.ready) > 0 {
		e := t.ready[0]
		t.ready[0] = nil
		t.ready = t.ready[1:]
		e.state = entRunning
		pl.mu.Unlock()
		o, err := pl.p.handleRecord(ctx, e.rec)
		pl.mu.Lock()
		if t.dropped {
			return
		}
		switch {
		case errors.Is(err, kafka.ErrAbort):
			// Cut off by shutdown: never answered here; the record's
			// offset stays uncommitted and its next owner handles it.
			e.state = entCutOff
			continue
		case err != nil:
			if pl.fatal == nil {
				pl.fatal = err
			}
			return
		}
		e.o, e.state = o, entDone
		if e.keyed {
			// The next record of the key may start.
			q := t.keys[e.key][1:]
			if len(q) == 0 {
				delete(t.keys, e.key)
			} else {
				t.keys[e.key] = q
				t.ready = append(t.ready, q[0])
			}
		}
		pl.signal()
	}
}

// drain waits, at shutdown, for the records being handled to finish; no
// other record starts. When bctx ends first (the drain timeout), the
// handlers are cancelled and the batch is aborted. pl.mu is held; drain
// releases it while it waits.
func (pl *pipeline) drain(bctx context.Context) error {
	pl.draining = true
	for {
		busy := 0
		for _, t := range pl.tracks {
			busy += t.running
		}
		if busy == 0 {
			return nil
		}
		pl.mu.Unlock()
		select {
		case <-pl.wake:
		case <-bctx.Done():
		}
		pl.mu.Lock()
		if bctx.Err() != nil {
			for _, t := range pl.tracks {
				pl.drop(t)
			}
			return fmt.Errorf("tasks still running at the drain timeout: %w", kafka.ErrAbort)
		}
	}
}

// emit adds the ready outcomes to b and sets where each partition
// commits. When no outcome is ready and no partition's commit would move,
// the batch is deferred: no transaction for nothing. Otherwise every
// partition with records in flight gets its commit offset, since the
// client would commit the others past what they polled. pl.mu is held.
func (pl *pipeline) emit(b *kafka.Batch) {
	type commit struct {
		cs    commitState
		epoch int32
		md    string
	}
	commits := map[topicPartition]commit{}
	changed := false
	for tp, t := range pl.tracks {
		for _, e := range t.entries {
			if e.state != entDone || t.resync > 0 {
				continue
			}
			// A copy: after an aborted batch the outcome is produced again,
			// and a produced record is the client's until its promise.
			o := e.o
			if o.out != nil { // nil: skipped, nothing to write
				rec := *o.out
				o.out = &rec
			}
			pl.p.emit(b, o)
			pl.n.add(e.o.n)
			e.state = entEmitted
			pl.batch = append(pl.batch, e)
			changed = true
		}
		cs, epoch, ok := t.commitPoint()
		if !ok {
			continue
		}
		md := encodeDone(cs.offset, cs.done)
		if len(md) > maxDoneMetadata {
			cs.done = fitDone(cs.offset, cs.done)
			md = encodeDone(cs.offset, cs.done)
		}
		commits[tp] = commit{cs, epoch, md}
		if last, ok := pl.committed[tp]; !ok || last.offset != cs.offset || !slices.Equal(last.done, cs.done) {
			changed = true
		}
	}
	if !changed {
		b.Defer()
		return
	}
	for tp, c := range commits {
		pl.commits[tp] = c.cs
		b.Commit(tp.topic, tp.partition, kafka.CommitOffset{Offset: c.cs.offset, Epoch: c.epoch, Metadata: c.md})
	}
	// Partitions with a done set and nothing polled since they were
	// assigned or reset keep it: a commit without it would lose it.
	for tp, cs := range pl.committed {
		if _, ok := pl.tracks[tp]; ok || len(cs.done) == 0 {
			continue
		}
		b.Commit(tp.topic, tp.partition, kafka.CommitOffset{Offset: cs.offset, Epoch: -1, Metadata: encodeDone(cs.offset, cs.done)})
	}
}

// commitPoint returns where t commits: at its first record not emitted
// (or past its last record), with the emitted and skipped offsets above.
// ok is false when t has nothing to commit of its own: no records since
// its last commit and no done set.
func (t *track) commitPoint() (cs commitState, epoch int32, ok bool) {
	if len(t.entries) == 0 && len(t.skip) == 0 {
		return cs, -1, false
	}
	epoch = -1
	i := 0
	for i < len(t.entries) && t.entries[i].state >= entEmitted && t.entries[i].state != entCutOff {
		i++
	}
	switch {
	case i < len(t.entries):
		cs.offset, epoch = t.entries[i].offset, t.entries[i].epoch
	case i > 0:
		last := t.entries[i-1]
		cs.offset, epoch = last.offset+1, last.epoch
	case t.base >= 0:
		cs.offset = t.base // no records since the last commit: only the skip set
	default:
		return cs, -1, false
	}
	for _, e := range t.entries[min(i+1, len(t.entries)):] {
		if e.state == entEmitted || e.state == entCommitted {
			cs.done = append(cs.done, e.offset)
		}
	}
	for o := range t.skip {
		if o >= cs.offset {
			cs.done = append(cs.done, o)
		}
	}
	slices.Sort(cs.done)
	cs.done = slices.Compact(cs.done)
	return cs, epoch, true
}

// end learns whether the batch committed. pl.mu is not held.
func (pl *pipeline) end(committedBatch bool) tally {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	n := pl.n
	pl.lastEnd = time.Now()
	if committedBatch {
		for _, e := range pl.batch {
			e.committed()
		}
		for tp, cs := range pl.commits {
			pl.committed[tp] = cs
			if t := pl.tracks[tp]; t != nil {
				t.trim(cs.offset)
			}
		}
	} else {
		// The outcomes the batch carried are emitted again with the next
		// one; the records in flight go on. The client goes back to the
		// committed offsets, and the records the tracks have are not
		// added again (track.next).
		for _, e := range pl.batch {
			if e.state == entEmitted {
				e.state = entDone
			}
		}
		for _, t := range pl.tracks {
			if t.next > 0 && (len(t.entries) > 0 || len(t.skip) > 0) {
				t.resync = t.next
			}
		}
		n = tally{}
	}
	clear(pl.batch)
	pl.batch = pl.batch[:0]
	clear(pl.commits)
	pl.n = tally{}
	pl.flowControl()
	return n
}

// trim drops the records below offset: committed.
func (t *track) trim(offset int64) {
	i := 0
	for i < len(t.entries) && t.entries[i].offset < offset {
		i++
	}
	clear(t.entries[:i])
	t.entries = t.entries[i:]
	t.base = offset
	for o := range t.skip {
		if o < offset {
			delete(t.skip, o)
		}
	}
}

// flowControl pauses fetching a partition whose track has maxPending
// records not yet handled, or holds heldPerPending times as many in all,
// and resumes it once both are below half of that, or when it must be
// polled again after an aborted batch (resync): until then it emits and
// commits nothing, so it would never get below the bound and stay paused
// for good (seen on Kafka 4.4 as a hedged bench phase with every request
// timing out). pl.mu is held.
func (pl *pipeline) flowControl() {
	if pl.cl == nil {
		return
	}
	pause, resume := map[string][]int32{}, map[string][]int32{}
	maxHeld := heldPerPending * pl.maxPending
	for tp, t := range pl.tracks {
		held, pending := len(t.entries), 0
		for _, e := range t.entries {
			if e.state == entQueued || e.state == entRunning {
				pending++
			}
		}
		switch {
		case (pending >= pl.maxPending || held >= maxHeld) && t.resync == 0 && !pl.paused[tp]:
			pl.paused[tp] = true
			pause[tp.topic] = append(pause[tp.topic], tp.partition)
		case (pending < pl.maxPending/2 && held < maxHeld/2 || t.resync > 0) && pl.paused[tp]:
			delete(pl.paused, tp)
			resume[tp.topic] = append(resume[tp.topic], tp.partition)
		}
	}
	for tp := range pl.paused {
		if _, ok := pl.tracks[tp]; !ok {
			delete(pl.paused, tp)
			resume[tp.topic] = append(resume[tp.topic], tp.partition)
		}
	}
	if len(pause) > 0 {
		pl.cl.PauseFetchPartitions(pause)
	}
	if len(resume) > 0 {
		pl.cl.ResumeFetchPartitions(resume)
	}
}

// assigned reads the committed offsets and done sets of newly assigned
// partitions. It runs on the client's rebalance goroutine before the
// partitions are fetched.
func (pl *pipeline) assigned(ctx context.Context, cl *kgo.Client, as map[string][]int32) {
	pl.mu.Lock()
	for topic, ps := range as {
		for _, p := range ps {
			tp := topicPartition{topic, p}
			pl.owned[tp] = true
			delete(pl.committed, tp)
			if t := pl.tracks[tp]; t != nil {
				pl.drop(t)
			}
		}
	}
	pl.mu.Unlock()
	done, err := fetchDoneSets(ctx, cl, pl.p.cfg.Group, as)
	if err != nil {
		// Without the done sets, records finished above the committed
		// offsets are handled again: their results are duplicates, which
		// the aggregator counts once.
		pl.p.log.Warn("could not read the done sets of assigned partitions; tasks finished after the last committed offset may be handled again", "err", err)
		return
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for tp, cs := range done {
		if pl.owned[tp] {
			pl.committed[tp] = cs
		}
	}
}

// revoked forgets revoked or lost partitions.
func (pl *pipeline) revoked(_ context.Context, _ *kgo.Client, rev map[string][]int32) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for topic, ps := range rev {
		for _, p := range ps {
			tp := topicPartition{topic, p}
			delete(pl.owned, tp)
			delete(pl.committed, tp)
			if t := pl.tracks[tp]; t != nil {
				pl.drop(t)
			}
		}
	}
	pl.flowControl()
}

// stop cancels every handler and waits for the workers to exit.
func (pl *pipeline) stop() {
	pl.mu.Lock()
	for _, t := range pl.tracks {
		pl.drop(t)
	}
	pl.mu.Unlock()
	pl.workers.Wait()
}

// fetchDoneSets reads the committed offsets of the assigned partitions and
// the done sets in their metadata. Offsets of a transaction still open are
// waited for (require-stable); a commit without a done set gives none.
func fetchDoneSets(ctx context.Context, cl *kgo.Client, group string, as map[string][]int32) (map[topicPartition]commitState, error) {
	adm := kadm.NewClient(cl)
	var (
		resp kadm.OffsetResponses
		err  error
	)
	for attempt := 0; attempt < 20; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err = adm.FetchOffsets(kadm.RequireStable(rctx), group)
		cancel()
		if err == nil {
			if perr := resp.Error(); perr != nil {
				err = perr
			}
		}
		if err == nil || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, fmt.Errorf("fetch offsets of group %s: %w", group, err)
	}
	out := map[topicPartition]commitState{}
	for topic, ps := range as {
		for _, p := range ps {
			r, ok := resp.Lookup(topic, p)
			if !ok || r.At < 0 {
				continue
			}
			done, ok := decodeDone(r.At, r.Metadata)
			if !ok {
				continue
			}
			out[topicPartition{topic, p}] = commitState{offset: r.At, done: done}
		}
	}
	return out, nil
}

// encodeDone writes the offsets above base (ascending) as the metadata of
// base's commit: doneSetPrefix, then comma-separated runs, each the gap
// from the end of the previous run (from base for the first) in base 36,
// and "+" and the run's length in base 36 when it is above 1.
// E.g. base 100, {101, 102, 103, 110} is "sg-done1:1+3,6".
func encodeDone(base int64, done []int64) string {
	if len(done) == 0 {
		return doneSetPrefix
	}
	var b strings.Builder
	b.WriteString(doneSetPrefix)
	prev := base
	for i := 0; i < len(done); {
		j := i + 1
		for j < len(done) && done[j] == done[j-1]+1 {
			j++
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(done[i]-prev, 36))
		if n := j - i; n > 1 {
			b.WriteByte('+')
			b.WriteString(strconv.FormatInt(int64(n), 36))
		}
		prev = done[j-1] + 1
		i = j
	}
	return b.String()
}

// decodeDone reads what encodeDone wrote. ok is false when md is not a
// done set (a commit by another client), or malformed.
func decodeDone(base int64, md string) (done []int64, ok bool) {
	rest, ok := strings.CutPrefix(md, doneSetPrefix)
	if !ok {
		return nil, false
	}
	if rest == "" {
		return nil, true
	}
	prev := base
	for run := range strings.SplitSeq(rest, ",") {
		gapS, nS, hasN := strings.Cut(run, "+")
		gap, err := strconv.ParseInt(gapS, 36, 64)
		if err != nil || gap < 0 {
			return nil, false
		}
		n := int64(1)
		if hasN {
			if n, err = strconv.ParseInt(nS, 36, 64); err != nil || n < 1 || n > maxDoneMetadata*36 {
				return nil, false
			}
		}
		start := prev + gap
		for o := start; o < start+n; o++ {
			done = append(done, o)
		}
		prev = start + n
	}
	return done, true
}

// fitDone cuts done to the longest prefix whose encoding fits
// maxDoneMetadata.
func fitDone(base int64, done []int64) []int64 {
	lo, hi := 0, len(done)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if len(encodeDone(base, done[:mid])) <= maxDoneMetadata {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return done[:lo]
}
