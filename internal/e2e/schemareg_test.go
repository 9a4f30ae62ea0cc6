package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/replay"
	"github.com/scattergather/scattergather/internal/schemareg"
	"github.com/scattergather/scattergather/internal/schemareg/registrytest"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

// TestSchemaRegistryWireFormat runs the pipeline in registry mode: every
// record on requests, tasks, results and replies is in the Confluent wire
// format with the id the registry gave its kind, requests complete, a
// request from a producer that does not use the registry (single-object)
// is still served, and a Confluent record with an id the registry did not
// registryPipeline starts an in-test schema registry and a pipeline in
// registry mode on it, with the split route echo of fan-out 2.
func registryPipeline(t *testing.T, opts ...registrytest.Option) (*testkafka.Cluster, *registrytest.Registry, *schemareg.Registry, *pipeline) {
	t.Helper()
	c := testkafka.New(t)
	reg := registrytest.New(t, opts...)
	r, err := schemareg.New(t.Context(), schemareg.Config{URL: reg.URL})
	if err != nil {
		t.Fatal(err)
	}
	p := startPipeline(t, c, stack.Config{
		Client:     kafkaconfig.Client{Hooks: r.Hooks()},
		Routes:     table(t, `{"routes":[{"name":"echo","mode":"split","fanout":2,"timeout":"30s"}]}`),
		Processors: []stack.ProcessorSpec{{Route: "echo", Handler: processor.Echo()}},
	})
	return c, reg, r, p
}

