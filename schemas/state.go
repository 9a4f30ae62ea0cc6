package schemas

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"
)

// This file is the codec of the aggregator's changelog entries
// (aggregation_state.avsc). Unlike the other records, which go through
// goavro, it is written by hand: the aggregator writes one entry per part
// that arrives, on its hot path, and reads thousands when a partition is
// assigned, so both directions must be cheap (no maps of any, no
// allocation when encoding into a reused buffer). The bytes are the same
// Avro single-object encoding; the tests check them against goavro in both
// directions.
//
// It also reads the entries of every released schema (history/vN), whose
// bodies are the current one's without the fields added since: a
// changelog written by the previous build is restored by the next.

// stateBody says which release of aggregation_state.avsc a body was
// written with.
type stateBody uint8

const (
	// stateBodyCurrent: the current schema.
	stateBodyCurrent stateBody = iota
	// stateBodyV2: release v2, before StateOpen.results and
	// StateDone.requests (parts were entries of their own, and every done
	// request had its own entry).
	stateBodyV2
)

// stateBodies maps a release (its history/ folder) whose AggregationState
// differs from the current one to the body its records have.
var stateBodies = map[string]stateBody{"v2": stateBodyV2}

// StateEntry says which branch of the AggregationState union an entry is.
type StateEntry uint8

// The changelog entries, in the order of the schema's union.
const (
	// EntryOpen: the manifest came (Kafka key: the correlation id).
	EntryOpen StateEntry = iota + 1
	// EntryPart: a part of an open request has a result (key: [AppendPartKey]).
	// Written by release v2 only: since, an open entry holds its parts.
	EntryPart
	// EntryHeld: a result came before its manifest (key: [AppendHeldKey]).
	EntryHeld
	// EntryDone: requests were replied to. Since v3 a done-list (key:
	// [AppendDoneListKey], DoneState.Requests set); written by v2, one
	// request (key: the correlation id).
	EntryDone
)

func (e StateEntry) String() string {
	switch e {
	case EntryOpen:
		return "open"
	case EntryPart:
		return "part"
	case EntryHeld:
		return "held"
	case EntryDone:
		return "done"
	}
	return fmt.Sprintf("StateEntry(%d)", uint8(e))
}

// AggregationState is one entry of the aggregator's changelog. Entry says
// which of Open, Part, Held and Done holds it; the others are zero. Times
// are kept to the microsecond.
type AggregationState struct {
	CorrelationID CorrelationID
	Entry         StateEntry
	// Open is the request's manifest; its CorrelationID is not encoded
	// (the entry's is) and is set from it when decoded.
	Open Manifest
	// Results are, for an open entry, the parts that have a result.
	Results []PartState
	Part    PartState
	Held    HeldRecord
	Done    DoneState
}

// PartState is the result an open request counts for one part.
type PartState struct {
	PartID      PartID
	Status      ResultStatus
	Payload     []byte
	Error       string
	ProcessorID string
	Attempt     int
	ArrivedAt   time.Time
}

// HeldRecord is a result that came before its manifest: the record as it
// was consumed from the results topic, so that it can be used when the
// manifest comes or dead-lettered as it was when it never does.
type HeldRecord struct {
	Partition int32
	Offset    int64
	Value     []byte
	Headers   []RecordHeader
	ArrivedAt time.Time
}

// RecordHeader is a Kafka record header.
type RecordHeader struct {
	Key   string
	Value []byte
}

// DoneState is what stays of a request once it was replied to: late
// records for it are dropped until ForgetAt. In a done-list, Requests are
// the requests and CompletedAt and ForgetAt the latest of theirs.
type DoneState struct {
	CompletedAt time.Time
	ForgetAt    time.Time
	Requests    []DoneRequest
}

// DoneRequest is one request of a done-list.
type DoneRequest struct {
	CorrelationID CorrelationID
	CompletedAt   time.Time
	ForgetAt      time.Time
}

// Changelog keys. A request's own entry (open, then done) is keyed by its
// correlation id; its parts and held results have keys of their own, so
// that an arriving part rewrites one small entry, not the whole request.
// Those keys start with the correlation id and end with its length, so no
// two entries share a key, whatever bytes the ids hold.
const (
	keyTagPart     = 'p'
	keyTagHeld     = 'h'
	keyTagDoneList = 'd'
)

// doneListKeyLen is the length of a done-list key.
const doneListKeyLen = 2 + 8 + 5

