package schemas_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/hamba/avro/v2/pkg/crc64"
	"github.com/linkedin/goavro/v2"

	"github.com/scattergather/scattergather/schemas"
)

var stateT0 = time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC)

// stateCases are one entry of each kind, full and bare.
func stateCases() []struct {
	name string
	s    schemas.AggregationState
} {
	replay := schemas.CorrelationID("c-0")
	return []struct {
		name string
		s    schemas.AggregationState
	}{
		{"open", schemas.AggregationState{CorrelationID: "c-1", Entry: schemas.EntryOpen, Open: schemas.Manifest{
			CorrelationID: "c-1", Route: "search", Parts: []schemas.PartID{"shard-0", "shard-1", "ünï"},
			Deadline: stateT0.Add(time.Second), Policy: "quorum:2", SubmittedAt: stateT0, ReplyTo: "sg.replies.x",
			Headers: map[string]string{"b": "2", "a": "1", "trace": "00-abc"}, ReplayOf: &replay,
		}}},
		{"open with results", schemas.AggregationState{CorrelationID: "c-5", Entry: schemas.EntryOpen, Open: schemas.Manifest{
			CorrelationID: "c-5", Route: "search", Parts: []schemas.PartID{"shard-0", "shard-1"}, Deadline: stateT0.Add(time.Second), Policy: "all",
		}, Results: []schemas.PartState{
			{PartID: "shard-1", Status: schemas.ResultOK, Payload: []byte(`{"hits":[1,2]}`), ProcessorID: "p-7", Attempt: 2, ArrivedAt: stateT0},
			{PartID: "shard-0", Status: schemas.ResultError, Payload: []byte{}, Error: "boom", Attempt: 1, ArrivedAt: stateT0.Add(time.Millisecond)},
		}}},
		{"open bare", schemas.AggregationState{CorrelationID: "c-2", Entry: schemas.EntryOpen, Open: schemas.Manifest{
			CorrelationID: "c-2", Parts: []schemas.PartID{}, Deadline: stateT0,
		}}},
		{"part", schemas.AggregationState{CorrelationID: "c-1", Entry: schemas.EntryPart, Part: schemas.PartState{
			PartID: "shard-1", Status: schemas.ResultOK, Payload: []byte(`{"hits":[1,2]}`), ProcessorID: "p-7", Attempt: 2, ArrivedAt: stateT0,
		}}},
		{"part error", schemas.AggregationState{CorrelationID: "c-1", Entry: schemas.EntryPart, Part: schemas.PartState{
			PartID: "shard-0", Status: schemas.ResultExpired, Payload: []byte{}, Error: "deadline passed", Attempt: -1,
		}}},
		{"held", schemas.AggregationState{CorrelationID: "c-3", Entry: schemas.EntryHeld, Held: schemas.HeldRecord{
			Partition: 7, Offset: 1 << 40, Value: []byte{0xC3, 0x01, 9, 9}, ArrivedAt: stateT0,
			Headers: []schemas.RecordHeader{{Key: "sg-type", Value: []byte("result")}, {Key: "sg-type", Value: []byte{}}},
		}}},
		{"held bare", schemas.AggregationState{CorrelationID: "c-3", Entry: schemas.EntryHeld, Held: schemas.HeldRecord{Value: []byte{}}}},
		{"done", schemas.AggregationState{CorrelationID: "c-4", Entry: schemas.EntryDone, Done: schemas.DoneState{
			CompletedAt: stateT0, ForgetAt: stateT0.Add(5 * time.Minute),
		}}},
		{"done-list", schemas.AggregationState{Entry: schemas.EntryDone, Done: schemas.DoneState{
			CompletedAt: stateT0.Add(time.Second), ForgetAt: stateT0.Add(6 * time.Minute), Requests: []schemas.DoneRequest{
				{CorrelationID: "c-6", CompletedAt: stateT0, ForgetAt: stateT0.Add(5 * time.Minute)},
				{CorrelationID: "ünï", CompletedAt: stateT0.Add(time.Second), ForgetAt: stateT0.Add(6 * time.Minute)},
			},
		}}},
	}
}

