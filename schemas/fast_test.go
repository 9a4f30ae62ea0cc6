package schemas_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/schemas"
)

// The public codec (fast.go, written by hand) is held against the goavro
// reference (native.go): on every record below both encoders must write the
// same bytes or both fail, and on every input both decoders must return
// equal values (reflect.DeepEqual: nil against empty, time locations and
// all) or both fail with the same DecodeError kind and reason.

// pair is one kind's two codecs and its records.
type pair struct {
	kind      schemas.Kind
	fast, ref codec
	random    func(g gen) any
	edges     func() []edge
}

type edge struct {
	name string
	v    any
}

func pairOf[T any](k schemas.Kind, enc, refEnc func(T) ([]byte, error), dec, refDec func([]byte) (T, error), random func(g gen) T, edges func() []edge) pair {
	return pair{
		kind:   k,
		fast:   codecOf(k, enc, dec, *new(T)),
		ref:    codecOf(k, refEnc, refDec, *new(T)),
		random: func(g gen) any { return random(g) },
		edges:  edges,
	}
}

func pairs() []pair {
	return []pair{
		pairOf(schemas.KindRequest, schemas.EncodeRequest, schemas.GoavroEncodeRequest, schemas.DecodeRequest, schemas.GoavroDecodeRequest, gen.request, requestEdges),
		pairOf(schemas.KindTask, schemas.EncodeTask, schemas.GoavroEncodeTask, schemas.DecodeTask, schemas.GoavroDecodeTask, gen.task, taskEdges),
		pairOf(schemas.KindManifest, schemas.EncodeManifest, schemas.GoavroEncodeManifest, schemas.DecodeManifest, schemas.GoavroDecodeManifest, gen.manifest, manifestEdges),
		pairOf(schemas.KindResult, schemas.EncodeResult, schemas.GoavroEncodeResult, schemas.DecodeResult, schemas.GoavroDecodeResult, gen.result, resultEdges),
		pairOf(schemas.KindReply, schemas.EncodeReply, schemas.GoavroEncodeReply, schemas.DecodeReply, schemas.GoavroDecodeReply, gen.reply, replyEdges),
	}
}

// encodeAgree encodes v with both codecs. It fails the test unless both
// write the same bytes or both refuse v, and returns the bytes (nil when v
// was refused).
func encodeAgree(tb testing.TB, p pair, v any) []byte {
	tb.Helper()
	fb, ferr := p.fast.encode(v)
	gb, gerr := p.ref.encode(v)
	switch {
	case ferr != nil && gerr != nil:
		return nil
	case ferr != nil || gerr != nil:
		tb.Fatalf("encode %s: fast error %v, goavro error %v\n%+v", p.kind, ferr, gerr, v)
	case !bytes.Equal(fb, gb):
		tb.Fatalf("encode %s: the codecs write different bytes\nfast   %x\ngoavro %x\n%+v", p.kind, fb, gb, v)
	}
	return fb
}

// decodeAgree decodes b with both codecs and fails the test unless they
// agree; a value they agree on must also encode alike.
func decodeAgree(tb testing.TB, p pair, b []byte) {
	tb.Helper()
	fv, ferr := p.fast.decode(b)
	gv, gerr := p.ref.decode(b)
	if ferr != nil || gerr != nil {
		var fde, gde *schemas.DecodeError
		if !errors.As(ferr, &fde) || !errors.As(gerr, &gde) {
			tb.Fatalf("decode %s of %x: fast %v, goavro %v", p.kind, b, ferr, gerr)
		}
		if fde.Kind != gde.Kind || fde.Reason != gde.Reason {
			tb.Fatalf("decode %s of %x: fast %v, goavro %v", p.kind, b, ferr, gerr)
		}
		if strings.Contains(ferr.Error(), "panicked") {
			tb.Fatalf("decode %s of %x: the fast decoder panicked: %v", p.kind, b, ferr)
		}
		return
	}
	if !reflect.DeepEqual(fv, gv) {
		tb.Fatalf("decode %s of %x: the codecs read different values:\n%s\nfast   %+v\ngoavro %+v", p.kind, b, diff(gv, fv), fv, gv)
	}
	encodeAgree(tb, p, fv)
}