// AppendDoneListKey appends the changelog key of done-list seq: an entry of
// the empty correlation id (no request has one), tagged 'd', with seq in 8
// bytes big endian, so that the keys of a partition's lists sort in seq
// order.
func AppendDoneListKey(dst []byte, seq uint64) []byte {
	dst = append(dst, 0, keyTagDoneList)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	return appendKeyEnd(dst, "")
}

// ParseDoneListKey returns the seq of a done-list key, and false for any
// other key.
func ParseDoneListKey(key []byte) (uint64, bool) {
	if len(key) != doneListKeyLen || key[0] != 0 || key[1] != keyTagDoneList || string(key[10:]) != "\x00\x00\x00\x00\x00" {
		return 0, false
	}
	return binary.BigEndian.Uint64(key[2:10]), true
}

// AppendPartKey appends the changelog key of part part of request id to dst.
func AppendPartKey(dst []byte, id CorrelationID, part PartID) []byte {
	dst = append(dst, id...)
	dst = append(dst, 0, keyTagPart)
	dst = append(dst, part...)
	return appendKeyEnd(dst, id)
}

// AppendHeldKey appends the changelog key of the result held for request id
// that was consumed at offset of the results topic.
func AppendHeldKey(dst []byte, id CorrelationID, offset int64) []byte {
	dst = append(dst, id...)
	dst = append(dst, 0, keyTagHeld)
	dst = binary.BigEndian.AppendUint64(dst, uint64(offset))
	return appendKeyEnd(dst, id)
}

func appendKeyEnd(dst []byte, id CorrelationID) []byte {
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint32(dst, uint32(len(id)))
}

// stateStatuses are the symbols of StatePartStatus, in schema order.
var stateStatuses = [...]ResultStatus{ResultOK, ResultError, ResultExpired}

// EncodeAggregationState encodes s in single-object encoding.
func EncodeAggregationState(s *AggregationState) ([]byte, error) {
	return AppendAggregationState(make([]byte, 0, 128), s)
}

// AppendAggregationState appends s in single-object encoding to dst, in the
// current schema. It does not allocate when dst has room (except to sort
// the manifest headers of an open entry with more than eight).
func AppendAggregationState(dst []byte, s *AggregationState) ([]byte, error) {
	r, err := loadRegistry()
	if err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, r.header[KindAggregationState]...)
	dst = appendString(dst, string(s.CorrelationID))
	switch s.Entry {
	case EntryOpen:
		mf := &s.Open
		if err := cmp.Or(checkMicros("deadline", mf.Deadline), checkMicros("submitted_at", mf.SubmittedAt)); err != nil {
			return dst[:start], err
		}
		dst = appendLong(dst, 0)
		dst = appendString(dst, string(mf.Route))
		if len(mf.Parts) > 0 {
			dst = appendLong(dst, int64(len(mf.Parts)))
			for _, p := range mf.Parts {
				dst = appendString(dst, string(p))
			}
		}
		dst = appendLong(dst, 0)
		dst = appendLong(dst, mf.Deadline.UnixMicro())
		dst = appendString(dst, mf.Policy)
		dst = appendLong(dst, mf.SubmittedAt.UnixMicro())
		dst = appendString(dst, mf.ReplyTo)
		if len(mf.Headers) > 0 {
			dst = appendLong(dst, int64(len(mf.Headers)))
			// An open entry is rewritten in every batch in which its
			// request changes: the keys of a few headers are sorted on
			// the stack.
			var small [8]string
			keys := small[:0]
			for k := range mf.Headers {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				dst = appendString(dst, k)
				dst = appendString(dst, mf.Headers[k])
			}
		}
		dst = appendLong(dst, 0)
		if mf.ReplayOf == nil {
			dst = appendLong(dst, 0)
		} else {
			dst = appendLong(dst, 1)
			dst = appendString(dst, string(*mf.ReplayOf))
		}
		if len(s.Results) > 0 {
			dst = appendLong(dst, int64(len(s.Results)))
			for i := range s.Results {
				var err error
				if dst, err = appendPart(dst, &s.Results[i]); err != nil {
					return dst[:start], err
				}
			}
		}
		dst = appendLong(dst, 0)
	case EntryPart:
		dst = appendLong(dst, 1)
		var err error
		if dst, err = appendPart(dst, &s.Part); err != nil {
			return dst[:start], err
		}
	case EntryHeld:
		dst = appendLong(dst, 2)
		h := &s.Held
		if err := checkMicros("arrived_at", h.ArrivedAt); err != nil {
			return dst[:start], err
		}
		dst = appendLong(dst, int64(h.Partition))
		dst = appendLong(dst, h.Offset)
		dst = appendBytes(dst, h.Value)
		if len(h.Headers) > 0 {
			dst = appendLong(dst, int64(len(h.Headers)))
			for _, hd := range h.Headers {
				dst = appendString(dst, hd.Key)
				dst = appendBytes(dst, hd.Value)
			}
		}
		dst = appendLong(dst, 0)
		dst = appendLong(dst, h.ArrivedAt.UnixMicro())
	case EntryDone:
		if err := cmp.Or(checkMicros("completed_at", s.Done.CompletedAt), checkMicros("forget_at", s.Done.ForgetAt)); err != nil {
			return dst[:start], err
		}
		dst = appendLong(dst, 3)
		dst = appendLong(dst, s.Done.CompletedAt.UnixMicro())
		dst = appendLong(dst, s.Done.ForgetAt.UnixMicro())
		if len(s.Done.Requests) > 0 {
			dst = appendLong(dst, int64(len(s.Done.Requests)))
			for i := range s.Done.Requests {
				q := &s.Done.Requests[i]
				if err := cmp.Or(checkMicros("requests[].completed_at", q.CompletedAt), checkMicros("requests[].forget_at", q.ForgetAt)); err != nil {
					return dst[:start], err
				}
				dst = appendString(dst, string(q.CorrelationID))
				dst = appendLong(dst, q.CompletedAt.UnixMicro())
				dst = appendLong(dst, q.ForgetAt.UnixMicro())
			}
		}
		dst = appendLong(dst, 0)
	default:
		return dst[:start], fmt.Errorf("encode %s: %s: no such entry", KindAggregationState, s.Entry)
	}
	return dst, nil
}

