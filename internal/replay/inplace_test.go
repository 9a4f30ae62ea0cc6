package replay

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/scattergather/scattergather/aggregator"
	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
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

// inPlace is the pipeline of the in-place replay tests: one split route
// "echo" of fan-out 2, and constructors for each role so that a role can
// be started again after its group is reset.
type inPlace struct {
	t          *testing.T
	c          *testkafka.Cluster
	topics     kafkaconfig.Topics
	cc         kafkaconfig.Client
	timeout    time.Duration // the route's
	lateWindow time.Duration // the aggregator's; 0 for the default
	// joined reports, for each role built, whether it holds its group
	// assignment (the latest of each role counts).
	joined map[string]func() (bool, int)
}

func newInPlace(t *testing.T, timeout, lateWindow time.Duration) *inPlace {
	c := testkafka.New(t)
	ip := &inPlace{t: t, c: c, topics: kafkaconfig.Topics{Prefix: c.Prefix}, cc: clientConfig(c), timeout: timeout, lateWindow: lateWindow,
		joined: map[string]func() (bool, int){}}
	ensureTopics(t, c, ip.topics, "echo")
	return ip
}

func (ip *inPlace) scatterer() func(context.Context) error {
	s, err := scatterer.New(scatterer.Config{
		Role: kafkaconfig.Role{
			Client:     ip.cc,
			Topics:     ip.topics,
			InstanceID: "s",
		},
		Routes: []scatterer.Route{{Name: "echo", Mode: scatterer.Split, Fanout: 2, Timeout: ip.timeout}},
	})
	if err != nil {
		ip.t.Fatal(err)
	}
	ip.joined["scatterer"] = s.GroupAssignment
	return s.Run
}

func (ip *inPlace) processor() func(context.Context) error {
	p, err := processor.New(processor.Config{Role: kafkaconfig.Role{Client: ip.cc, Topics: ip.topics, InstanceID: "p"}, Route: "echo"}, processor.Echo())
	if err != nil {
		ip.t.Fatal(err)
	}
	ip.joined["processor"] = p.GroupAssignment
	return p.Run
}

func (ip *inPlace) aggregator() *aggregator.Aggregator {
	a, err := aggregator.New(aggregator.Config{Role: kafkaconfig.Role{Client: ip.cc, Topics: ip.topics, InstanceID: "a", Logger: testLogger(ip.t)}, LateWindow: ip.lateWindow})
	if err != nil {
		ip.t.Fatal(err)
	}
	ip.joined["aggregator"] = a.GroupAssignment
	return a
}

