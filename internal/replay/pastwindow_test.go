package replay

import (
	"testing"
	"time"

	"github.com/scattergather/scattergather/aggregator"
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
			ip := newInPlace(t, timeout, lateWindow)
			agg := ip.aggregator()
			roles := map[string]*running{"scatterer": start(t, ip.scatterer()), "aggregator": start(t, agg.Run)}
			start(t, ip.processor())
			last := ip.roundTrip(agg, n)
			// Every deadline plus the late window has passed, with a margin
			// for the aggregator's tick.
			time.Sleep(time.Until(last.Add(timeout + lateWindow + time.Second)))

			roles[role].halt(t)
			plan, _ := ip.planReset(role)
			if err := plan.Execute(t.Context(), ip.c.Admin(t)); err != nil {
				t.Fatal(err)
			}
			before := agg.Stats()
			if role == "aggregator" {
				agg = ip.aggregator()
				start(t, agg.Run)
				before = aggregator.Stats{}
			} else {
				start(t, ip.scatterer())
			}

			// Every manifest comes again, expired; every result (the
			// processors answer the re-issued tasks EXPIRED, unhandled) is
			// an orphan.
			if !waitFor(60*time.Second, func() bool {
				s := agg.Stats()
				if repliesSent(s) > repliesSent(before) {
					return true // answered again: reported below
				}
				return s.ManifestsExpired-before.ManifestsExpired >= n && s.OrphansExpired-before.OrphansExpired >= 2*n
			}) {
				t.Fatalf("aggregator after the reset: %+v; want %d more expired manifests and %d more orphans (before: %+v)", agg.Stats(), n, 2*n, before)
			}
			after := agg.Stats()
			if again := repliesSent(after) - repliesSent(before); again != 0 {
				t.Errorf("the aggregator sent %d replies after the reset, want none", again)
			}
			if d := after.DeadLettered - before.DeadLettered; d != 3*n {
				t.Errorf("%d records dead-lettered after the reset, want %d (each manifest and result)", d, 3*n)
			}
			ip.answeredOnce(n)
		})
	}
}
