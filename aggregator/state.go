package aggregator

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/scattergather/scattergather/schemas"
	"github.com/twmb/franz-go/pkg/kgo"
)

// orphanGrace is how long past its task's deadline a result that came
// before its manifest is held.
const orphanGrace = time.Second

// behindMax bounds how long a partition's due timers wait for it to be
// read up to their due time (the deadline rule, machine.fire): half the
// Go client's default Grace (2s), so that a reply held to the bound still
// reaches a caller who waits the default grace past its timeout, with a
// second left for the batch that carries it. A consumer further behind
// than a second of reading answers from what it read, as without the rule.
const behindMax = time.Second

// indexAbove is the part count above which a request looks its parts up in
// a map rather than scanning the manifest's part list.
const indexAbove = 8

// phase is where a request is in its life.
type phase uint8

const (
	// phaseGone: the request was removed from its partition (expired or
	// forgotten); a request object in this phase is only referred to by
	// the undo log.
	phaseGone phase = iota
	// phaseOrphan: results came, the manifest did not yet.
	phaseOrphan
	// phaseOpen: the manifest came; gathering until the policy is met or
	// the deadline passes.
	phaseOpen
	// phaseDone: replied; remembered until LateWindow after its deadline
	// (or its reply, if later) so that late and duplicate records are
	// dropped, not replied to again.
	phaseDone
)

// slot is what the aggregator knows of one expected part.
type slot struct {
	status    schemas.ResultStatus // "" until a result came
	payload   []byte
	err       string
	processor string
	attempt   int
	arrived   int64 // Unix nanoseconds
}

// heldResult is a result that came before its manifest.
type heldResult struct {
	res     schemas.Result
	src     *kgo.Record // for the dead-letter topic if the manifest never comes
	arrived int64
}

// plan is a manifest as the aggregator uses it. It is immutable once built,
// so saved copies of a request may share it.
type plan struct {
	mf     schemas.Manifest
	policy Policy
	index  map[schemas.PartID]int // nil for few parts: find scans mf.Parts
	merge  Merge
}

// find returns the index of part id in the manifest, or -1.
func (p *plan) find(id schemas.PartID) int {
	if p.index != nil {
		if i, ok := p.index[id]; ok {
			return i
		}
		return -1
	}
	for i, pid := range p.mf.Parts {
		if pid == id {
			return i
		}
	}
	return -1
}

// request is the state of one correlation id on one partition.
type request struct {
	id    schemas.CorrelationID
	phase phase
	// due is when the request's timer fires (Unix nanoseconds): the orphan
	// expiry, the deadline, or the end of the late window.
	due int64
	// completed is when a done request was replied to (Unix nanoseconds).
	completed int64
	// Open requests only.
	plan  *plan
	slots []slot // one per manifest part, in manifest order
	got   int    // slots with a result
	ok    int    // slots with an OK result
	// Open requests of hedged routes only.
	hedge *hedgeState
	// Orphans only.
	held []heldResult
	// seq is the batch in which the undo log last saved this request;
	// iseq the interval in which the interval log did (machine.perInterval).
	seq, iseq uint64
	// ivlAt is the request's index in machine.ivl in interval iseq.
	ivlAt int
	// What the changelog holds of the request (changelog.go). logged: an
	// entry under its id (its open entry, or a done entry that release v2
	// wrote); legacy: per-part entries that release v2 wrote; list: the
	// done-list that lists it, 0 for none.
	logged, legacy bool
	// wide: the request's results are in part entries of their own, its
	// entry holds the manifest alone (changelog.go, foldMax).
	wide bool
	list uint64
	// first is the offset of the record that created the request on its
	// partition, -1 when unknown (machine.young).
	first int64
}

// gauges are a partition's current counts.
type gauges struct {
	open int64 // open requests
	held int64 // results held before their manifest
}

