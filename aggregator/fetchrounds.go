package aggregator

import (
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fetchMaxWait is how long the aggregator's fetches wait for records: an
// idle broker answers this soon, so a deadline on an idle partition is
// learnt read this soon after it (see fetchRounds).
const fetchMaxWait = 100 * time.Millisecond

// fetchRounds is a client hook that learns, per broker, which fetches the
// broker answered and whose records have been polled, for the deadline
// rule (machine.answer). franz-go fetches from a broker one request at a
// time and writes the next only once the records of the last were taken
// by a poll; so a fetch written after one that was answered proves that
// the answered one's records were polled before it. A fetch whose answer
// never comes (its broker died) proves nothing, whatever the polls find.
type fetchRounds struct {
	now     func() time.Time
	mu      sync.Mutex
	brokers map[int32]*fetchRound
}

// fetchRound is what one broker's fetches proved so far.
type fetchRound struct {
	// pending is when the fetch awaiting its answer was written (unix
	// ns), 0 if none; answered when the last answered one was, until the
	// next write proves it polled, 0 if none.
	pending, answered int64
	// proven are answered fetches that a later write proved polled,
	// oldest first.
	proven []provenFetch
}

// provenFetch is a fetch written at sent whose records had been polled by
// at (unix ns), when the next fetch was written.
type provenFetch struct{ sent, at int64 }

func newFetchRounds(now func() time.Time) *fetchRounds {
	return &fetchRounds{now: now, brokers: map[int32]*fetchRound{}}
}

func (f *fetchRounds) round(b int32) *fetchRound {
	r := f.brokers[b]
	if r == nil {
		r = &fetchRound{}
		f.brokers[b] = r
	}
	return r
}

// OnBrokerWrite is called once a request was written to a broker.
func (f *fetchRounds) OnBrokerWrite(meta kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key != kmsg.Fetch.Int16() {
		return
	}
	now := f.now().UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.round(meta.NodeID)
	if r.answered != 0 {
		r.proven = append(r.proven, provenFetch{sent: r.answered, at: now})
		r.answered = 0
	}
	r.pending = 0
	if err == nil {
		r.pending = now
	}
}

// OnBrokerRead is called once a response was read from a broker, or its
// read failed.
func (f *fetchRounds) OnBrokerRead(meta kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key != kmsg.Fetch.Int16() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.round(meta.NodeID)
	if err == nil && r.pending != 0 {
		r.answered = r.pending
	}
	r.pending = 0
}

// polledBefore calls fn, for each broker, with when the latest fetch was
// sent that it answered and whose records were polled before t (unix ns),
// if one was since the last call.
func (f *fetchRounds) polledBefore(t int64, fn func(b int32, sent int64)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for b, r := range f.brokers {
		i := len(r.proven) - 1
		for i >= 0 && r.proven[i].at > t {
			i--
		}
		if i < 0 {
			continue
		}
		fn(b, r.proven[i].sent)
		r.proven = r.proven[:copy(r.proven, r.proven[i+1:])]
	}
}
