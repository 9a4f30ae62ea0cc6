package schemas_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestGoldenVectors pins one record of every kind: testdata/<kind>.bin is the
// single-object encoded record, testdata/<kind>.json the same record in Avro's
// JSON encoding (bytes as strings of code points U+0000..U+00FF, unions as
// {"type": value}, timestamps as milliseconds). Other languages check their
// readers against them; this test checks that we still write exactly these
// bytes. Run with -update to rewrite them after a deliberate change.
func TestGoldenVectors(t *testing.T) {
	for _, c := range codecs() {
		t.Run(string(c.kind), func(t *testing.T) {
			binPath := filepath.Join("testdata", string(c.kind)+".bin")
			jsonPath := filepath.Join("testdata", string(c.kind)+".json")
			src, err := os.ReadFile(string(c.kind) + ".avsc")
			if err != nil {
				t.Fatal(err)
			}
			avsc, err := goavro.NewCodec(string(src))
			if err != nil {
				t.Fatal(err)
			}

			b := mustEncode(t, c, c.sample)
			native, rest, err := avsc.NativeFromBinary(b[10:])
			if err != nil || len(rest) != 0 {
				t.Fatalf("goavro reads our body: %v, %d bytes left", err, len(rest))
			}
			j, err := avroJSON(native)
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(binPath, b, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(jsonPath, j, 0o644); err != nil {
					t.Fatal(err)
				}
			}

			wantBin, err := os.ReadFile(binPath)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGoldenVectors -update to create it)", err)
			}
			if !bytes.Equal(b, wantBin) {
				t.Fatalf("encoding changed: %s is\n%x\nwe now write\n%x\nA deliberate change needs -update and a note in README.md", binPath, wantBin, b)
			}
			wantJSON, err := os.ReadFile(jsonPath)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(j, wantJSON) {
				t.Fatalf("%s is\n%s\nthe record is now\n%s", jsonPath, wantJSON, j)
			}

			// The .bin decodes to the sample.
			got, err := c.decode(wantBin)
			if err != nil {
				t.Fatal(err)
			}
			want, err := c.decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if d := diff(want, got); d != "" {
				t.Fatalf("%s decodes to another value:\n%s", binPath, d)
			}

			// The .json is valid Avro JSON for the schema and holds the same
			// record: goavro's JSON decoder reads it, its binary encoder
			// writes it, and our decoder reads that.
			fromJSON, rest, err := avsc.NativeFromTextual(wantJSON)
			if err != nil {
				t.Fatalf("%s is not Avro JSON for %s.avsc: %v", jsonPath, c.kind, err)
			}
			if len(bytes.TrimSpace(rest)) != 0 {
				t.Fatalf("%s: %d bytes after the record", jsonPath, len(rest))
			}
			body, err := avsc.BinaryFromNative(nil, fromJSON)
			if err != nil {
				t.Fatal(err)
			}
			got, err = c.decode(append(wantBin[:10:10], body...))
			if err != nil {
				t.Fatalf("decode the record of %s: %v", jsonPath, err)
			}
			if d := diff(want, got); d != "" {
				t.Fatalf("%s holds another record than %s:\n%s", jsonPath, binPath, d)
			}
		})
	}
}

// avroJSON renders a goavro native datum in Avro's JSON encoding, keys
// sorted, indented, so that the file is stable and readable.
func avroJSON(native any) ([]byte, error) {
	v, err := jsonable(native)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func jsonable(v any) (any, error) {
	switch v := v.(type) {
	case nil, string, bool, int32, int64, float32, float64:
		return v, nil
	case []byte:
		// Avro JSON encodes bytes as a string whose code points are the
		// byte values; escape everything but printable ASCII so that no
		// reader mistakes the file's UTF-8 for the bytes.
		var sb strings.Builder
		sb.WriteByte('"')
		for _, c := range v {
			if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
				sb.WriteByte(c)
			} else {
				fmt.Fprintf(&sb, `\u%04x`, c)
			}
		}
		sb.WriteByte('"')
		return json.RawMessage(sb.String()), nil
	case time.Time:
		return v.UnixMilli(), nil
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			j, err := jsonable(e)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out[k] = j
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			j, err := jsonable(e)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = j
		}
		return out, nil
	}
	return nil, fmt.Errorf("no JSON form for %T", v)
}

// TestGoldenVectorsAreDeterministic guards the premise of the golden files:
// the samples carry several headers, which must not come out in Go's random
// map order.
func TestGoldenVectorsAreDeterministic(t *testing.T) {
	if len(sampleRequest().Headers) < 2 || len(sampleTask().Headers) < 2 || len(sampleManifest().Headers) < 2 {
		t.Fatal("the samples should carry several headers")
	}
	for _, c := range codecs() {
		first := mustEncode(t, c, c.sample)
		for range 20 {
			if b := mustEncode(t, c, c.sample); !bytes.Equal(b, first) {
				t.Fatalf("%s: two encodings of the sample differ", c.kind)
			}
		}
	}
}
