package schemas

import (
	"embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sync"

	"github.com/linkedin/goavro/v2"
)

//go:embed *.avsc
var schemaFiles embed.FS

// releasedStates are the released schemas of the aggregator's changelog
// (history/vN/aggregation_state.avsc). A changelog outlives the build that
// wrote it, so the state decoder reads every release; their bodies are
// the current one's without the fields added since (state.go).
//
//go:embed history/*/aggregation_state.avsc
var releasedStates embed.FS

// Kind names a record type.
type Kind string

// The record kinds, named after their schema files.
const (
	KindRequest  Kind = "request"
	KindTask     Kind = "task"
	KindManifest Kind = "manifest"
	KindResult   Kind = "result"
	KindReply    Kind = "reply"
	// KindAggregationState is an entry of the aggregator's changelog
	// (state.go).
	KindAggregationState Kind = "aggregation_state"
)

// Kinds lists every record kind.
var Kinds = []Kind{KindRequest, KindTask, KindManifest, KindResult, KindReply, KindAggregationState}

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

// writer is what a fingerprint says about the schema a record was written
// with: its kind, and whether it is the current schema of that kind, whose
// body the hand-written decoders (fast.go) read. Every fingerprint is of a
// current schema today (see README.md, Evolution); a released schema that
// differs from the current one would be registered with current false, and
// its records decoded by goavro.
type writer struct {
	kind    Kind
	current bool
	// state is, for a released AggregationState schema that is not the
	// current one, which body its records have (state.go).
	state stateBody
}

type registry struct {
	byKind map[Kind]*goavro.Codec
	// header is each kind's single-object header: the magic and the
	// fingerprint of the Parsing Canonical Form (see canonical.go).
	header map[Kind][]byte
	// byFingerprint maps every fingerprint we read to its kind: the one we
	// write, and the ones goavro (and Apache Avro's Python library) and
	// hamba/avro compute for the same schema, so that records from
	// services using those libraries' single-object encoders are read too.
	// The schema, and so the body, is the same; only the libraries'
	// canonical forms differ.
	byFingerprint map[uint64]writer
	// shapes holds each kind's schema as the binary walks in walk.go need
	// it: the guard run before goavro decodes, and the map sort after it
	// encodes.
	shapes map[Kind]*shape
}

var loadRegistry = sync.OnceValues(func() (*registry, error) {
	r := &registry{
		byKind:        map[Kind]*goavro.Codec{},
		header:        map[Kind][]byte{},
		byFingerprint: map[uint64]writer{},
		shapes:        map[Kind]*shape{},
	}
	for _, k := range Kinds {
		src, err := Schema(k)
		if err != nil {
			return nil, err
		}
		c, err := goavro.NewCodec(src)
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", k, err)
		}
		sh, err := parseShape(src)
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", k, err)
		}
		pcf, err := canonicalForm(src, canonicalSpec)
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", k, err)
		}
		keepLogical, err := canonicalForm(src, canonicalKeepLogical)
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", k, err)
		}
		fp := crc64Avro([]byte(pcf))
		for _, f := range []uint64{fp, uint64(c.Rabin), crc64Avro([]byte(keepLogical))} {
			if other, ok := r.byFingerprint[f]; ok && other.kind != k {
				return nil, fmt.Errorf("schemas %s and %s share fingerprint %016x", other.kind, k, f)
			}
			r.byFingerprint[f] = writer{kind: k, current: true}
		}
		r.byKind[k] = c
		r.header[k] = binary.LittleEndian.AppendUint64([]byte{singleObjectMagic[0], singleObjectMagic[1]}, fp)
		r.shapes[k] = sh
	}
	if err := r.registerReleasedStates(); err != nil {
		return nil, err
	}
	return r, nil
})

// registerReleasedStates registers the fingerprints of every released
// AggregationState schema that differs from the current one.
func (r *registry) registerReleasedStates() error {
	files, err := fs.Glob(releasedStates, "history/*/aggregation_state.avsc")
	if err != nil {
		return err
	}
	for _, name := range files {
		src, err := releasedStates.ReadFile(name)
		if err != nil {
			return err
		}
		body, ok := stateBodies[path.Base(path.Dir(name))]
		c, err := goavro.NewCodec(string(src))
		if err != nil {
			return fmt.Errorf("schema %s: %w", name, err)
		}
		pcf, err := canonicalForm(string(src), canonicalSpec)
		if err != nil {
			return fmt.Errorf("schema %s: %w", name, err)
		}
		keepLogical, err := canonicalForm(string(src), canonicalKeepLogical)
		if err != nil {
			return fmt.Errorf("schema %s: %w", name, err)
		}
		for _, f := range []uint64{crc64Avro([]byte(pcf)), uint64(c.Rabin), crc64Avro([]byte(keepLogical))} {
			w, known := r.byFingerprint[f]
			switch {
			case known && w.kind == KindAggregationState:
				// The same schema as the current one, or as another release.
			case known:
				return fmt.Errorf("schemas %s and %s share fingerprint %016x", w.kind, name, f)
			case !ok:
				return fmt.Errorf("schema %s differs from the current one and state.go cannot read its records", name)
			default:
				r.byFingerprint[f] = writer{kind: KindAggregationState, state: body}
			}
		}
	}
	return nil
}

// Schema returns the Avro schema text of kind k, as shipped in k.avsc.
func Schema(k Kind) (string, error) {
	b, err := schemaFiles.ReadFile(string(k) + ".avsc")
	if err != nil {
		return "", fmt.Errorf("schema %s: %w", k, err)
	}
	return string(b), nil
}

