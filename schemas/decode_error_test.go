package schemas_test

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/scattergather/scattergather/schemas"
)

// wantDecodeError fails unless err is a *DecodeError of kind k and reason,
// and unless errors.Is(err, ErrUnknownSchema) is as documented: true for
// "not-avro" and "unknown-schema", false otherwise.
func wantDecodeError(tb testing.TB, err error, k schemas.Kind, reason string) {
	tb.Helper()
	var de *schemas.DecodeError
	if !errors.As(err, &de) {
		tb.Fatalf("error %v (%T) is not a *DecodeError", err, err)
	}
	if de.Kind != k || de.Reason != reason {
		tb.Fatalf("DecodeError{Kind: %q, Reason: %q}, want {%q, %q}: %v", de.Kind, de.Reason, k, reason, err)
	}
	unknown := reason == "not-avro" || reason == "unknown-schema"
	if got := errors.Is(err, schemas.ErrUnknownSchema); got != unknown {
		tb.Fatalf("errors.Is(err, ErrUnknownSchema) = %t for reason %q: %v", got, reason, err)
	}
	if de.Error() == "" || de.Unwrap() == nil {
		tb.Fatalf("DecodeError without message or cause: %#v", de)
	}
}

func header(tb testing.TB, k schemas.Kind) []byte {
	tb.Helper()
	fp, err := schemas.Fingerprint(k)
	if err != nil {
		tb.Fatal(err)
	}
	return binary.LittleEndian.AppendUint64([]byte{0xC3, 0x01}, fp)
}

// zz appends v as an Avro long: zig-zag, then a varint.
func zz(b []byte, v int64) []byte {
	return binary.AppendUvarint(b, uint64(v<<1)^uint64(v>>63))
}

func TestDecodeGarbage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	cases := []struct {
		name   string
		b      []byte
		reason string
	}{
		{"nil", nil, "not-avro"},
		{"empty", []byte{}, "not-avro"},
		{"json", []byte(`{"correlation_id":"x"}`), "not-avro"},
		{"magic only", []byte{0xC3, 0x01}, "not-avro"},
		{"magic and 7 fingerprint bytes", []byte{0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7}, "not-avro"},
		{"wrong second magic byte", append([]byte{0xC3, 0x02}, make([]byte, 20)...), "not-avro"},
		{"confluent wire format", append([]byte{0x00, 0, 0, 0, 1}, make([]byte, 20)...), "not-avro"},
		{"random bytes", random, "not-avro"},
		{"magic then random bytes", append([]byte{0xC3, 0x01}, random...), "unknown-schema"},
	}
	for _, c := range codecs() {
		for _, tc := range cases {
			t.Run(string(c.kind)+"/"+tc.name, func(t *testing.T) {
				v, err := c.decode(tc.b)
				if err == nil {
					t.Fatalf("decoded %+v from garbage", v)
				}
				wantDecodeError(t, err, c.kind, tc.reason)
			})
		}
		t.Run(string(c.kind)+"/header then random bytes", func(t *testing.T) {
			for i := range 200 {
				b := append(header(t, c.kind), random[:i*20%len(random)]...)
				if v, err := c.decode(b); err == nil {
					// A random body may by chance be a valid record;
					// then it must survive a round trip.
					if _, err := c.encode(v); err != nil {
						t.Fatalf("decoded %+v that does not encode: %v", v, err)
					}
				} else {
					wantDecodeError(t, err, c.kind, "malformed")
				}
			}
		})
	}
}

func TestDecodeTruncated(t *testing.T) {
	for _, c := range codecs() {
		t.Run(string(c.kind), func(t *testing.T) {
			b := mustEncode(t, c, c.sample)
			for n := range len(b) {
				v, err := c.decode(b[:n:n])
				if err == nil {
					t.Fatalf("decoded %+v from the first %d of %d bytes", v, n, len(b))
				}
				reason := "malformed"
				if n < 10 {
					reason = "not-avro"
				}
				wantDecodeError(t, err, c.kind, reason)
			}
		})
	}
}

