package dlq

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/schemas"
)

// PreviewBytes is how much of a value that does not decode Describe shows.
const PreviewBytes = 512

// Value is a dead letter's value as Describe could read it.
type Value struct {
	// Kind is the record kind its fingerprint names, or, when it does not
	// decode, the kind its sg-type header or source topic suggests ("" when
	// neither says).
	Kind schemas.Kind `json:"kind,omitempty"`
	// Decoded is the record as JSON (field names as in schemas' Go types,
	// payloads inline when they are JSON, else text or base64); nil when it
	// does not decode.
	Decoded json.RawMessage `json:"decoded,omitempty"`
	// DecodeError says why it does not decode.
	DecodeError string `json:"decode_error,omitempty"`
	// Text is the first PreviewBytes as text when they are UTF-8, else Hex
	// is their hex dump.
	Text string `json:"text,omitempty"`
	Hex  string `json:"hex,omitempty"`
}

// Describe decodes e's value where it can: Avro records of the schemas/
// kinds are decoded by their fingerprint; anything else is shown as text or
// hex, with the decode error and the kind the record was expected to be.
// A stand-in's value is the original's first bytes and does not decode.
func Describe(e *Entry) Value {
	v := e.Record.Value
	kind, err := schemas.KindOf(v)
	if err == nil {
		var decoded any
		switch kind {
		case schemas.KindRequest:
			decoded, err = schemas.DecodeRequest(v)
		case schemas.KindTask:
			decoded, err = schemas.DecodeTask(v)
		case schemas.KindManifest:
			decoded, err = schemas.DecodeManifest(v)
		case schemas.KindResult:
			decoded, err = schemas.DecodeResult(v)
		case schemas.KindReply:
			decoded, err = schemas.DecodeReply(v)
		default:
			err = fmt.Errorf("a %s record is not shown decoded", kind)
		}
		if err == nil {
			b, merr := json.MarshalIndent(jsonValue(reflect.ValueOf(decoded)), "", "  ")
			if merr == nil {
				return Value{Kind: kind, Decoded: b}
			}
			err = merr
		}
	}
	out := Value{Kind: expectedKind(e), DecodeError: err.Error()}
	if len(v) >= 5 && v[0] == 0 {
		// Written by a pipeline with --schema-registry, read without it.
		out.DecodeError += fmt.Sprintf(" (it starts like the Confluent wire format, schema id %d: pass --schema-registry to decode it)", binary.BigEndian.Uint32(v[1:5]))
	}
	if kind != "" {
		out.Kind = kind
	}
	head := v[:min(len(v), PreviewBytes)]
	if utf8.Valid(head) && printable(head) {
		out.Text = string(head)
	} else {
		out.Hex = hex.Dump(head)
	}
	return out
}

// expectedKind is the kind e's sg-type header names, else the kind its
// source topic carries.
func expectedKind(e *Entry) schemas.Kind {
	switch t := kafka.Header(e.Record, "sg-type"); t {
	case "request", "task", "manifest", "result", "reply":
		return schemas.Kind(t)
	case "hedge-template":
		return schemas.KindTask
	}
	switch name := e.SourceTopic; {
	case strings.HasSuffix(name, "requests"):
		return schemas.KindRequest
	case strings.Contains(name, "tasks."):
		return schemas.KindTask
	case strings.HasSuffix(name, "results"):
		return schemas.KindResult
	case strings.Contains(name, "replies"):
		return schemas.KindReply
	}
	return ""
}

// printable reports whether b is text a terminal shows as is.
func printable(b []byte) bool {
	for _, r := range string(b) {
		if r < 0x20 && r != '\n' && r != '\t' && r != '\r' || r == 0x7f || r == utf8.RuneError {
			return false
		}
	}
	return true
}

// field is one member of a JSON object whose order is kept.
type field struct {
	name  string
	value any
}

type object []field

func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.name)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(f.value)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	timeType     = reflect.TypeFor[time.Time]()
)

// jsonValue turns a decoded record into what reads well as JSON: structs
// in field order, durations as "1.5s", times in RFC3339, byte slices
// inline when they are JSON, else as text, else as base64.
func jsonValue(v reflect.Value) any {
	switch {
	case !v.IsValid():
		return nil
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	case v.Type() == timeType:
		t := v.Interface().(time.Time)
		if t.IsZero() {
			return nil
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return jsonValue(v.Elem())
	case reflect.Struct:
		o := make(object, 0, v.NumField())
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				o = append(o, field{v.Type().Field(i).Name, jsonValue(v.Field(i))})
			}
		}
		return o
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			b := v.Bytes()
			switch {
			case len(b) > 0 && json.Valid(b):
				return json.RawMessage(b)
			case utf8.Valid(b):
				return string(b)
			}
			return "base64:" + base64.StdEncoding.EncodeToString(b)
		}
		out := make([]any, v.Len())
		for i := range v.Len() {
			out[i] = jsonValue(v.Index(i))
		}
		return out
	}
	return v.Interface()
}

// PrintEntry writes e for a reader: where it came from and why, its
// redrive, its key and headers, and its value as Describe reads it.
func PrintEntry(w io.Writer, topic string, e *Entry) error {
	var b strings.Builder
	fmt.Fprintf(&b, "dead letter %s %s\n", topic, e.At)
	row := func(k, v string) { fmt.Fprintf(&b, "  %-9s %s\n", k+":", v) }
	row("time", e.Time.UTC().Format(time.RFC3339Nano))
	row("source", e.Source())
	row("role", e.Role)
	row("reason", e.Reason)
	row("error", e.Error)
	size := fmt.Sprintf("%d bytes", e.Size)
	if e.Truncated {
		size += fmt.Sprintf(" (a stand-in: only the first %d bytes of key and value are kept; the original is at %s)", kafka.StandInBytes, e.Source())
	}
	row("size", size)
	if e.Redriven != nil {
		row("redriven", fmt.Sprintf("to %s at %s (marker %s)", e.Redriven, e.Redriven.Time.UTC().Format(time.RFC3339), e.Redriven.Marker))
	} else {
		row("redriven", "no")
	}
	key := string(e.Record.Key)
	if !utf8.Valid(e.Record.Key) || !printable(e.Record.Key) {
		key = "hex " + hex.EncodeToString(e.Record.Key)
	}
	fmt.Fprintf(&b, "key: %s\n", key)
	fmt.Fprintf(&b, "headers:\n")
	for _, h := range e.Record.Headers {
		fmt.Fprintf(&b, "  %s: %s\n", h.Key, h.Value)
	}
	v := Describe(e)
	switch {
	case v.Decoded != nil:
		fmt.Fprintf(&b, "value: %s (%d bytes, Avro)\n%s\n", v.Kind, len(e.Record.Value), v.Decoded)
	default:
		expected := ""
		if v.Kind != "" {
			expected = ", expected a " + string(v.Kind)
		}
		fmt.Fprintf(&b, "value (%d bytes%s) does not decode: %s\n", len(e.Record.Value), expected, v.DecodeError)
		shown := min(len(e.Record.Value), PreviewBytes)
		if v.Text != "" {
			fmt.Fprintf(&b, "first %d bytes as text:\n%s\n", shown, v.Text)
		} else {
			fmt.Fprintf(&b, "first %d bytes:\n%s", shown, v.Hex)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