func TestFastCodecMatchesGoavroOnEdgeCases(t *testing.T) {
	for _, p := range pairs() {
		for _, e := range p.edges() {
			t.Run(string(p.kind)+"/"+e.name, func(t *testing.T) {
				b := encodeAgree(t, p, e.v)
				if b == nil {
					return
				}
				decodeAgree(t, p, b)
				if len(b) > 4096 {
					// A few cuts of the 1 MiB payload, not all of them.
					for _, n := range []int{0, 10, 11, 100, len(b) / 2, len(b) - 1} {
						decodeAgree(t, p, b[:n])
					}
					return
				}
				for n := range len(b) {
					decodeAgree(t, p, b[:n])
				}
				for i := 10; i < len(b); i++ {
					for _, x := range []byte{0x00, 0x01, 0x02, 0x7f, 0x80, 0xff} {
						m := bytes.Clone(b)
						m[i] = x
						decodeAgree(t, p, m)
					}
				}
			})
		}
	}
}

func TestFastCodecMatchesGoavroOnRandomRecords(t *testing.T) {
	const records = 400
	for i, p := range pairs() {
		t.Run(string(p.kind), func(t *testing.T) {
			g := gen{rand.New(rand.NewPCG(7, uint64(i)))}
			encoded := 0
			for range records {
				v := p.random(g)
				b := encodeAgree(t, p, v)
				if b == nil {
					continue
				}
				encoded++
				decodeAgree(t, p, b)
				for range 16 {
					decodeAgree(t, p, g.mutate(t, b))
				}
			}
			// Most records encode; a few hold a value outside the schema.
			if encoded < records*3/4 {
				t.Fatalf("only %d of %d random records encoded", encoded, records)
			}
		})
	}
}