// stateDecoded is s as it decodes: times in UTC to the microsecond, the
// zero time kept zero.
func stateDecoded(s schemas.AggregationState) schemas.AggregationState {
	us := func(t time.Time) time.Time { return time.UnixMicro(t.UnixMicro()).UTC() }
	s.Open.Deadline, s.Open.SubmittedAt = us(s.Open.Deadline), us(s.Open.SubmittedAt)
	s.Part.ArrivedAt, s.Held.ArrivedAt = us(s.Part.ArrivedAt), us(s.Held.ArrivedAt)
	s.Done.CompletedAt, s.Done.ForgetAt = us(s.Done.CompletedAt), us(s.Done.ForgetAt)
	s.Results = append([]schemas.PartState(nil), s.Results...)
	for i := range s.Results {
		s.Results[i].ArrivedAt = us(s.Results[i].ArrivedAt)
	}
	s.Done.Requests = append([]schemas.DoneRequest(nil), s.Done.Requests...)
	for i := range s.Done.Requests {
		q := &s.Done.Requests[i]
		q.CompletedAt, q.ForgetAt = us(q.CompletedAt), us(q.ForgetAt)
	}
	if s.Entry != schemas.EntryOpen {
		s.Open = schemas.Manifest{Deadline: s.Open.Deadline, SubmittedAt: s.Open.SubmittedAt}
	}
	if s.Entry != schemas.EntryPart {
		s.Part = schemas.PartState{ArrivedAt: s.Part.ArrivedAt}
	}
	if s.Entry != schemas.EntryHeld {
		s.Held = schemas.HeldRecord{ArrivedAt: s.Held.ArrivedAt}
	}
	return s
}

// normalTimes makes the times of a decoded state comparable with
// reflect.DeepEqual: the zero value wherever the entry has no such field.
func normalTimes(s schemas.AggregationState) schemas.AggregationState {
	z := func(t *time.Time) {
		if t.IsZero() {
			*t = time.Time{}
		}
	}
	z(&s.Open.Deadline)
	z(&s.Open.SubmittedAt)
	z(&s.Part.ArrivedAt)
	z(&s.Held.ArrivedAt)
	z(&s.Done.CompletedAt)
	z(&s.Done.ForgetAt)
	return s
}

func TestAggregationStateRoundTrip(t *testing.T) {
	for _, tc := range stateCases() {
		t.Run(tc.name, func(t *testing.T) {
			b, err := schemas.EncodeAggregationState(&tc.s)
			if err != nil {
				t.Fatal(err)
			}
			if k, err := schemas.KindOf(b); err != nil || k != schemas.KindAggregationState {
				t.Fatalf("KindOf = %q, %v", k, err)
			}
			got, err := schemas.DecodeAggregationState(b)
			if err != nil {
				t.Fatal(err)
			}
			if want := stateDecoded(tc.s); !reflect.DeepEqual(normalTimes(got), normalTimes(want)) {
				t.Fatalf("decode(encode(x)):\n got %+v\nwant %+v", got, want)
			}
			b2, err := schemas.EncodeAggregationState(&got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, b2) {
				t.Fatalf("encode(decode(encode(x))) differs:\n%x\n%x", b, b2)
			}
			for range 10 {
				if b3, _ := schemas.EncodeAggregationState(&tc.s); !bytes.Equal(b, b3) {
					t.Fatalf("encoding is not deterministic")
				}
			}
			// A decoded entry shares no memory with the record.
			for i := range b {
				b[i] ^= 0xff
			}
			if !reflect.DeepEqual(normalTimes(got), normalTimes(stateDecoded(tc.s))) {
				t.Fatal("the decoded entry changed with the record's bytes")
			}
		})
	}
}

