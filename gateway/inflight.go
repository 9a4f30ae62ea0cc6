package gateway

import (
	"container/heap"
	"sync"
	"time"

	"github.com/scattergather/scattergather/schemas"
)

// inflight counts the requests this gateway submitted that have no reply
// yet, up to a limit. A request leaves when the gateway reads its reply,
// when Kafka refuses it, or at its expiry (deadline plus ReplyGrace), so
// a reply that never comes (aggregator down, reply topic unreadable) holds
// a slot only that long. Requests submitted through other gateways or Go
// clients do not count. Safe for concurrent use.
type inflight struct {
	max int

	mu sync.Mutex
	m  map[schemas.CorrelationID]time.Time // id → expiry
	// h orders the expiries; entries whose id has left m, or came back
	// with another expiry, are skipped when they surface.
	h       expiryHeap
	expired uint64 // requests that left at their expiry without a reply
}

func newInflight(max int) *inflight {
	return &inflight{max: max, m: map[schemas.CorrelationID]time.Time{}}
}

// full reports whether the limit is reached at now. Handlers ask it before
// reading a body; acquire decides.
func (f *inflight) full(now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sweep(now)
	return len(f.m) >= f.max
}

// acquire counts id, which expires at expiry, unless the limit is reached
// at now; it reports whether id was counted (false when full).
func (f *inflight) acquire(id schemas.CorrelationID, expiry, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sweep(now)
	if _, ok := f.m[id]; !ok && len(f.m) >= f.max {
		return false
	}
	f.m[id] = expiry
	heap.Push(&f.h, expiryItem{id: id, at: expiry})
	return true
}

// release stops counting id (a reply came, or Kafka refused it); an id
// not counted is ignored.
func (f *inflight) release(id schemas.CorrelationID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, id)
	// Released ids stay in h until they surface or compact drops them.
	if len(f.h) > 2*len(f.m)+64 {
		f.compact()
	}
}

// count returns the requests counted at now and how many left at their
// expiry so far.
func (f *inflight) count(now time.Time) (n int, expired uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sweep(now)
	return len(f.m), f.expired
}

// sweep drops the requests whose expiry is not after now; the caller holds
// the lock.
func (f *inflight) sweep(now time.Time) {
	for len(f.h) > 0 && !f.h[0].at.After(now) {
		it := heap.Pop(&f.h).(expiryItem)
		if at, ok := f.m[it.id]; ok && at.Equal(it.at) {
			delete(f.m, it.id)
			f.expired++
		}
	}
}

// compact rebuilds h from m; the caller holds the lock.
func (f *inflight) compact() {
	f.h = f.h[:0]
	for id, at := range f.m {
		f.h = append(f.h, expiryItem{id: id, at: at})
	}
	heap.Init(&f.h)
}

type expiryItem struct {
	id schemas.CorrelationID
	at time.Time
}

// expiryHeap is a min-heap of expiries (container/heap).
type expiryHeap []expiryItem

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryItem)) }
func (h *expiryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
