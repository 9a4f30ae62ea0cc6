package schemas_test

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/schemas"
)

// uni goes everywhere a string goes: CJK, an emoji outside the BMP, a German
// sharp s.
const uni = "产品-🔍-ß"

// at is a fixed instant with sub-millisecond digits that encoding drops.
var at = time.Date(2026, 11, 26, 12, 30, 45, 123_456_789, time.UTC)

// beforeEpoch has sub-millisecond digits too, where truncation must floor.
var beforeEpoch = time.Date(1969, 7, 20, 20, 17, 40, 999_999_999, time.FixedZone("X", -3*3600))

func ptr[T any](v T) *T { return &v }

func payloadOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// codec handles one record kind through any, so that tests can loop over
// every kind.
type codec struct {
	kind   schemas.Kind
	encode func(any) ([]byte, error)
	decode func([]byte) (any, error)
	sample any // a typical record, with unicode, headers and optionals set
}

func codecOf[T any](k schemas.Kind, enc func(T) ([]byte, error), dec func([]byte) (T, error), sample T) codec {
	return codec{
		kind:   k,
		encode: func(v any) ([]byte, error) { return enc(v.(T)) },
		decode: func(b []byte) (any, error) { return dec(b) },
		sample: sample,
	}
}

func codecs() []codec {
	return []codec{
		codecOf(schemas.KindRequest, schemas.EncodeRequest, schemas.DecodeRequest, sampleRequest()),
		codecOf(schemas.KindTask, schemas.EncodeTask, schemas.DecodeTask, sampleTask()),
		codecOf(schemas.KindManifest, schemas.EncodeManifest, schemas.DecodeManifest, sampleManifest()),
		codecOf(schemas.KindResult, schemas.EncodeResult, schemas.DecodeResult, sampleResult()),
		codecOf(schemas.KindReply, schemas.EncodeReply, schemas.DecodeReply, sampleReply()),
	}
}

func sampleHeaders() map[string]string {
	return map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", uni: uni, "x-tenant": "acme", "": "empty key"}
}

func sampleRequest() schemas.Request {
	return schemas.Request{
		CorrelationID: "req-" + uni,
		Route:         "search-" + uni,
		Payload:       []byte(`{"q":"` + uni + `"}`),
		ContentType:   "application/json",
		Timeout:       1500 * time.Millisecond,
		Fanout:        ptr(8),
		ReplyTo:       "replies-" + uni,
		Headers:       sampleHeaders(),
		SubmittedAt:   at,
		ReplayOf:      ptr(schemas.CorrelationID("orig-" + uni)),
		ReplayRun:     ptr("run-" + uni),
	}
}

func sampleTask() schemas.Task {
	return schemas.Task{
		CorrelationID: "req-" + uni,
		PartID:        "shard-" + uni,
		PartCount:     8,
		Route:         "search-" + uni,
		Payload:       []byte(`{"q":"` + uni + `","shard":3}`),
		ContentType:   "application/json; charset=" + uni,
		Deadline:      at.Add(1500 * time.Millisecond),
		Attempt:       2,
		SubmittedAt:   at,
		Headers:       sampleHeaders(),
	}
}

func sampleManifest() schemas.Manifest {
	return schemas.Manifest{
		CorrelationID: "req-" + uni,
		Route:         "search-" + uni,
		Parts:         []schemas.PartID{"shard-0", "shard-" + uni, ""},
		Deadline:      at.Add(1500 * time.Millisecond),
		Policy:        "quorum:2",
		SubmittedAt:   at,
		ReplyTo:       "replies-" + uni,
		Headers:       sampleHeaders(),
		ReplayOf:      ptr(schemas.CorrelationID("orig-" + uni)),
	}
}

func sampleResult() schemas.Result {
	return schemas.Result{
		CorrelationID: "req-" + uni,
		PartID:        "shard-" + uni,
		Route:         "search-" + uni,
		Status:        schemas.ResultError,
		Payload:       []byte{0, 1, 2, 0xff, 0xfe},
		Error:         "handler: " + uni + " timed out",
		ProcessorID:   "proc-" + uni,
		Attempt:       2,
		Tries:         3,
		StartedAt:     at,
		FinishedAt:    at.Add(42 * time.Millisecond),
		Deadline:      at.Add(1500 * time.Millisecond),
	}
}

func sampleReply() schemas.Reply {
	return schemas.Reply{
		CorrelationID: "req-" + uni,
		Route:         "search-" + uni,
		Status:        schemas.ReplyPartial,
		Payload:       []byte(`[{"id":"` + uni + `"}]`),
		ContentType:   "application/json",
		Error:         "1 of 3 parts missing: " + uni,
		Parts: []schemas.PartOutcome{
			{PartID: "shard-0", Status: schemas.PartOK, ProcessorID: "proc-" + uni, Attempt: 1, Latency: 12 * time.Millisecond},
			{PartID: "shard-" + uni, Status: schemas.PartError, Error: uni, ProcessorID: "p2", Attempt: 2, Latency: 900 * time.Millisecond},
			{PartID: "shard-2", Status: schemas.PartMissing},
		},
		SubmittedAt: at,
		CompletedAt: at.Add(1500 * time.Millisecond),
		ReplayOf:    ptr(schemas.CorrelationID("orig-" + uni)),
	}
}

// diff reports how got differs from want, or "" when they are equal. It is
// strict about nil against empty slices and maps, and compares time.Time
// with Equal, since decoding returns UTC.
func diff(want, got any) string {
	var out []string
	diffValue(&out, "", reflect.ValueOf(want), reflect.ValueOf(got))
	return strings.Join(out, "\n")
}

