package schemas

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// This file is the codec of the five pipeline records, written by hand for
// their fixed schemas. Every role encodes or decodes one of them per record
// it moves (a task and a result per part), and through goavro's generic
// map[string]any form that was a fifth of the pipeline's CPU. The bytes and
// values are those of the goavro codec in native.go, which stays as the
// reference: the tests require equal bytes from both encoders and equal
// values, or equal errors, from both decoders, on generated records and on
// fuzzed input.
//
// What the decoders accept is what goavro accepts after the walk in walk.go:
// every length, count and index within the bytes left and the schema, ints
// within int32, varints of at most 10 bytes, negative block counts with a
// block size that fits, no duplicate map key, no trailing bytes. A record
// whose writer's schema is not the current one goes to goavro (codec.go,
// writer).

// The enum symbols, in schema order.
var (
	resultStatuses = [...]ResultStatus{ResultOK, ResultError, ResultExpired}
	replyStatuses  = [...]ReplyStatus{ReplyComplete, ReplyPartial, ReplyFailed}
	partStatuses   = [...]PartStatus{PartOK, PartError, PartExpired, PartMissing, PartSkipped}
)

// Minimum encoded sizes of an array or map item, which bound a block's
// count by the bytes left: a string (its length), a map entry (two
// lengths), a PartOutcome (three strings, an enum, an int and a long).
const (
	minString      = 1
	minMapEntry    = 2
	minPartOutcome = 6
)

// contentTypeJSON is the usual content type; decoding returns this string
// rather than a fresh copy of it.
const contentTypeJSON = "application/json"

// EncodeRequest encodes r in single-object encoding.
func EncodeRequest(r Request) ([]byte, error) {
	const k = KindRequest
	if r.Fanout != nil && !fitsInt(*r.Fanout) {
		return nil, fmt.Errorf("encode %s: fanout %d out of the int range", k, *r.Fanout)
	}
	size := 10 + 5*6 + 3*10 + len(r.CorrelationID) + len(r.Route) + len(r.Payload) + len(r.ContentType) + len(r.ReplyTo) + mapSize(r.Headers)
	if r.ReplayOf != nil {
		size += len(*r.ReplayOf)
	}
	if r.ReplayRun != nil {
		size += len(*r.ReplayRun)
	}
	b, err := startRecord(k, size)
	if err != nil {
		return nil, err
	}
	b = appendString(b, string(r.CorrelationID))
	b = appendString(b, string(r.Route))
	b = appendBytes(b, r.Payload)
	b = appendString(b, r.ContentType)
	b = appendLong(b, r.Timeout.Milliseconds())
	if r.Fanout == nil {
		b = appendLong(b, 0)
	} else {
		b = appendLong(b, 1)
		b = appendLong(b, int64(*r.Fanout))
	}
	b = appendString(b, r.ReplyTo)
	b = appendStringMap(b, r.Headers)
	b = appendMillis(b, r.SubmittedAt)
	b = appendOptional(b, (*string)(r.ReplayOf))
	b = appendOptional(b, r.ReplayRun)
	return b, nil
}

// DecodeRequest decodes a single-object encoded Request. Errors are
// *DecodeError.
func DecodeRequest(b []byte) (v Request, err error) {
	const k = KindRequest
	d, fast, err := openBody(k, b)
	if !fast {
		if err != nil {
			return Request{}, err
		}
		return decode(k, b, requestFromNative)
	}
	defer recoverMalformed(k, &v, &err)
	v = d.request()
	if err := d.end(k); err != nil {
		return Request{}, err
	}
	return v, nil
}

func (d *decoder) request() Request {
	var r Request
	r.CorrelationID = CorrelationID(d.str("correlation_id"))
	r.Route = Route(d.str("route"))
	r.Payload = d.bytes("payload")
	r.ContentType = d.contentType("content_type")
	r.Timeout = d.duration("timeout_ms")
	if d.union("fanout") {
		n := int(d.int("fanout"))
		r.Fanout = &n
	}
	r.ReplyTo = d.str("reply_to")
	r.Headers = d.stringMap("headers")
	r.SubmittedAt = d.timestamp("submitted_at")
	if d.union("replay_of") {
		id := CorrelationID(d.str("replay_of"))
		r.ReplayOf = &id
	}
	if d.union("replay_run") {
		s := d.str("replay_run")
		r.ReplayRun = &s
	}
	return r
}

