package aggregator

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
	"github.com/twmb/franz-go/pkg/kgo"
)

// These tests read a request's records a second time, as an in-place reset
// of the scatterer's or the aggregator's group does (docs/replay.md): the
// manifest again, with its original deadline, and its results again. The
// aggregator must never answer such a request a second time, however long
// after its reply the records come back.

// TestMachineRereadRequest drives the machine through the re-reads of one
// request, from within its late window to long past it.
func TestMachineRereadRequest(t *testing.T) {
	tests := []struct {
		name     string
		deadline time.Duration // the request's timeout
		after    time.Duration // from its completion to the re-read
		// What the re-read must come to.
		duplicates, late, expired int64
		dead                      []string // dead-letter reasons
	}{
		{
			name:     "within the late window",
			deadline: 5 * time.Second, after: 30 * time.Second,
			duplicates: 1, late: 1,
		},
		{
			// Completed early, re-read after completion + late window
			// but before deadline + late window: a request remembered only
			// from its completion would be forgotten, and the manifest,
			// still within its deadline's late window, would open it again.
			name:     "past completion + late window, before deadline + late window",
			deadline: 2 * testLateWindow, after: testLateWindow + time.Second,
			duplicates: 1, late: 1,
		},
		{
			// Forgotten: the manifest is past its deadline + late window;
			// the result, with no request to go to, is held and then
			// dead-lettered as an orphan.
			name:     "past deadline + late window",
			deadline: 5 * time.Second, after: 10 * testLateWindow,
			expired: 1, dead: []string{"manifest-expired", "orphan-result"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			mf := h.mf("x", tt.deadline, []string{"a"})
			r := ok("x", "a", `1`)
			r.Deadline = mf.Deadline
			h.manifest(mf)
			h.result(r)
			if got := h.one(); got.Status != schemas.ReplyComplete {
				t.Fatalf("first reply: %s", got.Status)
			}
			h.advance(tt.after)
			before := h.total

			// The re-read: the same records, in the same order.
			h.manifest(mf)
			h.result(r)
			h.advance(tt.deadline + 2*testLateWindow) // every timer due
			h.none()
			var reasons []string
			for _, d := range h.deadLetters() {
				reasons = append(reasons, d.reason)
			}
			if !slices.Equal(reasons, tt.dead) {
				t.Errorf("dead letters %q, want %q", reasons, tt.dead)
			}
			got := h.total
			if d, l, e := got.duplicates-before.duplicates, got.late-before.late, got.manifestsExpired-before.manifestsExpired; d != tt.duplicates || l != tt.late || e != tt.expired {
				t.Errorf("re-read counted %d duplicates, %d late, %d expired manifests; want %d, %d, %d", d, l, e, tt.duplicates, tt.late, tt.expired)
			}
			if len(h.ps.reqs) != 0 {
				t.Errorf("%d requests still remembered after every timer", len(h.ps.reqs))
			}
		})
	}
}

// TestMachineManifestExpiry: a manifest whose deadline plus the late window
// has passed when it is read is dead-lettered, together with results held
// for it; one within that window is a request like any other, even past its
// deadline (it completes at once with what it has).
func TestMachineManifestExpiry(t *testing.T) {
	t.Run("at deadline + late window", func(t *testing.T) {
		h := newHarness(t)
		mf := h.mf("x", time.Second, []string{"a", "b"})
		h.now = mf.Deadline.Add(testLateWindow)
		h.result(ok("x", "a", `1`)) // held: its manifest has not come
		h.manifest(mf)
		h.none()
		ds := h.deadLetters()
		if len(ds) != 2 || ds[0].reason != "manifest-expired" || ds[1].reason != "manifest-expired" {
			t.Fatalf("dead letters %v, want the manifest and the held result as manifest-expired", describe(ds))
		}
		wantErr := fmt.Sprintf("manifest x read at %s, past its deadline %s plus the late window %s: the request was answered or never will be",
			h.now.Format(time.RFC3339Nano), mf.Deadline.Format(time.RFC3339Nano), testLateWindow)
		if ds[0].err.Error() != wantErr {
			t.Errorf("error %q\nwant  %q", ds[0].err, wantErr)
		}
		if h.ps.g.held != 0 || h.ps.g.open != 0 || len(h.ps.reqs) != 0 {
			t.Errorf("state left: gauges %+v, %d requests", h.ps.g, len(h.ps.reqs))
		}
		if h.total.manifestsExpired != 1 || h.total.orphansExpired != 1 || h.total.deadLettered != 2 || h.total.manifests != 1 {
			t.Errorf("counts %+v", h.total)
		}
	})
	t.Run("just within deadline + late window", func(t *testing.T) {
		h := newHarness(t)
		mf := h.mf("x", time.Second, []string{"a", "b"})
		h.now = mf.Deadline.Add(testLateWindow - time.Nanosecond)
		h.manifest(mf)
		h.advance(0)
		if r := h.one(); r.Status != schemas.ReplyFailed {
			t.Errorf("status %s, want FAILED (every part MISSING)", r.Status)
		}
		if ds := h.deadLetters(); len(ds) != 0 {
			t.Errorf("dead letters %v", describe(ds))
		}
	})
}

