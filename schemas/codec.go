package schemas

import (
	"embed"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/linkedin/goavro/v2"
)

//go:embed *.avsc
var schemaFiles embed.FS

// Kind names a record type.
type Kind string

// The record kinds, named after their schema files.
const (
	KindRequest  Kind = "request"
	KindTask     Kind = "task"
	KindManifest Kind = "manifest"
	KindResult   Kind = "result"
	KindReply    Kind = "reply"
)

// Kinds lists every record kind.
var Kinds = []Kind{KindRequest, KindTask, KindManifest, KindResult, KindReply}

// ErrUnknownSchema is returned when a record's fingerprint names no schema we
// know, or a record is not in single-object encoding at all.
var ErrUnknownSchema = errors.New("unknown schema")

// DecodeError says which record kind failed to decode and why. Its Reason is a
// short code fit for a dead-letter header or a metric label.
type DecodeError struct {
	Kind   Kind
	Reason string // "not-avro", "unknown-schema", "wrong-schema", "malformed"
	Err    error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("decode %s: %s: %v", e.Kind, e.Reason, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

type registry struct {
	byKind        map[Kind]*goavro.Codec
	byFingerprint map[uint64]Kind
}

var loadRegistry = sync.OnceValues(func() (*registry, error) {
	r := &registry{byKind: map[Kind]*goavro.Codec{}, byFingerprint: map[uint64]Kind{}}
	for _, k := range Kinds {
		src, err := Schema(k)
		if err != nil {
			return nil, err
		}
		c, err := goavro.NewCodec(src)
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", k, err)
		}
		r.byKind[k] = c
		r.byFingerprint[uint64(c.Rabin)] = k
	}
	return r, nil
})

// Schema returns the Avro schema text of kind k, as shipped in k.avsc.
func Schema(k Kind) (string, error) {
	b, err := schemaFiles.ReadFile(string(k) + ".avsc")
	if err != nil {
		return "", fmt.Errorf("schema %s: %w", k, err)
	}
	return string(b), nil
}

// Fingerprint returns the CRC-64-AVRO fingerprint of kind k's schema, as it
// stands in the header of every single-object encoded record of that kind.
func Fingerprint(k Kind) (uint64, error) {
	r, err := loadRegistry()
	if err != nil {
		return 0, err
	}
	c, ok := r.byKind[k]
	if !ok {
		return 0, fmt.Errorf("schema %s: %w", k, ErrUnknownSchema)
	}
	return uint64(c.Rabin), nil
}

// singleObjectMagic starts every single-object encoded Avro record.
var singleObjectMagic = [2]byte{0xC3, 0x01}

// KindOf reads the fingerprint at the head of a single-object encoded record
// and returns its kind, without decoding the body.
func KindOf(b []byte) (Kind, error) {
	if len(b) < 10 || b[0] != singleObjectMagic[0] || b[1] != singleObjectMagic[1] {
		return "", &DecodeError{Kind: "record", Reason: "not-avro", Err: fmt.Errorf("%d bytes without the single-object header: %w", len(b), ErrUnknownSchema)}
	}
	r, err := loadRegistry()
	if err != nil {
		return "", err
	}
	fp := binary.LittleEndian.Uint64(b[2:10])
	k, ok := r.byFingerprint[fp]
	if !ok {
		return "", &DecodeError{Kind: "record", Reason: "unknown-schema", Err: fmt.Errorf("fingerprint %016x: %w", fp, ErrUnknownSchema)}
	}
	return k, nil
}

func encode(k Kind, native map[string]any) ([]byte, error) {
	r, err := loadRegistry()
	if err != nil {
		return nil, err
	}
	b, err := r.byKind[k].SingleFromNative(nil, native)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", k, err)
	}
	return b, nil
}

func decode(k Kind, b []byte) (map[string]any, error) {
	got, err := KindOf(b)
	if err != nil {
		var de *DecodeError
		if errors.As(err, &de) {
			de.Kind = k
		}
		return nil, err
	}
	if got != k {
		return nil, &DecodeError{Kind: k, Reason: "wrong-schema", Err: fmt.Errorf("record is a %s", got)}
	}
	r, _ := loadRegistry()
	native, rest, err := r.byKind[k].NativeFromSingle(b)
	if err != nil {
		return nil, &DecodeError{Kind: k, Reason: "malformed", Err: err}
	}
	if len(rest) != 0 {
		return nil, &DecodeError{Kind: k, Reason: "malformed", Err: fmt.Errorf("%d trailing bytes", len(rest))}
	}
	m, ok := native.(map[string]any)
	if !ok {
		return nil, &DecodeError{Kind: k, Reason: "malformed", Err: fmt.Errorf("decoded %T, not a record", native)}
	}
	return m, nil
}
