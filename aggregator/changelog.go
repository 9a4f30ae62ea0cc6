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
// results. A request's own entry, keyed by its correlation id, says that it
// is open (the manifest) or done (the end of its late window); each part
// with a result and each result held before the manifest is an entry of its
// own (keys: schemas.AppendPartKey, schemas.AppendHeldKey), so that a part
// that arrives rewrites one small entry, not the whole request. Entries
// that stop being true are deleted with tombstones: a request's parts and
// held results when it completes or expires, the request's own entry when
// its late window passes. Replaying the changelog, latest value per key,
// gives back exactly the open, held and done requests.

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

func (c *changelog) part(p int32, id schemas.CorrelationID, part schemas.PartID, s *schemas.AggregationState) error {
	start := len(c.buf)
	c.buf = schemas.AppendPartKey(c.buf, id, part)
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
// batch's records and timers were applied and before it ends.
func (m *machine) changelog() error {
	var errs []error
	for i := range m.reqUndo {
		if err := m.logRequest(&m.reqUndo[i]); err != nil {
			errs = append(errs, err)
		}
	}
	// Parts last, so that on a partition a request's open entry comes
	// before its parts.
	for i := range m.slotUndo {
		u := &m.slotUndo[i]
		r := u.r
		if r.phase != phaseOpen {
			continue // completed or gone in this batch: nothing to keep
		}
		sl := &r.slots[u.i]
		s := schemas.AggregationState{CorrelationID: r.id, Entry: schemas.EntryPart, Part: schemas.PartState{
			PartID:      r.plan.mf.Parts[u.i],
			Status:      sl.status,
			Payload:     sl.payload,
			Error:       sl.err,
			ProcessorID: sl.processor,
			Attempt:     sl.attempt,
			ArrivedAt:   time.Unix(0, sl.arrived),
		}}
		if err := m.log.part(u.p, r.id, s.Part.PartID, &s); err != nil {
			errs = append(errs, fmt.Errorf("changelog %s: %w", r.id, err))
		}
	}
	return errors.Join(errs...)
}

// logRequest writes what changed in one request between its state before
// the batch and now.
func (m *machine) logRequest(u *reqUndo) error {
	pre := phaseGone
	if u.existed {
		pre = u.saved.phase
	}
	r, p, id := u.r, u.ps.partition, u.id
	var first error
	note := func(err error) {
		if first == nil {
			first = err
		}
	}
	put := func(s *schemas.AggregationState) { note(m.log.request(p, id, s)) }
	dropHeld := func() {
		for _, h := range u.saved.held {
			note(m.log.held(p, id, h, false))
		}
	}
	// dropParts deletes the parts the request had. The slots are changed in
	// place, so u.saved.slots holds them as they are now: this also deletes
	// parts that came in this batch and were never written, which is
	// harmless.
	dropParts := func() {
		for i, sl := range u.saved.slots {
			if sl.status != "" {
				note(m.log.part(p, id, u.saved.plan.mf.Parts[i], nil))
			}
		}
	}
	// dropHedge deletes the hedge entries the request had.
	dropHedge := func() {
		h := u.saved.hedge
		if h == nil || !u.existed || u.saved.phase != phaseOpen {
			return
		}
		for _, src := range h.srcs {
			note(m.log.held(p, id, heldResult{src: src}, false))
		}
		if h.fired {
			note(m.log.held(p, id, heldResult{src: &kgo.Record{Offset: hedgeMarkOffset}}, false))
		}
	}
	switch r.phase {
	case phaseOpen:
		if pre == phaseOrphan {
			dropHeld()
		}
		if pre != phaseOpen {
			put(&schemas.AggregationState{CorrelationID: id, Entry: schemas.EntryOpen, Open: r.plan.mf})
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
		case phaseDone:
			return nil
		case phaseOpen:
			dropParts()
			dropHedge()
		case phaseOrphan:
			dropHeld()
		}
		put(&schemas.AggregationState{CorrelationID: id, Entry: schemas.EntryDone, Done: schemas.DoneState{
			CompletedAt: time.Unix(0, r.completed),
			ForgetAt:    time.Unix(0, r.due),
		}})
	case phaseGone:
		switch pre {
		case phaseOpen:
			dropParts()
			dropHedge()
			put(nil)
		case phaseDone:
			put(nil)
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
// arrival) and the hedge mark when the hedge fired.
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
	if h.fired && (before == nil || !before.fired) {
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
		id    schemas.CorrelationID
		own   schemas.StateEntry // EntryOpen, EntryDone or 0
		open  schemas.Manifest
		done  schemas.DoneState
		parts []schemas.PartState
		held  []schemas.HeldRecord
	}
	var errs []error
	skip := func(err error) {
		n.skipped++
		if len(errs) < maxProblems {
			errs = append(errs, err)
		}
	}
	index := make(map[schemas.CorrelationID]int, len(entries)/2)
	gs := make([]gathered, 0, len(entries)/2)
	for key, v := range entries {
		s, err := schemas.DecodeAggregationState(v)
		if err != nil {
			skip(fmt.Errorf("entry %q: %w", key, err))
			continue
		}
		i, ok := index[s.CorrelationID]
		if !ok {
			i = len(gs)
			index[s.CorrelationID] = i
			gs = append(gs, gathered{id: s.CorrelationID})
		}
		g := &gs[i]
		switch s.Entry {
		case schemas.EntryOpen:
			g.own, g.open = s.Entry, s.Open
		case schemas.EntryDone:
			g.own, g.done = s.Entry, s.Done
		case schemas.EntryPart:
			g.parts = append(g.parts, s.Part)
		case schemas.EntryHeld:
			g.held = append(g.held, s.Held)
		}
	}

	ps = newPartitionState(p)
	ps.reqs = make(map[schemas.CorrelationID]*request, len(gs))
	ps.timers = make(timers, 0, len(gs))
	for i := range gs {
		g := &gs[i]
		id := g.id
		r := &request{id: id}
		switch g.own {
		case schemas.EntryDone:
			r.phase = phaseDone
			r.due = g.done.ForgetAt.UnixNano()
			r.completed = g.done.CompletedAt.UnixNano()
			n.done++
			n.skipped += len(g.parts) + len(g.held)
		case schemas.EntryOpen:
			pl, err := m.newPlan(g.open)
			if err != nil {
				skip(fmt.Errorf("request %s: manifest: %w", id, err))
				continue
			}
			r.phase, r.plan, r.due = phaseOpen, pl, nanos(pl.mf.Deadline)
			r.slots = make([]slot, len(pl.mf.Parts))
			for _, part := range g.parts {
				i := pl.find(part.PartID)
				if i < 0 {
					skip(fmt.Errorf("request %s: part %q is not in its manifest", id, part.PartID))
					continue
				}
				r.slots[i] = slot{status: part.Status, payload: part.Payload, err: part.Error,
					processor: part.ProcessorID, attempt: part.Attempt, arrived: part.ArrivedAt.UnixNano()}
				r.got++
				if part.Status == schemas.ResultOK {
					r.ok++
				}
			}
			if len(g.held) > 0 {
				for _, err := range rebuildHedge(r, g.held) {
					skip(err)
				}
				if h := r.hedge; h != nil {
					if h.at > 0 && !h.fired {
						ps.timers.push(h.at, id)
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
