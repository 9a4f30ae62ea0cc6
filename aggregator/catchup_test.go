package aggregator

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// TestCatchUpAfterOutage: requests are open with one of two parts when the
// aggregator stops; the second part of each arrives, in time, while no
// aggregator runs, and the deadlines pass before one starts again. The
// restored partitions must read that backlog before their overdue
// deadlines fire: every request is answered once, COMPLETE, not PARTIAL
// with the part that sat in the topic marked MISSING.
func TestCatchUpAfterOutage(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			t.Parallel()
			catchUpAfterOutage(t, newFixture(t, 3), g, nil)
		})
	}
}

// TestCatchUpBrokerRefusesListOffsets: as TestCatchUpAfterOutage, on three
// brokers, one of which refuses to list end offsets (ListOffsets) for a
// while after the restart, or does not answer for that while. The restored
// instance must ask only for its own partitions, each of its leader, keep
// the timers of those whose end it does not know yet waiting, and learn it
// later (from the broker asked again, or from a fetch): every reply
// COMPLETE. (Before, one refusing leader failed the listing of the whole
// topic, and every overdue deadline fired at once with the backlog unread.
// A leader that does not answer passed before too: the listing held up the
// assignment, and the fetching of every partition, until it answered; now
// each try is cut at catchUpTry and the fetches do not wait.) kfake only:
// it needs a broker that misbehaves.
func TestCatchUpBrokerRefusesListOffsets(t *testing.T) {
	for _, tt := range []struct {
		name string
		g    kafkaconfig.Guarantee
		hang bool // else refuse
	}{
		{"refuses/" + string(kafkaconfig.ExactlyOnce), kafkaconfig.ExactlyOnce, false},
		{"refuses/" + string(kafkaconfig.AtLeastOnce), kafkaconfig.AtLeastOnce, false},
		{"hangs/" + string(kafkaconfig.ExactlyOnce), kafkaconfig.ExactlyOnce, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 3, kfake.NumBrokers(3))
			if f.c.Fake == nil {
				t.Skip("needs kfake to make a broker misbehave")
			}
			fake := f.c.Fake
			victim := fake.LeaderFor(f.topics.Results(), 0)
			var until atomic.Int64 // unix ns; 0: answer
			var hit atomic.Int32
			fake.ControlKey(int16(kmsg.ListOffsets), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
				fake.KeepControl()
				req := kreq.(*kmsg.ListOffsetsRequest)
				end := false
				for _, rt := range req.Topics {
					for _, rp := range rt.Partitions {
						end = end || rp.Timestamp == -1
					}
				}
				wait := time.Until(time.Unix(0, until.Load()))
				if !end || wait <= 0 || fake.CurrentNode() != victim {
					return nil, nil, false // the consumer's own resets, or answer
				}
				hit.Add(1)
				if tt.hang {
					fake.SleepControl(func() { time.Sleep(wait) })
					return nil, nil, false // then answer
				}
				resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
				for _, rt := range req.Topics {
					st := kmsg.NewListOffsetsResponseTopic()
					st.Topic = rt.Topic
					for _, rp := range rt.Partitions {
						sp := kmsg.NewListOffsetsResponseTopicPartition()
						sp.Partition = rp.Partition
						sp.ErrorCode = kerr.UnknownServerError.Code
						st.Partitions = append(st.Partitions, sp)
					}
					resp.Topics = append(resp.Topics, st)
				}
				return resp, nil, true
			})
			catchUpAfterOutage(t, f, tt.g, func() { until.Store(time.Now().Add(1500 * time.Millisecond).UnixNano()) })
			if hit.Load() == 0 {
				t.Errorf("broker %d saw no listing of end offsets while it misbehaved: the test tested nothing", victim)
			}
			t.Logf("broker %d refused or held %d listings of end offsets", victim, hit.Load())
		})
	}
}