func TestDecodeTrailingBytes(t *testing.T) {
	for _, c := range codecs() {
		t.Run(string(c.kind), func(t *testing.T) {
			for _, tail := range [][]byte{{0}, {1, 2, 3}, mustEncode(t, c, c.sample)} {
				b := append(mustEncode(t, c, c.sample), tail...)
				v, err := c.decode(b)
				if err == nil {
					t.Fatalf("decoded %+v despite %d trailing bytes", v, len(tail))
				}
				wantDecodeError(t, err, c.kind, "malformed")
			}
		})
	}
}

func TestDecodeUnknownFingerprint(t *testing.T) {
	for _, c := range codecs() {
		t.Run(string(c.kind), func(t *testing.T) {
			b := mustEncode(t, c, c.sample)
			b[9] ^= 0x80 // the fingerprint's most significant byte
			_, err := c.decode(b)
			wantDecodeError(t, err, c.kind, "unknown-schema")

			k, err := schemas.KindOf(b)
			if k != "" {
				t.Fatalf("KindOf = %q for an unknown fingerprint", k)
			}
			wantDecodeError(t, err, "record", "unknown-schema")
		})
	}
}

func TestDecodeWrongSchema(t *testing.T) {
	all := codecs()
	for _, writer := range all {
		b := mustEncode(t, writer, writer.sample)
		for _, reader := range all {
			if reader.kind == writer.kind {
				continue
			}
			t.Run(string(writer.kind)+" read as "+string(reader.kind), func(t *testing.T) {
				v, err := reader.decode(b)
				if err == nil {
					t.Fatalf("decoded %+v", v)
				}
				wantDecodeError(t, err, reader.kind, "wrong-schema")
			})
		}
	}
}

func TestKindOfNotAvro(t *testing.T) {
	for _, b := range [][]byte{nil, {0xC3}, {0xC3, 0x01, 0, 0, 0, 0, 0, 0, 0}, []byte("plain text record")} {
		k, err := schemas.KindOf(b)
		if k != "" {
			t.Fatalf("KindOf(%q) = %q", b, k)
		}
		wantDecodeError(t, err, "record", "not-avro")
	}
}

// TestDecodeHostileBodies feeds records whose header is right and whose
// body lies: counts and lengths far beyond the record, indices out of range.
// goavro alone would allocate by such a count before reading the items (a
// manifest of 17 bytes announcing 2^31 parts is 32 GiB and a fatal out of
// memory); the decoder must refuse them at once and allocate little.
func TestDecodeHostileBodies(t *testing.T) {
	const huge = math.MaxInt32
	cases := []struct {
		name string
		kind schemas.Kind
		body func(b []byte) []byte
	}{
		{"manifest with 2^31 parts", schemas.KindManifest, func(b []byte) []byte {
			b = append(b, 0, 0) // correlation_id, route
			return zz(b, huge)
		}},
		{"manifest parts in a negative block with 2^31 items", schemas.KindManifest, func(b []byte) []byte {
			b = append(b, 0, 0)
			b = zz(b, -huge)
			return zz(b, 4)
		}},
		{"manifest parts block count MinInt64", schemas.KindManifest, func(b []byte) []byte {
			b = append(b, 0, 0)
			return zz(b, math.MinInt64)
		}},
		{"manifest parts block size beyond the record", schemas.KindManifest, func(b []byte) []byte {
			b = append(b, 0, 0)
			b = zz(b, -1)
			b = zz(b, 1<<40)
			return append(b, 0, 0)
		}},
		{"task headers map of 2^31 entries", schemas.KindTask, func(b []byte) []byte {
			b = append(b, 0, 0, 2, 0, 0, 0, 2, 2, 2) // ids, part_count, route, payload, content_type, deadline, attempt, submitted_at
			return zz(b, huge)
		}},
		{"reply with 2^31 parts", schemas.KindReply, func(b []byte) []byte {
			b = append(b, 0, 0, 0, 0, 0, 0) // ids, status, payload, content_type, error
			return zz(b, huge)
		}},
		{"request payload of 2^62 bytes", schemas.KindRequest, func(b []byte) []byte {
			b = append(b, 0, 0)
			return zz(b, 1<<62)
		}},
		{"request payload of negative length", schemas.KindRequest, func(b []byte) []byte {
			b = append(b, 0, 0)
			return zz(b, -5)
		}},
		{"result status beyond the enum", schemas.KindResult, func(b []byte) []byte {
			b = append(b, 0, 0, 0)
			return zz(b, 3)
		}},
		{"result status negative", schemas.KindResult, func(b []byte) []byte {
			b = append(b, 0, 0, 0)
			return zz(b, -1)
		}},
		{"request fanout union index 2", schemas.KindRequest, func(b []byte) []byte {
			b = append(b, 0, 0, 0, 0, 0) // ids, payload, content_type, timeout
			return zz(b, 2)
		}},
		{"request varint of 11 bytes", schemas.KindRequest, func(b []byte) []byte {
			b = append(b, 0, 0, 0, 0)
			return append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)
		}},
		{"task part_count beyond int32", schemas.KindTask, func(b []byte) []byte {
			b = append(b, 0, 0)
			return zz(b, 1<<32)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.body(header(t, tc.kind))
			c := codecFor(t, tc.kind)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			v, err := c.decode(b)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("decoded %+v", v)
			}
			wantDecodeError(t, err, tc.kind, "malformed")
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
				t.Fatalf("decoding %d hostile bytes allocated %d bytes", len(b), alloc)
			}
		})
	}
}