// roundTrip sends n requests, waits until each is answered COMPLETE and
// the aggregator has counted every reply, and returns when the last one
// was sent.
func (ip *inPlace) roundTrip(agg *aggregator.Aggregator, n int) (last time.Time) {
	t := ip.t
	// The route's timeout is short: wait for every role's first group
	// join, which takes seconds on a real broker.
	if !waitFor(30*time.Second, func() bool {
		for _, joined := range ip.joined {
			if ok, _ := joined(); !ok {
				return false
			}
		}
		return true
	}) {
		t.Fatal("the roles did not all join their groups within 30s")
	}
	cl, err := client.New(t.Context(), client.Config{Client: ip.cc, Topics: ip.topics, DefaultTimeout: ip.timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	var pending []*client.Pending
	for i := range n {
		p, err := cl.Submit(t.Context(), "echo", fmt.Appendf(nil, `{"n":%d}`, i), client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	last = time.Now()
	for _, p := range pending {
		if r, err := p.Await(t.Context()); err != nil || r.Status != schemas.ReplyComplete {
			t.Fatalf("%s: %v %s", p.ID, err, r.Error)
		}
	}
	// The counters follow the commit the client saw the reply of.
	if !waitFor(10*time.Second, func() bool { return repliesSent(agg.Stats()) == int64(n) }) {
		t.Fatalf("aggregator: %+v, want %d replies", agg.Stats(), n)
	}
	return last
}

// planReset plans the reset of role's group to the earliest offset of the
// topic it reads, once the halted member has left the group.
func (ip *inPlace) planReset(role string) (plan *GroupReset, topic string) {
	t := ip.t
	group, topic := ip.topics.Prefix+"processor.echo", ip.topics.Tasks("echo")
	switch role {
	case "scatterer":
		group, topic = ip.topics.Prefix+"scatterer", ip.topics.Requests()
	case "aggregator":
		group, topic = ip.topics.Prefix+"aggregator", ip.topics.Results()
	}
	adm := ip.c.Admin(t)
	var err error
	if !waitFor(20*time.Second, func() bool { // the member's leave may take a moment on a real broker
		var live *LiveMembersError
		plan, err = PlanGroupReset(t.Context(), adm, group, topic, Bound{Kind: Earliest}, time.Now())
		return !errors.As(err, &live)
	}) || err != nil {
		t.Fatalf("plan: %v", err)
	}
	return plan, topic
}

// answeredOnce checks that each of n requests has exactly one reply.
func (ip *inPlace) answeredOnce(n int) {
	replies := decodeReplies(ip.t, ip.c, ip.topics.Replies())
	if len(replies) != n {
		ip.t.Errorf("%d requests answered, want %d", len(replies), n)
	}
	for id, rs := range replies {
		if len(rs) != 1 {
			ip.t.Errorf("%s answered %d times", id, len(rs))
		}
	}
}

func repliesSent(s aggregator.Stats) int64 {
	return s.RepliesComplete + s.RepliesPartial + s.RepliesFailed
}

// TestInPlaceReprocessing completes requests, stops one role, resets its
// group to the earliest offset and starts it again, so that it processes
// everything a second time (the in-place style of replay). The aggregator
// must drop what comes again as late duplicates, counted, and never answer
// a request twice.
func TestInPlaceReprocessing(t *testing.T) {
	for _, role := range []string{"processor", "scatterer", "aggregator"} {
		t.Run(role+" group", func(t *testing.T) {
			ip := newInPlace(t, 20*time.Second, 0)
			agg := ip.aggregator()
			roles := map[string]*running{"scatterer": start(t, ip.scatterer()), "processor": start(t, ip.processor()), "aggregator": start(t, agg.Run)}
			const n = 200
			ip.roundTrip(agg, n)
			before := agg.Stats()

			// Stop the role, reset its group to the start, start it again.
			roles[role].halt(t)
			again := map[string]int64{"processor": 2 * n, "scatterer": n, "aggregator": 3 * n}[role]
			plan, topic := ip.planReset(role)
			var reread int64
			for _, m := range plan.Moves {
				if m.Current >= 0 { // -1: nothing committed (no record there)
					reread += m.Current - m.New
				}
			}
			// Offsets count transaction markers too: at least one per record.
			adm := ip.c.Admin(t)
			if reread < again {
				ends, _ := adm.ListEndOffsets(t.Context(), topic)
				ends.Each(func(o kadm.ListedOffset) { t.Logf("%s[%d]: end offset %d", topic, o.Partition, o.Offset) })
				t.Fatalf("the reset re-reads %d offsets of %s, want at least %d: %+v", reread, topic, again, plan.Moves)
			}
			if err := plan.Execute(t.Context(), adm); err != nil {
				t.Fatal(err)
			}
			switch role {
			case "scatterer":
				start(t, ip.scatterer())
			case "processor":
				start(t, ip.processor())
			case "aggregator":
				// A new instance restores the state of its partitions
				// from the changelog (done requests included), then
				// reads the results again.
				agg = ip.aggregator()
				start(t, agg.Run)
				before = aggregator.Stats{}
			}

			// Every task result comes again (tasks re-issued by the
			// scatterer, re-read by the processor or the aggregator): all
			// late; and every manifest, unless only the processors ran
			// again.
			lateWant, dupWant := before.Late+2*n, before.Duplicates
			if role != "processor" {
				dupWant += n
			}
			if !waitFor(60*time.Second, func() bool {
				s := agg.Stats()
				return s.Late >= lateWant && s.Duplicates >= dupWant
			}) {
				t.Fatalf("aggregator after the reset: %+v, want late %d and duplicates %d", agg.Stats(), lateWant, dupWant)
			}
			after := agg.Stats()
			if again := repliesSent(after) - repliesSent(before); again != 0 {
				t.Errorf("the aggregator sent %d replies while reprocessing, want none", again)
			}
			if after.DeadLettered != before.DeadLettered {
				t.Errorf("%d records dead-lettered by reprocessing", after.DeadLettered-before.DeadLettered)
			}
			ip.answeredOnce(n)
		})
	}
}