// EncodeTask encodes t in single-object encoding.
func EncodeTask(t Task) ([]byte, error) {
	const k = KindTask
	if !fitsInt(t.PartCount) {
		return nil, fmt.Errorf("encode %s: part_count %d out of the int range", k, t.PartCount)
	}
	if !fitsInt(t.Attempt) {
		return nil, fmt.Errorf("encode %s: attempt %d out of the int range", k, t.Attempt)
	}
	size := 10 + 5*7 + 2*10 + len(t.CorrelationID) + len(t.PartID) + len(t.Route) + len(t.Payload) + len(t.ContentType) + mapSize(t.Headers)
	b, err := startRecord(k, size)
	if err != nil {
		return nil, err
	}
	b = appendString(b, string(t.CorrelationID))
	b = appendString(b, string(t.PartID))
	b = appendLong(b, int64(t.PartCount))
	b = appendString(b, string(t.Route))
	b = appendBytes(b, t.Payload)
	b = appendString(b, t.ContentType)
	b = appendMillis(b, t.Deadline)
	b = appendLong(b, int64(t.Attempt))
	b = appendMillis(b, t.SubmittedAt)
	b = appendStringMap(b, t.Headers)
	return b, nil
}

// DecodeTask decodes a single-object encoded Task. Errors are *DecodeError.
func DecodeTask(b []byte) (v Task, err error) {
	const k = KindTask
	d, fast, err := openBody(k, b)
	if !fast {
		if err != nil {
			return Task{}, err
		}
		return decode(k, b, taskFromNative)
	}
	defer recoverMalformed(k, &v, &err)
	v = d.task()
	if err := d.end(k); err != nil {
		return Task{}, err
	}
	return v, nil
}

func (d *decoder) task() Task {
	var t Task
	t.CorrelationID = CorrelationID(d.str("correlation_id"))
	t.PartID = PartID(d.str("part_id"))
	t.PartCount = int(d.int("part_count"))
	t.Route = Route(d.str("route"))
	t.Payload = d.bytes("payload")
	t.ContentType = d.contentType("content_type")
	t.Deadline = d.timestamp("deadline")
	t.Attempt = int(d.int("attempt"))
	t.SubmittedAt = d.timestamp("submitted_at")
	t.Headers = d.stringMap("headers")
	return t
}

// EncodeManifest encodes mf in single-object encoding.
func EncodeManifest(mf Manifest) ([]byte, error) {
	size := 10 + 5*6 + 2*10 + len(mf.CorrelationID) + len(mf.Route) + len(mf.Policy) + len(mf.ReplyTo) + mapSize(mf.Headers)
	for _, p := range mf.Parts {
		size += 5 + len(p)
	}
	if mf.ReplayOf != nil {
		size += len(*mf.ReplayOf)
	}
	b, err := startRecord(KindManifest, size)
	if err != nil {
		return nil, err
	}
	b = appendString(b, string(mf.CorrelationID))
	b = appendString(b, string(mf.Route))
	if len(mf.Parts) > 0 {
		b = appendLong(b, int64(len(mf.Parts)))
		for _, p := range mf.Parts {
			b = appendString(b, string(p))
		}
	}
	b = appendLong(b, 0)
	b = appendMillis(b, mf.Deadline)
	b = appendString(b, mf.Policy)
	b = appendMillis(b, mf.SubmittedAt)
	b = appendString(b, mf.ReplyTo)
	b = appendStringMap(b, mf.Headers)
	b = appendOptional(b, (*string)(mf.ReplayOf))
	return b, nil
}

// DecodeManifest decodes a single-object encoded Manifest. Errors are
// *DecodeError.
func DecodeManifest(b []byte) (v Manifest, err error) {
	const k = KindManifest
	d, fast, err := openBody(k, b)
	if !fast {
		if err != nil {
			return Manifest{}, err
		}
		return decode(k, b, manifestFromNative)
	}
	defer recoverMalformed(k, &v, &err)
	v = d.manifest()
	if err := d.end(k); err != nil {
		return Manifest{}, err
	}
	return v, nil
}