// partitionState is everything the aggregator keeps for one partition of
// the results topic. It is created when the partition is assigned and
// dropped when it is revoked, so a partition can move to another instance.
type partitionState struct {
	partition int32
	reqs      map[schemas.CorrelationID]*request
	timers    timers
	g         gauges
	seq       uint64 // batch in which the undo log last saved g
	// earned is what a rebuilt partition's hedged requests had earned of
	// their routes' hedge budgets; install gives it back.
	earned map[schemas.Route]earnedTokens
	// lists counts, per done-list in the changelog, the requests it lists
	// that are not forgotten yet; the list is deleted when that reaches
	// 0. nextList is the seq of the next list: above every list written
	// on the partition (changelog.go).
	lists    map[uint64]int
	nextList uint64
	// pos is the offset after the last record read, end the highest last
	// stable offset a fetch of the partition reported (read_committed: the
	// end of what a consumer may read); both 0 until a fetch says.
	pos, end int64
	// seen says whether a fetch of the partition has been read since it
	// was assigned (a record, or the end offset a fetch reported). Until
	// then the client may not be fetching it at all (its committed offset
	// still being looked up, the group coordinator moving), so a drained
	// poll says nothing of it (see machine.fire).
	seen bool
	// upTo is the latest time (unix ns) up to which the partition is known
	// to be read: every result committed to it before upTo has been read.
	// See machine.fire for how it is learnt.
	upTo int64
	// waitSince is when the due timers that wait for upTo began to wait
	// (unix ns); 0 when none waits.
	waitSince int64
	// leader and epoch are the partition's leader (a broker's node id)
	// and leader epoch as the client's metadata last said, -1 until
	// known. unsureSince is when (unix ns) the partition
	// was last seen to change leaders or fail a fetch, 0 once a record
	// created after that was read: a new leader answers fetches with the
	// high watermark it knew as a follower until its followers fetch from
	// it, so a fetch of it that ends at what was read does not show that
	// results committed on the old leader were read (see machine.fire).
	leader, epoch int32
	unsureSince   int64
	// bytes counts the key and value bytes read since the last poll that
	// found the client's buffer drained (see machine.polled).
	bytes int64
	// catchUp is the results offset to read up to before due timers fire,
	// so that a deadline does not mark MISSING a part whose result sits in
	// the topic: set when a restored partition has a backlog nobody read
	// (Aggregator.catchUp; catchUnknown until its end offset is known) and
	// after an aborted batch (its records are read again). The timers wait
	// until then or holdUntil (unix ns), whichever comes first. Zero when
	// caught up.
	catchUp, holdUntil int64
}

// catchUnknown is catchUp while the end offset to read up to is not known
// yet: the timers wait (at most until holdUntil) until a listing of the
// end offsets or a fetch tells it.
const catchUnknown = -1

// read notes that the partition's records up to offset were read, the
// latest of them created at ts (unix ns), size bytes of keys and values.
// The backlog ends at catchUp-1, or at catchUp-2 when a transaction's
// marker (which a consumer never sees) ends it.
func (ps *partitionState) read(offset, ts, size int64) {
	ps.seen = true
	ps.pos = offset + 1
	ps.bytes += size
	// A record created at ts was appended at ts or later, so at or past
	// the end offset the partition had at ts: everything committed before
	// ts lies before it, and was read.
	ps.upTo = max(ps.upTo, ts)
	if ps.unsureSince != 0 && ts > ps.unsureSince {
		// Appended after the leader changed, so returned by a leader whose
		// high watermark moved past it: its fetches tell the truth again.
		ps.unsureSince = 0
	}
	if ps.catchUp > 0 && offset+2 >= ps.catchUp {
		ps.catchUp = 0
	}
}

// fetched notes what a fetch of the partition reported: its last stable
// offset lso, and whether it returned records. A fetch that returned none
// had nothing visible for the partition from its fetch offset to lso
// (only transaction markers or aborted records, which the client skips),
// so the partition is read up to lso.
func (ps *partitionState) fetched(lso int64, records bool) {
	if lso <= 0 {
		return
	}
	ps.seen = true
	ps.end = max(ps.end, lso)
	if ps.catchUp == catchUnknown {
		ps.catchUp = lso
	}
	if !records {
		// Not enough to end a catch-up: the records of an aborted batch
		// are read again from the committed offset, which a fetch
		// buffered before the abort may not show.
		ps.pos = max(ps.pos, lso)
	}
}

// caughtUpTo is the answer of a listing of end offsets for a partition
// whose catchUp was catchUnknown: end is its last stable offset and
// committed the group's committed offset at or after the listing.
func (ps *partitionState) caughtUpTo(end, committed int64) {
	if ps.catchUp != catchUnknown {
		return // a fetch told it first
	}
	if end <= 0 || committed >= end || ps.pos+1 >= end {
		ps.catchUp = 0
		return
	}
	ps.catchUp = end
}

// led notes the partition's leader and leader epoch from the client's
// metadata at now (unix ns); a change of epoch makes its fetches unsure
// until a record created after now is read. So does the first epoch
// known since the partition was assigned: its leader may have changed
// just before, and the client's metadata does not say when.
func (ps *partitionState) led(leader, epoch int32, now int64) {
	ps.leader = leader
	if epoch < 0 || epoch == ps.epoch {
		return
	}
	ps.unsureSince = now
	ps.epoch = epoch
}

// fetchFailed notes a fetch of the partition that failed at now (a leader
// moving, a replica catching up): the client retries it; until a fetch of
// it is read, a drained poll says nothing of it, and until a record
// created after now is read, a fetch that ends at what was read does not
// either.
func (ps *partitionState) fetchFailed(now int64) {
	ps.seen = false
	ps.unsureSince = now
}

// behind reports whether the last fetch of the partition ended past what
// was read; one offset of slack for a transaction marker at the end.
func (ps *partitionState) behind() bool { return ps.end > ps.pos+1 }

func newPartitionState(p int32) *partitionState {
	return &partitionState{partition: p, reqs: map[schemas.CorrelationID]*request{}, nextList: 1, leader: -1, epoch: -1}
}

