package scatterer_test

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

func TestMain(m *testing.M) { testkafka.Main(m) }

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func newScatterer(t *testing.T, brokers []string, prefix string) *scatterer.Scatterer {
	t.Helper()
	s, err := scatterer.New(scatterer.Config{
		Role: kafkaconfig.Role{
			Client: kafkaconfig.Client{Brokers: brokers},
			Topics: kafkaconfig.Topics{Prefix: prefix},
		},
		Routes: []scatterer.Route{
			{Name: "search", Mode: scatterer.Split, Fanout: 4, MaxFanout: 16, Timeout: 2 * time.Second, MaxTimeout: time.Minute},
			{Name: "quotes", Mode: scatterer.Broadcast, Recipients: []schemas.PartID{"acme", "globex"}},
			{Name: "items", Mode: scatterer.Split, Fanout: 1, Split: scatterer.JSONArray()},
		},
		MaxPayloadBytes: 1024,
		Now:             func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func intp(n int) *int { return &n }

func TestPlan(t *testing.T) {
	s := newScatterer(t, []string{"127.0.0.1:1"}, "sg.")
	req := func(route string, mod func(*schemas.Request)) schemas.Request {
		r := schemas.Request{CorrelationID: "c1", Route: schemas.Route(route), Payload: []byte(`{"q":1}`), SubmittedAt: now}
		if mod != nil {
			mod(&r)
		}
		return r
	}
	tests := []struct {
		name      string
		req       schemas.Request
		reason    string // rejection reason; empty for a good plan
		parts     []schemas.PartID
		tasks     int
		deadline  time.Duration
		taskParts []schemas.PartID
	}{
		{name: "split default fanout", req: req("search", nil), parts: []schemas.PartID{"shard-0", "shard-1", "shard-2", "shard-3"}, tasks: 4, deadline: 2 * time.Second},
		{name: "split asked fanout", req: req("search", func(r *schemas.Request) { r.Fanout = intp(2); r.Timeout = 5 * time.Second }),
			parts: []schemas.PartID{"shard-0", "shard-1"}, tasks: 2, deadline: 5 * time.Second},
		{name: "broadcast: one task, a part per recipient", req: req("quotes", nil), parts: []schemas.PartID{"acme", "globex"}, tasks: 1, deadline: scatterer.DefaultTimeout,
			taskParts: []schemas.PartID{""}},
		{name: "json array", req: req("items", func(r *schemas.Request) { r.Payload = []byte(`[1,{"a":2},"x"]`) }),
			parts: []schemas.PartID{"item-0", "item-1", "item-2"}, tasks: 3, deadline: scatterer.DefaultTimeout},
		{name: "unknown route", req: req("nope", nil), reason: "unknown-route"},
		{name: "fanout 0", req: req("search", func(r *schemas.Request) { r.Fanout = intp(0) }), reason: "invalid-fanout"},
		{name: "fanout above max", req: req("search", func(r *schemas.Request) { r.Fanout = intp(17) }), reason: "invalid-fanout"},
		{name: "broadcast fanout differs", req: req("quotes", func(r *schemas.Request) { r.Fanout = intp(5) }), reason: "invalid-fanout"},
		{name: "negative timeout", req: req("search", func(r *schemas.Request) { r.Timeout = -time.Second }), reason: "invalid-timeout"},
		{name: "timeout above max", req: req("search", func(r *schemas.Request) { r.Timeout = 2 * time.Minute }), reason: "invalid-timeout"},
		{name: "oversized payload", req: req("search", func(r *schemas.Request) { r.Payload = make([]byte, 1025) }), reason: "payload-too-large"},
		{name: "no correlation id", req: req("search", func(r *schemas.Request) { r.CorrelationID = "" }), reason: "no-correlation-id"},
		{name: "reply-to outside replies", req: req("search", func(r *schemas.Request) { r.ReplyTo = "sg.tasks.search" }), reason: "invalid-reply-to"},
		{name: "json array not an array", req: req("items", func(r *schemas.Request) { r.Payload = []byte(`{}`) }), reason: "split-failed"},
		{name: "json array empty", req: req("items", func(r *schemas.Request) { r.Payload = []byte(`[]`) }), reason: "invalid-fanout"},
		{name: "submitted at the clock-skew limit", req: req("search", func(r *schemas.Request) { r.SubmittedAt = now.Add(scatterer.MaxClockSkew) }),
			parts: []schemas.PartID{"shard-0", "shard-1", "shard-2", "shard-3"}, tasks: 4, deadline: scatterer.MaxClockSkew + 2*time.Second},
		{name: "submitted beyond the clock-skew limit", req: req("search", func(r *schemas.Request) { r.SubmittedAt = now.Add(scatterer.MaxClockSkew + time.Millisecond) }),
			reason: "invalid-submitted-at"},
		{name: "submitted in year 300000", req: req("search", func(r *schemas.Request) { r.SubmittedAt = time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC) }),
			reason: "invalid-submitted-at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, rej := s.Plan(tt.req)
			if tt.reason != "" {
				if rej == nil || rej.Reason != tt.reason {
					t.Fatalf("rejection %v, want reason %s", rej, tt.reason)
				}
				return
			}
			if rej != nil {
				t.Fatalf("rejected: %v", rej)
			}
			if !slices.Equal(p.Manifest.Parts, tt.parts) {
				t.Errorf("manifest parts %v, want %v", p.Manifest.Parts, tt.parts)
			}
			if len(p.Tasks) != tt.tasks {
				t.Fatalf("%d tasks, want %d", len(p.Tasks), tt.tasks)
			}
			if want := now.Add(tt.deadline); !p.Manifest.Deadline.Equal(want) {
				t.Errorf("deadline %s, want %s", p.Manifest.Deadline, want)
			}
			for i, task := range p.Tasks {
				if !task.Deadline.Equal(p.Manifest.Deadline) || task.CorrelationID != "c1" || task.Attempt != 1 {
					t.Errorf("task %d: %+v", i, task)
				}
				if task.PartCount != len(tt.parts) {
					t.Errorf("task %d: part count %d, want %d", i, task.PartCount, len(tt.parts))
				}
				if tt.taskParts != nil && task.PartID != tt.taskParts[i] {
					t.Errorf("task %d: part %q, want %q", i, task.PartID, tt.taskParts[i])
				}
			}
		})
	}
}

func TestRouteValidate(t *testing.T) {
	bad := []scatterer.Route{
		{Name: "x", Mode: "fan"},
		{Name: "", Mode: scatterer.Split, Fanout: 1},
		{Name: "a b", Mode: scatterer.Split, Fanout: 1},
		{Name: "x", Mode: scatterer.Split, Fanout: 0},
		{Name: "x", Mode: scatterer.Broadcast},
		{Name: "x", Mode: scatterer.Broadcast, Recipients: []schemas.PartID{"a", "a"}},
		{Name: "x", Mode: scatterer.Split, Fanout: 10, MaxFanout: 5},
		{Name: "x", Mode: scatterer.Split, Fanout: 1, Timeout: time.Hour, MaxTimeout: time.Minute},
		{Name: "x", Mode: scatterer.Split, Fanout: 2, Policy: "quorum:3"},
		{Name: "x", Mode: scatterer.Split, Fanout: 2, Policy: "most"},
		{Name: "x", Mode: scatterer.Split, Fanout: 2, Hedge: &scatterer.Hedge{}},
		{Name: "x", Mode: scatterer.Split, Fanout: 2, Hedge: &scatterer.Hedge{Delay: -time.Second}},
		{Name: "x", Mode: scatterer.Split, Fanout: 2, Hedge: &scatterer.Hedge{Percentile: 100}},
		{Name: "x", Mode: scatterer.Split, Fanout: 2, Hedge: &scatterer.Hedge{Delay: time.Millisecond, Budget: 1.5}},
		{Name: "x", Mode: scatterer.Broadcast, Recipients: []schemas.PartID{"a"}, Hedge: &scatterer.Hedge{Delay: time.Millisecond}},
	}
	for _, r := range bad {
		if err := r.Validate(); err == nil {
			t.Errorf("%+v: accepted", r)
		}
	}
	good := scatterer.Route{Name: "ok", Mode: scatterer.Split, Fanout: 2, Policy: "quorum:2"}
	if err := good.Validate(); err != nil {
		t.Errorf("good route: %v", err)
	}
	_, err := scatterer.New(scatterer.Config{
		Role: kafkaconfig.Role{
			Client: kafkaconfig.Client{Brokers: []string{"x:1"}},
		},
		Routes: []scatterer.Route{
			{Name: "dup", Mode: scatterer.Split, Fanout: 1}, {Name: "dup", Mode: scatterer.Split, Fanout: 1}},
	})
	if err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate routes: %v", err)
	}
}

