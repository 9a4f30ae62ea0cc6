package replay

import (
	"testing"
	"time"

	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

// TestReplayTimeSlice produces 10,000 requests over a simulated window of
// 10,000 seconds (record timestamps set one second apart), replays the
// middle 4,000 seconds by time through a shadow pipeline, and checks that
// exactly that slice was re-submitted, with fresh deadlines and the
// original timings in the headers, and that the replies correspond one to
// one.
func TestReplayTimeSlice(t *testing.T) {
	c := testkafka.New(t)
	source := kafkaconfig.Topics{Prefix: c.Prefix}
	shadow := kafkaconfig.Topics{Prefix: c.Prefix + "shadow."}
	routeOf := func(i int) schemas.Route {
		if i%4 == 0 {
			return "other"
		}
		return "echo"
	}
	ensureTopics(t, c, source, "echo", "other")
	const (
		n          = 10_000
		sliceFrom  = 3_000
		sliceTo    = 7_000 // exclusive
		sliceCount = sliceTo - sliceFrom
	)
	t0 := time.Now().Add(-4 * time.Hour).Truncate(time.Second)
	origs := produceOriginals(t, c, source.Requests(), n, t0, time.Second, routeOf)
	slice := origs[sliceFrom:sliceTo]

	from := &Bound{Kind: AtTime, Time: t0.Add(sliceFrom * time.Second)}
	to := &Bound{Kind: AtTime, Time: t0.Add(sliceTo * time.Second)}

	// The dry run counts the slice per route and writes nothing.
	dry, err := New(Config{Client: clientConfig(c), Source: source, Target: shadow, From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := dry.DryRun(t.Context())
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if plan.Requests != sliceCount || plan.Routes["echo"] != sliceCount*3/4 || plan.Routes["other"] != sliceCount/4 {
		t.Errorf("dry run: %d requests, routes %v; want %d, echo %d, other %d", plan.Requests, plan.Routes, sliceCount, sliceCount*3/4, sliceCount/4)
	}
	perPartition := map[int32]int64{}
	for _, o := range slice {
		perPartition[o.partition]++
	}
	for _, pp := range plan.Partitions {
		if pp.Requests != perPartition[pp.Partition] {
			t.Errorf("dry run partition %d: %d requests, want %d", pp.Partition, pp.Requests, perPartition[pp.Partition])
		}
	}
	// With a route filter, the other route is counted as skipped.
	dryEcho, _ := New(Config{Client: clientConfig(c), Source: source, Target: shadow, From: from, To: to, Routes: []schemas.Route{"echo"}})
	if plan, err := dryEcho.DryRun(t.Context()); err != nil || plan.Requests != sliceCount*3/4 || plan.Skipped[SkipRoute] != sliceCount/4 {
		t.Errorf("dry run of route echo: %v, %+v", err, plan)
	}

	// The shadow pipeline answers the replay.
	st := startStack(t, c, shadow, stack.Config{
		Routes: table(t, `{"routes":[{"name":"echo","mode":"split","fanout":2,"timeout":"5s","max_timeout":"1m"},
			{"name":"other","mode":"split","fanout":1,"timeout":"5s","max_timeout":"1m"}]}`),
		Processors: []stack.ProcessorSpec{{Route: "echo", Handler: processor.Echo()}, {Route: "other", Handler: processor.Echo()}},
	})
	started := time.Now()
	r, err := New(Config{Client: clientConfig(c), Source: source, Target: shadow, From: from, To: to, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(t.Context()); err != nil {
		t.Fatalf("replay: %v", err)
	}
	if s := r.State(); !s.Done || s.Submitted != sliceCount {
		t.Fatalf("replay: done %v, submitted %d, want done, %d", s.Done, s.Submitted, sliceCount)
	}
	checkExactlyOnce(t, c, shadow.Requests(), r.RunID(), slice)

	// Fresh deadlines, original timings recorded.
	got, _ := replayedRequests(t, c, shadow.Requests(), r.RunID())
	byOrig := map[schemas.CorrelationID]original{}
	for _, o := range slice {
		byOrig[o.req.CorrelationID] = o
	}
	for id, req := range got {
		o := byOrig[*req.ReplayOf]
		if req.SubmittedAt.Before(started.Add(-time.Second)) || req.Timeout != o.req.Timeout {
			t.Fatalf("%s: submitted at %s with timeout %s; want now with the original's %s", id, req.SubmittedAt, req.Timeout, o.req.Timeout)
		}
		if req.Headers[HeaderOriginalSubmittedAt] != o.req.SubmittedAt.UTC().Format(time.RFC3339Nano) ||
			req.Headers[HeaderOriginalTimeout] != asJSON(o.req.Timeout.Milliseconds()) ||
			req.Headers["tenant"] != o.req.Headers["tenant"] || req.Headers[HeaderReplayRun] != r.RunID() ||
			string(req.Payload) != string(o.req.Payload) || req.Route != o.req.Route {
			t.Fatalf("%s: headers %v, payload %s, route %s do not carry the original %+v", id, req.Headers, req.Payload, req.Route, o.req)
		}
		if want := ReplayID(r.RunID(), o.partition, o.offset); id != want {
			t.Fatalf("replay id %s, want %s", id, want)
		}
	}

	// One reply per replayed request, COMPLETE (the deadline was set afresh),
	// carrying the original's id.
	agg := st.Aggregators[0]
	if !waitFor(60*time.Second, func() bool {
		s := agg.Stats()
		return s.RepliesComplete+s.RepliesPartial+s.RepliesFailed >= sliceCount
	}) {
		t.Fatalf("aggregator stats after 60s: %+v", agg.Stats())
	}
	replies := decodeReplies(t, c, shadow.Replies())
	if len(replies) != sliceCount {
		t.Errorf("%d replies, want %d", len(replies), sliceCount)
	}
	seen := map[schemas.CorrelationID]bool{}
	for id, rs := range replies {
		if len(rs) != 1 {
			t.Errorf("%s: %d replies", id, len(rs))
		}
		rp := rs[0]
		if rp.Status != schemas.ReplyComplete || rp.ReplayOf == nil {
			t.Fatalf("%s: status %s, replay of %v: %s", id, rp.Status, rp.ReplayOf, rp.Error)
		}
		if _, ok := got[id]; !ok || *got[id].ReplayOf != *rp.ReplayOf {
			t.Fatalf("reply %s (replay of %s) does not match a replayed request", id, *rp.ReplayOf)
		}
		if seen[*rp.ReplayOf] {
			t.Fatalf("original %s answered twice", *rp.ReplayOf)
		}
		seen[*rp.ReplayOf] = true
	}

	// Compare: the originals were never answered on the source pipeline.
	rep, err := Compare(t.Context(), CompareConfig{Client: clientConfig(c), Source: source, Target: shadow, RunID: r.RunID()})
	if err != nil {
		t.Fatalf("compare: %v", err)
	}
	if rep.Requests != sliceCount || rep.Counts[MissingOriginal] != sliceCount || rep.Counts[MissingReplay] != 0 || !rep.RunComplete {
		t.Errorf("compare: %s", asJSON(rep.Counts))
	}
}