// catchUpAfterOutage runs the outage of TestCatchUpAfterOutage on f;
// beforeRestart, if set, runs just before the second instance starts.
func catchUpAfterOutage(t *testing.T, f *fixture, g kafkaconfig.Guarantee, beforeRestart func()) {
	const requests = 300
	a := f.start("a", g)
	waitFor(t, "instance ready", 30*time.Second, readyOf(a.agg))

	deadline := time.Now().Add(4 * time.Second)
	id := func(i int) string { return fmt.Sprintf("req-%04d", i) }
	for i := range requests {
		f.w.send(int32(i)%f.parts, f.w.manifest(id(i), deadline, "", "a", "b"),
			f.w.result(id(i), "a", schemas.ResultOK, payload(id(i), "a"), "", deadline))
	}
	waitFor(t, "every request open", 30*time.Second, func() bool { return a.agg.Stats().Manifests == requests })
	a.stopNow(t)

	for i := range requests {
		f.w.send(int32(i)%f.parts, f.w.result(id(i), "b", schemas.ResultOK, payload(id(i), "b"), "", deadline))
	}
	if time.Now().After(deadline) {
		t.Fatalf("the second parts were written after the deadline: the machine is too slow for this test")
	}
	time.Sleep(time.Until(deadline) + 300*time.Millisecond)

	if beforeRestart != nil {
		beforeRestart()
	}
	// Small batches: the backlog takes many, and every batch fires
	// the timers that are due.
	b := f.start("a", g, func(c *Config) { c.MaxPollRecords = 20 })
	l := f.replyLog()
	l.until("every reply", 30*time.Second, func() bool { return len(l.replies) == requests })
	waitFor(t, "restored", 10*time.Second, readyOf(b.agg))
	settled := time.Now().Add(time.Second) // time for a second reply to show
	l.until("a second of reading", 5*time.Second, func() bool { return time.Now().After(settled) })

	var partial []string
	for i := range requests {
		reps := l.replies[schemas.CorrelationID(id(i))]
		if len(reps) != 1 {
			t.Errorf("%s: %d replies, want 1", id(i), len(reps))
			continue
		}
		if reps[0].Status != schemas.ReplyComplete {
			partial = append(partial, fmt.Sprintf("%s %s", id(i), reps[0].Status))
		}
	}
	if len(partial) > 0 {
		t.Errorf("%d of %d replies not COMPLETE although every part was in the topic before the deadline, e.g. %v",
			len(partial), requests, partial[:min(len(partial), 5)])
	}
	// Under exactly-once the requests the last interval created are
	// consumed again instead (machine.young).
	if s := b.agg.Stats(); s.RestoredOpen+s.Manifests != requests || (g == kafkaconfig.AtLeastOnce && s.RestoredOpen != requests) {
		t.Errorf("restored %d open requests and read %d manifests again, want %d in all (all restored under at-least-once)", s.RestoredOpen, s.Manifests, requests)
	}
}