// TestNewLeavesConfigAlone: New fills the defaults of its own copy; the
// caller's Routes keep their zero Timeout and Policy, and Validate changes
// nothing either. New once rewrote the caller's slice (Timeout 0s to 5s,
// Policy "" to "all").
func TestNewLeavesConfigAlone(t *testing.T) {
	given := func() scatterer.Config {
		return scatterer.Config{
			Role:   kafkaconfig.Role{Client: kafkaconfig.Client{Brokers: []string{"x:1"}}},
			Routes: []scatterer.Route{{Name: "search", Mode: scatterer.Split, Fanout: 2, Hedge: &scatterer.Hedge{Delay: time.Second}}},
		}
	}
	cfg := given()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, given()) {
		t.Fatalf("Validate changed the config: %+v", cfg)
	}
	s, err := scatterer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, given()) {
		t.Fatalf("New changed the config: routes %+v, hedge %+v", cfg.Routes, *cfg.Routes[0].Hedge)
	}
	if err := s.Run(canceled(t)); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	if err := s.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "Run called twice") {
		t.Fatalf("second Run: %v, want an error", err)
	}
}

// canceled returns a context that is already done.
func canceled(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	return ctx
}

// TestScatterOnBroker: good requests become tasks and a manifest; bad ones
// go to the DLQ with their reason, and those with a correlation id are
// answered FAILED; the scatterer keeps going after them.
func TestScatterOnBroker(t *testing.T) {
	c := testkafka.New(t)
	topics := kafkaconfig.Topics{Prefix: c.Prefix}
	if _, err := kafkaconfig.EnsureTopics(t.Context(), c.Admin(t), topics.Specs(kafkaconfig.Layout{Partitions: 2, ResultPartitions: 2, ReplicationFactor: -1}, []string{"search", "quotes", "items"})); err != nil {
		t.Fatal(err)
	}
	s := newScatterer(t, c.Brokers, c.Prefix)
	prod := c.Client(t, kgo.DefaultProduceTopic(topics.Requests()))
	enc := func(r schemas.Request) []byte {
		b, err := schemas.EncodeRequest(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// The scatterer's clock is now.
	good := schemas.Request{CorrelationID: "good-1", Route: "search", Payload: []byte(`{}`), SubmittedAt: now}
	unknown := schemas.Request{CorrelationID: "bad-route", Route: "nope", Payload: []byte(`{}`), SubmittedAt: now}
	future := schemas.Request{CorrelationID: "future", Route: "search", Payload: []byte(`{}`), SubmittedAt: time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC)}
	good2 := schemas.Request{CorrelationID: "good-2", Route: "quotes", Payload: []byte(`{}`), SubmittedAt: now}
	// The undecodable record is keyed by a correlation id, as the client
	// and the gateway key requests: its caller gets a FAILED reply too.
	for _, v := range [][]byte{enc(good), []byte("garbage"), enc(unknown), enc(future), enc(good2)} {
		key := "k"
		if string(v) == "garbage" {
			key = "garbled"
		}
		if err := prod.ProduceSync(t.Context(), &kgo.Record{Key: []byte(key), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(t.Context())
	go func() { done <- s.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	tasks := read(t, c, topics.Tasks("search"), 4)
	if len(tasks) != 4 {
		t.Fatalf("%d search tasks, want 4", len(tasks))
	}
	for _, r := range tasks {
		task, err := schemas.DecodeTask(r.Value)
		if err != nil || string(r.Key) != string(task.PartID) || task.CorrelationID != "good-1" {
			t.Errorf("task %+v key %q err %v: want keyed by its shard", task, r.Key, err)
		}
		if h := kafka.Header(r, scatterer.HeaderRecipients); h != "" {
			t.Errorf("split task has %s %q", scatterer.HeaderRecipients, h)
		}
	}
	qt := read(t, c, topics.Tasks("quotes"), 1)
	if len(qt) != 1 {
		t.Fatalf("%d quote tasks, want 1 broadcast task", len(qt))
	}
	// The processors check their recipient against it.
	if h := kafka.Header(qt[0], scatterer.HeaderRecipients); h != "acme,globex" {
		t.Errorf("broadcast task's %s %q, want acme,globex", scatterer.HeaderRecipients, h)
	}
	results := read(t, c, topics.Results(), 2)
	var manifests []string
	for _, r := range results {
		mf, err := schemas.DecodeManifest(r.Value)
		if err != nil {
			t.Fatalf("results record: %v", err)
		}
		manifests = append(manifests, string(mf.CorrelationID))
	}
	slices.Sort(manifests)
	if !slices.Equal(manifests, []string{"good-1", "good-2"}) {
		t.Errorf("manifests for %v, want good-1 and good-2", manifests)
	}
	dlq := read(t, c, topics.DLQ(), 3)
	reasons := map[string]bool{}
	for _, r := range dlq {
		reasons[kafka.Header(r, kafka.HeaderDLQReason)] = true
		if kafka.Header(r, kafka.HeaderDLQTopic) != topics.Requests() || kafka.Header(r, kafka.HeaderDLQRole) != "scatterer" {
			t.Errorf("dead letter headers %v", r.Headers)
		}
	}
	if len(dlq) != 3 || !reasons["not-avro"] || !reasons["unknown-route"] || !reasons["invalid-submitted-at"] {
		t.Errorf("%d dead letters with reasons %v, want not-avro, unknown-route and invalid-submitted-at", len(dlq), reasons)
	}
	replies := read(t, c, topics.Replies(), 3)
	if len(replies) != 3 {
		t.Fatalf("%d replies, want 3 FAILED replies", len(replies))
	}
	wantReason := map[schemas.CorrelationID]string{"bad-route": "unknown-route", "future": "invalid-submitted-at", "garbled": "not-avro"}
	for _, r := range replies {
		reply, err := schemas.DecodeReply(r.Value)
		if err != nil || reply.Status != schemas.ReplyFailed || wantReason[reply.CorrelationID] == "" || !strings.Contains(reply.Error, wantReason[reply.CorrelationID]) {
			t.Fatalf("reply %+v (%v), want FAILED for bad-route, future or garbled naming its reason", reply, err)
		}
		delete(wantReason, reply.CorrelationID)
	}
	if st := s.Stats(); st.Requests != 2 || st.Tasks != 5 || st.Rejected != 3 || st.FailedReplies != 3 {
		t.Errorf("stats %+v", st)
	}
}

// TestHedgeTemplates: a hedged split route writes, after each manifest and
// on its partition, the request's task as a hedge template carrying the
// route's settings: one template without a part id when every part has the
// same payload, one per part when they differ. Routes without hedging
// write none.
func TestHedgeTemplates(t *testing.T) {
	c := testkafka.New(t)
	topics := kafkaconfig.Topics{Prefix: c.Prefix}
	if _, err := kafkaconfig.EnsureTopics(t.Context(), c.Admin(t), topics.Specs(kafkaconfig.Layout{Partitions: 2, ResultPartitions: 3, ReplicationFactor: -1}, []string{"shards", "items", "plain"})); err != nil {
		t.Fatal(err)
	}
	hedge := &scatterer.Hedge{Percentile: 95, Delay: 20 * time.Millisecond}
	s, err := scatterer.New(scatterer.Config{
		Role: kafkaconfig.Role{
			Client: kafkaconfig.Client{Brokers: c.Brokers},
			Topics: topics,
		},
		Routes: []scatterer.Route{
			{Name: "shards", Mode: scatterer.Split, Fanout: 3, Hedge: hedge},
			{Name: "items", Mode: scatterer.Split, Fanout: 1, Split: scatterer.JSONArray(), Hedge: hedge},
			{Name: "plain", Mode: scatterer.Split, Fanout: 2},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	prod := c.Client(t, kgo.DefaultProduceTopic(topics.Requests()))
	for _, r := range []schemas.Request{
		{CorrelationID: "s-1", Route: "shards", Payload: []byte(`{"q":1}`), SubmittedAt: time.Now()},
		{CorrelationID: "i-1", Route: "items", Payload: []byte(`[1,2]`), SubmittedAt: time.Now()},
		{CorrelationID: "p-1", Route: "plain", Payload: []byte(`{}`), SubmittedAt: time.Now()},
	} {
		v, err := schemas.EncodeRequest(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := prod.ProduceSync(t.Context(), &kgo.Record{Key: []byte(r.CorrelationID), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(t.Context())
	go func() { done <- s.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	// 3 manifests, 1 template for s-1, 2 for i-1.
	recs := read(t, c, topics.Results(), 6)
	type rec struct {
		kind   string
		part   schemas.PartID
		attemp int
		hedge  string
	}
	byID := map[string][]rec{}
	partition := map[string]int32{}
	for _, r := range recs {
		kind := kafka.Header(r, scatterer.HeaderType)
		got := rec{kind: kind, hedge: kafka.Header(r, scatterer.HeaderHedge)}
		if kind == scatterer.TypeHedgeTemplate {
			task, err := schemas.DecodeTask(r.Value)
			if err != nil {
				t.Fatalf("template: %v", err)
			}
			if string(r.Key) != string(task.CorrelationID) || string(task.Payload) == "" || task.PartCount == 0 || task.Attempt != 1 {
				t.Errorf("template %+v keyed %q", task, r.Key)
			}
			got.part, got.attemp = task.PartID, task.Attempt
		}
		if p, ok := partition[string(r.Key)]; ok && p != r.Partition {
			t.Errorf("records of %s on partitions %d and %d", r.Key, p, r.Partition)
		}
		partition[string(r.Key)] = r.Partition
		byID[string(r.Key)] = append(byID[string(r.Key)], got)
	}
	const spec = "delay=20ms;percentile=95;min-delay=10ms;min-samples=100;budget=0.05"
	want := map[string][]rec{
		"s-1": {{kind: "manifest"}, {kind: scatterer.TypeHedgeTemplate, part: "", attemp: 1, hedge: spec}},
		"i-1": {{kind: "manifest"}, {kind: scatterer.TypeHedgeTemplate, part: "item-0", attemp: 1, hedge: spec},
			{kind: scatterer.TypeHedgeTemplate, part: "item-1", attemp: 1, hedge: spec}},
		"p-1": {{kind: "manifest"}},
	}
	for id, w := range want {
		if !slices.Equal(byID[id], w) {
			t.Errorf("request %s wrote %+v to results, want %+v", id, byID[id], w)
		}
	}
}
