package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) { testkafka.Main(m) }

// deadlineTolerance is how late after its deadline a request with a missing
// part may be replied to (CompletedAt), with Tick at its default of 50ms and
// no record arriving on any partition meanwhile. Typically ~30ms; a
// transaction that consumed nothing must not stall the loop (it used to
// cost 500ms under exactly-once, see kafka.Hop).
const deadlineTolerance = 250 * time.Millisecond

func TestConfigValidate(t *testing.T) {
	topk, err := TopK("score", 3, "id")
	if err != nil {
		t.Fatal(err)
	}
	given := func() Config {
		return Config{Role: kafkaconfig.Role{Client: kafkaconfig.Client{Brokers: []string{"b:9092"}}},
			Merges: map[schemas.Route]Merge{"search": topk}}
	}
	// A Merge is a func, which reflect.DeepEqual never finds equal; %+v
	// prints its address.
	same := func(a, b Config) bool { return fmt.Sprintf("%+v", a) == fmt.Sprintf("%+v", b) }
	c := given()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !same(c, given()) {
		t.Fatalf("Validate changed the config: %+v", c)
	}
	a, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if !same(c, given()) {
		t.Fatalf("New changed the config: %+v", c)
	}
	a.cfg.Merges["other"] = topk
	if len(c.Merges) != 1 {
		t.Fatal("the aggregator shares its Merges map with the caller")
	}
	done, cancel := context.WithCancel(t.Context())
	cancel()
	if err := a.Run(done); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	if err := a.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "Run called twice") {
		t.Fatalf("second Run: %v, want an error", err)
	}
	c = c.setDefaults()
	if c.Group != "sg.aggregator" || c.Guarantee != kafkaconfig.ExactlyOnce || c.Tick != DefaultTick ||
		c.LateWindow != DefaultLateWindow || c.InstanceID == "" || c.Now == nil || c.Logger == nil || c.DefaultMerge == nil ||
		c.MaxOpenRequests != DefaultMaxOpenRequests || c.MaxPollRecords != DefaultMaxPollRecords {
		t.Errorf("defaults not filled in: %+v", c)
	}

	bad := Config{Role: kafkaconfig.Role{Guarantee: "maybe-once"}, Tick: -1, LateWindow: -time.Second, Merges: map[schemas.Route]Merge{"r": nil}}
	err = bad.Validate()
	for _, want := range []string{"brokers: none given", `guarantee "maybe-once"`, "tick: -1ns is negative", "late window: -1s is negative", `merges: route "r" has a nil merge`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v; want it to report %q", err, want)
		}
	}
	if _, err := New(bad); err == nil {
		t.Error("New accepted a bad config")
	}
}

// TestRun runs the aggregator against a broker: manifests and results are
// written with a plain client, replies and dead letters read back.
func TestRun(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			t.Parallel()
			testRun(t, g)
		})
	}
}

