package replay

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
	"github.com/twmb/franz-go/pkg/kadm"
)

// running is a role running on its own goroutine until halted.
type running struct {
	stop context.CancelFunc
	done chan error
}

func start(t *testing.T, run func(context.Context) error) *running {
	t.Helper()
	ctx, stop := context.WithCancel(context.WithoutCancel(t.Context()))
	r := &running{stop: stop, done: make(chan error, 1)}
	go func() { r.done <- run(ctx) }()
	t.Cleanup(func() { r.halt(t) })
	return r
}

// halt stops the role and waits for it; it may be called twice.
func (r *running) halt(t *testing.T) {
	t.Helper()
	r.stop()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("role: %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("role did not stop within 30s")
	}
}

// TestInPlaceReprocessing completes requests, stops one role, resets its
// group to the earliest offset and starts it again, so that it processes
// everything a second time (the in-place style of replay). The aggregator
// must drop what comes again as late duplicates, counted, and never answer
// a request twice.
func TestInPlaceReprocessing(t *testing.T) {
	for _, tc := range []struct {
		name string
		role string // which role is reset
	}{
		{"processor group", "processor"},
		{"scatterer group", "scatterer"},
		{"aggregator group", "aggregator"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testkafka.New(t)
			topics := kafka.Topics{Prefix: c.Prefix}
			cc := clientConfig(c)
			ensureTopics(t, c, topics, "echo")
			newScatterer := func() func(context.Context) error {
				s, err := scatterer.New(scatterer.Config{Client: cc, Topics: topics, InstanceID: "s",
					Routes: []scatterer.Route{{Name: "echo", Mode: scatterer.Split, Fanout: 2, Timeout: 20 * time.Second}}})
				if err != nil {
					t.Fatal(err)
				}
				return s.Run
			}
			newProcessor := func() func(context.Context) error {
				p, err := processor.New(processor.Config{Client: cc, Topics: topics, Route: "echo", InstanceID: "p"}, processor.Echo())
				if err != nil {
					t.Fatal(err)
				}
				return p.Run
			}
			newAggregator := func() *aggregator.Aggregator {
				a, err := aggregator.New(aggregator.Config{Client: cc, Topics: topics, InstanceID: "a", Logger: testLogger(t)})
				if err != nil {
					t.Fatal(err)
				}
				return a
			}
			agg := newAggregator()
			roles := map[string]*running{"scatterer": start(t, newScatterer()), "processor": start(t, newProcessor()), "aggregator": start(t, agg.Run)}

			cl, err := client.New(t.Context(), client.Config{Client: cc, Topics: topics, DefaultTimeout: 20 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cl.Close)
			const n = 200
			var pending []*client.Pending
			for i := range n {
				p, err := cl.Submit(t.Context(), "echo", fmt.Appendf(nil, `{"n":%d}`, i), client.Options{})
				if err != nil {
					t.Fatal(err)
				}
				pending = append(pending, p)
			}
			for _, p := range pending {
				if r, err := p.Await(t.Context()); err != nil || r.Status != schemas.ReplyComplete {
					t.Fatalf("%s: %v %s", p.ID, err, r.Error)
				}
			}
			// The counters follow the commit the client saw the reply of.
			sent := func(s aggregator.Stats) int64 { return s.RepliesComplete + s.RepliesPartial + s.RepliesFailed }
			waitFor(10*time.Second, func() bool { return sent(agg.Stats()) == n })
			before := agg.Stats()

			// Stop the role, reset its group to the start, start it again.
			roles[tc.role].halt(t)
			group, topic, again := topics.Prefix+"processor.echo", topics.Tasks("echo"), int64(2*n)
			switch tc.role {
			case "scatterer":
				group, topic, again = topics.Prefix+"scatterer", topics.Requests(), n
			case "aggregator":
				group, topic, again = topics.Prefix+"aggregator", topics.Results(), 3*n
			}
			adm := c.Admin(t)
			var plan *GroupReset
			if !waitFor(20*time.Second, func() bool { // the member's leave may take a moment on a real broker
				var live *LiveMembersError
				plan, err = PlanGroupReset(t.Context(), adm, group, topic, Bound{Kind: Earliest}, time.Now())
				return !errors.As(err, &live)
			}) || err != nil {
				t.Fatalf("plan: %v", err)
			}
			var reread int64
			for _, m := range plan.Moves {
				if m.Current >= 0 { // -1: nothing committed (no record there)
					reread += m.Current - m.New
				}
			}
			// Offsets count transaction markers too: at least one per record.
			if reread < again {
				ends, _ := adm.ListEndOffsets(t.Context(), topic)
				ends.Each(func(o kadm.ListedOffset) { t.Logf("%s[%d]: end offset %d", topic, o.Partition, o.Offset) })
				t.Fatalf("the reset re-reads %d offsets of %s, want at least %d: %+v", reread, topic, again, plan.Moves)
			}
			if err := plan.Execute(t.Context(), adm); err != nil {
				t.Fatal(err)
			}
			switch tc.role {
			case "scatterer":
				start(t, newScatterer())
			case "processor":
				start(t, newProcessor())
			case "aggregator":
				// A new instance restores the state of its partitions
				// from the changelog (done requests included), then
				// reads the results again.
				agg = newAggregator()
				start(t, agg.Run)
				before = aggregator.Stats{}
			}

			// Every task result comes again (tasks re-issued by the
			// scatterer, re-read by the processor or the aggregator): all
			// late; and every manifest, unless only the processors ran
			// again.
			lateWant, dupWant := before.Late+2*n, before.Duplicates
			if tc.role != "processor" {
				dupWant += n
			}
			if !waitFor(60*time.Second, func() bool {
				s := agg.Stats()
				return s.Late >= lateWant && s.Duplicates >= dupWant
			}) {
				t.Fatalf("aggregator after the reset: %+v, want late %d and duplicates %d", agg.Stats(), lateWant, dupWant)
			}
			after := agg.Stats()
			if again := sent(after) - sent(before); again != 0 {
				t.Errorf("the aggregator sent %d replies while reprocessing, want none", again)
			}
			if after.DeadLettered != before.DeadLettered {
				t.Errorf("%d records dead-lettered by reprocessing", after.DeadLettered-before.DeadLettered)
			}
			replies := decodeReplies(t, c, topics.Replies())
			if len(replies) != n {
				t.Errorf("%d requests answered, want %d", len(replies), n)
			}
			for id, rs := range replies {
				if len(rs) != 1 {
					t.Errorf("%s answered %d times", id, len(rs))
				}
			}
		})
	}
}
