package aggregator

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/scattergather/scattergather/schemas"
)

// Part is one OK part handed to a [Merge].
type Part struct {
	ID      schemas.PartID
	Payload []byte
}

// Merge combines the payloads of a request's OK parts, in manifest part
// order, into the reply's payload. It is called only when at least one part
// is OK, on the aggregator's Run goroutine, and must not keep parts or their
// payloads after it returns. An error (or a panic) makes the reply FAILED
// with the error in Reply.Error and no payload: a merge that could not be
// done leaves nothing a client could use, even if every part was OK.
type Merge func(parts []Part) ([]byte, error)

// Collect returns the merge that gathers the OK parts into a JSON array, in
// manifest part order, one element per part. A payload that is valid JSON is
// embedded as that JSON value (compacted); any other payload, the empty one
// included, is embedded as a JSON string of its bytes (invalid UTF-8
// replaced by U+FFFD). Collect never fails.
//
//	parts a: {"n": 1}, b: hello, c: [2, 3]   →   [{"n":1},"hello",[2,3]]
func Collect() Merge {
	return func(parts []Part) ([]byte, error) {
		size := 2
		for _, p := range parts {
			size += len(p.Payload) + 3
		}
		var buf bytes.Buffer
		buf.Grow(size)
		buf.WriteByte('[')
		for i, p := range parts {
			if i > 0 {
				buf.WriteByte(',')
			}
			if len(p.Payload) > 0 && json.Compact(&buf, p.Payload) == nil {
				continue
			}
			s, err := json.Marshal(string(p.Payload))
			if err != nil {
				return nil, fmt.Errorf("collect part %s: %w", p.ID, err)
			}
			buf.Write(s)
		}
		buf.WriteByte(']')
		return buf.Bytes(), nil
	}
}

// object is one JSON object of a part's payload, with the part it came from.
type object struct {
	part schemas.PartID
	raw  json.RawMessage
	// fields of raw, decoded lazily by field.
	fields map[string]json.RawMessage
}

// objects decodes a payload that is one JSON object or an array of them.
// When arrayOnly is set, a single object is an error.
func objects(p Part, arrayOnly bool) ([]object, error) {
	trimmed := bytes.TrimLeft(p.Payload, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("part %s: empty payload, want a JSON array of objects", p.ID)
	}
	var raws []json.RawMessage
	if trimmed[0] == '[' {
		if err := json.Unmarshal(p.Payload, &raws); err != nil {
			return nil, fmt.Errorf("part %s: %w", p.ID, err)
		}
	} else {
		if arrayOnly {
			return nil, fmt.Errorf("part %s: payload is not a JSON array", p.ID)
		}
		raws = []json.RawMessage{p.Payload}
	}
	out := make([]object, len(raws))
	for i, raw := range raws {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
			return nil, fmt.Errorf("part %s: item %d is not a JSON object", p.ID, i)
		}
		out[i] = object{part: p.ID, raw: raw, fields: fields}
	}
	return out, nil
}

// number returns o's numeric field name.
func (o object) number(name string) (float64, error) {
	raw, ok := o.fields[name]
	if !ok {
		return 0, fmt.Errorf("part %s: an object has no field %q", o.part, name)
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return 0, fmt.Errorf("part %s: field %q is %s, not a number", o.part, name, raw)
	}
	return f, nil
}

// text returns o's string field name.
func (o object) text(name string) (string, error) {
	raw, ok := o.fields[name]
	if !ok {
		return "", fmt.Errorf("part %s: an object has no field %q", o.part, name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("part %s: field %q is %s, not a string", o.part, name, raw)
	}
	return s, nil
}

// compact returns raw without insignificant white space.
func compact(raw json.RawMessage) json.RawMessage {
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return raw
	}
	return buf.Bytes()
}