var timeType = reflect.TypeFor[time.Time]()

func diffValue(out *[]string, path string, w, g reflect.Value) {
	if w.IsValid() != g.IsValid() {
		*out = append(*out, fmt.Sprintf("%s: want %v, got %v", path, w, g))
		return
	}
	if !w.IsValid() {
		return
	}
	if w.Type() != g.Type() {
		*out = append(*out, fmt.Sprintf("%s: want type %s, got %s", path, w.Type(), g.Type()))
		return
	}
	if w.Type() == timeType {
		wt, gt := w.Interface().(time.Time), g.Interface().(time.Time)
		if !wt.Equal(gt) {
			*out = append(*out, fmt.Sprintf("%s: want %s, got %s", path, wt.Format(time.RFC3339Nano), gt.Format(time.RFC3339Nano)))
		}
		return
	}
	switch w.Kind() {
	case reflect.Struct:
		for i := range w.NumField() {
			diffValue(out, path+"."+w.Type().Field(i).Name, w.Field(i), g.Field(i))
		}
	case reflect.Pointer, reflect.Interface:
		if w.IsNil() || g.IsNil() {
			if w.IsNil() != g.IsNil() {
				*out = append(*out, fmt.Sprintf("%s: want nil=%t, got nil=%t", path, w.IsNil(), g.IsNil()))
			}
			return
		}
		diffValue(out, path, w.Elem(), g.Elem())
	case reflect.Slice:
		if w.IsNil() != g.IsNil() {
			*out = append(*out, fmt.Sprintf("%s: want nil=%t, got nil=%t", path, w.IsNil(), g.IsNil()))
			return
		}
		if w.Type().Elem().Kind() == reflect.Uint8 {
			if !bytes.Equal(w.Bytes(), g.Bytes()) {
				*out = append(*out, fmt.Sprintf("%s: bytes differ (want %d bytes, got %d)", path, w.Len(), g.Len()))
			}
			return
		}
		if w.Len() != g.Len() {
			*out = append(*out, fmt.Sprintf("%s: want %d items, got %d", path, w.Len(), g.Len()))
			return
		}
		for i := range w.Len() {
			diffValue(out, fmt.Sprintf("%s[%d]", path, i), w.Index(i), g.Index(i))
		}
	case reflect.Map:
		if w.IsNil() != g.IsNil() {
			*out = append(*out, fmt.Sprintf("%s: want nil=%t, got nil=%t", path, w.IsNil(), g.IsNil()))
			return
		}
		if w.Len() != g.Len() {
			*out = append(*out, fmt.Sprintf("%s: want %d entries, got %d", path, w.Len(), g.Len()))
		}
		for _, k := range w.MapKeys() {
			gv := g.MapIndex(k)
			if !gv.IsValid() {
				*out = append(*out, fmt.Sprintf("%s[%v]: missing", path, k))
				continue
			}
			diffValue(out, fmt.Sprintf("%s[%v]", path, k), w.MapIndex(k), gv)
		}
	default:
		if !reflect.DeepEqual(w.Interface(), g.Interface()) {
			*out = append(*out, fmt.Sprintf("%s: want %#v, got %#v", path, w.Interface(), g.Interface()))
		}
	}
}

// The decoded forms, as documented in native.go: timestamps and durations
// cut to whole milliseconds, a nil payload read back as empty, an empty map
// as nil, nil Parts as empty.

func ms(t time.Time) time.Time { return t.Truncate(time.Millisecond) }

func payloadDecoded(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func headersDecoded(h map[string]string) map[string]string {
	if len(h) == 0 {
		return nil
	}
	return h
}

func requestDecoded(r schemas.Request) schemas.Request {
	r.Payload = payloadDecoded(r.Payload)
	r.Timeout = r.Timeout.Truncate(time.Millisecond)
	r.Headers = headersDecoded(r.Headers)
	r.SubmittedAt = ms(r.SubmittedAt)
	return r
}

func taskDecoded(t schemas.Task) schemas.Task {
	t.Payload = payloadDecoded(t.Payload)
	t.Headers = headersDecoded(t.Headers)
	t.Deadline = ms(t.Deadline)
	t.SubmittedAt = ms(t.SubmittedAt)
	return t
}

func manifestDecoded(m schemas.Manifest) schemas.Manifest {
	if m.Parts == nil {
		m.Parts = []schemas.PartID{}
	}
	m.Headers = headersDecoded(m.Headers)
	m.Deadline = ms(m.Deadline)
	m.SubmittedAt = ms(m.SubmittedAt)
	return m
}

func resultDecoded(r schemas.Result) schemas.Result {
	r.Payload = payloadDecoded(r.Payload)
	r.StartedAt = ms(r.StartedAt)
	r.FinishedAt = ms(r.FinishedAt)
	r.Deadline = ms(r.Deadline)
	return r
}

func replyDecoded(r schemas.Reply) schemas.Reply {
	r.Payload = payloadDecoded(r.Payload)
	parts := make([]schemas.PartOutcome, len(r.Parts))
	for i, p := range r.Parts {
		p.Latency = p.Latency.Truncate(time.Millisecond)
		parts[i] = p
	}
	r.Parts = parts
	r.SubmittedAt = ms(r.SubmittedAt)
	r.CompletedAt = ms(r.CompletedAt)
	return r
}

func mustEncode(tb testing.TB, c codec, v any) []byte {
	tb.Helper()
	b, err := c.encode(v)
	if err != nil {
		tb.Fatalf("encode %s: %v", c.kind, err)
	}
	return b
}