// counters count what batches did. The machine keeps a batch's counts
// apart until the batch commits, so that an aborted batch, which will be
// consumed again, is not counted twice.
type counters struct {
	manifests      int64
	results        int64
	duplicates     int64
	late           int64
	orphansExpired int64
	// manifestsExpired counts manifests read past their deadline plus the
	// late window, dead-lettered.
	manifestsExpired int64
	deadLettered     int64
	complete         int64
	partial          int64
	failed           int64
	changelog        int64 // records written to the changelog
	hedgesIssued     int64 // tasks re-issued
	hedgesDenied     int64 // hedges the budget did not allow
	hedgesWon        int64 // parts whose recorded result came from a hedge
	// catchUpsExpired counts holds of a partition's due timers that ended
	// at their bound, before the partition was read up to their offset.
	catchUpsExpired int64
}

// output is a record to produce: a reply, a dead letter when src is set,
// or a hedged task when task is set.
type output struct {
	reply   schemas.Reply
	replyTo string
	hedged  []schemas.PartID // the reply's parts that were hedged
	src     *kgo.Record
	reason  string
	err     error
	task    *schemas.Task
	// hedgeAfter is the hedge delay of the request whose task is re-issued.
	hedgeAfter time.Duration
}

// The undo log. Before a batch first changes a request (or a partition's
// gauges) it saves a copy; slots, which are changed in place, are saved one
// by one. Aborting restores the copies in reverse order.
type (
	reqUndo struct {
		ps      *partitionState
		id      schemas.CorrelationID
		r       *request // the request the batch changed
		existed bool     // false: the batch created r
		saved   request  // r before the batch, when it existed
		// carried: in the interval log, a request the previous interval
		// created and left out of its changelog (machine.young).
		carried bool
	}
	slotUndo struct {
		r     *request
		slots []slot // r.slots when the slot changed
		i     int
		old   slot
		p     int32 // r's partition
	}
	partUndo struct {
		ps *partitionState
		g  gauges
	}
	// ivlUndo puts back an interval log entry at index at.
	ivlUndo struct {
		at  int
		was reqUndo
	}
	// listUndo undoes a change to ps.lists made by the batch's changelog:
	// a list created (ps.nextList was seq), or one whose count was n.
	listUndo struct {
		ps      *partitionState
		seq     uint64
		n       int
		created bool
	}
)

// machine is the aggregator's state machine: every partition's requests,
// their timers and the undo log of the batch in flight. It does no I/O:
// records go in through manifest, result and tick, records to produce come
// out in out. It is not safe for concurrent use.
type machine struct {
	lateWindow int64
	mergeFor   func(schemas.Route) Merge
	parts      map[int32]*partitionState
	hedging    *hedger

	seq     uint64 // the batch in flight
	reqUndo []reqUndo
	// perInterval: the changelog of the requests is written once per interval,
	// not per batch (at-least-once with an offset commit interval; see
	// Aggregator.process). ivl then saves each request as it was before
	// the interval first changed it, as the undo log does for a batch;
	// ivlSeq is the interval, ivlMark the length of ivl before the batch in
	// flight (an abort drops what the batch added), and flushing says the
	// batch in flight writes the interval's changelog.
	perInterval bool
	ivl         []reqUndo
	ivlLive     []reqUndo // scratch of intervalChanges and completions
	// ivlUndo saves the interval log entries the batch in flight replaced
	// (completions), for an abort.
	ivlUndo  []ivlUndo
	ivlSeq   uint64
	ivlMark  int
	flushing bool
	// young: under exactly-once, the interval's changelog leaves out the
	// open requests the interval created, and the offsets of their
	// partitions are committed at the first record of the oldest of them
	// (commitAt), so that a crash consumes them again; they are written at
	// the next interval's end if still open. youngReqs are those the
	// flush in flight left out, carried into the next interval by commit.
	young     bool
	youngReqs []reqUndo
	commitAt  map[int32]int64
	slotUndo  []slotUndo
	partUndo  []partUndo
	listUndo  []listUndo
	delta     counters

	out []output
	// log is the changelog of the batch in flight, written by changelog
	// once the batch's records and timers have been applied.
	log changelog
	// Scratch space of changelog, reused from batch to batch.
	foldParts []schemas.PartState
	doneReqs  []schemas.DoneRequest
	listParts []*partitionState
	// read is the last offset the batch in flight read of each partition
	// (see abort).
	read []partRead
	// follow says whether due timers wait until their partition is read
	// up to their due time (see fire); the aggregator turns it on, and off
	// while its fetching is paused, when nothing more is read.
	follow bool
	// drains are the recent polls after which the client had nothing
	// buffered, the last one latest, and settled the latest such poll that
	// another came settleGap or more after (unix ns; see polled).
	drains  []int64
	settled int64
	// answered is, per broker (node id), the latest send time (unix ns)
	// of a fetch that broker answered whose records have been read (see
	// answer).
	answered map[int32]int64
	// bytes counts the key and value bytes read since the last drained
	// poll, on every partition.
	bytes int64
}