// TestAggregationStateMatchesGoavro proves the hand-written codec against
// goavro and the .avsc: what we write, goavro reads as the same values, and
// what goavro writes, we read.
func TestAggregationStateMatchesGoavro(t *testing.T) {
	src, err := schemas.Schema(schemas.KindAggregationState)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := goavro.NewCodec(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range stateCases() {
		t.Run(tc.name, func(t *testing.T) {
			ours, err := schemas.EncodeAggregationState(&tc.s)
			if err != nil {
				t.Fatal(err)
			}
			native, rest, err := codec.NativeFromBinary(ours[10:])
			if err != nil || len(rest) != 0 {
				t.Fatalf("goavro cannot read our encoding: %v (%d bytes left)", err, len(rest))
			}
			want := goavroNative(stateDecoded(tc.s))
			if !reflect.DeepEqual(normalNative(native), normalNative(want)) {
				t.Fatalf("goavro reads\n %#v\nwant\n %#v", native, want)
			}
			theirs, err := codec.BinaryFromNative(append([]byte{}, ours[:10]...), want)
			if err != nil {
				t.Fatal(err)
			}
			got, err := schemas.DecodeAggregationState(theirs)
			if err != nil {
				t.Fatalf("we cannot read goavro's encoding: %v", err)
			}
			if !reflect.DeepEqual(normalTimes(got), normalTimes(stateDecoded(tc.s))) {
				t.Fatalf("goavro's encoding decodes to\n %+v\nwant\n %+v", got, stateDecoded(tc.s))
			}
			if len(tc.s.Open.Headers) < 2 && !bytes.Equal(theirs, ours) {
				// With one map entry or none there is one encoding.
				t.Fatalf("goavro's bytes differ from ours:\n%x\n%x", theirs, ours)
			}
		})
	}
}

// goavroNative is s in goavro's native form.
func goavroNative(s schemas.AggregationState) map[string]any {
	var entry any
	switch s.Entry {
	case schemas.EntryOpen:
		parts := make([]any, len(s.Open.Parts))
		for i, p := range s.Open.Parts {
			parts[i] = string(p)
		}
		headers := map[string]any{}
		for k, v := range s.Open.Headers {
			headers[k] = v
		}
		var replay any
		if s.Open.ReplayOf != nil {
			replay = goavro.Union("string", string(*s.Open.ReplayOf))
		}
		results := make([]any, len(s.Results))
		for i, p := range s.Results {
			results[i] = partNative(p)
		}
		entry = goavro.Union("io.scattergather.v1.StateOpen", map[string]any{
			"route": string(s.Open.Route), "parts": parts, "deadline": s.Open.Deadline, "policy": s.Open.Policy,
			"submitted_at": s.Open.SubmittedAt, "reply_to": s.Open.ReplyTo, "headers": headers, "replay_of": replay,
			"results": results,
		})
	case schemas.EntryPart:
		entry = goavro.Union("io.scattergather.v1.StatePart", partNative(s.Part))
	case schemas.EntryHeld:
		h := s.Held
		headers := make([]any, len(h.Headers))
		for i, hd := range h.Headers {
			headers[i] = map[string]any{"key": hd.Key, "value": hd.Value}
		}
		entry = goavro.Union("io.scattergather.v1.StateHeld", map[string]any{
			"partition": h.Partition, "offset": h.Offset, "value": h.Value, "headers": headers, "arrived_at": h.ArrivedAt,
		})
	case schemas.EntryDone:
		requests := make([]any, len(s.Done.Requests))
		for i, q := range s.Done.Requests {
			requests[i] = map[string]any{"correlation_id": string(q.CorrelationID), "completed_at": q.CompletedAt, "forget_at": q.ForgetAt}
		}
		entry = goavro.Union("io.scattergather.v1.StateDone", map[string]any{
			"completed_at": s.Done.CompletedAt, "forget_at": s.Done.ForgetAt, "requests": requests,
		})
	}
	return map[string]any{"correlation_id": string(s.CorrelationID), "entry": entry}
}

func partNative(p schemas.PartState) map[string]any {
	return map[string]any{
		"part_id": string(p.PartID), "status": string(p.Status), "payload": p.Payload, "error": p.Error,
		"processor_id": p.ProcessorID, "attempt": int32(p.Attempt), "arrived_at": p.ArrivedAt,
	}
}

// normalNative makes goavro's native form comparable: times as
// microseconds, and empty slices and maps alike.
func normalNative(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = normalNative(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = normalNative(x)
		}
		return out
	case time.Time:
		return v.UnixMicro()
	case []byte:
		return string(v)
	case int:
		return int64(v)
	case int32:
		return int64(v)
	}
	return v
}

