package aggregator

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/scattergather/scattergather/schemas"
	"github.com/twmb/franz-go/pkg/kgo"
)

// This file turns a batch's changes into changelog records, and a
// partition's changelog back into its state.
//
// The changelog is the compacted topic kafkaconfig.Topics.State, co-partitioned
// with results: the entries of a request are on the partition of its
// results. At the end of a batch, per partition:
//
//   - one done-list (key: schemas.AppendDoneListKey) lists the requests the
//     batch completed, with when each is forgotten; written first, so that
//     a changelog cut short (at-least-once) never has a request's open
//     entry deleted without its completion;
//   - a request that changed and stays open rewrites its own entry, keyed
//     by its correlation id: the manifest with every part that has a
//     result folded in (StateOpen.results);
//   - a request that ended deletes its own entry (a tombstone), if one was
//     written: a request that opens and completes in one batch writes
//     nothing but its line in the done-list;
//   - results held before their manifest, and a hedged request's templates
//     and hedge mark, are entries of their own (schemas.AppendHeldKey),
//     deleted when the request opens or ends.
//
// A done-list is deleted when the last request it lists is forgotten:
// partitionState.lists counts them. Replaying the changelog, latest value
// per key, gives back exactly the open, held and done requests. Release v2
// of the schema wrote a part entry per result (schemas.AppendPartKey) and a
// done entry per request under its id; rebuild reads them, and a request
// restored with them deletes them when it ends (request.legacy, logged).

// stateRecord is one changelog record of the batch in flight. Key and value
// are slices of changelog.buf; a nil value is a tombstone.
type stateRecord struct {
	partition  int32
	key, value []byte
}

// changelog holds the changelog records of the batch in flight. Their keys
// and values are appended to one buffer that is reused from batch to batch,
// so a part costs no allocation here. The records must not be used after
// the batch ends.
type changelog struct {
	buf  []byte
	recs []stateRecord
}

// keepBuffer is the largest buffer a changelog keeps for the next batch:
// one burst of large payloads must not pin its memory for good.
const keepBuffer = 8 << 20

func (c *changelog) reset() {
	c.buf = c.buf[:0]
	if cap(c.buf) > keepBuffer {
		c.buf = nil
	}
	clear(c.recs)
	c.recs = c.recs[:0]
}

// add records the key at buf[keyStart:] with s as its value, or a tombstone
// when s is nil.
func (c *changelog) add(p int32, keyStart int, s *schemas.AggregationState) error {
	keyEnd := len(c.buf)
	if s != nil {
		var err error
		if c.buf, err = schemas.AppendAggregationState(c.buf, s); err != nil {
			c.buf = c.buf[:keyStart]
			return err
		}
	}
	rec := stateRecord{partition: p, key: c.buf[keyStart:keyEnd:keyEnd]}
	if s != nil {
		rec.value = c.buf[keyEnd:len(c.buf):len(c.buf)]
	}
	c.recs = append(c.recs, rec)
	return nil
}

func (c *changelog) request(p int32, id schemas.CorrelationID, s *schemas.AggregationState) error {
	start := len(c.buf)
	c.buf = append(c.buf, id...)
	return c.add(p, start, s)
}

// dropPart deletes the part entry of part part of request id (written by
// release v2, or for a request too wide to fold).
func (c *changelog) dropPart(p int32, id schemas.CorrelationID, part schemas.PartID) error {
	return c.part(p, id, part, nil)
}

// part writes the part entry of part part of request id, or deletes it
// when s is nil.
func (c *changelog) part(p int32, id schemas.CorrelationID, part schemas.PartID, s *schemas.AggregationState) error {
	start := len(c.buf)
	c.buf = schemas.AppendPartKey(c.buf, id, part)
	return c.add(p, start, s)
}

func (c *changelog) list(p int32, seq uint64, s *schemas.AggregationState) error {
	start := len(c.buf)
	c.buf = schemas.AppendDoneListKey(c.buf, seq)
	return c.add(p, start, s)
}

