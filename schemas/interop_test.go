package schemas_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/hamba/avro/v2/pkg/crc64"

	"github.com/scattergather/scattergather/schemas"
)

// These tests read and write our records with hamba/avro, an Avro
// implementation that shares no code with goavro, knowing nothing but the
// .avsc files: what another service, in Go or any language, would do.

// parseAvsc parses kind's .avsc file with hamba, in a cache of its own so
// that no parse sees another's named types.
func parseAvsc(tb testing.TB, path string) avro.Schema {
	tb.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := avro.ParseBytesWithCache(src, "", &avro.SchemaCache{})
	if err != nil {
		tb.Fatalf("hamba cannot parse %s: %v", path, err)
	}
	return s
}

// The records as a reader that knows only the .avsc would declare them.
type (
	hRequest struct {
		CorrelationID string            `avro:"correlation_id"`
		Route         string            `avro:"route"`
		Payload       []byte            `avro:"payload"`
		ContentType   string            `avro:"content_type"`
		TimeoutMs     int64             `avro:"timeout_ms"`
		Fanout        *int              `avro:"fanout"`
		ReplyTo       string            `avro:"reply_to"`
		Headers       map[string]string `avro:"headers"`
		SubmittedAt   time.Time         `avro:"submitted_at"`
		ReplayOf      *string           `avro:"replay_of"`
		ReplayRun     *string           `avro:"replay_run"`
	}
	hTask struct {
		CorrelationID string            `avro:"correlation_id"`
		PartID        string            `avro:"part_id"`
		PartCount     int               `avro:"part_count"`
		Route         string            `avro:"route"`
		Payload       []byte            `avro:"payload"`
		ContentType   string            `avro:"content_type"`
		Deadline      time.Time         `avro:"deadline"`
		Attempt       int               `avro:"attempt"`
		SubmittedAt   time.Time         `avro:"submitted_at"`
		Headers       map[string]string `avro:"headers"`
	}
	hManifest struct {
		CorrelationID string            `avro:"correlation_id"`
		Route         string            `avro:"route"`
		Parts         []string          `avro:"parts"`
		Deadline      time.Time         `avro:"deadline"`
		Policy        string            `avro:"policy"`
		SubmittedAt   time.Time         `avro:"submitted_at"`
		ReplyTo       string            `avro:"reply_to"`
		Headers       map[string]string `avro:"headers"`
		ReplayOf      *string           `avro:"replay_of"`
	}
	hResult struct {
		CorrelationID string    `avro:"correlation_id"`
		PartID        string    `avro:"part_id"`
		Route         string    `avro:"route"`
		Status        string    `avro:"status"`
		Payload       []byte    `avro:"payload"`
		Error         string    `avro:"error"`
		ProcessorID   string    `avro:"processor_id"`
		Attempt       int       `avro:"attempt"`
		Tries         int       `avro:"tries"`
		StartedAt     time.Time `avro:"started_at"`
		FinishedAt    time.Time `avro:"finished_at"`
		Deadline      time.Time `avro:"deadline"`
	}
	hPart struct {
		PartID      string `avro:"part_id"`
		Status      string `avro:"status"`
		Error       string `avro:"error"`
		ProcessorID string `avro:"processor_id"`
		Attempt     int    `avro:"attempt"`
		LatencyMs   int64  `avro:"latency_ms"`
	}
	hReply struct {
		CorrelationID string    `avro:"correlation_id"`
		Route         string    `avro:"route"`
		Status        string    `avro:"status"`
		Payload       []byte    `avro:"payload"`
		ContentType   string    `avro:"content_type"`
		Error         string    `avro:"error"`
		Parts         []hPart   `avro:"parts"`
		SubmittedAt   time.Time `avro:"submitted_at"`
		CompletedAt   time.Time `avro:"completed_at"`
		ReplayOf      *string   `avro:"replay_of"`
	}
)

func strPtr[T ~string](p *T) *string {
	if p == nil {
		return nil
	}
	return ptr(string(*p))
}

// The mapping below is written from the .avsc field list, not from
// native.go: it is the expectation the Go codec is checked against.