// TestFastDecoderReadsWhatGoavroReads feeds bodies that our encoders never
// write but other writers may: several blocks, negative block counts with
// their size, unsorted map entries, non-minimal varints; and bodies both
// must refuse.
func TestFastDecoderReadsWhatGoavroReads(t *testing.T) {
	str := func(b []byte, s string) []byte { return append(zz(b, int64(len(s))), s...) }
	// The fields of a Task before its headers.
	taskHead := func(b []byte) []byte {
		b = str(b, "c")
		b = str(b, "p")
		b = zz(b, 3)
		b = str(b, "r")
		b = str(b, "{}")
		b = str(b, "application/json")
		b = zz(b, 1_700_000_000_123)
		b = zz(b, 1)
		return zz(b, 1_700_000_000_000)
	}
	// The fields of a Manifest after its parts.
	manifestTail := func(b []byte) []byte {
		b = zz(b, 5)
		b = str(b, "all")
		b = zz(b, -5)
		b = str(b, "")
		b = zz(b, 0) // headers
		return zz(b, 0)
	}
	manifest := func(parts func([]byte) []byte) func([]byte) []byte {
		return func(b []byte) []byte { return manifestTail(parts(str(str(b, "c"), "r"))) }
	}
	replyPart := func(b []byte, id string, latency int64) []byte {
		b = str(b, id)
		b = zz(b, 4) // SKIPPED
		b = str(b, "")
		b = str(b, "proc")
		b = zz(b, 2)
		return zz(b, latency)
	}
	reply := func(parts func([]byte) []byte) func([]byte) []byte {
		return func(b []byte) []byte {
			b = str(str(b, "c"), "r")
			b = zz(b, 1)
			b = str(b, "x")
			b = str(b, "text/plain")
			b = str(b, "")
			b = parts(b)
			b = zz(b, 1)
			b = zz(b, 2)
			return zz(b, 0)
		}
	}
	cases := []struct {
		name string
		kind schemas.Kind
		body func([]byte) []byte
	}{
		{"task headers in two blocks", schemas.KindTask, func(b []byte) []byte {
			b = zz(taskHead(b), 1)
			b = str(str(b, "b"), "2")
			b = zz(b, 2)
			b = str(str(b, "a"), "1")
			b = str(str(b, "c"), "3")
			return zz(b, 0)
		}},
		{"task headers in a negative block with its size", schemas.KindTask, func(b []byte) []byte {
			b = zz(taskHead(b), -2)
			b = zz(b, 8)
			b = str(str(b, "z"), "1")
			b = str(str(b, "a"), "2")
			return zz(b, 0)
		}},
		{"task headers with a duplicate key", schemas.KindTask, func(b []byte) []byte {
			b = zz(taskHead(b), 2)
			b = str(str(b, "k"), "1")
			b = str(str(b, "k"), "2")
			return zz(b, 0)
		}},
		{"task headers with a duplicate key across blocks", schemas.KindTask, func(b []byte) []byte {
			b = zz(taskHead(b), 1)
			b = str(str(b, "k"), "1")
			b = zz(b, 1)
			b = str(str(b, "k"), "1")
			return zz(b, 0)
		}},
		{"task headers with an empty key and value", schemas.KindTask, func(b []byte) []byte {
			b = zz(taskHead(b), 1)
			b = str(str(b, ""), "")
			return zz(b, 0)
		}},
		{"task headers block size negative", schemas.KindTask, func(b []byte) []byte {
			b = zz(taskHead(b), -1)
			b = zz(b, -1)
			b = str(str(b, "k"), "v")
			return zz(b, 0)
		}},
		{"task headers block size beyond the record", schemas.KindTask, func(b []byte) []byte {
			b = zz(taskHead(b), -1)
			b = zz(b, 100)
			b = str(str(b, "k"), "v")
			return zz(b, 0)
		}},
		{"task headers block count MinInt64", schemas.KindTask, func(b []byte) []byte {
			return zz(taskHead(b), math.MinInt64)
		}},
		{"task headers without their end", schemas.KindTask, func(b []byte) []byte {
			b = zz(taskHead(b), 1)
			return str(str(b, "k"), "v")
		}},
		{"task part_count as a non-minimal varint", schemas.KindTask, func(b []byte) []byte {
			b = str(str(b, "c"), "p")
			b = append(b, 0x86, 0x80, 0x80, 0x80, 0x00) // 3
			b = str(b, "r")
			b = str(b, "")
			b = str(b, "")
			b = zz(b, 0)
			b = zz(b, 1)
			b = zz(b, 0)
			return zz(b, 0)
		}},
		{"task part_count MaxInt32", schemas.KindTask, func(b []byte) []byte {
			b = str(str(b, "c"), "p")
			b = zz(b, math.MaxInt32)
			return append(str(str(str(b, "r"), ""), ""), 0, 2, 0, 0)
		}},
		{"task part_count MinInt32", schemas.KindTask, func(b []byte) []byte {
			b = str(str(b, "c"), "p")
			b = zz(b, math.MinInt32)
			return append(str(str(str(b, "r"), ""), ""), 0, 2, 0, 0)
		}},
		{"task part_count MaxInt32+1", schemas.KindTask, func(b []byte) []byte {
			b = str(str(b, "c"), "p")
			b = zz(b, math.MaxInt32+1)
			return append(str(str(str(b, "r"), ""), ""), 0, 2, 0, 0)
		}},
		{"task deadline as a 10-byte varint", schemas.KindTask, func(b []byte) []byte {
			b = append(str(str(b, "c"), "p"), 2)
			b = str(str(str(b, "r"), ""), "")
			b = append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01) // MinInt64
			return append(b, 2, 0, 0)
		}},
		{"task deadline as a 10-byte varint beyond 64 bits", schemas.KindTask, func(b []byte) []byte {
			b = append(str(str(b, "c"), "p"), 2)
			b = str(str(str(b, "r"), ""), "")
			b = append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02)
			return append(b, 2, 0, 0)
		}},
		{"task deadline MaxInt64 ms", schemas.KindTask, func(b []byte) []byte {
			b = append(str(str(b, "c"), "p"), 2)
			b = str(str(str(b, "r"), ""), "")
			b = zz(b, math.MaxInt64)
			return append(b, 2, 0, 0)
		}},
		{"manifest parts in three blocks", schemas.KindManifest, manifest(func(b []byte) []byte {
			b = zz(b, 1)
			b = str(b, "a")
			b = zz(b, -2)
			b = zz(b, 4)
			b = str(str(b, "b"), "c")
			b = zz(b, 1)
			b = str(b, "")
			return zz(b, 0)
		})},
		{"manifest parts empty in a zero block", schemas.KindManifest, manifest(func(b []byte) []byte { return zz(b, 0) })},
		{"manifest parts count beyond the bytes", schemas.KindManifest, manifest(func(b []byte) []byte {
			b = zz(b, 40)
			return str(b, "a")
		})},
		{"manifest replay_of set to empty", schemas.KindManifest, func(b []byte) []byte {
			b = str(str(b, "c"), "r")
			b = append(b, 0, 0)
			b = str(b, "all")
			b = append(b, 0, 0, 0, 2, 0)
			return b
		}},
		{"reply parts in two blocks", schemas.KindReply, reply(func(b []byte) []byte {
			b = zz(b, 1)
			b = replyPart(b, "a", 5)
			b = zz(b, -1)
			b = zz(b, 12)
			b = replyPart(b, "b", -7)
			return zz(b, 0)
		})},
		{"reply part latency beyond a Duration", schemas.KindReply, reply(func(b []byte) []byte {
			b = zz(b, 1)
			b = replyPart(b, "a", math.MaxInt64/int64(time.Millisecond)+1)
			return zz(b, 0)
		})},
		{"reply part latency MinInt64", schemas.KindReply, reply(func(b []byte) []byte {
			b = zz(b, 1)
			b = replyPart(b, "a", math.MinInt64)
			return zz(b, 0)
		})},
		{"reply part status beyond the enum", schemas.KindReply, reply(func(b []byte) []byte {
			b = zz(b, 1)
			b = str(b, "a")
			b = zz(b, 5)
			return append(b, 0, 0, 0, 0, 0)
		})},
		{"reply parts count beyond the bytes", schemas.KindReply, reply(func(b []byte) []byte {
			b = zz(b, 3)
			b = replyPart(b, "a", 1)
			return zz(b, 0)
		})},
		{"request fanout set to MinInt32", schemas.KindRequest, func(b []byte) []byte {
			b = str(str(b, "c"), "r")
			b = str(str(b, ""), "")
			b = zz(b, 0)
			b = zz(b, 1)
			b = zz(b, math.MinInt32)
			return append(str(b, ""), 0, 0, 0, 0)
		}},
		{"request replay_run union index -1", schemas.KindRequest, func(b []byte) []byte {
			b = str(str(b, "c"), "r")
			b = append(str(str(b, ""), ""), 0, 0)
			return append(str(b, ""), 0, 0, 0, 1)
		}},
	}
	ps := map[schemas.Kind]pair{}
	for _, p := range pairs() {
		ps[p.kind] = p
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.body(header(t, tc.kind))
			decodeAgree(t, ps[tc.kind], b)
			for n := range len(b) {
				decodeAgree(t, ps[tc.kind], b[:n])
			}
		})
	}
}