func (c *changelog) held(p int32, id schemas.CorrelationID, h heldResult, put bool) error {
	start := len(c.buf)
	c.buf = schemas.AppendHeldKey(c.buf, id, heldOffset(h))
	if !put {
		return c.add(p, start, nil)
	}
	s := schemas.AggregationState{CorrelationID: id, Entry: schemas.EntryHeld, Held: schemas.HeldRecord{
		Partition: p, Offset: heldOffset(h), ArrivedAt: time.Unix(0, h.arrived),
	}}
	if h.src != nil {
		s.Held.Value = h.src.Value
		s.Held.Headers = make([]schemas.RecordHeader, len(h.src.Headers))
		for i, hd := range h.src.Headers {
			s.Held.Headers[i] = schemas.RecordHeader{Key: hd.Key, Value: hd.Value}
		}
	}
	return c.add(p, start, &s)
}

// heldOffset is the offset a held result was consumed at; -1 when the
// machine was given no record (tests).
func heldOffset(h heldResult) int64 {
	if h.src == nil {
		return -1
	}
	return h.src.Offset
}

// changelog writes the changelog records of the batch in flight to m.log,
// from the undo log: the requests it lists are exactly those the batch
// changed, with their state before the batch. Call it once, after the
// batch's records and timers were applied and before it ends; what it
// changes in the state (the done-lists, what each request has in the
// changelog) is undone with the batch.
func (m *machine) changelog() error {
	changed := m.reqUndo
	if m.perInterval {
		changed = m.intervalChanges()
		m.flushing = true
	}
	return m.write(changed)
}

// completions writes, in a batch that does not end its interval
// (machine.perInterval), what the batch completed: their lines of a
// done-list, and the deletion of what the changelog held of them (an open
// entry written at an earlier interval's end, held results). A reply is
// not written again after a crash only if its completion is in the
// changelog when the offsets are committed; written here, right after the
// reply, a crash between the two replays the batch as before this change,
// not the whole interval. Each request's interval log entry then takes its
// state now, so that the interval's end writes nothing more of it.
func (m *machine) completions() error {
	done := m.ivlLive[:0]
	for i := range m.reqUndo {
		if u := &m.reqUndo[i]; completed(u) {
			done = append(done, *u)
		}
	}
	m.ivlLive = done
	if len(done) == 0 {
		return nil
	}
	err := m.write(done)
	for i := range done {
		r := done[i].r
		if r.iseq != m.ivlSeq {
			continue
		}
		m.ivlUndo = append(m.ivlUndo, ivlUndo{at: r.ivlAt, was: m.ivl[r.ivlAt]})
		m.ivl[r.ivlAt] = reqUndo{ps: done[i].ps, id: r.id, r: r, existed: true, saved: *r}
	}
	return err
}

