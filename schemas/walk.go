package schemas

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
)

// This file walks Avro binary bodies by their schema without building
// values. Two walks: check, run before goavro decodes, so that no count or
// length in a hostile record can make goavro allocate more than the record's
// own size; and sortMaps, run after goavro encodes, so that map entries are in
// key order and equal records encode to equal bytes.

// shape is an Avro schema reduced to what the binary walks need.
type shape struct {
	typ     string   // an Avro primitive, "record", "enum", "fixed", "array", "map" or "union"
	members []*shape // record fields in order, or union branches
	elem    *shape   // array items or map values
	n       int      // enum symbol count, fixed size
}

// parseShape reads an Avro schema text.
func parseShape(src string) (*shape, error) {
	var v any
	if err := json.Unmarshal([]byte(src), &v); err != nil {
		return nil, fmt.Errorf("parse schema: %w", err)
	}
	return shapeOf(v, "", map[string]*shape{})
}

func shapeOf(v any, namespace string, named map[string]*shape) (*shape, error) {
	switch v := v.(type) {
	case string:
		switch v {
		case "null", "boolean", "int", "long", "float", "double", "bytes", "string":
			return &shape{typ: v}, nil
		}
		for _, name := range []string{v, namespace + "." + v} {
			if s, ok := named[name]; ok {
				return s, nil
			}
		}
		return nil, fmt.Errorf("unknown type %q", v)
	case []any:
		s := &shape{typ: "union"}
		for _, b := range v {
			m, err := shapeOf(b, namespace, named)
			if err != nil {
				return nil, err
			}
			s.members = append(s.members, m)
		}
		return s, nil
	case map[string]any:
		typ, ok := v["type"].(string)
		if !ok {
			return shapeOf(v["type"], namespace, named)
		}
		s := &shape{typ: typ}
		if ns, ok := v["namespace"].(string); ok {
			namespace = ns
		}
		if name, ok := v["name"].(string); ok {
			named[name] = s
			named[namespace+"."+name] = s
		}
		switch typ {
		case "record", "error":
			s.typ = "record"
			fields, _ := v["fields"].([]any)
			for _, f := range fields {
				fm, _ := f.(map[string]any)
				m, err := shapeOf(fm["type"], namespace, named)
				if err != nil {
					return nil, fmt.Errorf("field %v: %w", fm["name"], err)
				}
				s.members = append(s.members, m)
			}
		case "enum":
			symbols, _ := v["symbols"].([]any)
			s.n = len(symbols)
		case "fixed":
			size, _ := v["size"].(float64)
			s.n = int(size)
		case "array":
			elem, err := shapeOf(v["items"], namespace, named)
			if err != nil {
				return nil, err
			}
			s.elem = elem
		case "map":
			elem, err := shapeOf(v["values"], namespace, named)
			if err != nil {
				return nil, err
			}
			s.elem = elem
		default:
			// A primitive, perhaps with a logicalType.
			return shapeOf(typ, namespace, named)
		}
		return s, nil
	}
	return nil, fmt.Errorf("unexpected schema element %T", v)
}

var errShort = errors.New("unexpected end of record")

// mapKey is the shape of every map key.
var mapKey = &shape{typ: "string"}

// readLong reads a zig-zag varint long. Unlike goavro it refuses varints
// longer than 10 bytes, which no Avro writer emits.
func readLong(b []byte) (int64, []byte, error) {
	u, n := binary.Uvarint(b)
	switch {
	case n == 0:
		return 0, nil, errShort
	case n < 0:
		return 0, nil, errors.New("varint overflows 64 bits")
	}
	return int64(u>>1) ^ -int64(u&1), b[n:], nil
}

// check walks b, the Avro binary body of a value of s, and fails unless b
// holds exactly one well-formed value. Every length must fit in the bytes
// left, and so must every block count: no item of our schemas is encoded in
// zero bytes. (Arrays of null or of empty records, which are, are refused
// past that length; none of our schemas has one.)
func (s *shape) check(b []byte) error {
	rest, err := s.skip(b)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%d trailing bytes", len(rest))
	}
	return nil
}