func (d *decoder) manifest() Manifest {
	var mf Manifest
	mf.CorrelationID = CorrelationID(d.str("correlation_id"))
	mf.Route = Route(d.str("route"))
	mf.Parts = []PartID{}
	for n := d.block("parts", minString); n > 0; n = d.block("parts", minString) {
		mf.Parts = slices.Grow(mf.Parts, n)
		for i := 0; i < n && d.err == nil; i++ {
			mf.Parts = append(mf.Parts, PartID(d.str("parts[]")))
		}
	}
	mf.Deadline = d.timestamp("deadline")
	mf.Policy = d.str("policy")
	mf.SubmittedAt = d.timestamp("submitted_at")
	mf.ReplyTo = d.str("reply_to")
	mf.Headers = d.stringMap("headers")
	if d.union("replay_of") {
		id := CorrelationID(d.str("replay_of"))
		mf.ReplayOf = &id
	}
	return mf
}

// EncodeResult encodes r in single-object encoding.
func EncodeResult(r Result) ([]byte, error) {
	const k = KindResult
	status := slices.Index(resultStatuses[:], r.Status)
	if status < 0 {
		return nil, fmt.Errorf("encode %s: status %q is not one of %v", k, r.Status, resultStatuses)
	}
	if !fitsInt(r.Attempt) {
		return nil, fmt.Errorf("encode %s: attempt %d out of the int range", k, r.Attempt)
	}
	if !fitsInt(r.Tries) {
		return nil, fmt.Errorf("encode %s: tries %d out of the int range", k, r.Tries)
	}
	size := 10 + 5*9 + 3*10 + len(r.CorrelationID) + len(r.PartID) + len(r.Route) + len(r.Payload) + len(r.Error) + len(r.ProcessorID)
	b, err := startRecord(k, size)
	if err != nil {
		return nil, err
	}
	b = appendString(b, string(r.CorrelationID))
	b = appendString(b, string(r.PartID))
	b = appendString(b, string(r.Route))
	b = appendLong(b, int64(status))
	b = appendBytes(b, r.Payload)
	b = appendString(b, r.Error)
	b = appendString(b, r.ProcessorID)
	b = appendLong(b, int64(r.Attempt))
	b = appendLong(b, int64(r.Tries))
	b = appendMillis(b, r.StartedAt)
	b = appendMillis(b, r.FinishedAt)
	b = appendMillis(b, r.Deadline)
	return b, nil
}

// DecodeResult decodes a single-object encoded Result. Errors are
// *DecodeError.
func DecodeResult(b []byte) (v Result, err error) {
	const k = KindResult
	d, fast, err := openBody(k, b)
	if !fast {
		if err != nil {
			return Result{}, err
		}
		return decode(k, b, resultFromNative)
	}
	defer recoverMalformed(k, &v, &err)
	v = d.result()
	if err := d.end(k); err != nil {
		return Result{}, err
	}
	return v, nil
}

func (d *decoder) result() Result {
	var r Result
	r.CorrelationID = CorrelationID(d.str("correlation_id"))
	r.PartID = PartID(d.str("part_id"))
	r.Route = Route(d.str("route"))
	r.Status = resultStatuses[d.enum("status", len(resultStatuses))]
	r.Payload = d.bytes("payload")
	r.Error = d.str("error")
	r.ProcessorID = d.str("processor_id")
	r.Attempt = int(d.int("attempt"))
	r.Tries = int(d.int("tries"))
	r.StartedAt = d.timestamp("started_at")
	r.FinishedAt = d.timestamp("finished_at")
	r.Deadline = d.timestamp("deadline")
	return r
}