// TestDeadlineReadsBacklogFirst: a live aggregator falls behind (one batch
// takes 2s, as a slow merge, a GC pause or a stalled disk would make it)
// while a request's results are written, 1s before its deadline, behind
// other records. When it resumes, past the deadline, it reads five records
// a batch and every batch fires what is due: the request must still be
// answered COMPLETE, its deadline held until the partition is read up to
// it. (Before, the first batch after the stall fired the deadline, and the
// results in the topic came back MISSING.)
func TestDeadlineReadsBacklogFirst(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			t.Parallel()
			const fillers = 40
			f := newFixture(t, 1)
			stalled := make(chan struct{})
			var once sync.Once
			slow := func(parts []Part) ([]byte, error) {
				once.Do(func() {
					close(stalled)
					time.Sleep(2 * time.Second)
				})
				return Collect()(parts)
			}
			a := f.start("a", g, func(c *Config) {
				c.MaxPollRecords = 5
				c.Merges = map[schemas.Route]Merge{"slow": slow}
			})
			waitFor(t, "instance ready", 30*time.Second, readyOf(a.agg))
			far := time.Now().Add(time.Minute)
			f.w.send(0, f.w.with(f.w.manifest("slow", far, "", "a"), func(m *schemas.Manifest) { m.Route = "slow" }),
				f.w.result("slow", "a", schemas.ResultOK, `0`, "", far))
			<-stalled

			deadline := time.Now().Add(time.Second)
			recs := []*kgo.Record{f.w.manifest("x", deadline, "", "a", "b")}
			for i := range fillers {
				id := fmt.Sprintf("fill-%02d", i)
				recs = append(recs, f.w.manifest(id, far, "", "a"), f.w.result(id, "a", schemas.ResultOK, `0`, "", far))
			}
			recs = append(recs, f.w.result("x", "a", schemas.ResultOK, `1`, "", deadline),
				f.w.result("x", "b", schemas.ResultOK, `2`, "", deadline))
			f.w.send(0, recs...)
			if left := time.Until(deadline); left < 500*time.Millisecond {
				t.Fatalf("the results were written %s before the deadline: the machine is too slow for this test", left)
			}

			l := f.replyLog()
			l.until("every reply", 30*time.Second, func() bool { return len(l.replies) == fillers+2 })
			for id, reps := range l.replies {
				if len(reps) != 1 || reps[0].Status != schemas.ReplyComplete {
					t.Errorf("%s: replies %+v, want one COMPLETE", id, reps)
				}
			}
			t.Logf("catch-ups expired: %d", a.agg.Stats().CatchUpsExpired)
		})
	}
}

// The deadline rule on the machine: a timer due at T fires once its
// partition is read up to T (machine.fire). The machine takes the time as
// an argument and starts no timer or goroutine, so these tests drive its
// clock by hand rather than under testing/synctest.

// readAt feeds result r as read from the partition's next offset, created
// at ts, and notes the read.
func (h *harness) readAt(r schemas.Result, ts time.Time) {
	h.feed(r)
	h.ps.read(h.offset, ts.UnixNano(), 100)
}

// poll moves the clock by d and runs a batch that found the client's
// buffer drained, as the role does after a poll; unless silent, the
// partition's leader answered a fetch sent then.
func (h *harness) poll(d time.Duration) {
	h.now = h.now.Add(d)
	if !h.silent {
		h.m.answer(h.ps.leader, h.now.UnixNano())
	}
	h.m.polled(h.now.UnixNano())
	h.m.tick(h.now)
	h.commit()
}

