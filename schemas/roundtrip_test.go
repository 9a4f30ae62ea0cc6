package schemas_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/scattergather/scattergather/schemas"
)

type roundTripCase[T any] struct {
	name string
	in   T
}

// testRoundTrip checks, for every case, that decode(encode(in)) is in's
// decoded form, that encode(decode(encode(in))) gives the same bytes, and that
// encoding is deterministic (map entries are sorted, not in Go's random map
// order).
func testRoundTrip[T any](t *testing.T, cases []roundTripCase[T], enc func(T) ([]byte, error), dec func([]byte) (T, error), decoded func(T) T) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := enc(tc.in)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			got, err := dec(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if d := diff(decoded(tc.in), got); d != "" {
				t.Fatalf("decode(encode(x)) differs from x's decoded form:\n%s", d)
			}
			b2, err := enc(got)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			if !bytes.Equal(b, b2) {
				t.Fatalf("encode(decode(encode(x))) differs from encode(x):\n%x\n%x", b, b2)
			}
			// Go randomises map order on every range; ten encodings of
			// four headers agree only if the encoder sorts them.
			for range 10 {
				b3, err := enc(tc.in)
				if err != nil {
					t.Fatalf("encode again: %v", err)
				}
				if !bytes.Equal(b, b3) {
					t.Fatalf("encoding is not deterministic:\n%x\n%x", b, b3)
				}
			}
		})
	}
}

func TestRoundTripRequest(t *testing.T) {
	full := sampleRequest()
	bare := schemas.Request{CorrelationID: "c", Route: "r"}
	cases := []roundTripCase[schemas.Request]{
		{"typical unicode optionals set", full},
		{"zero value", schemas.Request{}},
		{"optionals unset", bare},
		{"fanout zero is set, not unset", schemas.Request{Fanout: ptr(0), ReplayOf: ptr(schemas.CorrelationID("")), ReplayRun: ptr("")}},
		{"fanout negative", schemas.Request{Fanout: ptr(-1)}},
		{"nil payload", with(full, func(r *schemas.Request) { r.Payload = nil })},
		{"empty payload", with(full, func(r *schemas.Request) { r.Payload = []byte{} })},
		{"1 MiB payload", with(full, func(r *schemas.Request) { r.Payload = payloadOf(1 << 20) })},
		{"nil headers", with(full, func(r *schemas.Request) { r.Headers = nil })},
		{"empty headers decode as nil", with(full, func(r *schemas.Request) { r.Headers = map[string]string{} })},
		{"one header", with(full, func(r *schemas.Request) { r.Headers = map[string]string{uni: ""} })},
		{"sub-millisecond timeout truncated", with(full, func(r *schemas.Request) { r.Timeout = 1500*time.Millisecond + 999*time.Microsecond })},
		{"negative timeout", with(full, func(r *schemas.Request) { r.Timeout = -time.Second })},
		{"time before 1970", with(full, func(r *schemas.Request) { r.SubmittedAt = beforeEpoch })},
		{"local time zone", with(full, func(r *schemas.Request) { r.SubmittedAt = at.In(time.FixedZone("CEST", 2*3600)) })},
	}
	testRoundTrip(t, cases, schemas.EncodeRequest, schemas.DecodeRequest, requestDecoded)
}

func TestRoundTripTask(t *testing.T) {
	full := sampleTask()
	cases := []roundTripCase[schemas.Task]{
		{"typical unicode", full},
		{"zero value", schemas.Task{}},
		{"broadcast task without part id", with(full, func(t *schemas.Task) { t.PartID = "" })},
		{"nil payload", with(full, func(t *schemas.Task) { t.Payload = nil })},
		{"empty payload", with(full, func(t *schemas.Task) { t.Payload = []byte{} })},
		{"1 MiB payload", with(full, func(t *schemas.Task) { t.Payload = payloadOf(1 << 20) })},
		{"nil headers", with(full, func(t *schemas.Task) { t.Headers = nil })},
		{"empty headers decode as nil", with(full, func(t *schemas.Task) { t.Headers = map[string]string{} })},
		{"time before 1970", with(full, func(t *schemas.Task) { t.Deadline = beforeEpoch })},
		{"largest part count", with(full, func(t *schemas.Task) { t.PartCount = 1<<31 - 1 })},
	}
	testRoundTrip(t, cases, schemas.EncodeTask, schemas.DecodeTask, taskDecoded)
}

