package schemas

import (
	"bytes"
	"fmt"
	"math"
	"time"

	"github.com/linkedin/goavro/v2"
)

// This file is the reference codec of the five pipeline records: it maps the
// Go types to goavro's native form and back. The public Encode* and Decode*
// functions use the hand-written codec in fast.go, which must write the same
// bytes and read the same values; the tests hold the two against each other.
// Decoding also goes through this file for a record whose writer's schema is
// not the current one (none today; see writer in codec.go).
//
// Decoding trusts the shapes that goavro guarantees for a record that matched
// its schema, so the type assertions below cannot fail on a decoded record (and
// decode recovers should one ever do so).
//
// Decoded values share no memory with the record: goavro returns bytes fields
// as slices of its input, which would pin a whole fetch buffer for as long as
// a payload is held, so payloads are copied. An empty payload decodes as an
// empty, non-nil slice, empty Parts as an empty, non-nil slice, and an empty
// map as nil.
//
// Go ints go to goavro as int, not int32, so that a count beyond the Avro
// int's range fails to encode instead of being truncated.

// goavroEncodeRequest encodes r in single-object encoding.
func goavroEncodeRequest(r Request) ([]byte, error) {
	return encode(KindRequest, map[string]any{
		"correlation_id": string(r.CorrelationID),
		"route":          string(r.Route),
		"payload":        bytesOrEmpty(r.Payload),
		"content_type":   r.ContentType,
		"timeout_ms":     r.Timeout.Milliseconds(),
		"fanout":         optionalInt(r.Fanout),
		"reply_to":       r.ReplyTo,
		"headers":        stringMap(r.Headers),
		"submitted_at":   r.SubmittedAt,
		"replay_of":      optionalString((*string)(r.ReplayOf)),
		"replay_run":     optionalString(r.ReplayRun),
	}, len(r.Headers) > 1)
}

// goavroDecodeRequest decodes a single-object encoded Request.
func goavroDecodeRequest(b []byte) (Request, error) {
	return decode(KindRequest, b, requestFromNative)
}

func requestFromNative(m map[string]any) (Request, error) {
	timeout, err := millis("timeout_ms", m["timeout_ms"].(int64))
	if err != nil {
		return Request{}, err
	}
	r := Request{
		CorrelationID: CorrelationID(m["correlation_id"].(string)),
		Route:         Route(m["route"].(string)),
		Payload:       bytes.Clone(m["payload"].([]byte)),
		ContentType:   m["content_type"].(string),
		Timeout:       timeout,
		ReplyTo:       m["reply_to"].(string),
		Headers:       goStringMap(m["headers"]),
		SubmittedAt:   m["submitted_at"].(time.Time),
	}
	if v, ok := unionValue(m["fanout"]); ok {
		n := int(v.(int32))
		r.Fanout = &n
	}
	if v, ok := unionValue(m["replay_of"]); ok {
		id := CorrelationID(v.(string))
		r.ReplayOf = &id
	}
	if v, ok := unionValue(m["replay_run"]); ok {
		s := v.(string)
		r.ReplayRun = &s
	}
	return r, nil
}

// goavroEncodeTask encodes t in single-object encoding.
func goavroEncodeTask(t Task) ([]byte, error) {
	return encode(KindTask, map[string]any{
		"correlation_id": string(t.CorrelationID),
		"part_id":        string(t.PartID),
		"part_count":     t.PartCount,
		"route":          string(t.Route),
		"payload":        bytesOrEmpty(t.Payload),
		"content_type":   t.ContentType,
		"deadline":       t.Deadline,
		"attempt":        t.Attempt,
		"submitted_at":   t.SubmittedAt,
		"headers":        stringMap(t.Headers),
	}, len(t.Headers) > 1)
}

// goavroDecodeTask decodes a single-object encoded Task.
func goavroDecodeTask(b []byte) (Task, error) {
	return decode(KindTask, b, taskFromNative)
}

func taskFromNative(m map[string]any) (Task, error) {
	return Task{
		CorrelationID: CorrelationID(m["correlation_id"].(string)),
		PartID:        PartID(m["part_id"].(string)),
		PartCount:     int(m["part_count"].(int32)),
		Route:         Route(m["route"].(string)),
		Payload:       bytes.Clone(m["payload"].([]byte)),
		ContentType:   m["content_type"].(string),
		Deadline:      m["deadline"].(time.Time),
		Attempt:       int(m["attempt"].(int32)),
		SubmittedAt:   m["submitted_at"].(time.Time),
		Headers:       goStringMap(m["headers"]),
	}, nil
}

// goavroEncodeManifest encodes m in single-object encoding.
func goavroEncodeManifest(mf Manifest) ([]byte, error) {
	parts := make([]any, len(mf.Parts))
	for i, p := range mf.Parts {
		parts[i] = string(p)
	}
	return encode(KindManifest, map[string]any{
		"correlation_id": string(mf.CorrelationID),
		"route":          string(mf.Route),
		"parts":          parts,
		"deadline":       mf.Deadline,
		"policy":         mf.Policy,
		"submitted_at":   mf.SubmittedAt,
		"reply_to":       mf.ReplyTo,
		"headers":        stringMap(mf.Headers),
		"replay_of":      optionalString((*string)(mf.ReplayOf)),
	}, len(mf.Headers) > 1)
}

// goavroDecodeManifest decodes a single-object encoded Manifest.
func goavroDecodeManifest(b []byte) (Manifest, error) {
	return decode(KindManifest, b, manifestFromNative)
}

