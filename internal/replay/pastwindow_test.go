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
)

// TestInPlaceResetPastLateWindow is TestInPlaceReprocessing past the
// aggregator's late window (the right column of the table in
// docs/replay.md): requests complete, their deadline plus the late window
// passes, then the scatterer's or the aggregator's group is reset to the
// earliest offset. The aggregator must answer none of them again: it
// dead-letters every manifest read again as manifest-expired and every
// result as orphan-result.
func TestInPlaceResetPastLateWindow(t *testing.T) {
	const (
		n          = 50
		timeout    = 2 * time.Second
		lateWindow = time.Second
	)
	for _, role := range []string{"scatterer", "aggregator"} {
		t.Run(role+" group", func(t *testing.T) {
			c := testkafka.New(t)
			topics := kafka.Topics{Prefix: c.Prefix}
			cc := clientConfig(c)
			ensureTopics(t, c, topics, "echo")
			newScatterer := func() func(context.Context) error {
				s, err := scatterer.New(scatterer.Config{Client: cc, Topics: topics, InstanceID: "s",
					Routes: []scatterer.Route{{Name: "echo", Mode: scatterer.Split, Fanout: 2, Timeout: timeout}}})
				if err != nil {
					t.Fatal(err)
				}
				return s.Run
			}
			newAggregator := func() *aggregator.Aggregator {
				a, err := aggregator.New(aggregator.Config{Client: cc, Topics: topics, InstanceID: "a", LateWindow: lateWindow, Logger: testLogger(t)})
				if err != nil {
					t.Fatal(err)
				}
				return a
			}
			p, err := processor.New(processor.Config{Client: cc, Topics: topics, Route: "echo", InstanceID: "p"}, processor.Echo())
			if err != nil {
				t.Fatal(err)
			}
			agg := newAggregator()
			roles := map[string]*running{"scatterer": start(t, newScatterer()), "aggregator": start(t, agg.Run)}
			start(t, p.Run)

			cl, err := client.New(t.Context(), client.Config{Client: cc, Topics: topics, DefaultTimeout: timeout})
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
			last := time.Now()
			for _, p := range pending {
				if _, err := p.Await(t.Context()); err != nil {
					t.Fatalf("%s: %v", p.ID, err)
				}
			}
			sent := func(s aggregator.Stats) int64 { return s.RepliesComplete + s.RepliesPartial + s.RepliesFailed }
			if !waitFor(10*time.Second, func() bool { return sent(agg.Stats()) == n }) {
				t.Fatalf("aggregator: %+v, want %d replies", agg.Stats(), n)
			}
			// Every deadline plus the late window has passed, with a margin
			// for the aggregator's tick.
			time.Sleep(time.Until(last.Add(timeout + lateWindow + time.Second)))

			roles[role].halt(t)
			group, topic := topics.Prefix+"scatterer", topics.Requests()
			if role == "aggregator" {
				group, topic = topics.Prefix+"aggregator", topics.Results()
			}
			adm := c.Admin(t)
			var plan *GroupReset
			if !waitFor(20*time.Second, func() bool {
				var live *LiveMembersError
				plan, err = PlanGroupReset(t.Context(), adm, group, topic, Bound{Kind: Earliest}, time.Now())
				return !errors.As(err, &live)
			}) || err != nil {
				t.Fatalf("plan: %v", err)
			}
			if err := plan.Execute(t.Context(), adm); err != nil {
				t.Fatal(err)
			}
			before := agg.Stats()
			if role == "aggregator" {
				agg = newAggregator()
				start(t, agg.Run)
				before = aggregator.Stats{}
			} else {
				start(t, newScatterer())
			}

			// Every manifest comes again, expired; every result (the
			// processors answer the re-issued tasks EXPIRED, unhandled) is
			// an orphan.
			if !waitFor(60*time.Second, func() bool {
				s := agg.Stats()
				if sent(s) > sent(before) {
					return true // answered again: reported below
				}
				return s.ManifestsExpired-before.ManifestsExpired >= n && s.OrphansExpired-before.OrphansExpired >= 2*n
			}) {
				t.Fatalf("aggregator after the reset: %+v; want %d more expired manifests and %d more orphans (before: %+v)", agg.Stats(), n, 2*n, before)
			}
			after := agg.Stats()
			if again := sent(after) - sent(before); again != 0 {
				t.Errorf("the aggregator sent %d replies after the reset, want none", again)
			}
			if d := after.DeadLettered - before.DeadLettered; d != 3*n {
				t.Errorf("%d records dead-lettered after the reset, want %d (each manifest and result)", d, 3*n)
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