func testRun(t *testing.T, guarantee kafkaconfig.Guarantee) {
	c := testkafka.New(t)
	topics := kafkaconfig.Topics{Prefix: c.Prefix}
	results := c.CreateTopic(t, "results", 2, nil)
	c.CreateTopic(t, "aggregator-state", 2, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")})
	c.CreateTopic(t, "replies", 1, nil)
	clientReplies := c.CreateTopic(t, "replies.client-1", 1, nil)
	c.CreateTopic(t, "dlq", 1, nil)

	agg, err := New(Config{
		Role: kafkaconfig.Role{
			Client:     kafkaconfig.Client{Brokers: c.Brokers},
			Topics:     topics,
			InstanceID: "test",
			Guarantee:  guarantee,
			Logger:     slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = agg.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if runErr != nil {
			t.Errorf("Run: %v", runErr)
		}
	})

	w := &writer{t: t, cl: c.Client(t, kgo.DefaultProduceTopic(results), kgo.RecordPartitioner(kgo.ManualPartitioner()))}
	s := &sink{
		t:       t,
		cl:      c.Client(t, kgo.ConsumeTopics(topics.Replies(), clientReplies, topics.DLQ()), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond)),
		dlq:     topics.DLQ(),
		replies: map[schemas.CorrelationID][]received{},
	}

	// Warm up: once both partitions answer, the group is joined and the
	// deadlines below run from a live aggregator.
	far := time.Now().Add(time.Minute)
	for p := range int32(2) {
		id := fmt.Sprintf("warm-%d", p)
		w.send(p, w.manifest(id, far, "", "a"), w.result(id, "a", schemas.ResultOK, "0", "", far))
	}
	s.until("warm-up replies", func() bool { return s.has("warm-0", "warm-1") })

	t0 := time.Now()
	far = t0.Add(30 * time.Second)
	missingDeadline := t0.Add(1500 * time.Millisecond)
	lostDeadline := t0.Add(200 * time.Millisecond)
	toClient := w.manifest("reply-to", far, "", "a")
	w.send(0,
		w.manifest("ok", far, "", "a", "b", "c"),
		w.result("ok", "c", schemas.ResultOK, `3`, "", far),
		w.result("ok", "a", schemas.ResultOK, `{"n": 1}`, "", far),
		w.result("ok", "b", schemas.ResultOK, `"two"`, "", far),

		w.manifest("dup", far, "", "a", "b"),
		w.result("dup", "a", schemas.ResultOK, `"first"`, "", far),
		w.result("dup", "a", schemas.ResultOK, `"second"`, "", far),
		w.result("dup", "b", schemas.ResultOK, `"b"`, "", far),

		w.manifest("err", far, "", "a", "b", "c"),
		w.result("err", "a", schemas.ResultOK, `1`, "", far),
		w.result("err", "b", schemas.ResultError, "", "boom", far),
		w.result("err", "c", schemas.ResultExpired, "", "deadline passed before processing", far),

		w.manifest("allerr", far, "", "a", "b"),
		w.result("allerr", "a", schemas.ResultError, "", "x", far),
		w.result("allerr", "b", schemas.ResultError, "", "y", far),

		w.result("orphan", "a", schemas.ResultOK, `"held"`, "", far),
		w.manifest("orphan", far, "", "a", "b"),
		w.result("orphan", "b", schemas.ResultOK, `"b"`, "", far),

		w.result("lost", "a", schemas.ResultOK, `1`, "", lostDeadline),
		&kgo.Record{Key: []byte("junk"), Value: []byte("hello")},

		w.manifest("unknown", far, "", "a"),
		w.result("unknown", "z", schemas.ResultOK, `1`, "", far),
		w.result("unknown", "a", schemas.ResultOK, `1`, "", far),

		w.with(toClient, func(m *schemas.Manifest) { m.ReplyTo = clientReplies }),
		w.result("reply-to", "a", schemas.ResultOK, `1`, "", far),
	)
	// Partition 1 gets nothing after this until the reply: the deadline
	// must fire on an idle partition.
	w.send(1,
		w.manifest("missing", missingDeadline, "", "a", "b", "c"),
		w.result("missing", "a", schemas.ResultOK, `1`, "", far),
		w.result("missing", "b", schemas.ResultOK, `2`, "", far),
	)

	phase1 := []schemas.CorrelationID{"ok", "dup", "err", "allerr", "orphan", "unknown", "reply-to", "missing"}
	s.until("phase 1 replies and dead letters", func() bool { return s.has(phase1...) && len(s.dead) >= 3 })

	check := func(id schemas.CorrelationID, status schemas.ReplyStatus, payload, errText string, ms ...marker) received {
		t.Helper()
		got := s.replies[id][0]
		r := got.reply
		if r.Status != status || string(r.Payload) != payload || r.Error != errText || !slices.Equal(markers(r), ms) {
			t.Errorf("reply %s:\n got  %s %s %q %v\n want %s %s %q %v", id, r.Status, r.Payload, r.Error, markers(r), status, payload, errText, ms)
		}
		return got
	}
	check("ok", schemas.ReplyComplete, `[{"n":1},"two",3]`, "", marker{"a", "OK", ""}, marker{"b", "OK", ""}, marker{"c", "OK", ""})
	check("dup", schemas.ReplyComplete, `["first","b"]`, "", marker{"a", "OK", ""}, marker{"b", "OK", ""})
	check("err", schemas.ReplyPartial, `[1]`, "2 of 3 parts not OK: b ERROR (boom), c EXPIRED (deadline passed before processing)",
		marker{"a", "OK", ""}, marker{"b", "ERROR", "boom"}, marker{"c", "EXPIRED", "deadline passed before processing"})
	check("allerr", schemas.ReplyFailed, "", "2 of 2 parts not OK: a ERROR (x), b ERROR (y)", marker{"a", "ERROR", "x"}, marker{"b", "ERROR", "y"})
	check("orphan", schemas.ReplyComplete, `["held","b"]`, "", marker{"a", "OK", ""}, marker{"b", "OK", ""})
	check("unknown", schemas.ReplyComplete, `[1]`, "", marker{"a", "OK", ""})
	if got := check("reply-to", schemas.ReplyComplete, `[1]`, "", marker{"a", "OK", ""}); got.topic != clientReplies {
		t.Errorf("reply-to reply on %s, want %s", got.topic, clientReplies)
	}

	missing := check("missing", schemas.ReplyPartial, `[1,2]`, "1 of 3 parts not OK: c MISSING", marker{"a", "OK", ""}, marker{"b", "OK", ""}, marker{"c", "MISSING", ""})
	late := missing.reply.CompletedAt.Sub(missingDeadline.Truncate(time.Millisecond))
	t.Logf("missing part: replied %s after the deadline, received %s after it", late, missing.at.Sub(missingDeadline))
	if late < 0 || late > deadlineTolerance {
		t.Errorf("missing part: replied %s after the deadline, want within [0, %s]", late, deadlineTolerance)
	}
	if missing.at.Sub(missingDeadline) > 2*time.Second {
		t.Errorf("missing part: received %s after the deadline", missing.at.Sub(missingDeadline))
	}

	reasons := map[string]string{}
	for _, d := range s.dead {
		reasons[string(d.Key)] = kafka.Header(d, kafka.HeaderDLQReason)
		if kafka.Header(d, kafka.HeaderDLQRole) != "aggregator" || kafka.Header(d, kafka.HeaderDLQTopic) != results {
			t.Errorf("dead letter %s: headers %v", d.Key, d.Headers)
		}
	}
	if want := map[string]string{"lost": "orphan-result", "junk": "not-avro", "unknown": "unknown-part"}; !maps.Equal(reasons, want) {
		t.Errorf("dead letters by key: %v, want %v", reasons, want)
	}
	for i, d := range s.dead {
		// The record carries its deadline in milliseconds.
		if due := lostDeadline.Truncate(time.Millisecond).Add(orphanGrace); string(d.Key) == "lost" && s.deadAt[i].Before(due) {
			t.Errorf("orphan dead-lettered %s before its deadline plus grace", due.Sub(s.deadAt[i]))
		}
	}

	// Phase 2: late results and a second manifest for completed requests,
	// then a fence on each partition. Replies are on one partition in the
	// order they were produced, so once the fences' replies are read, a
	// second reply caused by the late records would have been read too.
	w.send(0,
		w.result("ok", "a", schemas.ResultOK, `"again"`, "", far),
		w.manifest("ok", far, "", "a", "b", "c"),
		w.manifest("fence-0", far, "", "a"),
		w.result("fence-0", "a", schemas.ResultOK, `0`, "", far),
	)
	w.send(1,
		w.result("missing", "c", schemas.ResultOK, `3`, "", far),
		w.manifest("fence-1", far, "", "a"),
		w.result("fence-1", "a", schemas.ResultOK, `0`, "", far),
	)
	s.until("fence replies", func() bool { return s.has("fence-0", "fence-1") })

	want := append(phase1, "warm-0", "warm-1", "fence-0", "fence-1")
	slices.Sort(want)
	if got := slices.Sorted(maps.Keys(s.replies)); !slices.Equal(got, want) {
		t.Errorf("replies for %v, want %v", got, want)
	}
	for id, rs := range s.replies {
		if len(rs) != 1 {
			t.Errorf("%d replies for %s, want exactly 1", len(rs), id)
		}
	}
	if len(s.dead) != 3 {
		t.Errorf("%d dead letters, want 3", len(s.dead))
	}

	wantStats := Stats{
		Manifests: 13, ResultsReceived: 25, Duplicates: 2, Late: 2, OrphansExpired: 1,
		RepliesComplete: 9, RepliesPartial: 2, RepliesFailed: 1, DeadLettered: 3, ChangelogRecords: -1,
	}
	// Counts are published when the batch's commit ends, which may be just
	// after its records are readable.
	// How many changelog records the batches wrote depends on how the
	// records fell into batches; that there were some is checked here, what
	// they say in state_test.go and changelog_test.go.
	stats := func() Stats {
		s := agg.Stats()
		if s.ChangelogRecords > 0 {
			s.ChangelogRecords = -1 // some
		}
		s.OpenPeak = 0 // depends on how the records fell into batches too
		return s
	}
	deadline := time.Now().Add(5 * time.Second)
	for stats() != wantStats && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := stats(); got != wantStats {
		t.Errorf("stats (changelog records: any but 0):\n got  %+v\n want %+v", agg.Stats(), wantStats)
	}
}

// writer produces manifests and results to chosen partitions of results.
type writer struct {
	t  *testing.T
	cl *kgo.Client
}

func (w *writer) manifest(id string, deadline time.Time, policy string, parts ...string) *kgo.Record {
	m := schemas.Manifest{CorrelationID: schemas.CorrelationID(id), Route: "r", Deadline: deadline, Policy: policy, SubmittedAt: time.Now()}
	for _, p := range parts {
		m.Parts = append(m.Parts, schemas.PartID(p))
	}
	if policy == "" {
		m.Policy = "all"
	}
	v, err := schemas.EncodeManifest(m)
	if err != nil {
		w.t.Fatal(err)
	}
	return &kgo.Record{Key: []byte(id), Value: v}
}

// with rewrites the manifest in rec.
func (w *writer) with(rec *kgo.Record, edit func(*schemas.Manifest)) *kgo.Record {
	m, err := schemas.DecodeManifest(rec.Value)
	if err != nil {
		w.t.Fatal(err)
	}
	edit(&m)
	if rec.Value, err = schemas.EncodeManifest(m); err != nil {
		w.t.Fatal(err)
	}
	return rec
}

func (w *writer) result(id, part string, status schemas.ResultStatus, payload, errText string, deadline time.Time) *kgo.Record {
	now := time.Now()
	v, err := schemas.EncodeResult(schemas.Result{
		CorrelationID: schemas.CorrelationID(id), PartID: schemas.PartID(part), Route: "r", Status: status,
		Payload: []byte(payload), Error: errText, ProcessorID: "test", Attempt: 1, Tries: 1,
		StartedAt: now, FinishedAt: now, Deadline: deadline,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return &kgo.Record{Key: []byte(id), Value: v}
}

func (w *writer) send(partition int32, recs ...*kgo.Record) {
	w.t.Helper()
	for _, r := range recs {
		r.Partition = partition
	}
	if err := w.cl.ProduceSync(w.t.Context(), recs...).FirstErr(); err != nil {
		w.t.Fatalf("produce: %v", err)
	}
}

type received struct {
	reply schemas.Reply
	topic string
	at    time.Time
}

// sink reads replies and dead letters.
type sink struct {
	t       *testing.T
	cl      *kgo.Client
	dlq     string
	replies map[schemas.CorrelationID][]received
	dead    []*kgo.Record
	deadAt  []time.Time
}

func (s *sink) has(ids ...schemas.CorrelationID) bool {
	for _, id := range ids {
		if len(s.replies[id]) == 0 {
			return false
		}
	}
	return true
}

// until reads until cond holds, failing the test after 20s.
func (s *sink) until(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("no %s after 20s; replies %v, %d dead letters", what, slices.Sorted(maps.Keys(s.replies)), len(s.dead))
		}
		ctx, cancel := context.WithTimeout(s.t.Context(), 100*time.Millisecond)
		fs := s.cl.PollFetches(ctx)
		cancel()
		now := time.Now()
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				s.t.Fatalf("fetch %s/%d: %v", topic, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			if r.Topic == s.dlq {
				s.dead = append(s.dead, r)
				s.deadAt = append(s.deadAt, now)
				return
			}
			reply, err := schemas.DecodeReply(r.Value)
			if err != nil {
				s.t.Fatalf("reply at %s/%d@%d: %v", r.Topic, r.Partition, r.Offset, err)
			}
			if string(r.Key) != string(reply.CorrelationID) || kafka.Header(r, headerType) != "reply" {
				s.t.Errorf("reply %s: key %q, headers %v", reply.CorrelationID, r.Key, r.Headers)
			}
			s.replies[reply.CorrelationID] = append(s.replies[reply.CorrelationID], received{reply: reply, topic: r.Topic, at: now})
		})
	}
}