func hRequestOf(r schemas.Request) any {
	return &hRequest{
		CorrelationID: string(r.CorrelationID), Route: string(r.Route), Payload: r.Payload,
		ContentType: r.ContentType, TimeoutMs: r.Timeout.Milliseconds(), Fanout: r.Fanout,
		ReplyTo: r.ReplyTo, Headers: r.Headers, SubmittedAt: r.SubmittedAt,
		ReplayOf: strPtr(r.ReplayOf), ReplayRun: r.ReplayRun,
	}
}

func hTaskOf(t schemas.Task) any {
	return &hTask{
		CorrelationID: string(t.CorrelationID), PartID: string(t.PartID), PartCount: t.PartCount,
		Route: string(t.Route), Payload: t.Payload, ContentType: t.ContentType, Deadline: t.Deadline,
		Attempt: t.Attempt, SubmittedAt: t.SubmittedAt, Headers: t.Headers,
	}
}

func hManifestOf(m schemas.Manifest) any {
	parts := make([]string, len(m.Parts))
	for i, p := range m.Parts {
		parts[i] = string(p)
	}
	return &hManifest{
		CorrelationID: string(m.CorrelationID), Route: string(m.Route), Parts: parts,
		Deadline: m.Deadline, Policy: m.Policy, SubmittedAt: m.SubmittedAt, ReplyTo: m.ReplyTo,
		Headers: m.Headers, ReplayOf: strPtr(m.ReplayOf),
	}
}

func hResultOf(r schemas.Result) any {
	return &hResult{
		CorrelationID: string(r.CorrelationID), PartID: string(r.PartID), Route: string(r.Route),
		Status: string(r.Status), Payload: r.Payload, Error: r.Error, ProcessorID: r.ProcessorID,
		Attempt: r.Attempt, Tries: r.Tries, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, Deadline: r.Deadline,
	}
}

func hReplyOf(r schemas.Reply) any {
	parts := make([]hPart, len(r.Parts))
	for i, p := range r.Parts {
		parts[i] = hPart{
			PartID: string(p.PartID), Status: string(p.Status), Error: p.Error,
			ProcessorID: p.ProcessorID, Attempt: p.Attempt, LatencyMs: p.Latency.Milliseconds(),
		}
	}
	return &hReply{
		CorrelationID: string(r.CorrelationID), Route: string(r.Route), Status: string(r.Status),
		Payload: r.Payload, ContentType: r.ContentType, Error: r.Error, Parts: parts,
		SubmittedAt: r.SubmittedAt, CompletedAt: r.CompletedAt, ReplayOf: strPtr(r.ReplayOf),
	}
}

// interopCase is a record kind seen from both sides: our Go value and the
// hamba struct that should hold the same fields.
type interopCase struct {
	kind    schemas.Kind
	values  []any         // Go values to encode
	hOf     func(any) any // Go value (in decoded form) -> *hamba struct
	decoded func(any) any // Go value -> its decoded form
	hNew    func() any    // a new, empty *hamba struct
	enc     func(any) ([]byte, error)
	dec     func([]byte) (any, error)
}

