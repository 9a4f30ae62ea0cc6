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

func BenchmarkEncode(b *testing.B) {
	b.Run("request", func(b *testing.B) { benchEncode(b, benchRequest(), schemas.EncodeRequest) })
	b.Run("task", func(b *testing.B) { benchEncode(b, benchTask(false), schemas.EncodeTask) })
	b.Run("task-4-headers", func(b *testing.B) { benchEncode(b, benchTask(true), schemas.EncodeTask) })
	b.Run("manifest", func(b *testing.B) { benchEncode(b, benchManifest(), schemas.EncodeManifest) })
	b.Run("result", func(b *testing.B) { benchEncode(b, benchResult(), schemas.EncodeResult) })
	b.Run("reply", func(b *testing.B) { benchEncode(b, benchReply(0), schemas.EncodeReply) })
	b.Run("reply-16-parts", func(b *testing.B) { benchEncode(b, benchReply(16), schemas.EncodeReply) })
}

func BenchmarkDecode(b *testing.B) {
	b.Run("request", func(b *testing.B) { benchDecode(b, benchRequest(), schemas.EncodeRequest, schemas.DecodeRequest) })
	b.Run("task", func(b *testing.B) { benchDecode(b, benchTask(false), schemas.EncodeTask, schemas.DecodeTask) })
	b.Run("task-4-headers", func(b *testing.B) { benchDecode(b, benchTask(true), schemas.EncodeTask, schemas.DecodeTask) })
	b.Run("manifest", func(b *testing.B) { benchDecode(b, benchManifest(), schemas.EncodeManifest, schemas.DecodeManifest) })
	b.Run("result", func(b *testing.B) { benchDecode(b, benchResult(), schemas.EncodeResult, schemas.DecodeResult) })
	b.Run("reply", func(b *testing.B) { benchDecode(b, benchReply(0), schemas.EncodeReply, schemas.DecodeReply) })
	b.Run("reply-16-parts", func(b *testing.B) { benchDecode(b, benchReply(16), schemas.EncodeReply, schemas.DecodeReply) })
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