// list is dead-lettered with reason not-avro, its bytes unchanged.
func TestSchemaRegistryWireFormat(t *testing.T) {
	c, _, r, p := registryPipeline(t, registrytest.FirstID(7001))
	id := func(k schemas.Kind) uint32 {
		v, ok := r.ID(k)
		if !ok {
			t.Fatalf("no id for %s", k)
		}
		return uint32(v)
	}

	const n = 20
	pending := make([]*client.Pending, 0, n)
	for i := range n {
		pp, err := p.client.Submit(t.Context(), "echo", []byte(fmt.Sprintf(`"%d"`, i)), client.Options{Timeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, pp)
	}
	awaitEchoes(t, pending, 2)

	// A request written single-object by a producer without the registry,
	// and Confluent records whose schema id the registry never listed.
	raw := c.Client(t)
	now := time.Now()
	legacy, err := schemas.EncodeRequest(schemas.Request{CorrelationID: "legacy", Route: "echo", Payload: []byte(`"old"`),
		ReplyTo: p.topics.Replies(), SubmittedAt: now, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	unknownReq := append(binary.BigEndian.AppendUint32([]byte{0}, 6999), legacy[10:]...)
	res, err := schemas.EncodeResult(schemas.Result{CorrelationID: "x", PartID: "shard-0", Route: "echo", Status: schemas.ResultOK,
		Attempt: 1, Tries: 1, StartedAt: now, FinishedAt: now, Deadline: now.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	unknownRes := append(binary.BigEndian.AppendUint32([]byte{0}, 6998), res[10:]...)
	for _, rec := range []*kgo.Record{
		{Topic: p.topics.Requests(), Key: []byte("legacy"), Value: legacy},
		{Topic: p.topics.Requests(), Key: []byte("unknown"), Value: unknownReq},
		{Topic: p.topics.Results(), Key: []byte("x"), Value: unknownRes},
	} {
		if err := raw.ProduceSync(t.Context(), rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	// The bytes on each topic, read without the hooks.
	check := func(topic string, want int, kinds ...schemas.Kind) map[schemas.Kind]int {
		t.Helper()
		ids := map[uint32]schemas.Kind{}
		for _, k := range kinds {
			ids[id(k)] = k
		}
		seen := map[schemas.Kind]int{}
		for _, rec := range readAll(t, c, topic, want, 30*time.Second) {
			v := rec.Value
			if len(v) < 5 || v[0] != 0 {
				if topic == p.topics.Requests() && bytes.Equal(v, legacy) {
					continue
				}
				t.Errorf("%s: record %q starts % x, not the Confluent magic byte", topic, rec.Key, v[:min(len(v), 5)])
				continue
			}
			k, ok := ids[binary.BigEndian.Uint32(v[1:5])]
			if !ok {
				if bytes.Equal(v, unknownReq) || bytes.Equal(v, unknownRes) {
					continue
				}
				t.Errorf("%s: record %q has schema id %d, want one of %v", topic, rec.Key, binary.BigEndian.Uint32(v[1:5]), ids)
				continue
			}
			single, ok := r.FromConfluent(v)
			if got, err := schemas.KindOf(single); !ok || err != nil || got != k {
				t.Errorf("%s: record %q with the id of %s reads as %s, %v", topic, rec.Key, k, got, err)
			}
			seen[k]++
		}
		return seen
	}
	if got := check(p.topics.Requests(), n+2, schemas.KindRequest); got[schemas.KindRequest] != n {
		t.Errorf("requests: %d Confluent requests, want %d", got[schemas.KindRequest], n)
	}
	if got := check(p.topics.Tasks("echo"), 2*(n+1), schemas.KindTask); got[schemas.KindTask] != 2*(n+1) {
		t.Errorf("tasks: %d Confluent tasks, want %d", got[schemas.KindTask], 2*(n+1))
	}
	got := check(p.topics.Results(), 3*(n+1)+1, schemas.KindManifest, schemas.KindResult)
	if got[schemas.KindManifest] != n+1 || got[schemas.KindResult] != 2*(n+1) {
		t.Errorf("results: %v, want %d manifests and %d results", got, n+1, 2*(n+1))
	}
	// The request with an unknown schema id is keyed by its correlation
	// id: it is answered FAILED (unknown-schema).
	if got := check(p.topics.Replies(), n+2, schemas.KindReply); got[schemas.KindReply] != n+2 {
		t.Errorf("replies: %d Confluent replies, want %d (the legacy request's and the unknown one's included)", got[schemas.KindReply], n+2)
	}
	var legacyReplies []schemas.Reply
	for _, rec := range readAll(t, c, p.topics.Replies(), n+1, 30*time.Second) {
		single, _ := r.FromConfluent(rec.Value)
		reply, err := schemas.DecodeReply(single)
		if err != nil {
			t.Fatalf("decode reply %q: %v", rec.Key, err)
		}
		if reply.CorrelationID == "legacy" {
			legacyReplies = append(legacyReplies, reply)
		}
	}
	if len(legacyReplies) != 1 || legacyReplies[0].Status != schemas.ReplyComplete {
		t.Errorf("single-object request: replies %+v, want one COMPLETE", legacyReplies)
	}

	dlq := readAll(t, c, p.topics.DLQ(), 2, 30*time.Second)
	type dead struct{ role, reason string }
	want := map[string]dead{string(unknownReq): {"scatterer", "not-avro"}, string(unknownRes): {"aggregator", "not-avro"}}
	for _, rec := range dlq {
		w, ok := want[string(rec.Value)]
		if !ok {
			t.Errorf("unexpected dead letter %q: % x (%s)", rec.Key, rec.Value[:min(len(rec.Value), 10)], kafka.Header(rec, kafka.HeaderDLQError))
			continue
		}
		if g := (dead{kafka.Header(rec, kafka.HeaderDLQRole), kafka.Header(rec, kafka.HeaderDLQReason)}); g != w {
			t.Errorf("dead letter %q: %+v, want %+v", rec.Key, g, w)
		}
		delete(want, string(rec.Value))
	}
	if len(want) > 0 {
		t.Errorf("%d unknown-id records not dead-lettered with their bytes unchanged", len(want))
	}
}

// TestSchemaRegistryReplay replays, in place, requests recorded in registry
// mode: with the registry's hooks (replay --schema-registry) every original
// is decoded and replayed, and the replays are answered; without them the
// Confluent originals are skipped as undecodable.
func TestSchemaRegistryReplay(t *testing.T) {
	c, _, r, p := registryPipeline(t)
	const n = 10
	for i := range n {
		reply, err := p.client.Do(t.Context(), "echo", []byte(fmt.Sprintf(`"%d"`, i)), client.Options{Timeout: 30 * time.Second})
		if err != nil || reply.Status != schemas.ReplyComplete {
			t.Fatalf("request %d: %v %v", i, reply.Status, err)
		}
	}
	from, err := replay.ParseBound("earliest")
	if err != nil {
		t.Fatal(err)
	}
	run := func(cc kafkaconfig.Client) *replay.RunState {
		t.Helper()
		rp, err := replay.New(replay.Config{Client: cc, Source: p.topics, From: &from, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := rp.Run(t.Context()); err != nil {
			t.Fatal(err)
		}
		return rp.State()
	}
	plain := p.cc
	plain.Hooks = nil
	if st := run(plain); st.Submitted != 0 || st.Skipped[replay.SkipUndecodable] != n {
		t.Errorf("replay without the registry: submitted %d, skipped %v; want 0 and %d undecodable", st.Submitted, st.Skipped, n)
	}
	if st := run(p.cc); st.Submitted != n || st.Skipped[replay.SkipUndecodable] != 0 {
		t.Errorf("replay with the registry: submitted %d, skipped %v; want %d and none undecodable", st.Submitted, st.Skipped, n)
	}
	replayed := 0
	for _, rec := range readAll(t, c, p.topics.Replies(), 2*n, 30*time.Second) {
		single, ok := r.FromConfluent(rec.Value)
		if !ok {
			t.Errorf("reply %q not in the Confluent wire format: % x", rec.Key, rec.Value[:min(len(rec.Value), 5)])
			continue
		}
		reply, err := schemas.DecodeReply(single)
		if err != nil {
			t.Fatalf("decode reply %q: %v", rec.Key, err)
		}
		if strings.HasPrefix(string(reply.CorrelationID), "rp-") && reply.Status == schemas.ReplyComplete {
			replayed++
		}
	}
	if replayed != n {
		t.Errorf("%d replays answered COMPLETE, want %d", replayed, n)
	}
}

// TestSchemaRegistryLearnsLaterIDs: a request whose schema id was registered
// after the roles started (here the same schema in another text, as another
// library or an older release registers it) is looked up by id, read and
// answered, not dead-lettered.
func TestSchemaRegistryLearnsLaterIDs(t *testing.T) {
	c, reg, r, p := registryPipeline(t)
	subject, same, _ := registrytest.Variants(t, schemas.KindRequest)
	later := reg.Add(subject, same)
	req, err := schemas.EncodeRequest(schemas.Request{CorrelationID: "later", Route: "echo", Payload: []byte(`"x"`),
		ReplyTo: p.topics.Replies(), SubmittedAt: time.Now(), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	val := append(binary.BigEndian.AppendUint32([]byte{0}, uint32(later)), req[10:]...)
	if err := c.Client(t).ProduceSync(t.Context(), &kgo.Record{Topic: p.topics.Requests(), Key: []byte("later"), Value: val}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, c, p.topics.Replies(), 1, 30*time.Second)
	if len(recs) != 1 {
		t.Fatalf("%d replies, want 1 (dead letters: %d)", len(recs), len(readAll(t, c, p.topics.DLQ(), 1, time.Second)))
	}
	single, ok := r.FromConfluent(recs[0].Value)
	if !ok {
		t.Fatalf("reply % x not in the Confluent format", recs[0].Value[:min(len(recs[0].Value), 5)])
	}
	reply, err := schemas.DecodeReply(single)
	if err != nil {
		t.Fatal(err)
	}
	if reply.CorrelationID != "later" || reply.Status != schemas.ReplyComplete || string(reply.Payload) != `["x","x"]` {
		t.Errorf("reply %s %s %s, want later COMPLETE [\"x\",\"x\"]", reply.CorrelationID, reply.Status, reply.Payload)
	}
}