func interopCases() []interopCase {
	wrap := func(c codec, hOf func(any) any, decoded func(any) any, hNew func() any, values ...any) interopCase {
		return interopCase{kind: c.kind, values: values, hOf: hOf, decoded: decoded, hNew: hNew, enc: c.encode, dec: c.decode}
	}
	cs := codecs()
	return []interopCase{
		wrap(cs[0],
			func(v any) any { return hRequestOf(v.(schemas.Request)) },
			func(v any) any { return requestDecoded(v.(schemas.Request)) },
			func() any { return &hRequest{} },
			sampleRequest(), schemas.Request{}, with(sampleRequest(), func(r *schemas.Request) {
				r.Fanout, r.ReplayOf, r.ReplayRun, r.Headers, r.Payload = nil, nil, nil, nil, nil
			}), with(sampleRequest(), func(r *schemas.Request) { r.Payload = payloadOf(1 << 20); r.SubmittedAt = beforeEpoch })),
		wrap(cs[1],
			func(v any) any { return hTaskOf(v.(schemas.Task)) },
			func(v any) any { return taskDecoded(v.(schemas.Task)) },
			func() any { return &hTask{} },
			sampleTask(), schemas.Task{}),
		wrap(cs[2],
			func(v any) any { return hManifestOf(v.(schemas.Manifest)) },
			func(v any) any { return manifestDecoded(v.(schemas.Manifest)) },
			func() any { return &hManifest{} },
			sampleManifest(), schemas.Manifest{}, with(sampleManifest(), func(m *schemas.Manifest) { m.ReplayOf = nil })),
		wrap(cs[3],
			func(v any) any { return hResultOf(v.(schemas.Result)) },
			func(v any) any { return resultDecoded(v.(schemas.Result)) },
			func() any { return &hResult{} },
			sampleResult(), with(sampleResult(), func(r *schemas.Result) { r.Status = schemas.ResultOK; r.Deadline = time.Time{} })),
		wrap(cs[4],
			func(v any) any { return hReplyOf(v.(schemas.Reply)) },
			func(v any) any { return replyDecoded(v.(schemas.Reply)) },
			func() any { return &hReply{} },
			sampleReply(), schemas.Reply{Status: schemas.ReplyFailed}, with(sampleReply(), func(r *schemas.Reply) { r.ReplayOf = nil })),
	}
}

// emptyToNil sets every empty slice and map reachable from v to nil: Avro
// does not tell nil from empty, and hamba and goavro choose differently.
func emptyToNil(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			emptyToNil(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			emptyToNil(v.Field(i))
		}
	case reflect.Slice, reflect.Map:
		if v.Len() == 0 {
			v.SetZero()
			return
		}
		if v.Kind() == reflect.Slice {
			for i := range v.Len() {
				emptyToNil(v.Index(i))
			}
		}
	}
}

// hambaLogical matches how hamba writes a primitive with a logical type in
// its canonical form, which the Avro specification's [STRIP] rule and the
// Java, Python and Rust libraries reduce to the bare type name.
var hambaLogical = regexp.MustCompile(`\{"type":"([a-z]+)","logicalType":"[a-z-]+"\}`)

// specCanonical returns the Parsing Canonical Form of s as the
// specification defines it, from hamba's.
func specCanonical(tb testing.TB, s avro.Schema) string {
	tb.Helper()
	pcf := hambaLogical.ReplaceAllString(s.String(), `"$1"`)
	if strings.Contains(pcf, "logicalType") {
		tb.Fatalf("logicalType left in %s", pcf)
	}
	return pcf
}

// TestInteropFingerprint checks the 8 bytes after 0xC3 0x01 against what
// hamba computes from the .avsc alone: CRC-64-AVRO of the Parsing Canonical
// Form. hamba keeps logicalType in its canonical form, against the
// specification, so the spec form is derived from hamba's by stripping it;
// hamba's own fingerprint must still be accepted on read.
func TestInteropFingerprint(t *testing.T) {
	for _, c := range codecs() {
		t.Run(string(c.kind), func(t *testing.T) {
			path := string(c.kind) + ".avsc"
			file, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			embedded, err := schemas.Schema(c.kind)
			if err != nil {
				t.Fatal(err)
			}
			if embedded != string(file) {
				t.Fatalf("schemas.Schema(%s) is not the text of %s", c.kind, path)
			}
			s := parseAvsc(t, path)

			b := mustEncode(t, c, c.sample)
			if b[0] != 0xC3 || b[1] != 0x01 {
				t.Fatalf("record starts % x, want c3 01", b[:2])
			}
			inRecord := binary.LittleEndian.Uint64(b[2:10])

			pcf := specCanonical(t, s)
			sum := crc64.Sum([]byte(pcf)) // hamba's CRC-64-AVRO, big endian
			if got := binary.BigEndian.Uint64(sum[:]); got != inRecord {
				t.Fatalf("CRC-64-AVRO of the canonical form is %016x, record carries %016x\ncanonical form: %s", got, inRecord, pcf)
			}
			le := crc64.SumWithByteOrder([]byte(pcf), crc64.LittleEndian)
			if !bytes.Equal(le[:], b[2:10]) {
				t.Fatalf("little-endian fingerprint % x, record header % x", le, b[2:10])
			}
			if fp, _ := schemas.Fingerprint(c.kind); fp != inRecord {
				t.Fatalf("schemas.Fingerprint %016x, record carries %016x", fp, inRecord)
			}

			// A hamba soe writer puts hamba's fingerprint in the header.
			hfp, err := s.FingerprintUsing(avro.CRC64AvroLE)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(hfp, b[2:10]) {
				t.Fatalf("hamba's fingerprint equals the spec's; drop the alias in codec.go")
			}
			hb := append(append([]byte{0xC3, 0x01}, hfp...), b[10:]...)
			if k, err := schemas.KindOf(hb); err != nil || k != c.kind {
				t.Fatalf("KindOf with hamba's fingerprint = %q, %v", k, err)
			}
			if _, err := c.decode(hb); err != nil {
				t.Fatalf("decode with hamba's fingerprint: %v", err)
			}
		})
	}
}