func TestRoundTripManifest(t *testing.T) {
	full := sampleManifest()
	cases := []roundTripCase[schemas.Manifest]{
		{"typical unicode optionals set", full},
		{"zero value", schemas.Manifest{}},
		{"replay_of unset", with(full, func(m *schemas.Manifest) { m.ReplayOf = nil })},
		{"nil parts decode as empty", with(full, func(m *schemas.Manifest) { m.Parts = nil })},
		{"empty parts", with(full, func(m *schemas.Manifest) { m.Parts = []schemas.PartID{} })},
		{"1000 parts", with(full, func(m *schemas.Manifest) {
			m.Parts = make([]schemas.PartID, 1000)
			for i := range m.Parts {
				m.Parts[i] = schemas.PartID(uni + string(rune('a'+i%26)))
			}
		})},
		{"nil headers", with(full, func(m *schemas.Manifest) { m.Headers = nil })},
		{"empty headers decode as nil", with(full, func(m *schemas.Manifest) { m.Headers = map[string]string{} })},
		{"time before 1970", with(full, func(m *schemas.Manifest) { m.SubmittedAt = beforeEpoch })},
	}
	testRoundTrip(t, cases, schemas.EncodeManifest, schemas.DecodeManifest, manifestDecoded)
}

func TestRoundTripResult(t *testing.T) {
	full := sampleResult()
	cases := []roundTripCase[schemas.Result]{
		{"typical unicode", full},
		{"ok", with(full, func(r *schemas.Result) { r.Status = schemas.ResultOK; r.Error = "" })},
		{"expired", with(full, func(r *schemas.Result) { r.Status = schemas.ResultExpired })},
		{"nil payload", with(full, func(r *schemas.Result) { r.Payload = nil })},
		{"empty payload", with(full, func(r *schemas.Result) { r.Payload = []byte{} })},
		{"1 MiB payload", with(full, func(r *schemas.Result) { r.Payload = payloadOf(1 << 20) })},
		{"zero times", with(full, func(r *schemas.Result) { r.StartedAt, r.FinishedAt, r.Deadline = time.Time{}, time.Time{}, time.Time{} })},
		{"unix epoch", with(full, func(r *schemas.Result) { r.Deadline = time.Unix(0, 0) })},
		{"time before 1970", with(full, func(r *schemas.Result) { r.StartedAt = beforeEpoch })},
		{"far future", with(full, func(r *schemas.Result) { r.Deadline = time.Date(9999, 12, 31, 23, 59, 59, 999_000_000, time.UTC) })},
	}
	testRoundTrip(t, cases, schemas.EncodeResult, schemas.DecodeResult, resultDecoded)
}

func TestRoundTripReply(t *testing.T) {
	full := sampleReply()
	cases := []roundTripCase[schemas.Reply]{
		{"typical unicode optionals set", full},
		{"replay_of unset", with(full, func(r *schemas.Reply) { r.ReplayOf = nil })},
		{"complete", with(full, func(r *schemas.Reply) { r.Status = schemas.ReplyComplete; r.Error = "" })},
		{"failed without parts", schemas.Reply{Status: schemas.ReplyFailed, Error: "no route " + uni}},
		{"nil parts decode as empty", with(full, func(r *schemas.Reply) { r.Parts = nil })},
		{"every part status", with(full, func(r *schemas.Reply) {
			r.Parts = nil
			for _, s := range []schemas.PartStatus{schemas.PartOK, schemas.PartError, schemas.PartExpired, schemas.PartMissing, schemas.PartSkipped} {
				r.Parts = append(r.Parts, schemas.PartOutcome{PartID: schemas.PartID(s) + "-" + uni, Status: s, Latency: 1500*time.Microsecond + time.Hour})
			}
		})},
		{"nil payload", with(full, func(r *schemas.Reply) { r.Payload = nil })},
		{"empty payload", with(full, func(r *schemas.Reply) { r.Payload = []byte{} })},
		{"1 MiB payload", with(full, func(r *schemas.Reply) { r.Payload = payloadOf(1 << 20) })},
		{"time before 1970", with(full, func(r *schemas.Reply) { r.CompletedAt = beforeEpoch })},
	}
	testRoundTrip(t, cases, schemas.EncodeReply, schemas.DecodeReply, replyDecoded)
}