func (s *shape) skip(b []byte) ([]byte, error) {
	switch s.typ {
	case "null":
		return b, nil
	case "boolean":
		if len(b) < 1 {
			return nil, errShort
		}
		if b[0] > 1 {
			return nil, fmt.Errorf("boolean byte %d", b[0])
		}
		return b[1:], nil
	case "int":
		v, rest, err := readLong(b)
		if err != nil {
			return nil, fmt.Errorf("int: %w", err)
		}
		if v < math.MinInt32 || v > math.MaxInt32 {
			return nil, fmt.Errorf("int %d out of range", v)
		}
		return rest, nil
	case "long":
		_, rest, err := readLong(b)
		if err != nil {
			return nil, fmt.Errorf("long: %w", err)
		}
		return rest, nil
	case "float":
		return skipN(b, 4)
	case "double":
		return skipN(b, 8)
	case "fixed":
		return skipN(b, s.n)
	case "bytes", "string":
		n, rest, err := readLong(b)
		if err != nil {
			return nil, fmt.Errorf("%s length: %w", s.typ, err)
		}
		if n < 0 || n > int64(len(rest)) {
			return nil, fmt.Errorf("%s length %d with %d bytes left", s.typ, n, len(rest))
		}
		return rest[n:], nil
	case "enum", "union":
		i, rest, err := readLong(b)
		if err != nil {
			return nil, fmt.Errorf("%s index: %w", s.typ, err)
		}
		count := s.n
		if s.typ == "union" {
			count = len(s.members)
		}
		if i < 0 || i >= int64(count) {
			return nil, fmt.Errorf("%s index %d out of %d", s.typ, i, count)
		}
		if s.typ == "enum" {
			return rest, nil
		}
		return s.members[i].skip(rest)
	case "record":
		var err error
		for i, f := range s.members {
			if b, err = f.skip(b); err != nil {
				return nil, fmt.Errorf("field %d: %w", i, err)
			}
		}
		return b, nil
	case "array", "map":
		for {
			count, rest, err := readBlockCount(b)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.typ, err)
			}
			b = rest
			if count == 0 {
				return b, nil
			}
			if count > int64(len(b)) {
				return nil, fmt.Errorf("%s block of %d items with %d bytes left", s.typ, count, len(b))
			}
			for range count {
				if s.typ == "map" {
					if b, err = mapKey.skip(b); err != nil {
						return nil, fmt.Errorf("map key: %w", err)
					}
				}
				if b, err = s.elem.skip(b); err != nil {
					return nil, fmt.Errorf("%s item: %w", s.typ, err)
				}
			}
		}
	}
	return nil, fmt.Errorf("unexpected type %s", s.typ)
}

// readBlockCount reads an array or map block count. A negative count is
// followed by the block's size in bytes, which is checked and skipped.
func readBlockCount(b []byte) (int64, []byte, error) {
	count, rest, err := readLong(b)
	if err != nil {
		return 0, nil, fmt.Errorf("block count: %w", err)
	}
	if count >= 0 {
		return count, rest, nil
	}
	if count == math.MinInt64 {
		return 0, nil, fmt.Errorf("block count %d", count)
	}
	size, rest, err := readLong(rest)
	if err != nil {
		return 0, nil, fmt.Errorf("block size: %w", err)
	}
	if size < 0 || size > int64(len(rest)) {
		return 0, nil, fmt.Errorf("block size %d with %d bytes left", size, len(rest))
	}
	return -count, rest, nil
}

func skipN(b []byte, n int) ([]byte, error) {
	if len(b) < n {
		return nil, errShort
	}
	return b[n:], nil
}

// sortMaps puts the entries of every map block in b, a body that goavro
// encoded from a value of s, in the byte order of their keys. It rewrites b in
// place; the length does not change.
func (s *shape) sortMaps(b []byte) error {
	_, err := s.sortFrom(b)
	return err
}

func (s *shape) sortFrom(b []byte) ([]byte, error) {
	switch s.typ {
	case "record":
		var err error
		for _, f := range s.members {
			if b, err = f.sortFrom(b); err != nil {
				return nil, err
			}
		}
		return b, nil
	case "union":
		i, rest, err := readLong(b)
		if err != nil || i < 0 || i >= int64(len(s.members)) {
			return nil, fmt.Errorf("union index %d: %v", i, err)
		}
		return s.members[i].sortFrom(rest)
	case "array", "map":
		for {
			count, rest, err := readBlockCount(b)
			if err != nil {
				return nil, err
			}
			b = rest
			if count == 0 {
				return b, nil
			}
			type entry struct{ key, all []byte }
			var entries []entry
			start := b
			for range count {
				item := b
				var key []byte
				if s.typ == "map" {
					n, rest, err := readLong(b)
					if err != nil || n < 0 || n > int64(len(rest)) {
						return nil, fmt.Errorf("map key length %d: %v", n, err)
					}
					key, b = rest[:n], rest[n:]
				}
				if b, err = s.elem.sortFrom(b); err != nil {
					return nil, err
				}
				if s.typ == "map" {
					entries = append(entries, entry{key: key, all: item[:len(item)-len(b)]})
				}
			}
			if s.typ == "map" && len(entries) > 1 {
				block := start[:len(start)-len(b)]
				slices.SortFunc(entries, func(x, y entry) int { return bytes.Compare(x.key, y.key) })
				sorted := make([]byte, 0, len(block))
				for _, e := range entries {
					sorted = append(sorted, e.all...)
				}
				copy(block, sorted)
			}
		}
	default:
		return s.skip(b)
	}
}