// A fetch response ends at the partition's last stable offset unless the
// broker cut it at its byte limits (kgo's FetchMaxPartitionBytes, 1MiB,
// and FetchMaxBytes, 50MiB, by default). What a drained poll read of a
// partition, under half of those, was whole: its end is the partition's
// read position, although the transaction markers there, which the client
// never returns, leave the last record up to markerSlack offsets before it
// (one marker per transaction that wrote to the partition and committed
// after the last record: a few producers).
const (
	wholeFetchBytes = 512 << 10
	wholePollBytes  = 25 << 20
	markerSlack     = 64
)

// settleGap is how long after a poll that found nothing buffered a fetch
// the client sent then is taken to have come back with what was committed
// before it: a fetch round trip, when the broker has data to return at
// once. A LAN round trip is a millisecond or two.
const settleGap = 10 * time.Millisecond

// answer notes that broker b answered a fetch sent at sent (unix ns),
// and that the records it brought have been read: the broker built its
// answer after sent, from a high watermark no lower than it had then, so
// every partition b leads is read up to sent (short of what a byte limit
// cut off, see partitionState.behind, or a new leader's stale high
// watermark, see partitionState.led). A drained poll says that much only
// of a fetch that came back: a broker that died answers none, and its
// partitions are not taken for read up to a drained poll (see fire).
func (m *machine) answer(b int32, sent int64) {
	m.answered[b] = max(m.answered[b], sent)
}

// polled notes a poll at now (unix ns) after which the client had drained
// all it had buffered. The client sends the next fetch only once its
// buffer is drained; so when a poll finds it drained, a fetch went out
// then, and by a later drained poll settleGap or more later, that fetch
// came back and every record it brought was read: every partition not
// behind is then read up to the earlier poll.
//
// The poll's records must have been read (partitionState.read) before.
func (m *machine) polled(now int64) {
	for _, ps := range m.parts {
		if m.bytes < wholePollBytes && ps.bytes < wholeFetchBytes && ps.end-ps.pos <= markerSlack {
			ps.pos = max(ps.pos, ps.end)
		}
		ps.bytes = 0
	}
	m.bytes = 0
	i := len(m.drains) - 1
	for i >= 0 && m.drains[i] > now-int64(settleGap) {
		i--
	}
	if i >= 0 {
		m.settled = m.drains[i]
		// The polls before it can settle nothing later than it.
		m.drains = m.drains[:copy(m.drains, m.drains[i+1:])]
	}
	m.drains = append(m.drains, now)
}

type partRead struct {
	p      int32
	offset int64
}

// readTo notes that the batch in flight read partition p up to offset.
func (m *machine) readTo(p int32, offset int64) {
	m.read = append(m.read, partRead{p, offset})
}

func newMachine(lateWindow time.Duration, mergeFor func(schemas.Route) Merge) *machine {
	return &machine{
		lateWindow: int64(lateWindow),
		mergeFor:   mergeFor,
		parts:      map[int32]*partitionState{},
		answered:   map[int32]int64{},
		hedging:    newHedger(),
		seq:        1,
		ivlSeq:     1,
	}
}

// assign starts keeping state for partition p, if it does not already.
func (m *machine) assign(p int32) *partitionState {
	ps := m.parts[p]
	if ps == nil {
		ps = newPartitionState(p)
		m.parts[p] = ps
	}
	return ps
}

// revoke drops partition p's state. An undo log entry that still points at
// it restores into the dropped state, which is harmless.
func (m *machine) revoke(p int32) { delete(m.parts, p) }

// commit ends the batch in flight: its changes stay, and its counts are
// returned to be published.
func (m *machine) commit() counters {
	d := m.delta
	m.hedging.commit()
	if m.flushing {
		clear(m.ivl)
		m.ivl = m.ivl[:0]
		m.ivlSeq++
		for _, u := range m.youngReqs {
			if m.parts[u.ps.partition] != u.ps || u.ps.reqs[u.id] != u.r {
				continue
			}
			u.carried = true
			m.ivl = append(m.ivl, u)
			u.r.iseq, u.r.ivlAt = m.ivlSeq, len(m.ivl)-1
		}
	}
	m.endBatch()
	return d
}

