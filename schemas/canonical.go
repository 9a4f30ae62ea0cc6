package schemas

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// This file computes schema fingerprints as the Avro specification defines
// them: CRC-64-AVRO of the Parsing Canonical Form, in which a primitive
// schema with a logicalType is written as its bare type name ("long"). The
// Java, Python and Rust Avro libraries compute it so; goavro writes
// {"type":"long"} instead (goavro issue #174) and hamba/avro keeps the
// logicalType, so neither library's fingerprint may go on the wire if a
// reader in another language is to find our schema by it.

// canonicalStyle selects a way of writing a primitive with attributes.
type canonicalStyle int

const (
	// canonicalSpec writes "long": the specification, Java, Python, Rust.
	canonicalSpec canonicalStyle = iota
	// canonicalKeepLogical writes {"type":"long","logicalType":"..."}, as
	// hamba/avro does.
	canonicalKeepLogical
)

// canonicalForm returns the Parsing Canonical Form of the schema src.
func canonicalForm(src string, style canonicalStyle) (string, error) {
	var v any
	if err := json.Unmarshal([]byte(src), &v); err != nil {
		return "", fmt.Errorf("parse schema: %w", err)
	}
	var sb strings.Builder
	if err := writeCanonical(&sb, v, "", style); err != nil {
		return "", err
	}
	return sb.String(), nil
}

var primitives = map[string]bool{
	"null": true, "boolean": true, "int": true, "long": true,
	"float": true, "double": true, "bytes": true, "string": true,
}

func writeCanonical(sb *strings.Builder, v any, namespace string, style canonicalStyle) error {
	switch v := v.(type) {
	case string:
		if primitives[v] {
			writeString(sb, v)
		} else {
			writeString(sb, fullName(v, namespace))
		}
		return nil
	case []any:
		sb.WriteByte('[')
		for i, b := range v {
			if i > 0 {
				sb.WriteByte(',')
			}
			if err := writeCanonical(sb, b, namespace, style); err != nil {
				return err
			}
		}
		sb.WriteByte(']')
		return nil
	case map[string]any:
		typ, ok := v["type"].(string)
		if !ok {
			return writeCanonical(sb, v["type"], namespace, style)
		}
		switch typ {
		case "record", "error", "enum", "fixed":
			name, _ := v["name"].(string)
			if ns, ok := v["namespace"].(string); ok && !strings.Contains(name, ".") {
				namespace = ns
			}
			full := fullName(name, namespace)
			if i := strings.LastIndexByte(full, '.'); i >= 0 {
				namespace = full[:i]
			} else {
				namespace = ""
			}
			sb.WriteString(`{"name":`)
			writeString(sb, full)
			sb.WriteString(`,"type":`)
			writeString(sb, typ)
			switch typ {
			case "record", "error":
				sb.WriteString(`,"fields":[`)
				fields, _ := v["fields"].([]any)
				for i, f := range fields {
					fm, _ := f.(map[string]any)
					fname, _ := fm["name"].(string)
					if i > 0 {
						sb.WriteByte(',')
					}
					sb.WriteString(`{"name":`)
					writeString(sb, fname)
					sb.WriteString(`,"type":`)
					if err := writeCanonical(sb, fm["type"], namespace, style); err != nil {
						return fmt.Errorf("field %s: %w", fname, err)
					}
					sb.WriteByte('}')
				}
				sb.WriteByte(']')
			case "enum":
				sb.WriteString(`,"symbols":[`)
				symbols, _ := v["symbols"].([]any)
				for i, s := range symbols {
					if i > 0 {
						sb.WriteByte(',')
					}
					str, _ := s.(string)
					writeString(sb, str)
				}
				sb.WriteByte(']')
			case "fixed":
				size, _ := v["size"].(float64)
				sb.WriteString(`,"size":`)
				sb.WriteString(strconv.Itoa(int(size)))
			}
			sb.WriteByte('}')
			return nil
		case "array", "map":
			key := "items"
			if typ == "map" {
				key = "values"
			}
			sb.WriteString(`{"type":`)
			writeString(sb, typ)
			sb.WriteString(`,"` + key + `":`)
			if err := writeCanonical(sb, v[key], namespace, style); err != nil {
				return err
			}
			sb.WriteByte('}')
			return nil
		}
		if !primitives[typ] {
			return writeCanonical(sb, typ, namespace, style)
		}
		logical, ok := v["logicalType"].(string)
		if style == canonicalKeepLogical && ok {
			sb.WriteString(`{"type":`)
			writeString(sb, typ)
			sb.WriteString(`,"logicalType":`)
			writeString(sb, logical)
			sb.WriteByte('}')
			return nil
		}
		writeString(sb, typ)
		return nil
	}
	return fmt.Errorf("unexpected schema element %T", v)
}

func fullName(name, namespace string) string {
	if strings.Contains(name, ".") || namespace == "" {
		return name
	}
	return namespace + "." + name
}

// writeString writes s as a JSON string. Avro names and symbols are ASCII
// letters, digits and underscores, so nothing needs escaping; should a name
// break that rule, it is escaped as JSON requires rather than written raw.
func writeString(sb *strings.Builder, s string) {
	b, _ := json.Marshal(s)
	sb.Write(b)
}

// crc64AvroEmpty is the CRC-64-AVRO fingerprint of the empty input.
const crc64AvroEmpty = 0xc15d213aa4d7a795

// crc64AvroTable is built once, in init order, and never written again.
var crc64AvroTable = func() (t [256]uint64) {
	for i := range t {
		fp := uint64(i)
		for range 8 {
			fp = (fp >> 1) ^ (crc64AvroEmpty & -(fp & 1))
		}
		t[i] = fp
	}
	return t
}()

// crc64Avro returns the CRC-64-AVRO (Rabin) fingerprint of b, as the Avro
// specification defines it.
func crc64Avro(b []byte) uint64 {
	fp := uint64(crc64AvroEmpty)
	for _, c := range b {
		fp = (fp >> 8) ^ crc64AvroTable[byte(fp)^c]
	}
	return fp
}
