package aggregator

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/scattergather/scattergather/internal/testkafka"
)

// TestFetchRounds: a fetch is proven polled by the next fetch written to
// its broker, only if it was answered; polledBefore gives the latest
// proven by the time it is asked, once.
func TestFetchRounds(t *testing.T) {
	var clock int64
	f := newFetchRounds(func() time.Time { return time.Unix(0, clock) })
	b1, b2 := kgo.BrokerMetadata{NodeID: 1}, kgo.BrokerMetadata{NodeID: 2}
	fetch := kmsg.Fetch.Int16()
	write := func(b kgo.BrokerMetadata, at int64) { clock = at; f.OnBrokerWrite(b, fetch, 1, 0, 0, nil) }
	read := func(b kgo.BrokerMetadata, err error) { f.OnBrokerRead(b, fetch, 1, 0, 0, err) }
	got := func(t0 int64) map[int32]int64 {
		m := map[int32]int64{}
		f.polledBefore(t0, func(b int32, sent int64) { m[b] = sent })
		return m
	}

	write(b1, 10)
	read(b1, nil)
	if g := got(100); len(g) != 0 {
		t.Fatalf("answered, no next write: %v, want nothing proven", g)
	}
	write(b1, 20) // proves 10
	read(b1, errors.New("connection reset"))
	write(b1, 30) // a retry: proves nothing
	read(b1, nil)
	f.OnBrokerWrite(b1, kmsg.Produce.Int16(), 1, 0, 0, nil) // not a fetch
	write(b2, 35)
	read(b2, nil)
	write(b1, 40) // proves 30
	read(b1, nil)
	write(b2, 45) // proves 35
	if g := got(19); len(g) != 0 {
		t.Errorf("before the first proof: %v, want nothing", g)
	}
	if g := got(39); len(g) != 1 || g[1] != 10 {
		t.Errorf("by 39: %v, want broker 1's fetch sent at 10", g)
	}
	if g := got(100); len(g) != 2 || g[1] != 30 || g[2] != 35 {
		t.Errorf("by 100: %v, want broker 1's fetch sent at 30 and broker 2's at 35", g)
	}
	if g := got(100); len(g) != 0 {
		t.Errorf("asked again: %v, want nothing new", g)
	}
	f.OnBrokerWrite(b1, fetch, 0, 0, 0, errors.New("broken pipe")) // 40 answered, proven; the write failed
	read(b1, nil)                                                  // no fetch pending
	write(b1, 60)
	if g := got(100); len(g) != 1 || g[1] != 40 {
		t.Errorf("after a failed write: %v, want broker 1's fetch sent at 40 only", g)
	}
}

// TestFetchRoundsOnAClient: what fetchRounds rests on, franz-go writing a
// broker's next fetch only once the records of the last were polled.
func TestFetchRoundsOnAClient(t *testing.T) {
	c := testkafka.NewKfake(t)
	topic := c.CreateTopic(t, "r", 1, nil)
	if err := c.Client(t).ProduceSync(t.Context(), &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	f := newFetchRounds(time.Now)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(fetchMaxWait), kgo.WithHooks(f))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	proven := func() (n int) {
		f.polledBefore(time.Now().UnixNano(), func(int32, int64) { n++ })
		return n
	}
	for cl.BufferedFetchRecords() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(5 * fetchMaxWait) // fetched, not polled
	if proven() != 0 {
		t.Fatalf("a fetch proven polled while its record sat in the buffer")
	}
	polledAt := time.Now()
	if fs := cl.PollFetches(t.Context()); fs.NumRecords() != 1 {
		t.Fatalf("polled %d records, want 1", fs.NumRecords())
	}
	time.Sleep(5 * fetchMaxWait) // empty fetches since, each proving the one before
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.brokers {
		if len(r.proven) < 2 {
			t.Fatalf("after the poll: %d fetches proven polled, want the one that brought the record and empty ones since", len(r.proven))
		}
		first := r.proven[0]
		if first.sent > polledAt.UnixNano() || first.at < polledAt.UnixNano() {
			t.Errorf("the first fetch proven was sent %s and proven %s after the poll; want sent before, proven after",
				time.Unix(0, first.sent).Sub(polledAt), time.Unix(0, first.at).Sub(polledAt))
		}
	}
}