// TestMachineDeadlineWaitsUntilRead: a deadline does not fire while
// results written before it may sit unread in the partition.
func TestMachineDeadlineWaitsUntilRead(t *testing.T) {
	// open opens x (parts a and b, deadline in 1s) with a read; when
	// behind, the last fetch reported 1,000 more records (a fetch cut at
	// its byte limit).
	open := func(t *testing.T, behind bool) (*harness, time.Time) {
		h := newHarness(t)
		h.m.follow = true
		mf := h.mf("x", time.Second, []string{"a", "b"})
		h.manifest(mf)
		h.readAt(ok("x", "a", `1`), h.now)
		h.commit()
		end := h.offset + 1
		if behind {
			end = h.offset + 1001
		}
		h.ps.fetched(end, true)
		h.poll(0)
		return h, mf.Deadline
	}

	t.Run("caught up: fires once a fetch sent at the deadline came back", func(t *testing.T) {
		h, deadline := open(t, false)
		h.poll(deadline.Sub(h.now)) // a drained poll at the deadline
		h.none()
		if next := h.m.nextDue(); next != h.now.Add(settleGap).UnixNano() {
			t.Errorf("next wake in %s, want settleGap", time.Duration(next-h.now.UnixNano()))
		}
		h.poll(settleGap)
		if r := h.one(); r.Status != schemas.ReplyPartial {
			t.Errorf("status %s, want PARTIAL", r.Status)
		}
	})
	t.Run("caught up, polls every 2ms: fires settleGap after the deadline", func(t *testing.T) {
		h, deadline := open(t, false)
		h.poll(deadline.Sub(h.now))
		for h.now.Before(deadline.Add(settleGap)) {
			h.none()
			h.poll(2 * time.Millisecond)
		}
		if r := h.one(); r.Status != schemas.ReplyPartial {
			t.Errorf("status %s, want PARTIAL", r.Status)
		}
	})
	t.Run("transaction markers after the last record: caught up", func(t *testing.T) {
		h, deadline := open(t, false)
		h.ps.fetched(h.offset+5, true) // four markers after it: not records
		h.poll(deadline.Sub(h.now))
		h.poll(settleGap)
		if r := h.one(); r.Status != schemas.ReplyPartial {
			t.Errorf("status %s, want PARTIAL", r.Status)
		}
	})
	t.Run("behind: the results in the topic are read first", func(t *testing.T) {
		h, deadline := open(t, true)
		h.poll(deadline.Sub(h.now) + 300*time.Millisecond) // a stalled batch
		h.poll(settleGap)
		h.poll(settleGap)
		h.none()
		if next, now := h.m.nextDue(), h.now.UnixNano(); next <= now {
			t.Errorf("next wake %s from now: the poll would spin", time.Duration(next-now))
		}
		h.offset += 999                                         // the records before it
		h.readAt(ok("x", "b", `2`), deadline.Add(-time.Second)) // written in time
		h.commit()
		if r := h.one(); r.Status != schemas.ReplyComplete {
			t.Errorf("status %s, want COMPLETE", r.Status)
		}
	})
	t.Run("behind: a record created at the deadline says the rest was read", func(t *testing.T) {
		h, deadline := open(t, true)
		h.poll(deadline.Sub(h.now))
		h.none()
		h.readAt(ok("y", "a", `3`), deadline) // an orphan, held
		h.commit()
		h.poll(time.Millisecond)
		if r := h.one(); r.Status != schemas.ReplyPartial {
			t.Errorf("status %s, want PARTIAL", r.Status)
		}
	})
	// A new leader answers fetches with the high watermark it knew as a
	// follower until its followers fetch from it: a fetch of it that ends
	// at what was read says nothing of results the old leader committed
	// (3-node chaos, a node's return: three parts committed 1.27s before
	// their deadline were marked MISSING).
	unsure := map[string]func(h *harness){
		"a new leader": func(h *harness) {
			h.ps.led(0, 1, h.now.Add(-time.Minute).UnixNano())
			h.ps.led(0, 2, h.now.UnixNano())
			h.ps.fetched(h.offset+1, false) // its stale high watermark
		},
		// Assigned just after its leader changed: nothing says when it did.
		"the first leader epoch known": func(h *harness) {
			h.ps.led(0, 3, h.now.UnixNano())
			h.ps.fetched(h.offset+1, false)
		},
		"a failed fetch": func(h *harness) {
			h.ps.fetchFailed(h.now.UnixNano())
			h.ps.fetched(h.offset+1, false)
		},
	}
	for name, change := range unsure {
		t.Run(name+": waits for the result written in time", func(t *testing.T) {
			h, deadline := open(t, false)
			change(h)
			h.poll(deadline.Sub(h.now))
			h.poll(settleGap)
			h.poll(settleGap)
			h.none()
			h.readAt(ok("x", "b", `2`), deadline.Add(-time.Second)) // committed on the old leader
			h.commit()
			h.oneWith(schemas.ReplyComplete)
		})
		t.Run(name+": fires at the bound", func(t *testing.T) {
			h, deadline := open(t, false)
			change(h)
			h.poll(deadline.Sub(h.now))
			h.poll(behindMax - time.Millisecond)
			h.none()
			h.poll(time.Millisecond)
			h.oneWith(schemas.ReplyPartial)
		})
		t.Run(name+": a record created after it makes fetches count again", func(t *testing.T) {
			h, deadline := open(t, false)
			change(h)
			h.readAt(ok("y", "a", `3`), h.now.Add(time.Millisecond)) // an orphan, held
			h.commit()
			h.poll(deadline.Sub(h.now))
			h.poll(settleGap)
			h.oneWith(schemas.ReplyPartial)
		})
	}
	// A drained poll right after a broker died says nothing of the
	// partitions it led: the fetch sent then never comes back (3-node
	// chaos: an aggregator whose commit a node's death held 1.9s marked
	// MISSING two results committed on that node 1.9s before their
	// deadline, 30ms after the commit returned).
	t.Run("its leader answered no fetch sent since the deadline: waits", func(t *testing.T) {
		h, deadline := open(t, false)
		h.silent = true
		h.poll(deadline.Sub(h.now))
		h.poll(settleGap)
		h.poll(settleGap)
		h.none()
		h.m.answer(h.ps.leader, deadline.Add(-time.Millisecond).UnixNano()) // sent just before it
		h.poll(settleGap)
		h.none()
		h.m.answer(h.ps.leader, deadline.UnixNano()) // sent at it, answered and polled
		h.poll(time.Millisecond)
		h.oneWith(schemas.ReplyPartial)
	})
	t.Run("its leader answered no fetch sent since the deadline: the result read once it does", func(t *testing.T) {
		h, deadline := open(t, false)
		h.silent = true
		h.poll(deadline.Sub(h.now) + 500*time.Millisecond) // the batch held by a commit
		h.poll(settleGap)
		h.none()
		h.readAt(ok("x", "b", `2`), deadline.Add(-time.Second)) // from the new leader
		h.commit()
		h.oneWith(schemas.ReplyComplete)
	})
	t.Run("its leader answered no fetch sent since the deadline: fires at the bound", func(t *testing.T) {
		h, deadline := open(t, false)
		h.silent = true
		h.poll(deadline.Sub(h.now))
		h.poll(behindMax - time.Millisecond)
		h.none()
		h.poll(time.Millisecond)
		h.oneWith(schemas.ReplyPartial)
	})
	t.Run("another broker's answers say nothing of it", func(t *testing.T) {
		h, deadline := open(t, false)
		h.silent = true
		h.ps.led(1, 0, h.now.Add(-time.Minute).UnixNano())
		h.readAt(ok("y", "a", `3`), h.now) // read since: sure
		h.commit()
		h.poll(deadline.Sub(h.now))
		h.m.answer(2, h.now.UnixNano())
		h.poll(settleGap)
		h.m.answer(2, h.now.UnixNano())
		h.poll(settleGap)
		h.none()
		h.m.answer(1, deadline.UnixNano())
		h.poll(time.Millisecond)
		h.oneWith(schemas.ReplyPartial)
	})
	t.Run("the same leader epoch again is no change", func(t *testing.T) {
		h, deadline := open(t, false)
		h.ps.led(0, 3, h.now.Add(-time.Minute).UnixNano())
		h.readAt(ok("y", "a", `3`), h.now.Add(-time.Second)) // read since
		h.commit()
		h.ps.led(0, 3, h.now.UnixNano())
		h.poll(deadline.Sub(h.now))
		h.poll(settleGap)
		h.oneWith(schemas.ReplyPartial)
	})
	t.Run("not fetched since assigned: waits for a read or the bound", func(t *testing.T) {
		// A restored partition: its requests came from the changelog,
		// and the client has not fetched it yet (its committed offset
		// being looked up while the group coordinator moves), so a
		// drained poll says nothing of it.
		h, deadline := open(t, false)
		h.ps.seen, h.ps.pos, h.ps.end = false, 0, 0
		h.poll(deadline.Sub(h.now))
		h.poll(settleGap)
		h.poll(settleGap)
		h.none()
		h.readAt(ok("x", "b", `2`), deadline.Add(-time.Second)) // written in time, read once fetched
		h.commit()
		if r := h.one(); r.Status != schemas.ReplyComplete {
			t.Errorf("status %s, want COMPLETE", r.Status)
		}
	})
	t.Run("not fetched since assigned: fires at the bound", func(t *testing.T) {
		h, deadline := open(t, false)
		h.ps.seen, h.ps.pos, h.ps.end = false, 0, 0
		h.poll(deadline.Sub(h.now))
		h.poll(behindMax - time.Millisecond)
		h.none()
		h.poll(time.Millisecond)
		if r := h.one(); r.Status != schemas.ReplyPartial {
			t.Errorf("status %s, want PARTIAL", r.Status)
		}
	})
	t.Run("behind: fires at the bound with what was read", func(t *testing.T) {
		h, deadline := open(t, true)
		h.poll(deadline.Sub(h.now) + 5*time.Second) // the first tick that finds it due
		h.poll(behindMax - time.Millisecond)
		h.none()
		h.poll(time.Millisecond)
		if r := h.one(); r.Status != schemas.ReplyPartial {
			t.Errorf("status %s, want PARTIAL", r.Status)
		}
		if h.total.catchUpsExpired != 1 {
			t.Errorf("%d catch-ups expired, want 1", h.total.catchUpsExpired)
		}
	})
	t.Run("behind: a request due while an older one waited past the bound gets its own bound", func(t *testing.T) {
		// 3-node broker-kill chaos, seed 102 (6 Dec 2026): a batch stalled
		// 2.6s in its produce while x waited; the batch after it forced x
		// at the bound and, in the same tick, y, due 50ms before, whose
		// results had been committed 1.15s before its deadline and were
		// not read yet: PARTIAL with every part MISSING.
		h, deadline := open(t, true)
		mf := h.mf("y", deadline.Sub(h.now)+2500*time.Millisecond, []string{"a", "b"})
		h.manifest(mf)
		h.poll(deadline.Sub(h.now) + 10*time.Millisecond) // x starts to wait
		h.none()
		h.poll(mf.Deadline.Sub(h.now) + 50*time.Millisecond) // the stalled batch
		if r := h.one(); r.CorrelationID != "x" || r.Status != schemas.ReplyPartial {
			t.Fatalf("reply %s %s, want x PARTIAL (at the bound)", r.CorrelationID, r.Status)
		}
		// y's results, written 1s before its deadline, are read next.
		h.offset += 900
		h.readAt(ok("y", "a", `3`), mf.Deadline.Add(-time.Second))
		h.readAt(ok("y", "b", `4`), mf.Deadline.Add(-time.Second))
		h.commit()
		if r := h.one(); r.CorrelationID != "y" || r.Status != schemas.ReplyComplete {
			t.Errorf("reply %s %s, want y COMPLETE", r.CorrelationID, r.Status)
		}
	})
	t.Run("behind: a request due while an older one waited fires at its own bound", func(t *testing.T) {
		h, deadline := open(t, true)
		mf := h.mf("y", deadline.Sub(h.now)+2500*time.Millisecond, []string{"a", "b"})
		h.manifest(mf)
		h.poll(deadline.Sub(h.now) + 10*time.Millisecond)
		h.poll(mf.Deadline.Sub(h.now) + 50*time.Millisecond)
		h.one() // x at its bound
		h.poll(behindMax - 51*time.Millisecond)
		h.none()
		if next, want := h.m.nextDue(), mf.Deadline.Add(behindMax).UnixNano(); next != want {
			t.Errorf("next wake %s from y's deadline, want behindMax", time.Duration(next-mf.Deadline.UnixNano()))
		}
		h.poll(time.Millisecond)
		if r := h.one(); r.CorrelationID != "y" || r.Status != schemas.ReplyFailed {
			t.Errorf("reply %s %s, want y FAILED at its bound", r.CorrelationID, r.Status)
		}
	})
	t.Run("after a hold for catch-up: what came due during it gets its own bound", func(t *testing.T) {
		// An aborted batch (or a restore) holds the partition's timers
		// until its records are read again, at most catchUpMax. When the
		// hold ends unread, x, due before it began, fires; y, due 100ms
		// before its end, waits its own bound.
		h, deadline := open(t, true)
		mf := h.mf("y", deadline.Sub(h.now)+2400*time.Millisecond, []string{"a", "b"})
		h.manifest(mf)
		h.now = deadline.Add(500 * time.Millisecond)
		h.ps.catchUp, h.ps.holdUntil = h.offset+500, h.now.Add(catchUpMax).UnixNano()
		h.poll(catchUpMax + 10*time.Millisecond)
		if r := h.one(); r.CorrelationID != "x" || r.Status != schemas.ReplyPartial {
			t.Fatalf("reply %s %s, want x PARTIAL (at the hold's end)", r.CorrelationID, r.Status)
		}
		h.offset += 400
		h.readAt(ok("y", "a", `3`), mf.Deadline.Add(-time.Second))
		h.readAt(ok("y", "b", `4`), mf.Deadline.Add(-time.Second))
		h.commit()
		if r := h.one(); r.CorrelationID != "y" || r.Status != schemas.ReplyComplete {
			t.Errorf("reply %s %s, want y COMPLETE", r.CorrelationID, r.Status)
		}
	})
	t.Run("paused: fires at the deadline", func(t *testing.T) {
		h, deadline := open(t, true)
		h.m.follow = false
		h.poll(deadline.Sub(h.now))
		if r := h.one(); r.Status != schemas.ReplyPartial {
			t.Errorf("status %s, want PARTIAL", r.Status)
		}
	})
}