// EncodeReply encodes r in single-object encoding.
func EncodeReply(r Reply) ([]byte, error) {
	const k = KindReply
	status := slices.Index(replyStatuses[:], r.Status)
	if status < 0 {
		return nil, fmt.Errorf("encode %s: status %q is not one of %v", k, r.Status, replyStatuses)
	}
	size := 10 + 5*7 + 3*10 + len(r.CorrelationID) + len(r.Route) + len(r.Payload) + len(r.ContentType) + len(r.Error)
	if r.ReplayOf != nil {
		size += len(*r.ReplayOf)
	}
	for i := range r.Parts {
		p := &r.Parts[i]
		if slices.Index(partStatuses[:], p.Status) < 0 {
			return nil, fmt.Errorf("encode %s: part %d: status %q is not one of %v", k, i, p.Status, partStatuses)
		}
		if !fitsInt(p.Attempt) {
			return nil, fmt.Errorf("encode %s: part %d: attempt %d out of the int range", k, i, p.Attempt)
		}
		size += 5*4 + 10 + len(p.PartID) + len(p.Error) + len(p.ProcessorID)
	}
	b, err := startRecord(k, size)
	if err != nil {
		return nil, err
	}
	b = appendString(b, string(r.CorrelationID))
	b = appendString(b, string(r.Route))
	b = appendLong(b, int64(status))
	b = appendBytes(b, r.Payload)
	b = appendString(b, r.ContentType)
	b = appendString(b, r.Error)
	if len(r.Parts) > 0 {
		b = appendLong(b, int64(len(r.Parts)))
		for i := range r.Parts {
			p := &r.Parts[i]
			b = appendString(b, string(p.PartID))
			b = appendLong(b, int64(slices.Index(partStatuses[:], p.Status)))
			b = appendString(b, p.Error)
			b = appendString(b, p.ProcessorID)
			b = appendLong(b, int64(p.Attempt))
			b = appendLong(b, p.Latency.Milliseconds())
		}
	}
	b = appendLong(b, 0)
	b = appendMillis(b, r.SubmittedAt)
	b = appendMillis(b, r.CompletedAt)
	b = appendOptional(b, (*string)(r.ReplayOf))
	return b, nil
}

// DecodeReply decodes a single-object encoded Reply. Errors are
// *DecodeError.
func DecodeReply(b []byte) (v Reply, err error) {
	const k = KindReply
	d, fast, err := openBody(k, b)
	if !fast {
		if err != nil {
			return Reply{}, err
		}
		return decode(k, b, replyFromNative)
	}
	defer recoverMalformed(k, &v, &err)
	v = d.reply()
	if err := d.end(k); err != nil {
		return Reply{}, err
	}
	return v, nil
}

func (d *decoder) reply() Reply {
	var r Reply
	r.CorrelationID = CorrelationID(d.str("correlation_id"))
	r.Route = Route(d.str("route"))
	r.Status = replyStatuses[d.enum("status", len(replyStatuses))]
	r.Payload = d.bytes("payload")
	r.ContentType = d.contentType("content_type")
	r.Error = d.str("error")
	r.Parts = []PartOutcome{}
	for n := d.block("parts", minPartOutcome); n > 0; n = d.block("parts", minPartOutcome) {
		r.Parts = slices.Grow(r.Parts, n)
		for i := 0; i < n && d.err == nil; i++ {
			var p PartOutcome
			p.PartID = PartID(d.str("parts[].part_id"))
			p.Status = partStatuses[d.enum("parts[].status", len(partStatuses))]
			p.Error = d.str("parts[].error")
			p.ProcessorID = d.str("parts[].processor_id")
			p.Attempt = int(d.int("parts[].attempt"))
			p.Latency = d.duration("parts[].latency_ms")
			r.Parts = append(r.Parts, p)
		}
	}
	r.SubmittedAt = d.timestamp("submitted_at")
	r.CompletedAt = d.timestamp("completed_at")
	if d.union("replay_of") {
		id := CorrelationID(d.str("replay_of"))
		r.ReplayOf = &id
	}
	return r
}

// openBody checks b's header for a decoder of kind k. It returns the
// decoder of b's body and fast true when b was written with the current
// schema of k, which the hand-written decoders read; fast false and no
// error when b must go through goavro (decode in codec.go); an error, a
// *DecodeError, when b is not a record of kind k.
func openBody(k Kind, b []byte) (d decoder, fast bool, err error) {
	r, err := loadRegistry()
	if err != nil {
		return decoder{}, false, err
	}
	return r.openBody(k, b)
}

func (r *registry) openBody(k Kind, b []byte) (decoder, bool, error) {
	w, err := r.readHeader(k, b)
	if err != nil || !w.current {
		return decoder{}, false, err
	}
	return decoder{b: b[singleObjectHeaderLen:]}, true, nil
}

// end fails unless the body was read without error and to its last byte.
func (d *decoder) end(k Kind) error {
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return &DecodeError{Kind: k, Reason: "malformed", Err: d.err}
	}
	return nil
}

// recoverMalformed, deferred by a decoder, turns a panic into a malformed
// record, as decode does for goavro: a poison record must never crash a
// role. None is known; the fuzz targets fail on one.
func recoverMalformed[T any](k Kind, v *T, err *error) {
	if p := recover(); p != nil {
		var zero T
		*v, *err = zero, &DecodeError{Kind: k, Reason: "malformed", Err: fmt.Errorf("decoder panicked: %v", p)}
	}
}

