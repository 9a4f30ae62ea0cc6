package schemas_test

import (
	"bytes"
	"errors"
	"runtime/metrics"
	"slices"
	"strings"
	"testing"

	"github.com/scattergather/scattergather/schemas"
)

// The fuzz targets feed arbitrary bytes to each decoder. Any input must
// yield a value or a *DecodeError, never a panic; a value must re-encode,
// decode to the same value and re-encode to the same bytes. A panic inside
// goavro or the native mapping is recovered by the decoder (a poison record
// must not crash a role) but fails the fuzz target all the same, as a bug to
// understand. Crashers found live in testdata/fuzz/<target>/ and run with
// every go test.

var reasons = []string{"not-avro", "unknown-schema", "wrong-schema", "malformed"}

// fuzzSeeds are valid records of every kind, their truncations, and
// garbage.
func fuzzSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	var seeds [][]byte
	for _, c := range codecs() {
		b := mustEncode(tb, c, c.sample)
		seeds = append(seeds, b, b[:len(b)/2], b[:11], append(slices.Clone(b), 0))
	}
	zeroes := []any{schemas.Request{}, schemas.Task{}, schemas.Manifest{}, schemas.Result{Status: schemas.ResultOK}, schemas.Reply{Status: schemas.ReplyFailed}}
	for i, c := range codecs() {
		seeds = append(seeds, mustEncode(tb, c, zeroes[i]))
	}
	return append(seeds,
		nil,
		[]byte{0xC3, 0x01},
		[]byte("not avro at all"),
		bytes.Repeat([]byte{0xff}, 64),
		append([]byte{0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8}, bytes.Repeat([]byte{0x80}, 20)...),
	)
}

func fuzzDecoder[T any](f *testing.F, k schemas.Kind, enc func(T) ([]byte, error), dec func([]byte) (T, error)) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		before := heapAllocated()
		v, err := dec(b)
		if alloc := heapAllocated() - before; alloc > allocBound(len(b)) {
			t.Fatalf("decoding %d bytes allocated %d bytes", len(b), alloc)
		}
		if err != nil {
			var de *schemas.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v (%T) is not a *DecodeError", err, err)
			}
			if de.Kind != k || !slices.Contains(reasons, de.Reason) {
				t.Fatalf("DecodeError{Kind: %q, Reason: %q}", de.Kind, de.Reason)
			}
			if strings.Contains(err.Error(), "panicked") {
				t.Fatalf("the decoder recovered from a panic: %v", err)
			}
			return
		}
		if got, err := schemas.KindOf(b); err != nil || got != k {
			t.Fatalf("decoded as %s, KindOf = %q, %v", k, got, err)
		}
		b2, err := enc(v)
		if err != nil {
			t.Fatalf("a decoded %s does not encode: %v\n%+v", k, err, v)
		}
		v2, err := dec(b2)
		if err != nil {
			t.Fatalf("a re-encoded %s does not decode: %v", k, err)
		}
		if d := diff(v, v2); d != "" {
			t.Fatalf("decode(encode(decode(b))) differs from decode(b):\n%s", d)
		}
		b3, err := enc(v2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b2, b3) {
			t.Fatalf("re-encoding is not stable:\n%x\n%x", b2, b3)
		}
	})
}

// allocBound is the most a decoder may allocate for an n-byte record:
// goavro's native form costs a few dozen bytes for each byte of input (an
// any per array item, a map entry per header), never gigabytes for a count
// that the record cannot back. Bounding it catches the out-of-memory kind of
// poison record before it kills a role. The constant term absorbs the
// metric's lumps: small allocations are counted a span at a time, when a
// span is swapped out of a P's cache (all of them at a GC), so a few hundred
// kilobytes allocated earlier or by the fuzzing machinery can land in one
// measurement.
func allocBound(n int) uint64 { return 64*uint64(n) + 16<<20 }

// heapAllocated reads the bytes allocated so far. runtime/metrics does not
// stop the world, unlike runtime.ReadMemStats, so it is cheap enough for
// every fuzz input.
func heapAllocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func FuzzDecodeRequest(f *testing.F) {
	fuzzDecoder(f, schemas.KindRequest, schemas.EncodeRequest, schemas.DecodeRequest)
}

func FuzzDecodeTask(f *testing.F) {
	fuzzDecoder(f, schemas.KindTask, schemas.EncodeTask, schemas.DecodeTask)
}

func FuzzDecodeManifest(f *testing.F) {
	fuzzDecoder(f, schemas.KindManifest, schemas.EncodeManifest, schemas.DecodeManifest)
}

func FuzzDecodeResult(f *testing.F) {
	fuzzDecoder(f, schemas.KindResult, schemas.EncodeResult, schemas.DecodeResult)
}

func FuzzDecodeReply(f *testing.F) {
	fuzzDecoder(f, schemas.KindReply, schemas.EncodeReply, schemas.DecodeReply)
}

func FuzzKindOf(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := schemas.KindOf(b)
		if err == nil {
			if !slices.Contains(schemas.Kinds, k) || len(b) < 10 || b[0] != 0xC3 || b[1] != 0x01 {
				t.Fatalf("KindOf(%x) = %q", b, k)
			}
			return
		}
		var de *schemas.DecodeError
		if !errors.As(err, &de) || de.Kind != "record" || (de.Reason != "not-avro" && de.Reason != "unknown-schema") {
			t.Fatalf("KindOf error %#v", err)
		}
		if !errors.Is(err, schemas.ErrUnknownSchema) {
			t.Fatalf("KindOf error %v does not wrap ErrUnknownSchema", err)
		}
		if k != "" {
			t.Fatalf("KindOf returned %q with an error", k)
		}
	})
}