// FuzzDecodersAgree feeds arbitrary bytes to both decoders of every kind,
// as they come and behind the kind's header, and fails unless they agree.
func FuzzDecodersAgree(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
		if len(s) > 10 {
			f.Add(s[10:])
		}
	}
	ps := pairs()
	headers := make([][]byte, len(ps))
	for i, p := range ps {
		headers[i] = header(f, p.kind)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for i, p := range ps {
			decodeAgree(t, p, b)
			decodeAgree(t, p, append(bytes.Clone(headers[i]), b...))
		}
	})
}

// gen makes random records: strings empty, unicode, invalid UTF-8 or long
// (two-byte lengths); payloads nil, empty or random; times zero, around the
// epoch, far off and in other zones; maps nil, empty or with up to 20
// entries (keys sharing prefixes, so that the order matters); every enum
// symbol; optional fields nil, zero and set. About one record in 50 holds a
// value the schema cannot (an int beyond int32, a status outside its enum),
// which both encoders must refuse.
type gen struct{ *rand.Rand }

func (g gen) one(n int) bool { return g.IntN(n) == 0 }

func (g gen) str() string {
	switch g.IntN(8) {
	case 0:
		return ""
	case 1:
		return uni
	case 2:
		return string([]byte{0xff, 0xfe, 'a', 0, 0xc3})
	case 3:
		return strings.Repeat("é", 32+g.IntN(200))
	}
	const alphabet = "abcxyz-_./:0189 ÄßÉ产品🔍\x00\x7f"
	r := []rune(alphabet)
	var sb strings.Builder
	for range 1 + g.IntN(24) {
		sb.WriteRune(r[g.IntN(len(r))])
	}
	return sb.String()
}