func manifestFromNative(m map[string]any) (Manifest, error) {
	raw := m["parts"].([]any)
	parts := make([]PartID, len(raw))
	for i, p := range raw {
		parts[i] = PartID(p.(string))
	}
	mf := Manifest{
		CorrelationID: CorrelationID(m["correlation_id"].(string)),
		Route:         Route(m["route"].(string)),
		Parts:         parts,
		Deadline:      m["deadline"].(time.Time),
		Policy:        m["policy"].(string),
		SubmittedAt:   m["submitted_at"].(time.Time),
		ReplyTo:       m["reply_to"].(string),
		Headers:       goStringMap(m["headers"]),
	}
	if v, ok := unionValue(m["replay_of"]); ok {
		id := CorrelationID(v.(string))
		mf.ReplayOf = &id
	}
	return mf, nil
}

// goavroEncodeResult encodes r in single-object encoding.
func goavroEncodeResult(r Result) ([]byte, error) {
	return encode(KindResult, map[string]any{
		"correlation_id": string(r.CorrelationID),
		"part_id":        string(r.PartID),
		"route":          string(r.Route),
		"status":         string(r.Status),
		"payload":        bytesOrEmpty(r.Payload),
		"error":          r.Error,
		"processor_id":   r.ProcessorID,
		"attempt":        r.Attempt,
		"tries":          r.Tries,
		"started_at":     r.StartedAt,
		"finished_at":    r.FinishedAt,
		"deadline":       r.Deadline,
	}, false)
}

// goavroDecodeResult decodes a single-object encoded Result.
func goavroDecodeResult(b []byte) (Result, error) {
	return decode(KindResult, b, resultFromNative)
}

func resultFromNative(m map[string]any) (Result, error) {
	return Result{
		CorrelationID: CorrelationID(m["correlation_id"].(string)),
		PartID:        PartID(m["part_id"].(string)),
		Route:         Route(m["route"].(string)),
		Status:        ResultStatus(m["status"].(string)),
		Payload:       bytes.Clone(m["payload"].([]byte)),
		Error:         m["error"].(string),
		ProcessorID:   m["processor_id"].(string),
		Attempt:       int(m["attempt"].(int32)),
		Tries:         int(m["tries"].(int32)),
		StartedAt:     m["started_at"].(time.Time),
		FinishedAt:    m["finished_at"].(time.Time),
		Deadline:      m["deadline"].(time.Time),
	}, nil
}

// goavroEncodeReply encodes r in single-object encoding.
func goavroEncodeReply(r Reply) ([]byte, error) {
	parts := make([]any, len(r.Parts))
	for i, p := range r.Parts {
		parts[i] = map[string]any{
			"part_id":      string(p.PartID),
			"status":       string(p.Status),
			"error":        p.Error,
			"processor_id": p.ProcessorID,
			"attempt":      p.Attempt,
			"latency_ms":   p.Latency.Milliseconds(),
		}
	}
	return encode(KindReply, map[string]any{
		"correlation_id": string(r.CorrelationID),
		"route":          string(r.Route),
		"status":         string(r.Status),
		"payload":        bytesOrEmpty(r.Payload),
		"content_type":   r.ContentType,
		"error":          r.Error,
		"parts":          parts,
		"submitted_at":   r.SubmittedAt,
		"completed_at":   r.CompletedAt,
		"replay_of":      optionalString((*string)(r.ReplayOf)),
	}, false)
}

// goavroDecodeReply decodes a single-object encoded Reply.
func goavroDecodeReply(b []byte) (Reply, error) {
	return decode(KindReply, b, replyFromNative)
}

func replyFromNative(m map[string]any) (Reply, error) {
	raw := m["parts"].([]any)
	parts := make([]PartOutcome, len(raw))
	for i, p := range raw {
		pm := p.(map[string]any)
		latency, err := millis("latency_ms", pm["latency_ms"].(int64))
		if err != nil {
			return Reply{}, fmt.Errorf("part %d: %w", i, err)
		}
		parts[i] = PartOutcome{
			PartID:      PartID(pm["part_id"].(string)),
			Status:      PartStatus(pm["status"].(string)),
			Error:       pm["error"].(string),
			ProcessorID: pm["processor_id"].(string),
			Attempt:     int(pm["attempt"].(int32)),
			Latency:     latency,
		}
	}
	r := Reply{
		CorrelationID: CorrelationID(m["correlation_id"].(string)),
		Route:         Route(m["route"].(string)),
		Status:        ReplyStatus(m["status"].(string)),
		Payload:       bytes.Clone(m["payload"].([]byte)),
		ContentType:   m["content_type"].(string),
		Error:         m["error"].(string),
		Parts:         parts,
		SubmittedAt:   m["submitted_at"].(time.Time),
		CompletedAt:   m["completed_at"].(time.Time),
	}
	if v, ok := unionValue(m["replay_of"]); ok {
		id := CorrelationID(v.(string))
		r.ReplayOf = &id
	}
	return r, nil
}

// millis converts a count of milliseconds to a Duration, refusing counts
// beyond the ±292 years a Duration holds rather than wrapping around.
func millis(field string, ms int64) (time.Duration, error) {
	const limit = math.MaxInt64 / int64(time.Millisecond)
	if ms > limit || ms < -limit {
		return 0, fmt.Errorf("%s %d out of range", field, ms)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

func bytesOrEmpty(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func stringMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func goStringMap(v any) map[string]string {
	m, _ := v.(map[string]any)
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k], _ = v.(string)
	}
	return out
}

func optionalString(s *string) any {
	if s == nil {
		return nil
	}
	return goavro.Union("string", *s)
}

func optionalInt(n *int) any {
	if n == nil {
		return nil
	}
	return goavro.Union("int", *n)
}

// unionValue unwraps goavro's native form of a ["null", T] union.
func unionValue(v any) (any, bool) {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		return nil, false
	}
	for _, inner := range m {
		return inner, true
	}
	return nil, false
}