// abort ends the batch in flight by undoing every change it made: its
// records will be consumed again. Until they are (or until holdUntil, unix
// ns), the timers of their partitions wait, as after a restore: a deadline
// that passes meanwhile must not mark MISSING a part whose result was read
// and is on its way back.
func (m *machine) abort(holdUntil int64) {
	for _, r := range m.read {
		if ps := m.parts[r.p]; ps != nil {
			if ps.catchUp != catchUnknown {
				ps.catchUp = max(ps.catchUp, r.offset+1)
			}
			ps.holdUntil = max(ps.holdUntil, holdUntil)
		}
	}
	for i := len(m.slotUndo) - 1; i >= 0; i-- {
		u := m.slotUndo[i]
		u.slots[u.i] = u.old
	}
	for i := len(m.reqUndo) - 1; i >= 0; i-- {
		u := &m.reqUndo[i]
		if !u.existed {
			delete(u.ps.reqs, u.id)
			continue
		}
		*u.r = u.saved
		u.ps.reqs[u.id] = u.r
		// The batch may have popped the timer of the restored due time.
		u.ps.timers.push(u.saved.due, u.id)
		if at := u.saved.hedge.timer(); at > 0 {
			u.ps.timers.push(at, u.id)
		}
	}
	for i := len(m.partUndo) - 1; i >= 0; i-- {
		m.partUndo[i].ps.g = m.partUndo[i].g
	}
	for i := len(m.listUndo) - 1; i >= 0; i-- {
		u := m.listUndo[i]
		if u.created {
			delete(u.ps.lists, u.seq)
			u.ps.nextList = u.seq
		} else {
			u.ps.lists[u.seq] = u.n
		}
	}
	m.hedging.abort()
	// What the batch added to the interval log it also undid (a request it
	// created is gone; one it changed has its iseq back), and what it
	// replaced there is put back.
	for i := len(m.ivlUndo) - 1; i >= 0; i-- {
		if u := m.ivlUndo[i]; u.at < m.ivlMark {
			m.ivl[u.at] = u.was
		}
	}
	clear(m.ivl[m.ivlMark:])
	m.ivl = m.ivl[:m.ivlMark]
	m.endBatch()
}

func (m *machine) endBatch() {
	clear(m.reqUndo)
	clear(m.slotUndo)
	clear(m.partUndo)
	clear(m.listUndo)
	m.reqUndo, m.slotUndo, m.partUndo, m.listUndo = m.reqUndo[:0], m.slotUndo[:0], m.partUndo[:0], m.listUndo[:0]
	m.delta = counters{}
	m.seq++
	m.log.reset()
	m.read = m.read[:0]
	m.ivlMark, m.flushing = len(m.ivl), false
	clear(m.ivlLive)
	m.ivlLive = m.ivlLive[:0]
	clear(m.ivlUndo)
	m.ivlUndo = m.ivlUndo[:0]
	clear(m.youngReqs)
	m.youngReqs = m.youngReqs[:0]
	clear(m.commitAt)
}

// dirty reports whether the batch in flight changed anything.
func (m *machine) dirty() bool {
	return len(m.reqUndo) > 0 || len(m.partUndo) > 0 || m.delta != counters{}
}

// gauges sums the gauges of every partition.
func (m *machine) gauges() gauges {
	var g gauges
	for _, ps := range m.parts {
		g.open += ps.g.open
		g.held += ps.g.held
	}
	return g
}

// touch saves r and ps in the undo log before the batch first changes them.
// Every mutation of a request starts with touch (or create); the requests
// in the undo log are also exactly the ones a changelog would write at
// commit.
func (m *machine) touch(ps *partitionState, r *request) {
	m.touchPartition(ps)
	if r.seq == m.seq {
		return
	}
	m.reqUndo = append(m.reqUndo, reqUndo{ps: ps, id: r.id, r: r, existed: true, saved: *r})
	r.seq = m.seq
	// After the undo log's copy, so that an abort gives back the iseq too.
	if m.perInterval && r.iseq != m.ivlSeq {
		m.ivl = append(m.ivl, reqUndo{ps: ps, id: r.id, r: r, existed: true, saved: *r})
		r.iseq, r.ivlAt = m.ivlSeq, len(m.ivl)-1
	}
}

func (m *machine) touchPartition(ps *partitionState) {
	if ps.seq == m.seq {
		return
	}
	m.partUndo = append(m.partUndo, partUndo{ps: ps, g: ps.g})
	ps.seq = m.seq
}

// create adds a request that did not exist, created by record src (nil
// when the machine is given no record: tests).
func (m *machine) create(ps *partitionState, id schemas.CorrelationID, src *kgo.Record) *request {
	m.touchPartition(ps)
	r := &request{id: id, seq: m.seq, first: -1}
	if src != nil {
		r.first = src.Offset
	}
	m.reqUndo = append(m.reqUndo, reqUndo{ps: ps, id: id, r: r})
	if m.perInterval {
		m.ivl = append(m.ivl, reqUndo{ps: ps, id: id, r: r})
		r.iseq, r.ivlAt = m.ivlSeq, len(m.ivl)-1
	}
	ps.reqs[id] = r
	return r
}

// setSlot changes slot i of r, saving the old value.
func (m *machine) setSlot(ps *partitionState, r *request, i int, s slot) {
	m.slotUndo = append(m.slotUndo, slotUndo{r: r, slots: r.slots, i: i, old: r.slots[i], p: ps.partition})
	r.slots[i] = s
}

// remove drops r from ps; r must have been touched in this batch.
func (m *machine) remove(ps *partitionState, r *request) {
	r.phase = phaseGone
	delete(ps.reqs, r.id)
}

func (m *machine) deadLetter(src *kgo.Record, reason string, err error) {
	m.delta.deadLettered++
	m.out = append(m.out, output{src: src, reason: reason, err: err})
}