func (g gen) payload() []byte {
	switch g.IntN(6) {
	case 0:
		return nil
	case 1:
		return []byte{}
	}
	b := make([]byte, g.IntN(400))
	for i := range b {
		b[i] = byte(g.Uint32())
	}
	return b
}

func (g gen) when() time.Time {
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("X", -3*3600-1800), time.FixedZone("Y", 14*3600)}
	switch g.IntN(8) {
	case 0:
		return time.Time{}
	case 1:
		return time.Unix(0, 0)
	case 2:
		return beforeEpoch
	case 3:
		return time.Unix(0, -g.Int64N(1e9)) // just before the epoch, sub-millisecond digits
	case 4:
		return time.Date(9999+g.IntN(100000), 12, 31, 23, 59, 59, 999_999_999, zones[g.IntN(len(zones))])
	case 5:
		return time.Date(-g.IntN(100000), 1, 1, 0, 0, 0, 1, zones[g.IntN(len(zones))])
	}
	return time.Unix(g.Int64N(1<<34)-1<<33, g.Int64N(1e9)).In(zones[g.IntN(len(zones))])
}

func (g gen) duration() time.Duration {
	switch g.IntN(6) {
	case 0:
		return 0
	case 1:
		return time.Duration(g.Int64N(2e6) - 1e6) // under a millisecond either way
	case 2:
		return time.Duration(math.MaxInt64)
	case 3:
		return time.Duration(math.MinInt64)
	}
	return time.Duration(g.Int64() - math.MaxInt64/2)
}

// int is an Avro int, now and then at its bounds or, rarely, beyond.
func (g gen) int() int {
	switch g.IntN(50) {
	case 0:
		return math.MaxInt32
	case 1:
		return math.MinInt32
	case 2:
		if g.one(2) {
			return math.MaxInt32 + 1
		}
		return math.MinInt32 - 1
	case 3:
		return 0
	case 4:
		return -1
	}
	return g.IntN(100)
}

func (g gen) headers() map[string]string {
	switch g.IntN(5) {
	case 0:
		return nil
	case 1:
		return map[string]string{}
	}
	prefixes := []string{"", "a", "ab", "b", "x-", uni}
	m := map[string]string{}
	for range 1 + g.IntN(20) {
		m[prefixes[g.IntN(len(prefixes))]+g.str()] = g.str()
	}
	return m
}

func (g gen) optional() *string {
	switch g.IntN(3) {
	case 0:
		return nil
	case 1:
		return ptr("")
	}
	return ptr(g.str())
}

func (g gen) optionalID() *schemas.CorrelationID { return (*schemas.CorrelationID)(g.optional()) }

// pick returns one of symbols, or rarely one that is not.
func pick[S ~string](g gen, symbols ...S) S {
	if g.one(60) {
		return S(g.str() + "?")
	}
	return symbols[g.IntN(len(symbols))]
}

func (g gen) request() schemas.Request {
	r := schemas.Request{
		CorrelationID: schemas.CorrelationID(g.str()), Route: schemas.Route(g.str()), Payload: g.payload(),
		ContentType: g.str(), Timeout: g.duration(), ReplyTo: g.str(), Headers: g.headers(), SubmittedAt: g.when(),
		ReplayOf: g.optionalID(), ReplayRun: g.optional(),
	}
	if !g.one(3) {
		r.Fanout = ptr(g.int())
	}
	return r
}