// TestMachineDoneUntilDeadline: a request that completes before its
// deadline is remembered until its deadline plus the late window, and its
// done entry says so; one that completes at or after its deadline until its
// completion plus the late window.
func TestMachineDoneUntilDeadline(t *testing.T) {
	h := newHarness(t)
	early := h.mf("early", time.Hour, []string{"a"})
	late := h.mf("late", time.Second, []string{"a"})
	h.manifest(early)
	h.manifest(late)
	h.result(ok("early", "a", `1`))
	h.advance(2 * time.Second) // late times out, a second after its deadline
	if rs := h.replies(); len(rs) != 2 {
		t.Fatalf("%d replies, want 2", len(rs))
	}
	for _, tc := range []struct {
		id                string
		completed, forget time.Time
	}{
		{"early", epoch, early.Deadline.Add(testLateWindow)},
		{"late", epoch.Add(2 * time.Second), epoch.Add(2*time.Second + testLateWindow)},
	} {
		r := h.ps.reqs[schemas.CorrelationID(tc.id)]
		if r == nil || r.phase != phaseDone || r.due != tc.forget.UnixNano() {
			t.Fatalf("%s: %+v, want done until %s", tc.id, r, tc.forget)
		}
		q, ok := h.listed(0, schemas.CorrelationID(tc.id))
		if !ok {
			t.Fatalf("%s is in no done-list", tc.id)
		}
		if !q.CompletedAt.Equal(tc.completed) || !q.ForgetAt.Equal(tc.forget) {
			t.Errorf("%s: done-list says completed %s forget %s, want %s and %s", tc.id, q.CompletedAt, q.ForgetAt, tc.completed, tc.forget)
		}
	}
}

// TestRereadPastLateWindow writes a request's records a second time to the
// results topic of a running aggregator, as a reset of the scatterer's or
// the aggregator's group makes them come back: once after the request's
// completion plus the late window (and before its deadline plus the late
// window), once after its deadline plus the late window. Each request must
// get exactly one reply.
func TestRereadPastLateWindow(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			t.Parallel()
			const lateWindow = time.Second
			f := newFixture(t, 1)
			a := f.start("a", g, func(c *Config) { c.LateWindow = lateWindow })
			l := f.replyLog()
			now := time.Now()
			// early: completes at once, deadline 4s away; expired: deadline
			// 300ms away, completes at once.
			type req struct {
				id       string
				deadline time.Time
				recs     func() []*kgo.Record
			}
			reqs := []req{{id: "early", deadline: now.Add(4 * time.Second)}, {id: "expired", deadline: now.Add(300 * time.Millisecond)}}
			for i := range reqs {
				r := &reqs[i]
				r.recs = func() []*kgo.Record {
					return []*kgo.Record{f.w.manifest(r.id, r.deadline, "", "a"), f.w.result(r.id, "a", schemas.ResultOK, `1`, "", r.deadline)}
				}
				f.w.send(0, r.recs()...)
			}
			l.until("the replies", 30*time.Second, func() bool { return len(l.replies["early"]) == 1 && len(l.replies["expired"]) == 1 })
			completed := time.Now()

			// Past completion + late window, within early's deadline + late
			// window; past expired's deadline + late window.
			time.Sleep(time.Until(completed.Add(lateWindow + 500*time.Millisecond)))
			if time.Now().After(reqs[0].deadline) {
				t.Skipf("the replies took until %s, too close to early's deadline for the test to mean anything", completed.Format(time.StampMilli))
			}
			for _, r := range reqs {
				f.w.send(0, r.recs()...)
			}
			f.fence(l, "fence")
			for _, r := range reqs {
				if n := len(l.replies[schemas.CorrelationID(r.id)]); n != 1 {
					t.Errorf("%d replies for %s, want 1", n, r.id)
				}
			}
			waitFor(t, "the re-read counted", 10*time.Second, func() bool {
				s := a.agg.Stats()
				return s.Duplicates == 1 && s.Late == 1 && s.ManifestsExpired == 1
			})
			l.until("the dead letters", 10*time.Second, func() bool { return len(l.dead) >= 2 })
			var reasons []string
			for _, d := range l.dead {
				reasons = append(reasons, string(d.Key)+" "+kafka.Header(d, kafka.HeaderDLQReason))
			}
			slices.Sort(reasons)
			if want := []string{"expired manifest-expired", "expired orphan-result"}; !slices.Equal(reasons, want) {
				t.Errorf("dead letters %q, want %q", reasons, want)
			}
		})
	}
}