func TestAggregationStateDecodeErrors(t *testing.T) {
	part := stateCases()[2].s
	good, err := schemas.EncodeAggregationState(&part)
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := schemas.EncodeManifest(schemas.Manifest{CorrelationID: "c", Parts: []schemas.PartID{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	header := good[:10]
	cases := []struct {
		name, reason string
		b            []byte
	}{
		{"not avro", "not-avro", []byte("hello")},
		{"another kind", "wrong-schema", manifest},
		{"trailing byte", "malformed", append(append([]byte{}, good...), 0)},
		{"union index 4", "malformed", append(append([]byte{}, header...), 2, 'c', 8)},
		{"union index -1", "malformed", append(append([]byte{}, header...), 2, 'c', 1)},
		{"enum index 3", "malformed", append(append([]byte{}, header...), 2, 'c', 2, 2, 'p', 6)},
		{"2^62 parts", "malformed", append(append([]byte{}, header...), 2, 'c', 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)},
		{"string longer than the record", "malformed", append(append([]byte{}, header...), 200, 1, 'c')},
		{"attempt beyond int", "malformed", append(append([]byte{}, header...), 2, 'c', 2, 0, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10, 0)},
	}
	for n := 10; n < len(good); n++ {
		cases = append(cases, struct {
			name, reason string
			b            []byte
		}{"truncated", "malformed", good[:n]})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := schemas.DecodeAggregationState(tc.b)
			var de *schemas.DecodeError
			if !errors.As(err, &de) || de.Reason != tc.reason || de.Kind != schemas.KindAggregationState {
				t.Fatalf("DecodeAggregationState(%x) = %v, want a %s DecodeError", tc.b, err, tc.reason)
			}
		})
	}
}

// TestAggregationStateDuplicateHeaderKey: an open entry whose headers map
// names a key twice is refused, as goavro and the pipeline records' decoders
// refuse it, rather than read with the last value.
func TestAggregationStateDuplicateHeaderKey(t *testing.T) {
	s := schemas.AggregationState{CorrelationID: "c", Entry: schemas.EntryOpen, Open: schemas.Manifest{
		CorrelationID: "c", Parts: []schemas.PartID{"p"}, Deadline: stateT0, Headers: map[string]string{"a": "1", "b": "2"},
	}}
	good, err := schemas.EncodeAggregationState(&s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := schemas.DecodeAggregationState(good); err != nil {
		t.Fatalf("the unpatched record: %v", err)
	}
	// The headers are written sorted: key "a", then key "b"; make the second "a".
	i := bytes.Index(good, []byte("\x02b\x022"))
	if i < 0 {
		t.Fatalf("no header b in %x", good)
	}
	bad := append([]byte{}, good...)
	bad[i+1] = 'a'
	_, err = schemas.DecodeAggregationState(bad)
	var de *schemas.DecodeError
	if !errors.As(err, &de) || de.Reason != "malformed" || !strings.Contains(err.Error(), `headers: duplicate key "a"`) {
		t.Fatalf("DecodeAggregationState(%x) = %v, want a malformed DecodeError naming the duplicate key", bad, err)
	}
	src, err := schemas.Schema(schemas.KindAggregationState)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := goavro.NewCodec(src)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := codec.NativeFromBinary(bad[10:]); err == nil {
		t.Fatal("goavro reads the duplicate key; the codecs should agree")
	}
}

var (
	farFuture = time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC)
	farPast   = time.Date(-300000, 1, 1, 0, 0, 0, 0, time.UTC)
	minMicro  = time.UnixMicro(math.MinInt64).UTC()
	maxMicro  = time.UnixMicro(math.MaxInt64).UTC()
)

func TestAggregationStateEncodeErrors(t *testing.T) {
	cases := []struct {
		name  string
		s     schemas.AggregationState
		field string // in the error
	}{
		{"no entry", schemas.AggregationState{CorrelationID: "c"}, "no such entry"},
		{"bad status", schemas.AggregationState{CorrelationID: "c", Entry: schemas.EntryPart, Part: schemas.PartState{Status: "MAYBE"}}, "part \"\""},
		{"attempt beyond int", schemas.AggregationState{CorrelationID: "c", Entry: schemas.EntryPart, Part: schemas.PartState{Status: schemas.ResultOK, Attempt: 1 << 40}}, "part \"\""},
		// Times timestamp-micros cannot hold must not be written wrapped
		// (year 300000 would restore as year -284555).
		{"deadline in year 300000", schemas.AggregationState{CorrelationID: "c", Entry: schemas.EntryOpen, Open: schemas.Manifest{Deadline: farFuture}}, ": deadline: "},
		{"submitted_at in year 300000", schemas.AggregationState{CorrelationID: "c", Entry: schemas.EntryOpen, Open: schemas.Manifest{SubmittedAt: farFuture}}, ": submitted_at: "},
		{"part arrived_at in year -300000", schemas.AggregationState{CorrelationID: "c", Entry: schemas.EntryPart, Part: schemas.PartState{Status: schemas.ResultOK, ArrivedAt: farPast}}, ": arrived_at: "},
		{"held arrived_at in year 300000", schemas.AggregationState{CorrelationID: "c", Entry: schemas.EntryHeld, Held: schemas.HeldRecord{ArrivedAt: farFuture}}, ": arrived_at: "},
		{"done completed_at in year 300000", schemas.AggregationState{CorrelationID: "c", Entry: schemas.EntryDone, Done: schemas.DoneState{CompletedAt: farFuture}}, ": completed_at: "},
		{"done forget_at one microsecond past the range", schemas.AggregationState{CorrelationID: "c", Entry: schemas.EntryDone, Done: schemas.DoneState{ForgetAt: maxMicro.Add(time.Microsecond)}}, ": forget_at: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("prefix")
			out, err := schemas.AppendAggregationState(dst, &tc.s)
			if err == nil {
				t.Fatal("encoded")
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %s", err, tc.field)
			}
			if string(out) != "prefix" {
				t.Fatalf("a failed append left %q", out)
			}
		})
	}
}