// TestInteropHambaReadsOurs decodes our records' bodies with hamba into
// structs declared from the .avsc and compares every field.
func TestInteropHambaReadsOurs(t *testing.T) {
	for _, ic := range interopCases() {
		s := parseAvsc(t, string(ic.kind)+".avsc")
		for i, v := range ic.values {
			t.Run(fmt.Sprintf("%s/%d", ic.kind, i), func(t *testing.T) {
				b, err := ic.enc(v)
				if err != nil {
					t.Fatal(err)
				}
				got := ic.hNew()
				if err := avro.Unmarshal(s, b[10:], got); err != nil {
					t.Fatalf("hamba cannot read our %s: %v", ic.kind, err)
				}
				want := ic.hOf(ic.decoded(v))
				emptyToNil(reflect.ValueOf(got))
				emptyToNil(reflect.ValueOf(want))
				if d := diff(want, got); d != "" {
					t.Fatalf("hamba read other values than we wrote:\n%s", d)
				}
			})
		}
	}
}

// TestInteropWeReadHambas has hamba encode the body, builds the
// single-object header by hand, and decodes it with our decoders.
func TestInteropWeReadHambas(t *testing.T) {
	for _, ic := range interopCases() {
		s := parseAvsc(t, string(ic.kind)+".avsc")
		fp := crc64.SumWithByteOrder([]byte(specCanonical(t, s)), crc64.LittleEndian)
		for i, v := range ic.values {
			t.Run(fmt.Sprintf("%s/%d", ic.kind, i), func(t *testing.T) {
				// Whole milliseconds in, so that hamba's rounding of
				// times before 1970 does not enter the comparison.
				want := ic.decoded(v)
				body, err := avro.Marshal(s, ic.hOf(want))
				if err != nil {
					t.Fatalf("hamba cannot write a %s: %v", ic.kind, err)
				}
				b := append(append([]byte{0xC3, 0x01}, fp[:]...), body...)
				got, err := ic.dec(b)
				if err != nil {
					t.Fatalf("we cannot read hamba's %s: %v", ic.kind, err)
				}
				if d := diff(want, got); d != "" {
					t.Fatalf("we read other values than hamba wrote:\n%s", d)
				}
			})
		}
	}
}

// TestInteropJavaWritten reads records that Apache Avro for Java wrote with
// BinaryMessageEncoder (testdata/interop/Check.java writes them to /tmp).
// It needs Java and the Avro jar, so it runs only when
// SG_AVRO_JAVA_WRITTEN names the directory holding <kind>.java.bin.
func TestInteropJavaWritten(t *testing.T) {
	dir := os.Getenv("SG_AVRO_JAVA_WRITTEN")
	if dir == "" {
		t.Skip("SG_AVRO_JAVA_WRITTEN is not set; see schemas/README.md, Interop")
	}
	for _, c := range codecs() {
		t.Run(string(c.kind), func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, string(c.kind)+".java.bin"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.decode(b)
			if err != nil {
				t.Fatalf("we cannot read Java's %s: %v", c.kind, err)
			}
			want, err := c.decode(mustEncode(t, c, c.sample))
			if err != nil {
				t.Fatal(err)
			}
			if d := diff(want, got); d != "" {
				t.Fatalf("Java's %s differs from the golden sample:\n%s", c.kind, d)
			}
		})
	}
}