func with[T any](v T, change func(*T)) T {
	change(&v)
	return v
}

// TestDecodedPayloadIsACopy guards against goavro's habit of returning bytes
// fields as slices of the record: a payload must not change when the
// record's buffer is reused, nor pin it.
func TestDecodedPayloadIsACopy(t *testing.T) {
	for _, c := range codecs() {
		t.Run(string(c.kind), func(t *testing.T) {
			b := mustEncode(t, c, c.sample)
			v, err := c.decode(b)
			if err != nil {
				t.Fatal(err)
			}
			before := payloadField(v)
			if before == nil {
				return // a Manifest has no payload
			}
			want := bytes.Clone(before)
			for i := range b {
				b[i] = 0xAA
			}
			if !bytes.Equal(payloadField(v), want) {
				t.Fatalf("payload changed with the record's buffer: %q", payloadField(v))
			}
		})
	}
}

func payloadField(v any) []byte {
	switch v := v.(type) {
	case schemas.Request:
		return v.Payload
	case schemas.Task:
		return v.Payload
	case schemas.Result:
		return v.Payload
	case schemas.Reply:
		return v.Payload
	}
	return nil
}

func TestKindOf(t *testing.T) {
	for _, c := range codecs() {
		t.Run(string(c.kind), func(t *testing.T) {
			b := mustEncode(t, c, c.sample)
			k, err := schemas.KindOf(b)
			if err != nil || k != c.kind {
				t.Fatalf("KindOf = %q, %v; want %q", k, err, c.kind)
			}
			fp, err := schemas.Fingerprint(c.kind)
			if err != nil {
				t.Fatal(err)
			}
			seen := map[uint64]bool{fp: true}
			for _, other := range schemas.Kinds {
				ofp, _ := schemas.Fingerprint(other)
				if other != c.kind && seen[ofp] {
					t.Fatalf("%s and %s share fingerprint %016x", c.kind, other, ofp)
				}
			}
		})
	}
}

func TestEncodeRefusesValuesOutsideTheSchema(t *testing.T) {
	cases := []struct {
		name string
		enc  func() ([]byte, error)
	}{
		{"result status not in the enum", func() ([]byte, error) {
			return schemas.EncodeResult(with(sampleResult(), func(r *schemas.Result) { r.Status = "DONE" }))
		}},
		{"result status empty", func() ([]byte, error) { return schemas.EncodeResult(schemas.Result{}) }},
		{"reply status empty", func() ([]byte, error) { return schemas.EncodeReply(schemas.Reply{}) }},
		{"part status not in the enum", func() ([]byte, error) {
			return schemas.EncodeReply(with(sampleReply(), func(r *schemas.Reply) { r.Parts[0].Status = "LOST" }))
		}},
		{"part count beyond int32", func() ([]byte, error) {
			return schemas.EncodeTask(with(sampleTask(), func(t *schemas.Task) { t.PartCount = 1 << 31 }))
		}},
		{"fanout beyond int32", func() ([]byte, error) {
			return schemas.EncodeRequest(with(sampleRequest(), func(r *schemas.Request) { r.Fanout = ptr(-1<<31 - 1) }))
		}},
		{"attempt beyond int32", func() ([]byte, error) {
			return schemas.EncodeResult(with(sampleResult(), func(r *schemas.Result) { r.Attempt = 1 << 40 }))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := tc.enc(); err == nil {
				t.Fatalf("encoded %x, want an error", b)
			}
		})
	}
}
