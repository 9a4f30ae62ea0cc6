package gateway

import (
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/schemas"
)

// errDuplicate is returned by store.submit for an id the store knows.
var errDuplicate = errors.New("correlation id already known")

// entry is what the gateway knows of one request: that it was submitted
// (by this gateway, or seen on the requests topic) and, once it came, its
// reply.
type entry struct {
	id    schemas.CorrelationID
	route schemas.Route
	// submittedAt and deadline are zero when only the reply was seen.
	submittedAt time.Time
	deadline    time.Time
	// at is when the entry's first record was written; the entry expires
	// ReplyRetention after it.
	at time.Time
	// reply and view (its JSON) are set once, under the store's lock, and
	// done is closed then. They never change afterwards.
	reply *schemas.Reply
	view  []byte
	done  chan struct{}
	size  int64
	gone  bool // removed from the map; its queue slot is skipped
}

// snapshot is a copy of an entry's fields, safe to use without the lock.
type snapshot struct {
	id          schemas.CorrelationID
	route       schemas.Route
	submittedAt time.Time
	deadline    time.Time
	reply       *schemas.Reply
	view        []byte
	done        <-chan struct{}
}

// store is the gateway's bounded memory of requests and replies, filled by
// its own submissions and by the tail of the requests and replies topics.
// Entries leave in insertion order when there are more than maxEntries or
// they hold more than maxBytes, and when they are older than retention.
// An entry evicted for room before its reply came is kept, without its
// bytes, among the orphans (at most maxEntries, for up to retention): a
// later record of its id takes over its done channel, so that a waiter
// holding that channel (a ?wait= long-poll, an event stream) wakes when
// the reply comes although the entry it saw is gone. Safe for concurrent
// use.
type store struct {
	maxEntries int
	maxBytes   int64
	retention  time.Duration

	mu    sync.Mutex
	m     map[schemas.CorrelationID]*entry
	queue []*entry // insertion order; queue[head:] are live or gone
	head  int
	bytes int64
	// evicted counts entries dropped for room (not for age).
	evicted uint64
	// orphans are entries evicted for room before their reply, by id, in
	// eviction order in orphanQ[orphanHead:] (stale slots skipped).
	orphans    map[schemas.CorrelationID]*entry
	orphanQ    []*entry
	orphanHead int
}

func newStore(maxEntries int, maxBytes int64, retention time.Duration) *store {
	return &store{maxEntries: maxEntries, maxBytes: maxBytes, retention: retention, m: map[schemas.CorrelationID]*entry{},
		orphans: map[schemas.CorrelationID]*entry{}}
}

// entryOverhead approximates an entry's memory besides its reply.
const entryOverhead = 256

func (s *store) snap(e *entry) snapshot {
	return snapshot{id: e.id, route: e.route, submittedAt: e.submittedAt, deadline: e.deadline, reply: e.reply, view: e.view, done: e.done}
}

// get returns what the store knows of id.
func (s *store) get(id schemas.CorrelationID) (snapshot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[id]
	if !ok {
		return snapshot{}, false
	}
	return s.snap(e), true
}

// insert adds e; the caller holds the lock.
func (s *store) insert(e *entry, now time.Time) {
	e.done = make(chan struct{})
	if o, ok := s.orphans[e.id]; ok {
		// Waiters of the evicted entry wake when this one's reply comes.
		e.done = o.done
		delete(s.orphans, e.id)
	}
	e.size += int64(len(e.id)) + entryOverhead
	s.m[e.id] = e
	s.queue = append(s.queue, e)
	s.bytes += e.size
	s.evict(now)
}

// submit records a request this gateway is about to produce. It fails with
// errDuplicate when id is known.
func (s *store) submit(id schemas.CorrelationID, route schemas.Route, submittedAt, deadline time.Time) (snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[id]; ok {
		return snapshot{}, errDuplicate
	}
	e := &entry{id: id, route: route, submittedAt: submittedAt, deadline: deadline, at: submittedAt}
	s.insert(e, submittedAt)
	return s.snap(e), nil
}

// forget removes id, submitted by this gateway, whose produce failed.
func (s *store) forget(id schemas.CorrelationID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[id]; ok && e.reply == nil {
		s.drop(e)
	}
}

