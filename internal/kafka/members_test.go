package kafka_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// members follows, through their rebalance callbacks, which partitions of a
// topic each member of a test's group holds, and how many non-empty
// revocations member "a" was told of: what the franz-go pin tests look at.
type members struct {
	t        *testing.T
	topic    string
	mu       sync.Mutex
	held     map[string]map[int32]bool
	revokedA int
}

func newMembers(t *testing.T, topic string) *members {
	return &members{t: t, topic: topic, held: map[string]map[int32]bool{}}
}

// track returns the callbacks that keep member name's holdings.
func (m *members) track(name string) []kgo.Opt {
	m.mu.Lock()
	m.held[name] = map[int32]bool{}
	m.mu.Unlock()
	return []kgo.Opt{
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, as map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range as[m.topic] {
				m.held[name][p] = true
			}
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, rev map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			if name == "a" && len(rev[m.topic]) > 0 {
				m.revokedA++
			}
			for _, p := range rev[m.topic] {
				delete(m.held[name], p)
			}
		}),
	}
}

// holds returns what member name's callbacks say it holds, sorted.
func (m *members) holds(name string) []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ps []int32
	for p := range m.held[name] {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// revocationsOfA is how many non-empty revocations member "a" was told of.
func (m *members) revocationsOfA() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.revokedA
}

// wait fails the test unless ok holds within 30s.
func (m *members) wait(what string, ok func() bool) {
	m.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			m.t.Fatalf("not within 30s: %s (a %v, b %v, c %v)", what, m.holds("a"), m.holds("b"), m.holds("c"))
		}
	}
}

// keepPolling has cl poll until the test ends, as a consumer does; it
// never ends a transaction.
func keepPolling(t *testing.T, cl interface {
	PollFetches(context.Context) kgo.Fetches
}) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			pctx, pcancel := context.WithTimeout(ctx, 100*time.Millisecond)
			cl.PollFetches(pctx)
			pcancel()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}