// TestDecodeValuesBeyondGo covers records that are valid Avro but hold a
// value the Go type cannot: a duration of more than 292 years wraps around
// in a time.Duration and must be refused, not silently changed.
func TestDecodeValuesBeyondGo(t *testing.T) {
	requestSrc, err := schemas.Schema(schemas.KindRequest)
	if err != nil {
		t.Fatal(err)
	}
	replySrc, err := schemas.Schema(schemas.KindReply)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		kind   schemas.Kind
		src    string
		native map[string]any
	}{
		{"request timeout_ms MaxInt64", schemas.KindRequest, requestSrc, map[string]any{
			"correlation_id": "c", "route": "r", "payload": []byte{}, "timeout_ms": int64(math.MaxInt64), "submitted_at": int64(0),
		}},
		{"request timeout_ms just past a Duration", schemas.KindRequest, requestSrc, map[string]any{
			"correlation_id": "c", "route": "r", "payload": []byte{}, "timeout_ms": int64(math.MaxInt64/int64(time.Millisecond) + 1), "submitted_at": int64(0),
		}},
		{"request timeout_ms MinInt64", schemas.KindRequest, requestSrc, map[string]any{
			"correlation_id": "c", "route": "r", "payload": []byte{}, "timeout_ms": int64(math.MinInt64), "submitted_at": int64(0),
		}},
		{"reply part latency_ms MaxInt64", schemas.KindReply, replySrc, map[string]any{
			"correlation_id": "c", "route": "r", "status": "FAILED", "submitted_at": int64(0), "completed_at": int64(0),
			"parts": []any{map[string]any{"part_id": "p", "status": "OK", "latency_ms": int64(math.MaxInt64)}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			codec, err := goavro.NewCodec(tc.src)
			if err != nil {
				t.Fatal(err)
			}
			b, err := codec.SingleFromNative(nil, tc.native)
			if err != nil {
				t.Fatal(err)
			}
			v, err := codecFor(t, tc.kind).decode(b)
			if err == nil {
				t.Fatalf("decoded %+v", v)
			}
			wantDecodeError(t, err, tc.kind, "malformed")
		})
	}
	t.Run("largest duration that fits", func(t *testing.T) {
		codec, err := goavro.NewCodec(requestSrc)
		if err != nil {
			t.Fatal(err)
		}
		b, err := codec.SingleFromNative(nil, map[string]any{
			"correlation_id": "c", "route": "r", "payload": []byte{}, "timeout_ms": math.MaxInt64 / int64(time.Millisecond), "submitted_at": int64(0),
		})
		if err != nil {
			t.Fatal(err)
		}
		r, err := schemas.DecodeRequest(b)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Timeout.Milliseconds(); got != math.MaxInt64/int64(time.Millisecond) {
			t.Fatalf("timeout %d ms", got)
		}
	})
}

func codecFor(tb testing.TB, k schemas.Kind) codec {
	tb.Helper()
	for _, c := range codecs() {
		if c.kind == k {
			return c
		}
	}
	tb.Fatalf("no codec for %s", k)
	return codec{}
}
