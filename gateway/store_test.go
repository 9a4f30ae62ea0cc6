package gateway

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func reply(id string) schemas.Reply {
	return schemas.Reply{CorrelationID: schemas.CorrelationID(id), Route: "r", Status: schemas.ReplyComplete, Payload: []byte(`[1]`)}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestStoreLifecycle(t *testing.T) {
	s := newStore(100, 1<<20, time.Minute)
	snap, err := s.submit("a", "r", t0, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if closed(snap.done) || snap.reply != nil {
		t.Fatal("a fresh submission has a reply")
	}
	if _, err := s.submit("a", "r", t0, t0); !errors.Is(err, errDuplicate) {
		t.Fatalf("second submit: %v", err)
	}
	// The tail reads our own request back: nothing changes.
	s.requested("a", "other", t0.Add(time.Hour), t0, t0, t0)
	if got, _ := s.get("a"); got.route != "r" || !got.submittedAt.Equal(t0) {
		t.Errorf("own submission overwritten: %+v", got)
	}
	s.replied(reply("a"), t0, t0)
	if !closed(snap.done) {
		t.Fatal("reply did not close done")
	}
	second := reply("a")
	second.Status = schemas.ReplyFailed
	s.replied(second, t0, t0)
	got, _ := s.get("a")
	if got.reply.Status != schemas.ReplyComplete || !strings.Contains(string(got.view), `"status":"COMPLETE"`) {
		t.Errorf("first reply did not win: %s", got.view)
	}
	s.forget("a") // replied: kept
	if _, ok := s.get("a"); !ok {
		t.Error("forget dropped a replied entry")
	}
	s.submit("b", "r", t0, t0)
	s.forget("b")
	if _, ok := s.get("b"); ok {
		t.Error("forget kept a pending entry")
	}

	// A reply seen before its request: the request fills in the rest.
	s.replied(reply("c"), t0, t0)
	s.requested("c", "r", t0, t0.Add(time.Second), t0, t0)
	if got, _ := s.get("c"); !got.submittedAt.Equal(t0) || !got.deadline.Equal(t0.Add(time.Second)) || got.reply == nil || !closed(got.done) {
		t.Errorf("reply-first entry: %+v", got)
	}
}

func TestStoreBounds(t *testing.T) {
	for _, tc := range []struct {
		name      string
		entries   int
		bytes     int64
		retention time.Duration
		add       int
		step      time.Duration // between records
		expireAt  time.Duration // expire(t0 + expireAt) after adding; 0: no
		wantKept  []string
		evicted   uint64
	}{
		{name: "count", entries: 3, bytes: 1 << 30, retention: time.Hour, add: 5, wantKept: []string{"id-2", "id-3", "id-4"}, evicted: 2},
		{name: "bytes", entries: 100, bytes: 2*(entryOverhead+4) + 100, retention: time.Hour, add: 4, wantKept: []string{"id-2", "id-3"}, evicted: 2},
		{name: "age", entries: 100, bytes: 1 << 30, retention: time.Minute, add: 4, step: 30 * time.Second, expireAt: 2 * time.Minute,
			wantKept: []string{"id-2", "id-3"}},
		{name: "too old to enter", entries: 100, bytes: 1 << 30, retention: time.Minute, add: 3, step: -time.Minute, wantKept: []string{"id-0", "id-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(tc.entries, tc.bytes, tc.retention)
			for i := range tc.add {
				at := t0.Add(time.Duration(i) * tc.step)
				now := t0.Add(max(time.Duration(i)*tc.step, 0))
				s.requested(schemas.CorrelationID(fmt.Sprintf("id-%d", i)), "r", at, at, at, now)
			}
			if tc.expireAt > 0 {
				s.expire(t0.Add(tc.expireAt))
			}
			var kept []string
			for i := range tc.add {
				id := fmt.Sprintf("id-%d", i)
				if _, ok := s.get(schemas.CorrelationID(id)); ok {
					kept = append(kept, id)
				}
			}
			if strings.Join(kept, ",") != strings.Join(tc.wantKept, ",") {
				t.Errorf("kept %v, want %v", kept, tc.wantKept)
			}
			n, b, ev := s.stats()
			if n != len(tc.wantKept) || ev != tc.evicted || b != int64(n)*(entryOverhead+4) {
				t.Errorf("stats %d entries, %d bytes, %d evicted", n, b, ev)
			}
		})
	}
}

// TestStoreQueueStaysBounded: a long run of inserts and evictions keeps
// the queue's backing array in proportion to the live entries.
func TestStoreQueueStaysBounded(t *testing.T) {
	s := newStore(10, 1<<30, time.Hour)
	for i := range 100_000 {
		id := schemas.CorrelationID(fmt.Sprint(i))
		s.submit(id, "r", t0, t0)
		if i%3 == 0 {
			s.forget(id)
		}
	}
	if n, _, _ := s.stats(); n < 5 || n > 10 {
		t.Errorf("%d entries, want at most 10 (and the recent ones kept)", n)
	}
	if len(s.queue)-s.head > 40 || cap(s.queue) > 1000 {
		t.Errorf("queue length %d (head %d), capacity %d", len(s.queue), s.head, cap(s.queue))
	}
}

func TestConfigValidate(t *testing.T) {
	good := scatterer.Route{Name: "echo", Mode: scatterer.Split, Fanout: 2}
	for _, tc := range []struct {
		name string
		cfg  Config
		errs []string
	}{
		{name: "defaults", cfg: Config{Client: kafkaconfig.Client{Brokers: []string{"b:1"}}, Routes: []scatterer.Route{good}}},
		{name: "everything wrong", cfg: Config{Routes: []scatterer.Route{good, good, {Name: "bad", Mode: "x"}},
			MaxWait: -1, ReplyRetention: -1, MaxBodyBytes: -1, MaxStreams: -1, ProduceTimeout: -1},
			errs: []string{"client: brokers", "routes: echo listed twice", `route bad: mode "x"`, "max wait: -1ns is negative",
				"reply retention: -1ns is negative", "max body bytes: -1 is negative", "max streams: -1 is negative", "produce timeout"}},
		{name: "no routes", cfg: Config{Client: kafkaconfig.Client{Brokers: []string{"b:1"}}}, errs: []string{"routes: none given"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.errs) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if tc.cfg.Addr != "" || tc.cfg.Routes[0].Timeout != 0 {
					t.Fatalf("Validate changed the config: %+v", tc.cfg)
				}
				c := tc.cfg.setDefaults()
				if c.Routes[0].Timeout == tc.cfg.Routes[0].Timeout {
					t.Fatal("setDefaults filled the caller's Routes")
				}
				if c.Addr != DefaultAddr || c.MaxWait != DefaultMaxWait || c.ReplyRetention != DefaultReplyRetention ||
					c.MaxBodyBytes != scatterer.DefaultMaxPayloadBytes || c.MaxStreams != DefaultMaxStreams ||
					c.Routes[0].MaxFanout != scatterer.DefaultMaxFanout || c.Routes[0].Timeout != scatterer.DefaultTimeout || c.Topics.Prefix != "sg." {
					t.Errorf("defaults not filled: %+v", c)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, want := range tc.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// TestPartitionOfMatchesTheProducer: an event stream reads the partition
// partitionOf names; it must be the one the pipeline's producers (built by
// internal/kafka) write a correlation id's records to.
func TestPartitionOfMatchesTheProducer(t *testing.T) {
	c := testkafka.New(t)
	topic := c.Prefix + "results"
	if _, err := kafkaconfig.EnsureTopics(t.Context(), c.Admin(t), []kafkaconfig.TopicSpec{{Name: topic, Partitions: 6, ReplicationFactor: -1}}); err != nil {
		t.Fatal(err)
	}
	cl, err := kafka.NewClient(kafkaconfig.Client{Brokers: c.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[int32]bool{}
	for i := range 60 {
		id := client.NewCorrelationID()
		if i%2 == 0 {
			id = schemas.CorrelationID(fmt.Sprintf("order-%d", i))
		}
		rec := &kgo.Record{Topic: topic, Key: []byte(id), Value: []byte("v")}
		if err := cl.ProduceSync(t.Context(), rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if want := partitionOf(id, 6); rec.Partition != want {
			t.Fatalf("%s went to partition %d, partitionOf says %d", id, rec.Partition, want)
		}
		seen[rec.Partition] = true
	}
	if len(seen) < 4 {
		t.Errorf("60 keys landed on only %d of 6 partitions", len(seen))
	}
}
