package schemas_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/scattergather/scattergather/schemas"
)

// The records benchmarked: every kind with a 100-byte payload and no headers
// (what most records look like), a Task with four headers (the map sort),
// and a Reply with 16 parts. The calls are typed, not through codec's any,
// so that the figures hold no boxing of our own.

func benchRequest() schemas.Request {
	r := sampleRequest()
	r.Payload, r.Headers = payloadOf(100), nil
	return r
}

func benchTask(headers bool) schemas.Task {
	t := sampleTask()
	t.Payload = payloadOf(100)
	if !headers {
		t.Headers = nil
	}
	return t
}

func benchManifest() schemas.Manifest {
	m := sampleManifest()
	m.Headers = nil
	return m
}

func benchResult() schemas.Result {
	r := sampleResult()
	r.Payload = payloadOf(100)
	return r
}

func benchReply(parts int) schemas.Reply {
	r := sampleReply()
	r.Payload = payloadOf(100)
	if parts > 0 {
		r.Parts = make([]schemas.PartOutcome, parts)
		for i := range r.Parts {
			r.Parts[i] = schemas.PartOutcome{
				PartID: schemas.PartID(fmt.Sprintf("shard-%02d", i)), Status: schemas.PartOK,
				ProcessorID: "processor-7", Attempt: 1, Latency: time.Duration(i+1) * time.Millisecond,
			}
		}
	}
	return r
}

func benchEncode[T any](b *testing.B, v T, enc func(T) ([]byte, error)) {
	b.Helper()
	out, err := enc(v)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(out)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := enc(v); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDecode[T any](b *testing.B, v T, enc func(T) ([]byte, error), dec func([]byte) (T, error)) {
	b.Helper()
	in, err := enc(v)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dec(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode and BenchmarkDecode run every record through the
// hand-written codec (fast: the public functions) and the goavro reference
// (goavro), in the same run, so that the two compare on the same machine at
// the same moment.
func BenchmarkEncode(b *testing.B) {
	cases := []struct {
		name         string
		fast, goavro func(*testing.B)
	}{
		{"request", encodeCase(benchRequest(), schemas.EncodeRequest), encodeCase(benchRequest(), schemas.GoavroEncodeRequest)},
		{"task", encodeCase(benchTask(false), schemas.EncodeTask), encodeCase(benchTask(false), schemas.GoavroEncodeTask)},
		{"task-4-headers", encodeCase(benchTask(true), schemas.EncodeTask), encodeCase(benchTask(true), schemas.GoavroEncodeTask)},
		{"manifest", encodeCase(benchManifest(), schemas.EncodeManifest), encodeCase(benchManifest(), schemas.GoavroEncodeManifest)},
		{"result", encodeCase(benchResult(), schemas.EncodeResult), encodeCase(benchResult(), schemas.GoavroEncodeResult)},
		{"reply", encodeCase(benchReply(0), schemas.EncodeReply), encodeCase(benchReply(0), schemas.GoavroEncodeReply)},
		{"reply-16-parts", encodeCase(benchReply(16), schemas.EncodeReply), encodeCase(benchReply(16), schemas.GoavroEncodeReply)},
	}
	for _, c := range cases {
		b.Run(c.name+"/fast", c.fast)
		b.Run(c.name+"/goavro", c.goavro)
	}
}

func BenchmarkDecode(b *testing.B) {
	cases := []struct {
		name         string
		fast, goavro func(*testing.B)
	}{
		{"request", decodeCase(benchRequest(), schemas.EncodeRequest, schemas.DecodeRequest), decodeCase(benchRequest(), schemas.EncodeRequest, schemas.GoavroDecodeRequest)},
		{"task", decodeCase(benchTask(false), schemas.EncodeTask, schemas.DecodeTask), decodeCase(benchTask(false), schemas.EncodeTask, schemas.GoavroDecodeTask)},
		{"task-4-headers", decodeCase(benchTask(true), schemas.EncodeTask, schemas.DecodeTask), decodeCase(benchTask(true), schemas.EncodeTask, schemas.GoavroDecodeTask)},
		{"manifest", decodeCase(benchManifest(), schemas.EncodeManifest, schemas.DecodeManifest), decodeCase(benchManifest(), schemas.EncodeManifest, schemas.GoavroDecodeManifest)},
		{"result", decodeCase(benchResult(), schemas.EncodeResult, schemas.DecodeResult), decodeCase(benchResult(), schemas.EncodeResult, schemas.GoavroDecodeResult)},
		{"reply", decodeCase(benchReply(0), schemas.EncodeReply, schemas.DecodeReply), decodeCase(benchReply(0), schemas.EncodeReply, schemas.GoavroDecodeReply)},
		{"reply-16-parts", decodeCase(benchReply(16), schemas.EncodeReply, schemas.DecodeReply), decodeCase(benchReply(16), schemas.EncodeReply, schemas.GoavroDecodeReply)},
	}
	for _, c := range cases {
		b.Run(c.name+"/fast", c.fast)
		b.Run(c.name+"/goavro", c.goavro)
	}
}

func encodeCase[T any](v T, enc func(T) ([]byte, error)) func(*testing.B) {
	return func(b *testing.B) { benchEncode(b, v, enc) }
}

func decodeCase[T any](v T, enc func(T) ([]byte, error), dec func([]byte) (T, error)) func(*testing.B) {
	return func(b *testing.B) { benchDecode(b, v, enc, dec) }
}

func BenchmarkKindOf(b *testing.B) {
	in, err := schemas.EncodeResult(benchResult())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := schemas.KindOf(in); err != nil {
			b.Fatal(err)
		}
	}
}