// manifest handles a manifest consumed from ps's partition at now.
func (m *machine) manifest(ps *partitionState, now time.Time, mf schemas.Manifest, src *kgo.Record) {
	m.delta.manifests++
	r := ps.reqs[mf.CorrelationID]
	if r != nil && r.phase != phaseOrphan {
		// The scatterer wrote it twice (at-least-once), or it was replayed.
		m.delta.duplicates++
		return
	}
	if err := timesInRange(mf); err != nil {
		// Not from our scatterer (it refuses such requests): the state
		// keeps times as Unix nanoseconds, which these would overflow.
		m.deadLetter(src, "bad-manifest", fmt.Errorf("manifest %s: %w", mf.CorrelationID, err))
		if r != nil {
			m.expire(ps, r, "bad-manifest", fmt.Errorf("held for manifest %s, which is malformed", r.id))
		}
		return
	}
	nowNs := now.UnixNano()
	if dl := nanos(mf.Deadline); dl != 0 && dl+m.lateWindow <= nowNs {
		// Read again by a group reset past the late window (or after an
		// outage longer than it): a request is remembered until at least
		// its deadline plus the late window, so this one was answered and
		// forgotten, or no client waits for it any more. Opening it would
		// reply a second time, at once.
		m.delta.manifestsExpired++
		err := fmt.Errorf("manifest %s read at %s, past its deadline %s plus the late window %s: the request was answered or never will be",
			mf.CorrelationID, now.UTC().Format(time.RFC3339Nano), mf.Deadline.UTC().Format(time.RFC3339Nano), time.Duration(m.lateWindow))
		m.deadLetter(src, "manifest-expired", err)
		if r != nil {
			m.expire(ps, r, "manifest-expired", fmt.Errorf("held for manifest %s, which came past its deadline plus the late window", r.id))
		}
		return
	}
	pl, err := m.newPlan(mf)
	if err != nil {
		m.deadLetter(src, "bad-manifest", fmt.Errorf("manifest %s: %w", mf.CorrelationID, err))
		return
	}
	var held []heldResult
	if r == nil {
		r = m.create(ps, mf.CorrelationID, src)
	} else {
		m.touch(ps, r)
		held = r.held
		ps.g.held -= int64(len(held))
	}
	// Mutation "open": the request gathers from now on.
	r.phase = phaseOpen
	r.plan = pl
	r.slots = make([]slot, len(mf.Parts))
	r.got, r.ok = 0, 0
	r.held = nil
	r.due = nanos(mf.Deadline)
	ps.timers.push(r.due, r.id)
	ps.g.open++
	// Results that came first are used as if they came now, in the order
	// they came.
	for _, h := range held {
		m.apply(ps, r, h.res, h.src, h.arrived, nowNs)
	}
}