func (g gen) task() schemas.Task {
	return schemas.Task{
		CorrelationID: schemas.CorrelationID(g.str()), PartID: schemas.PartID(g.str()), PartCount: g.int(),
		Route: schemas.Route(g.str()), Payload: g.payload(), ContentType: g.str(), Deadline: g.when(),
		Attempt: g.int(), SubmittedAt: g.when(), Headers: g.headers(),
	}
}

func (g gen) manifest() schemas.Manifest {
	m := schemas.Manifest{
		CorrelationID: schemas.CorrelationID(g.str()), Route: schemas.Route(g.str()), Deadline: g.when(),
		Policy: g.str(), SubmittedAt: g.when(), ReplyTo: g.str(), Headers: g.headers(), ReplayOf: g.optionalID(),
	}
	switch g.IntN(4) {
	case 0:
	case 1:
		m.Parts = []schemas.PartID{}
	default:
		for range 1 + g.IntN(20) {
			m.Parts = append(m.Parts, schemas.PartID(g.str()))
		}
	}
	return m
}

func (g gen) result() schemas.Result {
	return schemas.Result{
		CorrelationID: schemas.CorrelationID(g.str()), PartID: schemas.PartID(g.str()), Route: schemas.Route(g.str()),
		Status:  pick(g, schemas.ResultOK, schemas.ResultError, schemas.ResultExpired),
		Payload: g.payload(), Error: g.str(), ProcessorID: g.str(), Attempt: g.int(), Tries: g.int(),
		StartedAt: g.when(), FinishedAt: g.when(), Deadline: g.when(),
	}
}

func (g gen) reply() schemas.Reply {
	r := schemas.Reply{
		CorrelationID: schemas.CorrelationID(g.str()), Route: schemas.Route(g.str()),
		Status:  pick(g, schemas.ReplyComplete, schemas.ReplyPartial, schemas.ReplyFailed),
		Payload: g.payload(), ContentType: g.str(), Error: g.str(),
		SubmittedAt: g.when(), CompletedAt: g.when(), ReplayOf: g.optionalID(),
	}
	switch g.IntN(4) {
	case 0:
	case 1:
		r.Parts = []schemas.PartOutcome{}
	default:
		for range 1 + g.IntN(20) {
			r.Parts = append(r.Parts, schemas.PartOutcome{
				PartID: schemas.PartID(g.str()),
				Status: pick(g, schemas.PartOK, schemas.PartError, schemas.PartExpired, schemas.PartMissing, schemas.PartSkipped),
				Error:  g.str(), ProcessorID: g.str(), Attempt: g.int(), Latency: g.duration(),
			})
		}
	}
	return r
}

// mutate returns a damaged copy of record b: a byte changed, cut, added or
// removed in the body, or another kind's header.
func (g gen) mutate(tb testing.TB, b []byte) []byte {
	b = bytes.Clone(b)
	body := len(b) - 10
	switch g.IntN(6) {
	case 0:
		if body > 0 {
			b[10+g.IntN(body)] = []byte{0, 1, 2, 0x7f, 0x80, 0xff, byte(g.Uint32())}[g.IntN(7)]
		}
	case 1:
		if body > 0 {
			b[10+g.IntN(body)] ^= 1 << g.IntN(8)
		}
	case 2:
		return b[:g.IntN(len(b))]
	case 3:
		i := 10 + g.IntN(body+1)
		return append(b[:i], append([]byte{byte(g.Uint32())}, b[i:]...)...)
	case 4:
		if body > 0 {
			i := 10 + g.IntN(body)
			return append(b[:i], b[i+1:]...)
		}
	case 5:
		kinds := []schemas.Kind{schemas.KindRequest, schemas.KindTask, schemas.KindManifest, schemas.KindResult, schemas.KindReply}
		fp, err := schemas.Fingerprint(kinds[g.IntN(len(kinds))])
		if err != nil {
			tb.Fatal(err)
		}
		for i := range 8 {
			b[2+i] = byte(fp >> (8 * i))
		}
	}
	return b
}