// appendPart appends a StatePart body.
func appendPart(dst []byte, p *PartState) ([]byte, error) {
	if err := checkMicros("arrived_at", p.ArrivedAt); err != nil {
		return dst, err
	}
	i := slices.Index(stateStatuses[:], p.Status)
	if i < 0 {
		return dst, fmt.Errorf("encode %s: part %q: status %q is not one of %v", KindAggregationState, p.PartID, p.Status, stateStatuses)
	}
	if p.Attempt < math.MinInt32 || p.Attempt > math.MaxInt32 {
		return dst, fmt.Errorf("encode %s: part %q: attempt %d out of the int range", KindAggregationState, p.PartID, p.Attempt)
	}
	dst = appendString(dst, string(p.PartID))
	dst = appendLong(dst, int64(i))
	dst = appendBytes(dst, p.Payload)
	dst = appendString(dst, p.Error)
	dst = appendString(dst, p.ProcessorID)
	dst = appendLong(dst, int64(p.Attempt))
	return appendLong(dst, p.ArrivedAt.UnixMicro()), nil
}

// checkMicros reports a time that the changelog's timestamp-micros cannot
// hold: t.UnixMicro() wraps silently outside about the years -290308 to
// 294247, and the entry would restore with another time.
func checkMicros(field string, t time.Time) error {
	if time.UnixMicro(t.UnixMicro()).Unix() == t.Unix() {
		return nil
	}
	return fmt.Errorf("encode %s: %s: %s is outside the range of timestamp-micros (%s to %s)", KindAggregationState, field,
		t.Format(time.RFC3339Nano), time.UnixMicro(math.MinInt64).UTC().Format(time.RFC3339Nano), time.UnixMicro(math.MaxInt64).UTC().Format(time.RFC3339Nano))
}

func appendLong(dst []byte, v int64) []byte {
	return binary.AppendUvarint(dst, uint64(v<<1)^uint64(v>>63))
}

func appendString(dst []byte, s string) []byte {
	dst = appendLong(dst, int64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst, b []byte) []byte {
	dst = appendLong(dst, int64(len(b)))
	return append(dst, b...)
}

// DecodeAggregationState decodes a single-object encoded AggregationState.
// The result shares no memory with b. Errors are *DecodeError.
func DecodeAggregationState(b []byte) (AggregationState, error) {
	const k = KindAggregationState
	r, err := loadRegistry()
	if err != nil {
		return AggregationState{}, err
	}
	w, err := r.readHeader(k, b)
	if err != nil {
		return AggregationState{}, err
	}
	d := decoder{b: b[singleObjectHeaderLen:]}
	s := d.state(w.state)
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return AggregationState{}, &DecodeError{Kind: k, Reason: "malformed", Err: d.err}
	}
	return s, nil
}

// decoder reads an Avro binary body: an AggregationState's here, the
// pipeline records' in fast.go. The first error sticks; every read after it
// returns zero values. Every length and count is checked against the bytes
// left before anything is allocated.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) long(field string) int64 {
	if d.err != nil {
		return 0
	}
	v, rest, err := readLong(d.b)
	if err != nil {
		d.fail("%s: %w", field, err)
		return 0
	}
	d.b = rest
	return v
}