// Fingerprint returns the CRC-64-AVRO fingerprint of the Parsing Canonical
// Form of kind k's schema, as the Avro specification defines it (and Java's
// SchemaNormalization.parsingFingerprint64 computes it). It stands, little
// endian, in the header of every record of that kind that we write.
func Fingerprint(k Kind) (uint64, error) {
	r, err := loadRegistry()
	if err != nil {
		return 0, err
	}
	h, ok := r.header[k]
	if !ok {
		return 0, fmt.Errorf("schema %s: %w", k, ErrUnknownSchema)
	}
	return binary.LittleEndian.Uint64(h[2:]), nil
}

// singleObjectMagic starts every single-object encoded Avro record.
var singleObjectMagic = [2]byte{0xC3, 0x01}

// KindOf reads the fingerprint at the head of a single-object encoded record
// and returns its kind, without decoding the body.
func KindOf(b []byte) (Kind, error) {
	if len(b) < singleObjectHeaderLen || b[0] != singleObjectMagic[0] || b[1] != singleObjectMagic[1] {
		return "", &DecodeError{Kind: "record", Reason: "not-avro", Err: fmt.Errorf("%d bytes without the single-object header: %w", len(b), ErrUnknownSchema)}
	}
	r, err := loadRegistry()
	if err != nil {
		return "", err
	}
	w, err := r.writerOf("record", b)
	if err != nil {
		return "", err
	}
	return w.kind, nil
}

// writerOf looks up the fingerprint of b, which has a single-object header.
// Its error is a *DecodeError of kind k.
func (r *registry) writerOf(k Kind, b []byte) (writer, error) {
	fp := binary.LittleEndian.Uint64(b[2:10])
	w, ok := r.byFingerprint[fp]
	if !ok {
		return writer{}, &DecodeError{Kind: k, Reason: "unknown-schema", Err: fmt.Errorf("fingerprint %016x: %w", fp, ErrUnknownSchema)}
	}
	return w, nil
}

// readHeader checks b's single-object header for a decoder of kind k and
// returns its writer. Its errors are *DecodeError of kind k, as KindOf's.
func (r *registry) readHeader(k Kind, b []byte) (writer, error) {
	if len(b) < singleObjectHeaderLen || b[0] != singleObjectMagic[0] || b[1] != singleObjectMagic[1] {
		return writer{}, &DecodeError{Kind: k, Reason: "not-avro", Err: fmt.Errorf("%d bytes without the single-object header: %w", len(b), ErrUnknownSchema)}
	}
	w, err := r.writerOf(k, b)
	if err != nil {
		return writer{}, err
	}
	if w.kind != k {
		return writer{}, &DecodeError{Kind: k, Reason: "wrong-schema", Err: fmt.Errorf("record is a %s", w.kind)}
	}
	return w, nil
}

// encode writes native as a single-object encoded record of kind k. goavro
// writes map entries in Go's random map order; sortMaps says the record holds
// a map with more than one entry, whose entries are then put in key order so
// that equal records encode to equal bytes.
func encode(k Kind, native map[string]any, sortMaps bool) ([]byte, error) {
	r, err := loadRegistry()
	if err != nil {
		return nil, err
	}
	b := make([]byte, singleObjectHeaderLen, 256)
	copy(b, r.header[k])
	b, err = r.byKind[k].BinaryFromNative(b, native)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", k, err)
	}
	if sortMaps {
		if err := r.shapes[k].sortMaps(b[singleObjectHeaderLen:]); err != nil {
			return nil, fmt.Errorf("encode %s: sort map entries: %w", k, err)
		}
	}
	return b, nil
}

// singleObjectHeaderLen is the length of the magic and the fingerprint.
const singleObjectHeaderLen = 10

// decode decodes b as a record of kind k and converts goavro's native form
// with convert. A record that does not fit k's schema, or on which goavro or
// convert would panic, yields a *DecodeError with reason "malformed": a
// poison record must never crash a role.
func decode[T any](k Kind, b []byte, convert func(map[string]any) (T, error)) (v T, err error) {
	r, err := loadRegistry()
	if err != nil {
		return v, err
	}
	if _, err := r.readHeader(k, b); err != nil {
		return v, err
	}
	defer func() {
		if p := recover(); p != nil {
			var zero T
			v, err = zero, &DecodeError{Kind: k, Reason: "malformed", Err: fmt.Errorf("decoder panicked: %v", p)}
		}
	}()
	// goavro sizes its slices and maps by the block counts it reads before
	// it reads the items: a 20-byte record announcing 2^31 array items
	// would exhaust memory, a fatal error no recover catches. The walk
	// bounds every count and length by the bytes that are left first.
	if err := r.shapes[k].check(b[singleObjectHeaderLen:]); err != nil {
		return v, &DecodeError{Kind: k, Reason: "malformed", Err: err}
	}
	native, rest, err := r.byKind[k].NativeFromBinary(b[singleObjectHeaderLen:])
	if err != nil {
		return v, &DecodeError{Kind: k, Reason: "malformed", Err: err}
	}
	if len(rest) != 0 {
		return v, &DecodeError{Kind: k, Reason: "malformed", Err: fmt.Errorf("%d trailing bytes", len(rest))}
	}
	m, ok := native.(map[string]any)
	if !ok {
		return v, &DecodeError{Kind: k, Reason: "malformed", Err: fmt.Errorf("decoded %T, not a record", native)}
	}
	v, err = convert(m)
	if err != nil {
		var zero T
		return zero, &DecodeError{Kind: k, Reason: "malformed", Err: err}
	}
	return v, nil
}