// TestAggregationStateTimeRange: the first and last microsecond that
// timestamp-micros holds encode and come back unchanged.
func TestAggregationStateTimeRange(t *testing.T) {
	for _, tm := range []time.Time{minMicro, maxMicro} {
		t.Run(tm.Format(time.RFC3339Nano), func(t *testing.T) {
			s := schemas.AggregationState{CorrelationID: "c", Entry: schemas.EntryDone, Done: schemas.DoneState{CompletedAt: tm, ForgetAt: tm}}
			b, err := schemas.EncodeAggregationState(&s)
			if err != nil {
				t.Fatal(err)
			}
			got, err := schemas.DecodeAggregationState(b)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Done.CompletedAt.Equal(tm) || !got.Done.ForgetAt.Equal(tm) {
				t.Fatalf("decoded %s and %s, want %s", got.Done.CompletedAt, got.Done.ForgetAt, tm)
			}
		})
	}
}

// TestAggregationStateAppendAllocs: the aggregator encodes an open entry,
// its results folded in, per batch in which the request changes, and a
// done-list per batch, into a reused buffer; that must not allocate, with
// a few manifest headers too.
func TestAggregationStateAppendAllocs(t *testing.T) {
	for _, i := range []int{0, 1, 3, 8} { // open (3 headers), with results, part (v2), done-list
		s := stateCases()[i].s
		buf := make([]byte, 0, 4096)
		allocs := testing.AllocsPerRun(100, func() {
			var err error
			if buf, err = schemas.AppendAggregationState(buf[:0], &s); err != nil {
				t.Fatal(err)
			}
			buf = schemas.AppendDoneListKey(buf, 7)
		})
		if allocs != 0 {
			t.Fatalf("%s: %.1f allocations per entry, want 0", stateCases()[i].name, allocs)
		}
	}
}