func (d *decoder) int(field string) int64 {
	v := d.long(field)
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail("%s: int %d out of range", field, v)
		return 0
	}
	return v
}

func (d *decoder) raw(field string) []byte {
	n := d.long(field)
	if d.err != nil {
		return nil
	}
	if n < 0 || n > int64(len(d.b)) {
		d.fail("%s: length %d with %d bytes left", field, n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str(field string) string { return string(d.raw(field)) }

// bytes returns a copy, never nil when the read succeeds.
func (d *decoder) bytes(field string) []byte {
	v := d.raw(field)
	if d.err != nil {
		return nil
	}
	return append([]byte{}, v...)
}

func (d *decoder) time(field string) time.Time {
	return time.UnixMicro(d.long(field)).UTC()
}

// blocks calls item once per item of an array or map, block by block.
func (d *decoder) blocks(field string, item func()) {
	for d.err == nil {
		count, rest, err := readBlockCount(d.b)
		if err != nil {
			d.fail("%s: %w", field, err)
			return
		}
		d.b = rest
		if count == 0 {
			return
		}
		// No item of ours is encoded in fewer than one byte.
		if count > int64(len(d.b)) {
			d.fail("%s: block of %d items with %d bytes left", field, count, len(d.b))
			return
		}
		for range count {
			if d.err != nil {
				return
			}
			item()
		}
	}
}

// state reads an AggregationState body written with schema body.
func (d *decoder) state(body stateBody) AggregationState {
	s := AggregationState{CorrelationID: CorrelationID(d.str("correlation_id"))}
	switch branch := d.long("entry"); {
	case d.err != nil:
	case branch == 0:
		s.Entry = EntryOpen
		mf := &s.Open
		mf.CorrelationID = s.CorrelationID
		mf.Route = Route(d.str("route"))
		mf.Parts = []PartID{}
		d.blocks("parts", func() { mf.Parts = append(mf.Parts, PartID(d.str("parts[]"))) })
		mf.Deadline = d.time("deadline")
		mf.Policy = d.str("policy")
		mf.SubmittedAt = d.time("submitted_at")
		mf.ReplyTo = d.str("reply_to")
		mf.Headers = d.stringMap("headers")
		switch u := d.long("replay_of"); {
		case d.err != nil || u == 0:
		case u == 1:
			id := CorrelationID(d.str("replay_of"))
			mf.ReplayOf = &id
		default:
			d.fail("replay_of: union index %d out of 2", u)
		}
		if body == stateBodyCurrent {
			d.blocks("results", func() {
				var p PartState
				d.part(&p)
				s.Results = append(s.Results, p)
			})
		}
	case branch == 1:
		s.Entry = EntryPart
		d.part(&s.Part)
	case branch == 2:
		s.Entry = EntryHeld
		h := &s.Held
		h.Partition = int32(d.int("partition"))
		h.Offset = d.long("offset")
		h.Value = d.bytes("value")
		d.blocks("headers", func() {
			h.Headers = append(h.Headers, RecordHeader{Key: d.str("headers[].key"), Value: d.bytes("headers[].value")})
		})
		h.ArrivedAt = d.time("arrived_at")
	case branch == 3:
		s.Entry = EntryDone
		s.Done.CompletedAt = d.time("completed_at")
		s.Done.ForgetAt = d.time("forget_at")
		if body == stateBodyCurrent {
			d.blocks("requests", func() {
				s.Done.Requests = append(s.Done.Requests, DoneRequest{
					CorrelationID: CorrelationID(d.str("requests[].correlation_id")),
					CompletedAt:   d.time("requests[].completed_at"),
					ForgetAt:      d.time("requests[].forget_at"),
				})
			})
		}
	default:
		d.fail("entry: union index %d out of 4", branch)
	}
	return s
}

// part reads a StatePart body into p.
func (d *decoder) part(p *PartState) {
	p.PartID = PartID(d.str("part_id"))
	switch i := d.long("status"); {
	case d.err != nil:
	case i < 0 || i >= int64(len(stateStatuses)):
		d.fail("status: enum index %d out of %d", i, len(stateStatuses))
	default:
		p.Status = stateStatuses[i]
	}
	p.Payload = d.bytes("payload")
	p.Error = d.str("error")
	p.ProcessorID = d.str("processor_id")
	p.Attempt = int(d.int("attempt"))
	p.ArrivedAt = d.time("arrived_at")
}