// The edge cases of each kind: the zero record (with a valid status),
// the sample, a 1 MiB payload, nil against empty, every enum symbol, unions
// null and set (to zero values too), more headers than fit on the
// encoder's stack, and values the schema cannot hold.

func requestEdges() []edge {
	s := sampleRequest()
	many := map[string]string{}
	for i := range 40 {
		many[fmt.Sprintf("h%02d-%s", 39-i, uni)] = fmt.Sprint(i)
	}
	return []edge{
		{"zero", schemas.Request{}},
		{"sample", s},
		{"1 MiB payload", with(s, func(r *schemas.Request) { r.Payload = payloadOf(1 << 20) })},
		{"nil payload and headers", with(s, func(r *schemas.Request) { r.Payload, r.Headers = nil, nil })},
		{"empty payload and headers", with(s, func(r *schemas.Request) { r.Payload, r.Headers = []byte{}, map[string]string{} })},
		{"one header", with(s, func(r *schemas.Request) { r.Headers = map[string]string{"k": "v"} })},
		{"40 headers", with(s, func(r *schemas.Request) { r.Headers = many })},
		{"optionals nil", with(s, func(r *schemas.Request) { r.Fanout, r.ReplayOf, r.ReplayRun = nil, nil, nil })},
		{"optionals zero", with(s, func(r *schemas.Request) {
			r.Fanout, r.ReplayOf, r.ReplayRun = ptr(0), ptr(schemas.CorrelationID("")), ptr("")
		})},
		{"fanout MaxInt32", with(s, func(r *schemas.Request) { r.Fanout = ptr(math.MaxInt32) })},
		{"fanout beyond int32", with(s, func(r *schemas.Request) { r.Fanout = ptr(math.MaxInt32 + 1) })},
		{"timeout sub-millisecond and negative", with(s, func(r *schemas.Request) { r.Timeout = -1500 * time.Microsecond })},
		{"timeout MaxInt64", with(s, func(r *schemas.Request) { r.Timeout = math.MaxInt64 })},
		{"submitted before the epoch", with(s, func(r *schemas.Request) { r.SubmittedAt = beforeEpoch })},
	}
}

func taskEdges() []edge {
	s := sampleTask()
	return []edge{
		{"zero", schemas.Task{}},
		{"sample", s},
		{"1 MiB payload", with(s, func(t *schemas.Task) { t.Payload = payloadOf(1 << 20) })},
		{"nil payload and headers", with(s, func(t *schemas.Task) { t.Payload, t.Headers = nil, nil })},
		{"empty payload and headers", with(s, func(t *schemas.Task) { t.Payload, t.Headers = []byte{}, map[string]string{} })},
		{"headers sharing prefixes", with(s, func(t *schemas.Task) {
			t.Headers = map[string]string{"ab": "1", "a": "2", "": "3", "b": "4", "a\x00": "5", "\xff": "6", "A": "7"}
		})},
		{"part count and attempt at the int bounds", with(s, func(t *schemas.Task) { t.PartCount, t.Attempt = math.MaxInt32, math.MinInt32 })},
		{"part count beyond int32", with(s, func(t *schemas.Task) { t.PartCount = math.MaxInt32 + 1 })},
		{"attempt beyond int32", with(s, func(t *schemas.Task) { t.Attempt = math.MinInt32 - 1 })},
		{"zero times", with(s, func(t *schemas.Task) { t.Deadline, t.SubmittedAt = time.Time{}, time.Time{} })},
		{"times far off", with(s, func(t *schemas.Task) {
			t.Deadline, t.SubmittedAt = time.Date(292277026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-292277022, 1, 1, 0, 0, 0, 0, time.UTC)
		})},
	}
}