// write writes the changelog of the requests of changed, each as its entry
// saved it and as it is now.
func (m *machine) write(changed []reqUndo) error {
	var errs []error
	// Done-lists first, so that on a partition a request's completion comes
	// before the deletion of its open entry.
	for i := range changed {
		if u := &changed[i]; completed(u) && !slices.Contains(m.listParts, u.ps) {
			m.listParts = append(m.listParts, u.ps)
		}
	}
	for _, ps := range m.listParts {
		if err := m.logDone(ps, changed); err != nil {
			errs = append(errs, err)
		}
	}
	clear(m.listParts)
	m.listParts = m.listParts[:0]
	for i := range changed {
		if err := m.logRequest(&changed[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// intervalChanges returns the interval log (machine.perInterval) less the
// requests of partitions no longer held as they were (revoked, lost, or
// restored again: the next owner, or the restore, has their state), and
// puts every request still in its partition in the batch's undo log: the
// changelog marks them (logged, list), which an abort of the batch must
// undo. A request that left its partition in an earlier batch of the
// interval is not put there: an abort would bring it back.
//
// With machine.young, an open request the interval created is left out
// (youngReqs), and its partition's offsets are to be committed at its first
// record (commitAt, the oldest such request's).
func (m *machine) intervalChanges() []reqUndo {
	live := m.ivlLive[:0]
	for i := range m.ivl {
		u := &m.ivl[i]
		if m.parts[u.ps.partition] != u.ps {
			continue
		}
		current := u.ps.reqs[u.id] == u.r
		if m.young && current && !u.existed && !u.carried && u.r.first >= 0 &&
			(u.r.phase == phaseOpen || u.r.phase == phaseOrphan) {
			m.youngReqs = append(m.youngReqs, *u)
			if m.commitAt == nil {
				m.commitAt = map[int32]int64{}
			}
			if at, ok := m.commitAt[u.ps.partition]; !ok || u.r.first < at {
				m.commitAt[u.ps.partition] = u.r.first
			}
			continue
		}
		if current {
			m.touch(u.ps, u.r)
		}
		live = append(live, *u)
	}
	m.ivlLive = live
	return live
}

// completed reports whether the batch completed the request of u.
func completed(u *reqUndo) bool {
	return u.r.phase == phaseDone && (!u.existed || u.saved.phase != phaseDone)
}

// maxListed bounds the requests of one done-list (about 60 bytes each):
// a batch that completes more, after a long outage, writes several.
const maxListed = 2000

// logDone writes the done-lists of partition ps: the requests the batch
// completed there.
func (m *machine) logDone(ps *partitionState, changed []reqUndo) error {
	var completedAt, forgetAt int64
	flush := func() error {
		if len(m.doneReqs) == 0 {
			return nil
		}
		seq := ps.nextList
		m.listUndo = append(m.listUndo, listUndo{ps: ps, seq: seq, created: true})
		ps.nextList++
		if ps.lists == nil {
			ps.lists = map[uint64]int{}
		}
		ps.lists[seq] = len(m.doneReqs)
		s := schemas.AggregationState{Entry: schemas.EntryDone, Done: schemas.DoneState{
			CompletedAt: time.Unix(0, completedAt), ForgetAt: time.Unix(0, forgetAt), Requests: m.doneReqs,
		}}
		err := m.log.list(ps.partition, seq, &s)
		clear(m.doneReqs)
		m.doneReqs = m.doneReqs[:0]
		completedAt, forgetAt = 0, 0
		if err != nil {
			return fmt.Errorf("changelog: done-list %d: %w", seq, err)
		}
		return nil
	}
	for i := range changed {
		u := &changed[i]
		if u.ps != ps || !completed(u) {
			continue
		}
		r := u.r
		r.list = ps.nextList
		m.doneReqs = append(m.doneReqs, schemas.DoneRequest{
			CorrelationID: r.id, CompletedAt: time.Unix(0, r.completed), ForgetAt: time.Unix(0, r.due),
		})
		completedAt, forgetAt = max(completedAt, r.completed), max(forgetAt, r.due)
		if len(m.doneReqs) == maxListed {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// forgetListed notes that a request of done-list seq of ps was forgotten,
// and deletes the list when it was the last.
func (m *machine) forgetListed(ps *partitionState, seq uint64) error {
	n, ok := ps.lists[seq]
	if !ok {
		return nil // no list (0), or one the batch already deleted
	}
	m.listUndo = append(m.listUndo, listUndo{ps: ps, seq: seq, n: n})
	if n > 1 {
		ps.lists[seq] = n - 1
		return nil
	}
	delete(ps.lists, seq)
	return m.log.list(ps.partition, seq, nil)
}

// foldMax bounds the result bytes folded into an open request's entry. A
// wider request (many parts with large payloads: 64 parts of 100 KB) would
// make an entry Kafka refuses (kafkaconfig.MaxRecordBytes) and lose its
// state, so past it the request's results go into part entries of their
// own, as release v2 wrote them (request.legacy), and its entry keeps only
// the manifest.
const foldMax = 256 << 10

// folded returns the result bytes r's entry would carry.
func folded(r *request) int {
	n := 0
	for i := range r.slots {
		n += len(r.slots[i].payload) + len(r.slots[i].err)
	}
	return n
}

// logWide writes the state of an open request too wide to fold (foldMax):
// its entry with the manifest alone when the request is new to the
// changelog or was folded until now, and a part entry per result the batch
// brought (every result, when it was folded until now).
func (m *machine) logWide(p int32, r *request) error {
	all := !r.wide || !r.logged
	var errs []error
	if all {
		s := schemas.AggregationState{CorrelationID: r.id, Entry: schemas.EntryOpen, Open: r.plan.mf}
		errs = append(errs, m.log.request(p, r.id, &s))
	}
	put := func(i int) {
		sl := &r.slots[i]
		s := schemas.AggregationState{CorrelationID: r.id, Entry: schemas.EntryPart, Part: schemas.PartState{
			PartID: r.plan.mf.Parts[i], Status: sl.status, Payload: sl.payload, Error: sl.err,
			ProcessorID: sl.processor, Attempt: sl.attempt, ArrivedAt: time.Unix(0, sl.arrived),
		}}
		errs = append(errs, m.log.part(p, r.id, s.Part.PartID, &s))
	}
	if all {
		for i := range r.slots {
			if r.slots[i].status != "" {
				put(i)
			}
		}
	} else {
		for _, su := range m.slotUndo {
			if su.r == r && r.slots[su.i].status != "" {
				put(su.i)
			}
		}
	}
	r.logged, r.legacy, r.wide = true, true, true
	return errors.Join(errs...)
}

// logOpen writes the entry of open request r: its manifest and the parts
// that have a result.
func (m *machine) logOpen(p int32, r *request) error {
	for i := range r.slots {
		sl := &r.slots[i]
		if sl.status == "" {
			continue
		}
		m.foldParts = append(m.foldParts, schemas.PartState{
			PartID:      r.plan.mf.Parts[i],
			Status:      sl.status,
			Payload:     sl.payload,
			Error:       sl.err,
			ProcessorID: sl.processor,
			Attempt:     sl.attempt,
			ArrivedAt:   time.Unix(0, sl.arrived),
		})
	}
	s := schemas.AggregationState{CorrelationID: r.id, Entry: schemas.EntryOpen, Open: r.plan.mf, Results: m.foldParts}
	err := m.log.request(p, r.id, &s)
	clear(m.foldParts) // no payload kept alive
	m.foldParts = m.foldParts[:0]
	return err
}

// logRequest writes what changed in one request between its state before
// the batch and now; its completion is in the done-list (logDone).
func (m *machine) logRequest(u *reqUndo) error {
	pre := phaseGone
	if u.existed {
		pre = u.saved.phase
	}
	r, ps, id := u.r, u.ps, u.id
	p := ps.partition
	var first error
	note := func(err error) {
		if first == nil {
			first = err
		}
	}
	dropHeld := func() {
		for _, h := range u.saved.held {
			note(m.log.held(p, id, h, false))
		}
	}
	// end deletes what an open request had in the changelog: its own
	// entry, if one was written; the part entries of release v2, for a
	// request restored with them (the slots are changed in place, so
	// u.saved.slots holds them as they are now: this also deletes parts
	// that came since, which is harmless); its hedge entries.
	end := func() {
		if u.saved.logged {
			note(m.log.request(p, id, nil))
		}
		if u.saved.legacy {
			for i, sl := range u.saved.slots {
				if sl.status != "" {
					note(m.log.dropPart(p, id, u.saved.plan.mf.Parts[i]))
				}
			}
		}
		if h := u.saved.hedge; h != nil {
			for _, src := range h.srcs {
				note(m.log.held(p, id, heldResult{src: src}, false))
			}
			if h.fired {
				note(m.log.held(p, id, heldResult{src: &kgo.Record{Offset: hedgeMarkOffset}}, false))
			}
		}
		r.logged, r.legacy, r.wide = false, false, false
	}
	switch r.phase {
	case phaseOpen:
		if pre == phaseOrphan {
			dropHeld()
		}
		// Hedging alone does not change the entry.
		switch {
		case pre == phaseOpen && r.got == u.saved.got && r.ok == u.saved.ok:
		case folded(r) > foldMax:
			note(m.logWide(p, r))
		default:
			note(m.logOpen(p, r))
			r.logged = true
		}
		note(m.logHedge(p, r, u))
	case phaseOrphan:
		from := 0
		if pre == phaseOrphan {
			from = len(u.saved.held)
		}
		for _, h := range r.held[from:] {
			note(m.log.held(p, id, h, true))
		}
	case phaseDone:
		switch pre {
		case phaseOpen:
			end()
		case phaseOrphan:
			dropHeld()
		}
	case phaseGone:
		switch pre {
		case phaseOpen:
			end()
		case phaseDone:
			// Forgotten: out of its done-list, or its own done entry
			// (release v2) deleted.
			if u.saved.logged {
				note(m.log.request(p, id, nil))
			}
			note(m.forgetListed(ps, u.saved.list))
		case phaseOrphan:
			dropHeld()
		}
	}
	if first != nil {
		return fmt.Errorf("changelog %s: %w", id, first)
	}
	return nil
}

// logHedge writes what changed in an open request's hedging: templates
// that came (held entries under their offsets, the hedge time as their
// arrival) and the hedge mark when the hedge fired or re-issued more parts.
func (m *machine) logHedge(p int32, r *request, u *reqUndo) error {
	h := r.hedge
	if h == nil {
		return nil
	}
	var before *hedgeState
	if u.existed && u.saved.phase == phaseOpen {
		before = u.saved.hedge
	}
	from := 0
	if before != nil {
		from = len(before.srcs)
	}
	for _, src := range h.srcs[from:] {
		if err := m.log.held(p, r.id, heldResult{src: src, arrived: h.at}, true); err != nil {
			return err
		}
	}
	if h.fired && (before == nil || !before.fired || !slices.Equal(before.hedged, h.hedged)) {
		mark, err := hedgeMark(r)
		if err != nil {
			return err
		}
		return m.log.held(p, r.id, mark, true)
	}
	return nil
}

// restored counts what rebuild made of a partition's changelog.
type restored struct {
	open, done, orphans, held int
	// skipped counts entries that could not be used: undecodable, or left
	// from a request that has moved on (a part of a request that is done).
	skipped int
}

func (r *restored) add(o restored) {
	r.open += o.open
	r.done += o.done
	r.orphans += o.orphans
	r.held += o.held
	r.skipped += o.skipped
}

// maxProblems bounds the problems rebuild reports in detail.
const maxProblems = 5

// rebuild builds the state of partition p from its changelog: entries maps
// each key to its latest value. results names the results topic, where the
// held records came from. Open requests get a timer at their deadline,
// orphans at their expiry, done requests at the end of their late window;
// what is already due fires at the machine's next tick. Entries that
// cannot be used are skipped and counted; problems describes the first
// few. rebuild does not change m.
func (m *machine) rebuild(p int32, entries map[string][]byte, results string) (ps *partitionState, n restored, problems error) {
	// gathered is what the changelog holds for one request. They live in
	// one slice, indexed by correlation id, so that a restore allocates
	// little besides the state it builds.
	type gathered struct {
		id      schemas.CorrelationID
		own     schemas.StateEntry // EntryOpen, EntryDone (v2) or 0
		open    schemas.Manifest
		results []schemas.PartState // folded into the open entry
		done    schemas.DoneState
		parts   []schemas.PartState // part entries (v2)
		held    []schemas.HeldRecord
		// list is the latest done-list that lists the request, 0 for
		// none, and listed its line there.
		list   uint64
		listed schemas.DoneRequest
	}
	type doneList struct {
		seq  uint64
		reqs []schemas.DoneRequest
	}
	var lists []doneList
	var errs []error
	skip := func(err error) {
		n.skipped++
		if len(errs) < maxProblems {
			errs = append(errs, err)
		}
	}
	index := make(map[schemas.CorrelationID]int, len(entries))
	gs := make([]gathered, 0, len(entries))
	gather := func(id schemas.CorrelationID) *gathered {
		i, ok := index[id]
		if !ok {
			i = len(gs)
			index[id] = i
			gs = append(gs, gathered{id: id})
		}
		return &gs[i]
	}
	for key, v := range entries {
		s, err := schemas.DecodeAggregationState(v)
		if err != nil {
			skip(fmt.Errorf("entry %q: %w", key, err))
			continue
		}
		if seq, ok := schemas.ParseDoneListKey([]byte(key)); ok {
			if s.Entry != schemas.EntryDone {
				skip(fmt.Errorf("entry %q: a done-list key with a %s entry", key, s.Entry))
				continue
			}
			lists = append(lists, doneList{seq, s.Done.Requests})
			continue
		}
		g := gather(s.CorrelationID)
		switch s.Entry {
		case schemas.EntryOpen:
			g.own, g.open, g.results = s.Entry, s.Open, s.Results
		case schemas.EntryDone:
			g.own, g.done = s.Entry, s.Done
		case schemas.EntryPart:
			g.parts = append(g.parts, s.Part)
		case schemas.EntryHeld:
			g.held = append(g.held, s.Held)
		}
	}

	ps = newPartitionState(p)
	// A request listed twice (which the aggregator does not write) is
	// done as its latest list says.
	slices.SortFunc(lists, func(a, b doneList) int { return cmp.Compare(a.seq, b.seq) })
	for _, l := range lists {
		for _, q := range l.reqs {
			g := gather(q.CorrelationID)
			g.list, g.listed = l.seq, q
		}
		ps.nextList = max(ps.nextList, l.seq+1)
	}
	ps.reqs = make(map[schemas.CorrelationID]*request, len(gs))
	ps.timers = make(timers, 0, len(gs))
	for i := range gs {
		g := &gs[i]
		id := g.id
		r := &request{id: id}
		switch {
		case g.own == schemas.EntryOpen:
			pl, err := m.newPlan(g.open)
			if err != nil {
				skip(fmt.Errorf("request %s: manifest: %w", id, err))
				continue
			}
			r.phase, r.plan, r.due = phaseOpen, pl, nanos(pl.mf.Deadline)
			r.logged, r.legacy = true, len(g.parts) > 0
			r.slots = make([]slot, len(pl.mf.Parts))
			// The part entries of release v2, then the parts folded into
			// the open entry, which is newer than any of them.
			for _, parts := range [2][]schemas.PartState{g.parts, g.results} {
				for _, part := range parts {
					i := pl.find(part.PartID)
					if i < 0 {
						skip(fmt.Errorf("request %s: part %q is not in its manifest", id, part.PartID))
						continue
					}
					r.slots[i] = slot{status: part.Status, payload: part.Payload, err: part.Error,
						processor: part.ProcessorID, attempt: part.Attempt, arrived: part.ArrivedAt.UnixNano()}
				}
			}
			for _, sl := range r.slots {
				if sl.status != "" {
					r.got++
				}
				if sl.status == schemas.ResultOK {
					r.ok++
				}
			}
			if len(g.held) > 0 {
				for _, err := range rebuildHedge(r, g.held) {
					skip(err)
				}
				if h := r.hedge; h != nil {
					if h.refused(r.slots) {
						// Tried again at once.
						h.next = max(h.at, 1)
					}
					if at := h.timer(); at > 0 {
						ps.timers.push(at, id)
					}
					if ps.earned == nil {
						ps.earned = map[schemas.Route]earnedTokens{}
					}
					e := ps.earned[pl.mf.Route]
					e.spec, e.tasks = h.spec, e.tasks+len(r.slots)
					ps.earned[pl.mf.Route] = e
				}
			}
			ps.g.open++
			n.open++
		case g.own == schemas.EntryDone || (g.list != 0 && len(g.held) == 0):
			// Done. A request with an open entry or held results after
			// its line in a done-list is one in a new life: forgotten,
			// its list not yet deleted, then opened again or held for.
			r.phase = phaseDone
			if g.list != 0 {
				r.due, r.completed, r.list = g.listed.ForgetAt.UnixNano(), g.listed.CompletedAt.UnixNano(), g.list
				if ps.lists == nil {
					ps.lists = map[uint64]int{}
				}
				ps.lists[g.list]++
			} else {
				r.due, r.completed = g.done.ForgetAt.UnixNano(), g.done.CompletedAt.UnixNano()
			}
			// A done entry of release v2, deleted when the request is
			// forgotten.
			r.logged = g.own != 0
			n.done++
			n.skipped += len(g.parts) + len(g.held)
		default:
			n.skipped += len(g.parts)
			if len(g.held) == 0 {
				continue
			}
			r.phase = phaseOrphan
			slices.SortFunc(g.held, func(a, b schemas.HeldRecord) int { return cmp.Compare(a.Offset, b.Offset) })
			for _, h := range g.held {
				res, err := schemas.DecodeResult(h.Value)
				if err != nil {
					skip(fmt.Errorf("request %s: held result at offset %d: %w", id, h.Offset, err))
					continue
				}
				src := &kgo.Record{Topic: results, Partition: h.Partition, Offset: h.Offset, Key: []byte(id), Value: h.Value}
				for _, hd := range h.Headers {
					src.Headers = append(src.Headers, kgo.RecordHeader{Key: hd.Key, Value: hd.Value})
				}
				arrived := h.ArrivedAt.UnixNano()
				r.held = append(r.held, heldResult{res: res, src: src, arrived: arrived})
				r.due = max(r.due, max(nanos(res.Deadline), arrived)+int64(orphanGrace))
			}
			if len(r.held) == 0 {
				continue
			}
			ps.g.held += int64(len(r.held))
			n.orphans++
			n.held += len(r.held)
		}
		ps.reqs[id] = r
		ps.timers.push(r.due, id)
	}
	return ps, n, errors.Join(errs...)
}

// install makes ps the state of its partition, replacing what was there,
// and gives its hedged requests' budget tokens back.
func (m *machine) install(ps *partitionState) {
	m.parts[ps.partition] = ps
	m.hedging.restore(ps.earned)
	ps.earned = nil
}