// TestStateKeysAreDistinct: ids and part ids with the separator bytes in
// them must not make two entries share a key.
func TestStateKeysAreDistinct(t *testing.T) {
	type entry struct {
		id     schemas.CorrelationID
		part   schemas.PartID
		offset int64
		held   bool
	}
	entries := []entry{
		{id: "a", part: "b"},
		{id: "a\x00pb", part: ""},
		{id: "a\x00p", part: "b"},
		{id: "a", part: "b\x00\x00\x00\x00\x00\x01"},
		{id: "a", part: "\x00\x00\x00\x00\x00\x00\x00\x01"},
		{id: "a", offset: 1, held: true},
		{id: "a\x00h", offset: 1, held: true},
		{id: "", part: "a"},
	}
	seen := map[string]entry{}
	for _, e := range entries {
		var k []byte
		if e.held {
			k = schemas.AppendHeldKey(nil, e.id, e.offset)
		} else {
			k = schemas.AppendPartKey(nil, e.id, e.part)
		}
		if !bytes.HasPrefix(k, []byte(e.id)) {
			t.Errorf("key %q does not start with the correlation id %q", k, e.id)
		}
		if other, dup := seen[string(k)]; dup {
			t.Errorf("%+v and %+v share the key %q", e, other, k)
		}
		seen[string(k)] = e
	}
}

func FuzzDecodeAggregationState(f *testing.F) {
	for _, tc := range stateCases() {
		b, err := schemas.EncodeAggregationState(&tc.s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := schemas.DecodeAggregationState(b)
		if err != nil {
			var de *schemas.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v (%T) is not a *DecodeError", err, err)
			}
			return
		}
		b2, err := schemas.EncodeAggregationState(&s)
		if err != nil {
			t.Fatalf("a decoded entry does not encode: %v", err)
		}
		s2, err := schemas.DecodeAggregationState(b2)
		if err != nil {
			t.Fatalf("a re-encoded entry does not decode: %v", err)
		}
		if !reflect.DeepEqual(normalTimes(s), normalTimes(s2)) {
			t.Fatalf("decode(encode(decode(b))) differs:\n%+v\n%+v", s, s2)
		}
	})
}

// TestAggregationStateReadsV2 reads entries written with release v2 of the
// schema (history/v2), under each of its fingerprints: an aggregator
// restores the changelog the previous build wrote. Their bodies lack the
// fields added since (StateOpen.results, StateDone.requests).
func TestAggregationStateReadsV2(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("history", "v2", "aggregation_state.avsc"))
	if err != nil {
		t.Fatal(err)
	}
	codec, err := goavro.NewCodec(string(src))
	if err != nil {
		t.Fatal(err)
	}
	hs, err := avro.ParseBytesWithCache(src, "", &avro.SchemaCache{})
	if err != nil {
		t.Fatal(err)
	}
	spec := crc64.SumWithByteOrder([]byte(specCanonical(t, hs)), crc64.LittleEndian)
	current, err := schemas.Fingerprint(schemas.KindAggregationState)
	if err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint64(spec[:]) == current {
		t.Fatal("v2 has the current fingerprint: the test would prove nothing")
	}
	for _, tc := range stateCases() {
		if len(tc.s.Results) > 0 || len(tc.s.Done.Requests) > 0 {
			continue // not in v2
		}
		native := goavroNative(stateDecoded(tc.s))
		for _, e := range native["entry"].(map[string]any) {
			m := e.(map[string]any)
			delete(m, "results")
			delete(m, "requests")
		}
		t.Run(tc.name, func(t *testing.T) {
			bySpec, err := codec.BinaryFromNative(append([]byte{0xC3, 0x01}, spec[:]...), native)
			if err != nil {
				t.Fatal(err)
			}
			byGoavro, err := codec.SingleFromNative(nil, native)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range [][]byte{bySpec, byGoavro} {
				got, err := schemas.DecodeAggregationState(b)
				if err != nil {
					t.Fatalf("a v2 entry (fingerprint %x) does not decode: %v", b[2:10], err)
				}
				if want := stateDecoded(tc.s); !reflect.DeepEqual(normalTimes(got), normalTimes(want)) {
					t.Fatalf("v2 entry decodes to\n %+v\nwant\n %+v", got, want)
				}
			}
		})
	}
}