// newPlan checks mf and builds its plan.
func (m *machine) newPlan(mf schemas.Manifest) (*plan, error) {
	var errs []error
	pol, err := ParsePolicy(mf.Policy)
	if err != nil {
		errs = append(errs, err)
	} else if err := pol.check(len(mf.Parts)); err != nil {
		errs = append(errs, err)
	}
	if len(mf.Parts) == 0 {
		errs = append(errs, errors.New("no parts"))
	}
	pl := &plan{mf: mf, policy: pol, merge: m.mergeFor(mf.Route)}
	if len(mf.Parts) > indexAbove {
		pl.index = make(map[schemas.PartID]int, len(mf.Parts))
	}
	for i, id := range mf.Parts {
		switch {
		case id == "":
			errs = append(errs, fmt.Errorf("part %d has an empty id", i))
		case pl.index != nil:
			if _, dup := pl.index[id]; dup {
				errs = append(errs, fmt.Errorf("part %q is listed twice", id))
			}
			pl.index[id] = i
		default:
			for _, prev := range mf.Parts[:i] {
				if prev == id {
					errs = append(errs, fmt.Errorf("part %q is listed twice", id))
					break
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return pl, nil
}

// result handles a result consumed from ps's partition at now.
func (m *machine) result(ps *partitionState, now time.Time, res schemas.Result, src *kgo.Record) {
	m.delta.results++
	nowNs := now.UnixNano()
	r := ps.reqs[res.CorrelationID]
	if r == nil {
		r = m.create(ps, res.CorrelationID, src)
		r.phase = phaseOrphan
	}
	m.apply(ps, r, res, src, nowNs, nowNs)
}

// apply adds a result that arrived at arrived to r.
//
// Duplicates (a part that already has a result) are counted and dropped,
// with one exception: an OK replaces an ERROR or EXPIRED result, since a
// retry or a hedged attempt that succeeded answers the part. So the first
// OK wins, and among failures the first one stays.
func (m *machine) apply(ps *partitionState, r *request, res schemas.Result, src *kgo.Record, arrived, now int64) {
	switch r.phase {
	case phaseDone:
		m.delta.late++
		return
	case phaseOrphan:
		m.hold(ps, r, res, src, arrived)
		return
	}
	i := r.plan.find(res.PartID)
	if i < 0 {
		m.deadLetter(src, "unknown-part", fmt.Errorf("result for part %q of %s, which its manifest does not list", res.PartID, r.id))
		return
	}
	if r.hedge != nil && res.Attempt <= 1 {
		// A first attempt's latency, whether it wins or not: the hedge
		// delay of the route follows them.
		if sub := nanos(r.plan.mf.SubmittedAt); sub > 0 && arrived > sub {
			m.hedging.sample(r.plan.mf.Route, arrived-sub)
		}
	}
	cur := r.slots[i].status
	switch {
	case cur == "":
	case cur != schemas.ResultOK && res.Status == schemas.ResultOK:
		m.delta.duplicates++
	default:
		m.delta.duplicates++
		return
	}
	// Mutation "record": part i has a result.
	m.touch(ps, r)
	m.setSlot(ps, r, i, slot{
		status:    res.Status,
		payload:   res.Payload,
		err:       res.Error,
		processor: res.ProcessorID,
		attempt:   res.Attempt,
		arrived:   arrived,
	})
	if cur == "" {
		r.got++
	}
	if res.Status == schemas.ResultOK {
		r.ok++
	}
	if res.Attempt >= hedgeAttempt && r.hedge != nil {
		m.delta.hedgesWon++
	}
	if r.plan.policy.satisfied(len(r.slots), r.got, r.ok) {
		m.complete(ps, r, now, false)
	}
}

// hold keeps a result that came before its manifest until its task's
// deadline plus orphanGrace.
func (m *machine) hold(ps *partitionState, r *request, res schemas.Result, src *kgo.Record, arrived int64) {
	if src != nil {
		for _, h := range r.held {
			if h.src != nil && h.src.Offset == src.Offset {
				// The same record again: a batch consumed again after a
				// restart (at-least-once) whose results were already held.
				m.delta.duplicates++
				return
			}
		}
	}
	// Mutation "hold".
	m.touch(ps, r)
	r.held = append(r.held, heldResult{res: res, src: src, arrived: arrived})
	ps.g.held++
	if due := max(nanos(res.Deadline), arrived) + int64(orphanGrace); due > r.due {
		r.due = due
		ps.timers.push(due, r.id)
	}
}

// complete replies to r and remembers it as done until the late window
// passes. atDeadline says whether the deadline (rather than the policy)
// completes it.
func (m *machine) complete(ps *partitionState, r *request, now int64, atDeadline bool) {
	reply := buildReply(r, now, atDeadline)
	switch reply.Status {
	case schemas.ReplyComplete:
		m.delta.complete++
	case schemas.ReplyPartial:
		m.delta.partial++
	default:
		m.delta.failed++
	}
	o := output{reply: reply, replyTo: r.plan.mf.ReplyTo}
	if r.hedge != nil {
		o.hedged = r.hedge.hedgedParts(r.plan.mf.Parts)
	}
	m.out = append(m.out, o)
	// Mutation "complete": only the id and the end of the late window stay.
	// The window runs from the deadline when the request completed before
	// it: a manifest read again within its deadline's late window (a group
	// reset) must find the request done; one read later is expired.
	m.touch(ps, r)
	deadline := nanos(r.plan.mf.Deadline)
	r.phase = phaseDone
	r.plan, r.slots, r.got, r.ok, r.hedge = nil, nil, 0, 0, nil
	r.completed = now
	r.due = max(now, deadline) + m.lateWindow
	ps.timers.push(r.due, r.id)
	ps.g.open--
}

// expire dead-letters the results held for orphan r with reason and err,
// and drops r.
func (m *machine) expire(ps *partitionState, r *request, reason string, err error) {
	// Mutation "expire": the manifest never came, or came expired.
	m.touch(ps, r)
	for _, h := range r.held {
		m.delta.orphansExpired++
		m.deadLetter(h.src, reason, err)
	}
	ps.g.held -= int64(len(r.held))
	m.remove(ps, r)
}

// nextDue returns when the earliest timer of any partition is due, or
// may fire if it waits (Unix nanoseconds; it may be a stale one), 0 when
// there is none.
func (m *machine) nextDue() int64 {
	var next int64
	for _, ps := range m.parts {
		if ps.timers.Len() > 0 {
			at := ps.timers.peek().at
			switch {
			case ps.catchUp != 0:
				at = max(at, ps.holdUntil)
			case ps.waitSince != 0:
				// Reading more comes with a batch, which fires what it
				// can; a partition read up to its last fetch may be
				// settled by a drained poll settleGap after the last one
				// (at once if that was longer ago). Else the bound of the
				// earliest timer (see machine.fire).
				wake := max(ps.waitSince, at) + int64(behindMax)
				if !ps.behind() {
					settle := int64(settleGap)
					if n := len(m.drains); n > 0 {
						settle += m.drains[n-1]
					}
					wake = min(wake, settle)
				}
				at = max(at, wake)
			}
			if next == 0 || at < next {
				next = at
			}
		}
	}
	return next
}

// tick fires every timer due at now, on every partition.
func (m *machine) tick(now time.Time) {
	for _, ps := range m.parts {
		m.fire(ps, now)
	}
}

// fire fires the timers of ps due at now. A timer due at T fires only
// once ps is read up to T (the deadline rule, docs/guarantees.md): once
// every result committed to the partition before T has been read, so that
// a deadline does not mark MISSING a part whose result was in the topic in
// time. ps is read up to T when
//   - a record created at T or later was read (partitionState.read), or
//   - ps has been fetched since it was assigned, is not behind the last
//     fetch of it, and a poll at T or later found nothing buffered and a
//     fetch sent then has come back (machine.polled: settled >= T), and
//     ps's leader answered a fetch sent at T or later whose records were
//     read (machine.answer): a drained poll right after a broker died,
//     whose fetch never comes back, said nothing of the partitions it
//     led (3-node chaos: an aggregator whose commit was held 1.9s by a
//     node's death marked MISSING two results committed on that node 1.9s
//     before their deadline, 30ms after the commit returned). A
//     partition not fetched yet (after an assignment, its committed
//     offset still being looked up) may hold results a drained poll
//     knows nothing of: chaos on 3 Kafka nodes caught a restored
//     partition firing a deadline 1.2s after its results were committed.
//     Nor does this hold while ps is unsure (partitionState.led,
//     fetchFailed): a newly elected leader's fetches end at its stale
//     high watermark, short of results the old leader had committed
//     (3-node chaos, a node's return: three parts committed 1.27s before
//     their deadline were marked MISSING).
//
// Due timers wait for that at most behindMax, each from the first tick
// that found the partition's timers waiting (waitSince) or from its own
// due time, whichever is later; then it fires with what was read. The
// bound is each timer's own: one that waited it out does not take along
// those that came due while it waited (3-node broker-kill chaos, seed 102:
// after a batch stalled 2.6s, a request due 50ms before was answered with
// its four results, committed 1.15s before its deadline, MISSING).
// Restored and aborted partitions first wait for catchUp, at most until
// holdUntil; the hold counts as waiting (from its start, holdUntil -
// catchUpMax) for the bound.
func (m *machine) fire(ps *partitionState, now time.Time) {
	nowNs := now.UnixNano()
	expired := false // counted in catchUpsExpired
	if m.follow && ps.seen && !ps.behind() && ps.unsureSince == 0 {
		ps.upTo = max(ps.upTo, min(m.settled, m.answered[ps.leader]))
	}
	for ps.timers.Len() > 0 && ps.timers.peek().at <= nowNs {
		if ps.catchUp != 0 {
			if nowNs < ps.holdUntil {
				return // reading up to catchUp first
			}
			// The hold's end: what is due fires with what was read, once
			// it has waited its bound.
			ps.catchUp = 0
			if start := ps.holdUntil - int64(catchUpMax); ps.waitSince == 0 || start < ps.waitSince {
				ps.waitSince = start
			}
			m.delta.catchUpsExpired++
			expired = true
		}
		t := ps.timers.peek()
		r := ps.reqs[t.id]
		if r == nil || (r.due != t.at && r.hedge.timer() != t.at) {
			ps.timers.pop()
			continue // stale
		}
		if m.follow && t.at > ps.upTo {
			if ps.waitSince == 0 {
				ps.waitSince = nowNs
			}
			if nowNs < max(ps.waitSince, t.at)+int64(behindMax) {
				return // and so do the timers due after it
			}
			if !expired {
				m.delta.catchUpsExpired++
				expired = true
			}
		}
		ps.timers.pop()
		if r.phase == phaseOpen && r.hedge.timer() == t.at {
			m.hedge(ps, r, nowNs)
		}
		if r.due != t.at {
			continue // a hedge timer only
		}
		switch r.phase {
		case phaseOpen:
			m.complete(ps, r, nowNs, true)
		case phaseOrphan:
			m.expire(ps, r, "orphan-result", fmt.Errorf("no manifest for %s came by %s, %s after the task's deadline",
				r.id, time.Unix(0, r.due).UTC().Format(time.RFC3339Nano), orphanGrace))
		case phaseDone:
			// Mutation "forget": the late window passed.
			m.touch(ps, r)
			m.remove(ps, r)
		}
	}
	ps.waitSince = 0
}

// nanos returns t in Unix nanoseconds, 0 for the zero time.
// The times a manifest may carry: those Unix nanoseconds can hold (the
// years 1678 to 2262).
var (
	minNanos = time.Unix(0, math.MinInt64)
	maxNanos = time.Unix(0, math.MaxInt64)
)

// timesInRange reports a manifest time that the state cannot hold.
func timesInRange(mf schemas.Manifest) error {
	for _, f := range []struct {
		name string
		t    time.Time
	}{{"deadline", mf.Deadline}, {"submitted_at", mf.SubmittedAt}} {
		if !f.t.IsZero() && (f.t.Before(minNanos) || f.t.After(maxNanos)) {
			return fmt.Errorf("%s %s is out of range (%d to %d)", f.name, f.t.UTC().Format(time.RFC3339), minNanos.Year(), maxNanos.Year())
		}
	}
	return nil
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