// startRecord returns a buffer of capacity size holding k's header.
func startRecord(k Kind, size int) ([]byte, error) {
	r, err := loadRegistry()
	if err != nil {
		return nil, err
	}
	return append(make([]byte, 0, size), r.header[k]...), nil
}

func fitsInt(n int) bool { return n >= math.MinInt32 && n <= math.MaxInt32 }

// appendMillis appends t as a timestamp-millis, computed as goavro does:
// whole milliseconds, rounded down.
func appendMillis(dst []byte, t time.Time) []byte {
	return appendLong(dst, t.Unix()*1e3+int64(t.Nanosecond()/1e6))
}

// appendOptional appends a ["null", "string"] union.
func appendOptional(dst []byte, s *string) []byte {
	if s == nil {
		return appendLong(dst, 0)
	}
	dst = appendLong(dst, 1)
	return appendString(dst, *s)
}

// appendStringMap appends m as one block, its entries in the byte order of
// their keys, as encode sorts goavro's output.
func appendStringMap(dst []byte, m map[string]string) []byte {
	if len(m) > 0 {
		dst = appendLong(dst, int64(len(m)))
		if len(m) == 1 {
			for k, v := range m {
				dst = appendString(dst, k)
				dst = appendString(dst, v)
			}
		} else {
			var onStack [16]string
			keys := onStack[:0]
			for k := range m {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				dst = appendString(dst, k)
				dst = appendString(dst, m[k])
			}
		}
	}
	return appendLong(dst, 0)
}

// mapSize is an upper bound of m's encoded size (for lengths below 2^34).
func mapSize(m map[string]string) int {
	n := 2 * 10
	for k, v := range m {
		n += 10 + len(k) + len(v)
	}
	return n
}

// timestamp reads a timestamp-millis as goavro does: in UTC, time.Time{} for
// the millisecond of time.Time{}.
func (d *decoder) timestamp(field string) time.Time {
	ms := d.long(field)
	return time.Unix(ms/1e3, ms%1e3*1e6).UTC()
}

// duration reads a count of milliseconds; one that a Duration cannot hold
// fails.
func (d *decoder) duration(field string) time.Duration {
	v, err := millis(field, d.long(field))
	if err != nil {
		d.fail("%w", err)
	}
	return v
}

// enum reads the index of one of n symbols; 0 after an error.
func (d *decoder) enum(field string, n int) int {
	i := d.long(field)
	if d.err != nil {
		return 0
	}
	if i < 0 || i >= int64(n) {
		d.fail("%s: enum index %d out of %d", field, i, n)
		return 0
	}
	return int(i)
}

// union reads the branch of a ["null", T] union: true for T.
func (d *decoder) union(field string) bool {
	switch i := d.long(field); {
	case d.err != nil || i == 0:
		return false
	case i == 1:
		return true
	default:
		d.fail("%s: union index %d out of 2", field, i)
		return false
	}
}

// contentType reads a string, without a copy for the usual one.
func (d *decoder) contentType(field string) string {
	v := d.raw(field)
	if string(v) == contentTypeJSON {
		return contentTypeJSON
	}
	return string(v)
}

// block reads the item count of an array or map block: 0 at the end, or
// after an error. Items of at least minItem bytes each must fit in the
// bytes left.
func (d *decoder) block(field string, minItem int) int {
	if d.err != nil {
		return 0
	}
	count, rest, err := readBlockCount(d.b)
	if err != nil {
		d.fail("%s: %w", field, err)
		return 0
	}
	d.b = rest
	if count > int64(len(d.b)/minItem) || count > math.MaxInt32 {
		d.fail("%s: block of %d items with %d bytes left", field, count, len(d.b))
		return 0
	}
	return int(count)
}

// stringMap reads a map of strings; nil when it is empty. A key given twice
// fails, as it does in goavro.
func (d *decoder) stringMap(field string) map[string]string {
	var m map[string]string
	for n := d.block(field, minMapEntry); n > 0; n = d.block(field, minMapEntry) {
		if m == nil {
			m = make(map[string]string, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			k := d.str(field)
			v := d.str(field)
			if _, dup := m[k]; dup {
				d.fail("%s: duplicate key %q", field, k)
				return nil
			}
			m[k] = v
		}
	}
	return m
}