// requested records a request read from the requests topic, written at at.
func (s *store) requested(id schemas.CorrelationID, route schemas.Route, submittedAt, deadline, at, now time.Time) {
	if s.tooOld(at, now) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[id]; ok {
		if e.submittedAt.IsZero() {
			e.route, e.submittedAt, e.deadline = route, submittedAt, deadline
		}
		return
	}
	s.insert(&entry{id: id, route: route, submittedAt: submittedAt, deadline: deadline, at: at}, now)
}

// replied records a reply written at at. The first reply of an id wins.
func (s *store) replied(r schemas.Reply, at, now time.Time) {
	if s.tooOld(at, now) {
		return
	}
	view, err := json.Marshal(client.View(r))
	if err != nil {
		// View has only marshalable fields; keep the reply anyway.
		view = []byte(`{"correlation_id":"` + string(r.CorrelationID) + `","error":"reply not renderable"}`)
	}
	size := int64(len(view) + len(r.Payload))
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[r.CorrelationID]
	if !ok {
		e = &entry{id: r.CorrelationID, route: r.Route, at: at, reply: &r, view: view, size: size}
		s.insert(e, now)
		close(e.done)
		return
	}
	if e.reply != nil {
		return
	}
	e.reply, e.view = &r, view
	e.size += size
	s.bytes += size
	close(e.done)
	s.evict(now)
}

func (s *store) tooOld(at, now time.Time) bool { return !at.IsZero() && now.Sub(at) > s.retention }

// drop removes e; the caller holds the lock.
func (s *store) drop(e *entry) {
	delete(s.m, e.id)
	e.gone = true
	s.bytes -= e.size
}

// evict drops entries from the front of the queue while the store is over
// its bounds or they have aged out; the caller holds the lock.
func (s *store) evict(now time.Time) {
	for s.head < len(s.queue) {
		e := s.queue[s.head]
		switch {
		case e.gone:
		case len(s.m) > s.maxEntries || s.bytes > s.maxBytes:
			s.drop(e)
			s.evicted++
			if e.reply == nil {
				s.orphan(e, now)
			}
		case now.Sub(e.at) > s.retention:
			s.drop(e)
		default:
			s.compact()
			return
		}
		s.queue[s.head] = nil
		s.head++
	}
	s.compact()
}

// orphan keeps e, evicted before its reply, for a later record of its id,
// dropping the oldest orphans beyond maxEntries or older than retention;
// the caller holds the lock.
func (s *store) orphan(e *entry, now time.Time) {
	s.orphans[e.id] = e
	s.orphanQ = append(s.orphanQ, e)
	s.trimOrphans(now)
}

// trimOrphans drops orphans beyond maxEntries or older than retention at
// now; the caller holds the lock.
func (s *store) trimOrphans(now time.Time) {
	for s.orphanHead < len(s.orphanQ) {
		o := s.orphanQ[s.orphanHead]
		live := s.orphans[o.id] == o
		if live && len(s.orphans) <= s.maxEntries && now.Sub(o.at) <= s.retention {
			break
		}
		if live {
			delete(s.orphans, o.id)
		}
		s.orphanQ[s.orphanHead] = nil
		s.orphanHead++
	}
	if s.orphanHead > 0 && s.orphanHead >= len(s.orphanQ)/2 {
		n := copy(s.orphanQ, s.orphanQ[s.orphanHead:])
		clear(s.orphanQ[n:])
		s.orphanQ = s.orphanQ[:n]
		s.orphanHead = 0
	}
}

// compact reclaims the queue's consumed front once it is half the slice.
func (s *store) compact() {
	if s.head > 0 && s.head >= len(s.queue)/2 {
		n := copy(s.queue, s.queue[s.head:])
		clear(s.queue[n:])
		s.queue = s.queue[:n]
		s.head = 0
	}
}

// expire drops aged-out entries; the tail calls it now and then.
func (s *store) expire(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evict(now)
	s.trimOrphans(now)
}

// stats returns the entry count, their bytes and the evictions for room.
func (s *store) stats() (entries int, bytes int64, evicted uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m), s.bytes, s.evicted
}