// TestDeadlineWaitsOutFetchErrors: a live aggregator whose fetches of the
// results partition fail with a retriable error (as while a leader moves
// after a broker crash) across a request's deadline must not take drained
// polls for "read up to the deadline": the result written before the
// deadline, read once the fetches succeed again, counts.
func TestDeadlineWaitsOutFetchErrors(t *testing.T) {
	f := newFixture(t, 1)
	if f.c.Fake == nil {
		t.Skip("needs kfake to make fetches fail")
	}
	fake := f.c.Fake
	var until atomic.Int64 // unix ns
	var hit atomic.Int32
	// While until is ahead, every fetch fails (the aggregator's of the
	// results topic; its restore is over by then).
	fake.ControlKey(int16(kmsg.Fetch), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		if time.Now().UnixNano() >= until.Load() {
			return nil, nil, false
		}
		hit.Add(1)
		req := kreq.(*kmsg.FetchRequest)
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewFetchResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewFetchResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.OffsetNotAvailable.Code
				sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = -1, -1, -1
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	// Without fetch sessions every fetch names its partitions.
	a := f.start("a", kafkaconfig.ExactlyOnce, func(c *Config) { c.Client.Opts = append(c.Client.Opts, kgo.DisableFetchSessions()) })
	waitFor(t, "instance ready", 30*time.Second, readyOf(a.agg))
	deadline := time.Now().Add(1500 * time.Millisecond)
	f.w.send(0, f.w.manifest("x", deadline, "", "a", "b"), f.w.result("x", "a", schemas.ResultOK, payload("x", "a"), "", deadline))
	waitFor(t, "request open", 10*time.Second, func() bool { return a.agg.Stats().Manifests == 1 })
	// Fetches fail from now until half a second past the deadline, well
	// within the rule's 1s bound; the second result is written once one
	// has failed (a fetch already waiting at the broker would return it).
	until.Store(deadline.Add(500 * time.Millisecond).UnixNano())
	waitFor(t, "a failed fetch", 5*time.Second, func() bool { return hit.Load() > 0 })
	f.w.send(0, f.w.result("x", "b", schemas.ResultOK, payload("x", "b"), "", deadline))
	if time.Now().After(deadline) {
		t.Fatal("the second result was written after the deadline: the machine is too slow for this test")
	}
	l := f.replyLog()
	l.until("the reply", 15*time.Second, func() bool { return len(l.replies["x"]) == 1 })
	if r := l.replies["x"][0]; r.Status != schemas.ReplyComplete {
		t.Errorf("reply %s (%s), want COMPLETE: part b was written before the deadline", r.Status, r.Error)
	}
}
