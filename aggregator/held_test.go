package aggregator

import (
	"fmt"
	"testing"
	"time"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestHeldStateWrittenBeforeEveryCommit: under at-least-once the
// aggregator writes its changelog once per offset commit interval, folding
// the interval's batches (machine.perInterval). With an interval of an
// hour nothing is due after the first commit, so the state of everything
// read since is held in memory; the hop must still write it before it
// commits at a revocation (a second instance joins and takes partitions)
// and when Run ends (the first instance stops). Otherwise the second
// instance restores none of it and consumes the results again: each
// request that had completed would be answered twice.
func TestHeldStateWrittenBeforeEveryCommit(t *testing.T) {
	const perPartition = 25
	f := newFixture(t, 4)
	hour := func(c *Config) { c.OffsetCommitInterval = time.Hour }
	a := f.start("a", kafkaconfig.AtLeastOnce, hour)
	waitFor(t, "the first instance ready", 30*time.Second, readyOf(a.agg))
	far := time.Now().Add(10 * time.Minute)
	var done, open []schemas.CorrelationID
	for p := range f.parts {
		var recs []*kgo.Record
		for i := range perPartition {
			d := fmt.Sprintf("done-%d-%d", p, i)
			o := fmt.Sprintf("open-%d-%d", p, i)
			recs = append(recs,
				f.w.manifest(d, far, "", "a"), f.w.result(d, "a", schemas.ResultOK, `1`, "", far),
				f.w.manifest(o, far, "", "a", "b"), f.w.result(o, "a", schemas.ResultOK, `1`, "", far))
			done = append(done, schemas.CorrelationID(d))
			open = append(open, schemas.CorrelationID(o))
		}
		f.w.send(p, recs...)
	}
	waitFor(t, "every manifest and result read by the first instance", 30*time.Second, func() bool {
		s := a.agg.Stats()
		return s.Manifests == int64(len(done)+len(open)) && s.ResultsReceived == int64(len(done)+len(open))
	})
	l := f.replyLog()
	l.until("the completed requests' replies", 30*time.Second, l.all(done))

	// A second instance takes some partitions: a revocation on the first.
	b := f.start("b", kafkaconfig.AtLeastOnce, hour)
	waitFor(t, "the second instance with partitions", 30*time.Second, func() bool {
		return b.agg.Stats().RestoredOpen > 0 || b.agg.Stats().Manifests > 0
	})
	// The first stops: its other partitions go to the second.
	a.stopNow(t)
	waitFor(t, "the second instance with every partition", 30*time.Second, readyOf(b.agg))
	waitFor(t, "every open request restored by the second instance", 30*time.Second, func() bool {
		return b.agg.Stats().RestoredOpen == int64(len(open))
	})

	// The open requests complete on the second instance.
	for p := range f.parts {
		var recs []*kgo.Record
		for i := range perPartition {
			o := fmt.Sprintf("open-%d-%d", p, i)
			recs = append(recs, f.w.result(o, "b", schemas.ResultOK, `2`, "", far))
		}
		f.w.send(p, recs...)
	}
	l.until("every reply", 30*time.Second, l.all(append(append([]schemas.CorrelationID(nil), done...), open...)))
	s := b.agg.Stats()
	f.fence(l, "fence")
	l.onceEach(done, schemas.ReplyComplete)
	l.onceEach(open, schemas.ReplyComplete)
	if s.RestoredOpen != int64(len(open)) || s.Manifests != 0 {
		t.Errorf("second instance: restored %d open requests and read %d manifests again; want %d and 0",
			s.RestoredOpen, s.Manifests, len(open))
	}
}

// TestDeadLetterNotHeldUnderExactlyOnce: under exactly-once the batches
// between two changelog writes commit the offsets where they were, and a
// crash consumes them again; a dead letter written in such a batch would
// then be written twice. A batch that dead-letters a record writes the
// state and commits its offsets instead.
func TestDeadLetterNotHeldUnderExactlyOnce(t *testing.T) {
	f := newFixture(t, 1)
	a := f.start("a", kafkaconfig.ExactlyOnce, func(c *Config) { c.OffsetCommitInterval = time.Hour })
	waitFor(t, "the aggregator ready", 30*time.Second, readyOf(a.agg))
	committed := func() int64 {
		offs, err := f.c.Admin(t).FetchOffsets(t.Context(), a.agg.cfg.Group)
		if err != nil {
			t.Fatal(err)
		}
		if o, ok := offs.Lookup(f.topics.Results(), 0); ok {
			return o.At
		}
		return -1
	}
	far := time.Now().Add(10 * time.Minute)
	// The first batch commits (nothing is committed yet); the second holds.
	// Requests that complete at once: an open one would keep the offsets
	// at its manifest (machine.young).
	request := func(id string) []*kgo.Record {
		return []*kgo.Record{f.w.manifest(id, far, "", "a"), f.w.result(id, "a", schemas.ResultOK, `1`, "", far)}
	}
	f.w.send(0, request("first")...)
	waitFor(t, "the first request committed", 30*time.Second, func() bool { return committed() == 2 })
	f.w.send(0, request("second")...)
	waitFor(t, "the second request answered", 30*time.Second, func() bool { return a.agg.Stats().RepliesComplete == 2 })
	time.Sleep(200 * time.Millisecond)
	if got := committed(); got != 2 {
		t.Fatalf("committed offset %d after a held batch, want 2: the test proves nothing", got)
	}
	f.w.send(0, &kgo.Record{Key: []byte("junk"), Value: []byte("hello")})
	waitFor(t, "the dead letter's batch to commit its offsets", 30*time.Second, func() bool {
		return a.agg.Stats().DeadLettered == 1 && committed() == 5
	})
}