func manifestEdges() []edge {
	s := sampleManifest()
	return []edge{
		{"zero", schemas.Manifest{}},
		{"sample", s},
		{"nil parts", with(s, func(m *schemas.Manifest) { m.Parts = nil })},
		{"empty parts", with(s, func(m *schemas.Manifest) { m.Parts = []schemas.PartID{} })},
		{"1000 parts", with(s, func(m *schemas.Manifest) {
			m.Parts = make([]schemas.PartID, 1000)
			for i := range m.Parts {
				m.Parts[i] = schemas.PartID(fmt.Sprintf("shard-%d", i))
			}
		})},
		{"empty part ids", with(s, func(m *schemas.Manifest) { m.Parts = []schemas.PartID{"", ""} })},
		{"replay_of nil", with(s, func(m *schemas.Manifest) { m.ReplayOf = nil })},
		{"replay_of empty", with(s, func(m *schemas.Manifest) { m.ReplayOf = ptr(schemas.CorrelationID("")) })},
		{"long policy", with(s, func(m *schemas.Manifest) { m.Policy = strings.Repeat("quorum:", 100) })},
	}
}

func resultEdges() []edge {
	s := sampleResult()
	edges := []edge{
		{"zero but its status", schemas.Result{Status: schemas.ResultOK}},
		{"sample", s},
		{"1 MiB payload", with(s, func(r *schemas.Result) { r.Payload = payloadOf(1 << 20) })},
		{"nil payload", with(s, func(r *schemas.Result) { r.Payload = nil })},
		{"empty payload", with(s, func(r *schemas.Result) { r.Payload = []byte{} })},
		{"status empty", with(s, func(r *schemas.Result) { r.Status = "" })},
		{"status lower case", with(s, func(r *schemas.Result) { r.Status = "ok" })},
		{"tries beyond int32", with(s, func(r *schemas.Result) { r.Tries = 1 << 40 })},
		{"zero times", with(s, func(r *schemas.Result) { r.StartedAt, r.FinishedAt, r.Deadline = time.Time{}, time.Time{}, time.Time{} })},
	}
	for _, st := range []schemas.ResultStatus{schemas.ResultOK, schemas.ResultError, schemas.ResultExpired} {
		edges = append(edges, edge{"status " + string(st), with(s, func(r *schemas.Result) { r.Status = st })})
	}
	return edges
}

func replyEdges() []edge {
	s := sampleReply()
	edges := []edge{
		{"zero but its status", schemas.Reply{Status: schemas.ReplyFailed}},
		{"sample", s},
		{"1 MiB payload", with(s, func(r *schemas.Reply) { r.Payload = payloadOf(1 << 20) })},
		{"nil payload and parts", with(s, func(r *schemas.Reply) { r.Payload, r.Parts = nil, nil })},
		{"empty payload and parts", with(s, func(r *schemas.Reply) { r.Payload, r.Parts = []byte{}, []schemas.PartOutcome{} })},
		{"replay_of nil", with(s, func(r *schemas.Reply) { r.ReplayOf = nil })},
		{"status empty", with(s, func(r *schemas.Reply) { r.Status = "" })},
		// sampleReply(), not s: these change s.Parts in place.
		{"part status empty", with(sampleReply(), func(r *schemas.Reply) { r.Parts[1].Status = "" })},
		{"part attempt beyond int32", with(sampleReply(), func(r *schemas.Reply) { r.Parts[2].Attempt = math.MaxInt32 + 1 })},
		{"part latencies at the Duration bounds", with(sampleReply(), func(r *schemas.Reply) {
			r.Parts[0].Latency, r.Parts[1].Latency = math.MaxInt64, math.MinInt64
		})},
	}
	for _, st := range []schemas.ReplyStatus{schemas.ReplyComplete, schemas.ReplyPartial, schemas.ReplyFailed} {
		edges = append(edges, edge{"status " + string(st), with(s, func(r *schemas.Reply) { r.Status = st })})
	}
	all := with(s, func(r *schemas.Reply) { r.Parts = nil })
	for i, st := range []schemas.PartStatus{schemas.PartOK, schemas.PartError, schemas.PartExpired, schemas.PartMissing, schemas.PartSkipped} {
		all.Parts = append(all.Parts, schemas.PartOutcome{PartID: schemas.PartID(st), Status: st, Attempt: i, Latency: time.Duration(i) * time.Second})
	}
	return append(edges, edge{"every part status", all})
}
