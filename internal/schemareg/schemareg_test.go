package schemareg_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/schemareg"
	"github.com/scattergather/scattergather/internal/schemareg/registrytest"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/schemas"
)

func TestMain(m *testing.M) { testkafka.Main(m) }

const registerPattern = "POST /subjects/{subject}/versions"

func newRegistry(t *testing.T, reg *registrytest.Registry) *schemareg.Registry {
	t.Helper()
	r, err := schemareg.New(t.Context(), schemareg.Config{URL: reg.URL})
	if err != nil {
		t.Fatalf("schemareg.New: %v", err)
	}
	return r
}

func schemaText(t *testing.T, k schemas.Kind) string {
	t.Helper()
	src, err := schemas.Schema(k)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func encodeRequest(t *testing.T) []byte {
	t.Helper()
	b, err := schemas.EncodeRequest(schemas.Request{CorrelationID: "c-1", Route: "echo", Payload: []byte("hello"),
		ContentType: "text/plain", ReplyTo: "replies", SubmittedAt: time.UnixMilli(1_700_000_000_000)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewRegistersEveryKindUnderItsRecordName(t *testing.T) {
	reg := registrytest.New(t, registrytest.FirstID(100))
	r := newRegistry(t, reg)

	subjects := reg.Subjects()
	if len(subjects) != len(schemareg.Kinds) {
		t.Errorf("registry has subjects %v, want one per kind of %v", subjects, schemareg.Kinds)
	}
	seen := map[int]schemas.Kind{}
	for _, k := range schemareg.Kinds {
		subject, err := schemareg.Subject(schemaText(t, k))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(subject, "io.scattergather.v1.") {
			t.Errorf("%s: subject %q, want the record's full name", k, subject)
		}
		id, ok := r.ID(k)
		if !ok || id < 100 {
			t.Fatalf("%s: id %d, %v", k, id, ok)
		}
		if got := subjects[subject]; len(got) != 1 || got[0] != id {
			t.Errorf("%s: subject %s has ids %v, want [%d]", k, subject, got, id)
		}
		if other, dup := seen[id]; dup {
			t.Errorf("%s and %s share id %d", k, other, id)
		}
		seen[id] = k
	}
	if _, ok := r.ID(schemas.KindAggregationState); ok {
		t.Errorf("the aggregator's state changelog was registered; it must stay single-object")
	}

	// A restart registers again (the registry answers with the same ids)
	// and adds no version.
	before := reg.Calls(registerPattern)
	r2 := newRegistry(t, reg)
	for _, k := range schemareg.Kinds {
		a, _ := r.ID(k)
		b, _ := r2.ID(k)
		if a != b {
			t.Errorf("%s: id %d after restart, was %d", k, b, a)
		}
	}
	if got := reg.Calls(registerPattern) - before; got != len(schemareg.Kinds) {
		t.Errorf("restart made %d register calls, want %d", got, len(schemareg.Kinds))
	}
	for s, ids := range reg.Subjects() {
		if len(ids) != 1 {
			t.Errorf("subject %s has %d versions after restart", s, len(ids))
		}
	}
}

func TestHeaderSwap(t *testing.T) {
	reg := registrytest.New(t, registrytest.FirstID(0x01020304))
	r := newRegistry(t, reg)
	id, _ := r.ID(schemas.KindRequest)

	single := encodeRequest(t)
	keep := bytes.Clone(single)
	conf, ok := r.ToConfluent(single)
	if !ok {
		t.Fatal("ToConfluent did not rewrite a request")
	}
	if !bytes.Equal(single, keep) {
		t.Error("ToConfluent modified its input")
	}
	wantHead := binary.BigEndian.AppendUint32([]byte{0}, uint32(id))
	if !bytes.HasPrefix(conf, wantHead) {
		t.Errorf("Confluent record starts % x, want % x", conf[:5], wantHead)
	}
	if !bytes.Equal(conf[5:], single[10:]) {
		t.Error("Confluent body differs from the single-object body")
	}
	back, ok := r.FromConfluent(conf)
	if !ok || !bytes.Equal(back, single) {
		t.Fatalf("FromConfluent = % x, %v; want the original record", back, ok)
	}
	if _, err := schemas.DecodeRequest(back); err != nil {
		t.Errorf("decode round-tripped request: %v", err)
	}

	state, err := schemas.EncodeAggregationState(&schemas.AggregationState{Entry: schemas.EntryDone, CorrelationID: "c-1"})
	if err != nil {
		t.Fatal(err)
	}
	unknownID := binary.BigEndian.AppendUint32([]byte{0}, 999)
	unknownID = append(unknownID, single[10:]...)
	for _, tc := range []struct {
		name string
		to   bool // ToConfluent, else FromConfluent
		in   []byte
	}{
		{"state changelog stays single-object", true, state},
		{"unknown fingerprint", true, append([]byte{0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8}, single[10:]...)},
		{"already Confluent", true, conf},
		{"garbage", true, []byte("garbage")},
		{"nil", true, nil},
		{"unknown id", false, unknownID},
		{"single-object read as is", false, single},
		{"short", false, []byte{0, 0, 0}},
		{"garbage", false, []byte("garbage!")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := r.FromConfluent
			if tc.to {
				f = r.ToConfluent
			}
			got, ok := f(tc.in)
			if ok || !bytes.Equal(got, tc.in) {
				t.Errorf("rewrote % x to % x", tc.in, got)
			}
		})
	}
}

func TestEarlierVersionsMapWhenTheSchemaIsKnown(t *testing.T) {
	reg := registrytest.New(t)
	// Another producer registered the same schema in another text (compact
	// JSON, as a different library writes it): a different id, the same
	// schema. And a schema the schemas package does not know.
	subject, same, changed := registrytest.Variants(t, schemas.KindRequest)
	sameID, otherID := reg.Add(subject, same), reg.Add(subject, changed)

	r := newRegistry(t, reg)
	id, _ := r.ID(schemas.KindRequest)
	if id == sameID || id == otherID {
		t.Fatalf("our id %d collides with %d/%d", id, sameID, otherID)
	}
	body := encodeRequest(t)[10:]
	older := append(binary.BigEndian.AppendUint32([]byte{0}, uint32(sameID)), body...)
	got, ok := r.FromConfluent(older)
	if !ok {
		t.Fatal("a record of the equivalent earlier version was not mapped")
	}
	dec, err := schemas.DecodeRequest(got)
	if err != nil || dec.CorrelationID != "c-1" {
		t.Errorf("decode the earlier version's record: %+v, %v", dec, err)
	}
	unknown := append(binary.BigEndian.AppendUint32([]byte{0}, uint32(otherID)), body...)
	if _, ok := r.FromConfluent(unknown); ok {
		t.Error("a record of a schema the schemas package does not know was mapped")
	}
}

// TestIDsRegisteredAfterStartAreLookedUp: a schema registered after New (an
// older release's producer starting during a rolling upgrade) is looked up
// by id the first time a record carries it, and read if the schemas package
// knows it. An id that cannot be read is asked once, not for every record,
// and while the registry is down no id is asked.
func TestIDsRegisteredAfterStartAreLookedUp(t *testing.T) {
	const byID = "GET /schemas/ids/{id}"
	reg := registrytest.New(t)
	r := newRegistry(t, reg)
	subject, same, changed := registrytest.Variants(t, schemas.KindRequest)
	sameID, otherID := reg.Add(subject, same), reg.Add(subject, changed)
	body := encodeRequest(t)[10:]
	confluent := func(id int) []byte { return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(id)), body...) }

	for range 3 {
		got, ok := r.FromConfluent(confluent(sameID))
		if !ok {
			t.Fatal("a record with an id registered after start was not read")
		}
		if dec, err := schemas.DecodeRequest(got); err != nil || dec.CorrelationID != "c-1" {
			t.Fatalf("decode: %+v, %v", dec, err)
		}
		if _, ok := r.FromConfluent(confluent(otherID)); ok {
			t.Fatal("a record of a schema the schemas package does not know was read")
		}
		if _, ok := r.FromConfluent(confluent(9999)); ok {
			t.Fatal("a record with an id the registry does not have was read")
		}
	}
	if n := reg.Calls(byID); n != 3 {
		t.Errorf("%d lookups by id for 3 ids read 3 times each, want 3 (one per id)", n)
	}

	// A burst of records with garbage ids: at most MaxLookupsPerSecond
	// lookups (the burst takes far less than a second here), counted
	// from a new second.
	time.Sleep(time.Second)
	before := reg.Calls(byID)
	for id := 30000; id < 30000+3*schemareg.MaxLookupsPerSecond; id++ {
		r.FromConfluent(confluent(id))
	}
	if n := reg.Calls(byID) - before; n != schemareg.MaxLookupsPerSecond {
		t.Errorf("%d lookups for %d garbage ids in a burst, want %d", n, 3*schemareg.MaxLookupsPerSecond, schemareg.MaxLookupsPerSecond)
	}
	time.Sleep(time.Second) // a new second of lookups

	// Down: one failed lookup, then none until RetryUnknownAfter.
	reg.SetDown(true)
	before = reg.Calls(byID)
	for id := 20000; id < 20010; id++ {
		if _, ok := r.FromConfluent(confluent(id)); ok {
			t.Fatalf("id %d read from a registry that is down", id)
		}
	}
	if n := reg.Calls(byID) - before; n != 1 {
		t.Errorf("%d lookups while the registry is down, want 1", n)
	}
	// The ids learned before are still read.
	if _, ok := r.FromConfluent(confluent(sameID)); !ok {
		t.Error("a learned id is not read while the registry is down")
	}
}

func TestNewErrors(t *testing.T) {
	reg := registrytest.New(t, registrytest.BasicAuth("sg", "secret"))
	for _, tc := range []struct {
		name string
		cfg  schemareg.Config
		want []string
	}{
		{"no url", schemareg.Config{}, []string{"url: none given"}},
		{"bad scheme", schemareg.Config{URL: "registry:8081"}, []string{`"registry:8081"`, "http://"}},
		{"password without user", schemareg.Config{URL: reg.URL, Password: "x"}, []string{"password given without a user"}},
		{"unreachable", schemareg.Config{URL: "http://127.0.0.1:1", Timeout: time.Second}, []string{"schema registry http://127.0.0.1:1", "register subject io.scattergather.v1.Request"}},
		{"no credentials", schemareg.Config{URL: reg.URL}, []string{"schema registry " + reg.URL, "401", "Unauthorized"}},
		{"wrong password", schemareg.Config{URL: reg.URL, User: "sg", Password: "wrong"}, []string{"401"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := schemareg.New(t.Context(), tc.cfg)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "wrong") && tc.name == "wrong password" {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
	t.Run("right credentials", func(t *testing.T) {
		if _, err := schemareg.New(t.Context(), schemareg.Config{URL: reg.URL, User: "sg", Password: "secret"}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := schemareg.New(ctx, schemareg.Config{URL: reg.URL, User: "sg", Password: "secret"})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want context.Canceled", err)
		}
	})
}

// TestHooksOnABroker produces through a client with the hooks and reads the
// topic with and without them: the bytes on the topic are Confluent, what a
// hooked consumer polls is single-object.
func TestHooksOnABroker(t *testing.T) {
	c := testkafka.New(t)
	topic := c.CreateTopic(t, c.Name("wire"), 1, nil)
	reg := registrytest.New(t)
	r := newRegistry(t, reg)
	id, _ := r.ID(schemas.KindRequest)

	single := encodeRequest(t)
	prod := c.Client(t, kgo.WithHooks(r.Hooks()...), kgo.DefaultProduceTopic(topic))
	rec := &kgo.Record{Value: single}
	if err := prod.ProduceSync(t.Context(), rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(single, encodeRequest(t)) {
		t.Error("the hook modified the producer's slice")
	}

	read := func(opts ...kgo.Opt) []byte {
		cl := c.Client(t, append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		defer cancel()
		for {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatal("no record within 15s")
			}
			if recs := fs.Records(); len(recs) > 0 {
				return recs[0].Value
			}
		}
	}
	raw := read()
	if want := binary.BigEndian.AppendUint32([]byte{0}, uint32(id)); !bytes.HasPrefix(raw, want) || !bytes.Equal(raw[5:], single[10:]) {
		t.Errorf("on the topic: % x, want % x then the body", raw, want)
	}
	if got := read(kgo.WithHooks(r.Hooks()...)); !bytes.Equal(got, single) {
		t.Errorf("polled through the hook: % x, want % x", got, single)
	}
}

// BenchmarkHeaderSwap is the cost the hooks add per record: one allocation
// and copy of the value each way.
func BenchmarkHeaderSwap(b *testing.B) {
	reg := registrytest.New(b)
	r, err := schemareg.New(b.Context(), schemareg.Config{URL: reg.URL})
	if err != nil {
		b.Fatal(err)
	}
	v, err := schemas.EncodeRequest(schemas.Request{CorrelationID: "c-1", Route: "echo", Payload: make([]byte, 1024), SubmittedAt: time.Now()})
	if err != nil {
		b.Fatal(err)
	}
	conf, _ := r.ToConfluent(v)
	b.Run("produce", func(b *testing.B) {
		b.SetBytes(int64(len(v)))
		for b.Loop() {
			r.ToConfluent(v)
		}
	})
	b.Run("fetch", func(b *testing.B) {
		b.SetBytes(int64(len(conf)))
		for b.Loop() {
			r.FromConfluent(conf)
		}
	})
}
