package schemas_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/hamba/avro/v2/pkg/crc64"
	"github.com/linkedin/goavro/v2"

	"github.com/scattergather/scattergather/schemas"
)

// Every released version of the schemas lives in history/vN/. The current
// schemas must stay compatible with every release in both directions:
//
//   - backward: a reader on the current schema reads what a release wrote
//     (a new aggregator reading results from an old processor);
//   - forward: a reader on a release reads what the current schema writes
//     (an old aggregator, not yet upgraded, reading a new processor's results).
//
// Compatibility is Avro schema resolution, checked by hamba/avro (goavro does
// no resolution), and proved with data: a record written by one schema's
// goavro codec is decoded through hamba's resolution into the other's fields.

func TestSchemaEvolution(t *testing.T) {
	versions, err := filepath.Glob(filepath.Join("history", "v*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) == 0 {
		t.Fatal("no released schemas under history/")
	}
	for _, dir := range versions {
		version := filepath.Base(dir)
		for _, k := range schemas.Kinds {
			t.Run(version+"/"+string(k), func(t *testing.T) {
				old, err := os.ReadFile(filepath.Join(dir, string(k)+".avsc"))
				if errors.Is(err, os.ErrNotExist) {
					t.Skipf("%s has no %s: the kind is newer", version, k)
				}
				if err != nil {
					t.Fatal(err)
				}
				current, err := os.ReadFile(string(k) + ".avsc")
				if err != nil {
					t.Fatal(err)
				}
				if err := checkEvolution(k, version, string(old), string(current)); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestDecodersReadEveryRelease goes beyond schema compatibility: during a
// rolling upgrade our own decoders meet records written by the previous
// release, under that release's fingerprint. They must read them. Today the
// decoders know only the current schemas' fingerprints; the day a release
// differs from the current schema this test fails until codec.go learns the
// released fingerprints and resolves their records to the current schema.
func TestDecodersReadEveryRelease(t *testing.T) {
	versions, err := filepath.Glob(filepath.Join("history", "v*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range versions {
		version := filepath.Base(dir)
		for _, c := range codecs() {
			t.Run(version+"/"+string(c.kind), func(t *testing.T) {
				src, err := os.ReadFile(filepath.Join(dir, string(c.kind)+".avsc"))
				if errors.Is(err, os.ErrNotExist) {
					t.Skipf("%s has no %s", version, c.kind)
				}
				if err != nil {
					t.Fatal(err)
				}
				hs, err := avro.ParseBytesWithCache(src, "", &avro.SchemaCache{})
				if err != nil {
					t.Fatal(err)
				}
				var js any
				if err := json.Unmarshal(src, &js); err != nil {
					t.Fatal(err)
				}
				native, _ := (&sampler{named: map[string]any{}}).value(js, "")
				codec, err := goavro.NewCodec(string(src))
				if err != nil {
					t.Fatal(err)
				}
				fp := crc64.SumWithByteOrder([]byte(specCanonical(t, hs)), crc64.LittleEndian)
				b, err := codec.BinaryFromNative(append([]byte{0xC3, 0x01}, fp[:]...), native)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.decode(b); err != nil {
					t.Fatalf("%s written with release %s cannot be decoded by this build: %v\n"+
						"a schema change needs codec.go to keep reading the released fingerprint (see README.md, Evolution)", c.kind, version, err)
				}
			})
		}
	}
}

// TestSchemaEvolutionDetectsBreaks shows that checkEvolution fails, naming
// the kind, the release and the field, on schemas built from the current ones
// with a deliberate break, and passes on a compatible change.
func TestSchemaEvolutionDetectsBreaks(t *testing.T) {
	cases := []struct {
		name  string
		kinds []schemas.Kind
		edit  func(t *testing.T, s map[string]any)
		field string // the field the error must name; "" if the change is compatible
		dir   string // the direction the error must name
	}{
		{
			name: "field added without a default", kinds: schemas.Kinds, field: "tenant_id", dir: "backward",
			edit: func(t *testing.T, s map[string]any) {
				s["fields"] = append(s["fields"].([]any), map[string]any{"name": "tenant_id", "type": "string"})
			},
		},
		{
			name: "field removed that old readers need", kinds: schemas.Kinds, field: "correlation_id", dir: "forward",
			edit: func(t *testing.T, s map[string]any) {
				s["fields"] = slices.DeleteFunc(s["fields"].([]any), func(f any) bool {
					return f.(map[string]any)["name"] == "correlation_id"
				})
			},
		},
		{
			name: "field type changed", kinds: schemas.Kinds, field: "route", dir: "backward",
			edit: func(t *testing.T, s map[string]any) {
				route := fieldOf(t, s, "route")
				route["type"] = "int"
				delete(route, "default")
			},
		},
		// Every released enum carries a default (an unknown status reads as
		// ERROR, an unknown reply status as PARTIAL), so adding a symbol is
		// compatible in both directions.
		{
			name: "enum symbol added is compatible thanks to the default", kinds: []schemas.Kind{schemas.KindResult},
			edit: func(t *testing.T, s map[string]any) {
				enum := fieldOf(t, s, "status")["type"].(map[string]any)
				enum["symbols"] = append(enum["symbols"].([]any), "CANCELLED")
			},
		},
		{
			name: "nested field added without a default", kinds: []schemas.Kind{schemas.KindReply}, field: "parts[].weight", dir: "backward",
			edit: func(t *testing.T, s map[string]any) {
				part := fieldOf(t, s, "parts")["type"].(map[string]any)["items"].(map[string]any)
				part["fields"] = append(part["fields"].([]any), map[string]any{"name": "weight", "type": "double"})
			},
		},
		{
			name: "field added with a default is compatible", kinds: schemas.Kinds,
			edit: func(t *testing.T, s map[string]any) {
				s["fields"] = append(s["fields"].([]any),
					map[string]any{"name": "tenant_id", "type": "string", "default": "t-" + uni},
					map[string]any{"name": "priority", "type": "int", "default": 5},
					map[string]any{"name": "trace", "type": []any{"null", "string"}, "default": nil},
					map[string]any{"name": "labels", "type": map[string]any{"type": "map", "values": "string"}, "default": map[string]any{"a": "b"}},
				)
			},
		},
	}
	for _, tc := range cases {
		for _, k := range tc.kinds {
			t.Run(tc.name+"/"+string(k), func(t *testing.T) {
				release, err := os.ReadFile(filepath.Join("history", "v1", string(k)+".avsc"))
				if errors.Is(err, os.ErrNotExist) {
					t.Skipf("v1 has no %s: the kind is newer", k)
				}
				if err != nil {
					t.Fatal(err)
				}
				current, err := os.ReadFile(string(k) + ".avsc")
				if err != nil {
					t.Fatal(err)
				}
				var s map[string]any
				if err := json.Unmarshal(current, &s); err != nil {
					t.Fatal(err)
				}
				tc.edit(t, s)
				changed, err := json.Marshal(s)
				if err != nil {
					t.Fatal(err)
				}
				err = checkEvolution(k, "v1", string(release), string(changed))
				if tc.field == "" {
					if err != nil {
						t.Fatalf("a compatible change was refused: %v", err)
					}
					return
				}
				if err == nil {
					t.Fatalf("checkEvolution passed a schema with a %s", tc.name)
				}
				msg := err.Error()
				for _, want := range []string{string(k), "v1", `"` + tc.field + `"`, tc.dir} {
					if !strings.Contains(msg, want) {
						t.Fatalf("the error does not name %s:\n%s", want, msg)
					}
				}
				t.Logf("as expected:\n%s", msg)
			})
		}
	}
}

func fieldOf(t *testing.T, record map[string]any, name string) map[string]any {
	t.Helper()
	for _, f := range record["fields"].([]any) {
		if fm := f.(map[string]any); fm["name"] == name {
			return fm
		}
	}
	t.Fatalf("no field %s", name)
	return nil
}

// checkEvolution checks that the current schema text of kind k and the text
// released as version are compatible both ways, by hamba's compatibility
// check and by decoding data. Its error names the kind, the version, the
// direction and every field at fault.
func checkEvolution(k schemas.Kind, version, releasedSrc, currentSrc string) error {
	released, err := avro.ParseWithCache(releasedSrc, "", &avro.SchemaCache{})
	if err != nil {
		return fmt.Errorf("%s %s: parse the released schema: %w", k, version, err)
	}
	current, err := avro.ParseWithCache(currentSrc, "", &avro.SchemaCache{})
	if err != nil {
		return fmt.Errorf("%s: parse the current schema: %w", k, err)
	}
	var errs []error
	directions := []struct {
		name                   string
		reader, writer         avro.Schema
		writerSrc              string
		readerName, writerName string
	}{
		{"backward", current, released, releasedSrc, "the current schema", version},
		{"forward", released, current, currentSrc, version, "the current schema"},
	}
	for _, d := range directions {
		prefix := fmt.Sprintf("%s %s %s: %s cannot read records written with %s", k, version, d.name, d.readerName, d.writerName)
		if err := avro.NewSchemaCompatibility().Compatible(d.reader, d.writer); err != nil {
			faults := explainIncompatible(d.reader, d.writer, "")
			if len(faults) == 0 {
				faults = []string{err.Error()}
			}
			errs = append(errs, fmt.Errorf("%s:\n\t%s", prefix, strings.Join(faults, "\n\t")))
			continue
		}
		if err := decodeAcross(d.writerSrc, d.reader, d.writer); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", prefix, err))
		}
	}
	return errors.Join(errs...)
}

// explainIncompatible names the fields of record reader that cannot be read
// from record writer.
func explainIncompatible(reader, writer avro.Schema, path string) []string {
	r, rok := reader.(*avro.RecordSchema)
	w, wok := writer.(*avro.RecordSchema)
	if !rok || !wok {
		return nil
	}
	var faults []string
	for _, rf := range r.Fields() {
		name := path + rf.Name()
		i := slices.IndexFunc(w.Fields(), func(wf *avro.Field) bool {
			return wf.Name() == rf.Name() || slices.Contains(rf.Aliases(), wf.Name())
		})
		if i < 0 {
			if !rf.HasDefault() {
				faults = append(faults, fmt.Sprintf("field %q is not in the writer's schema and has no default", name))
			}
			continue
		}
		wf := w.Fields()[i]
		err := avro.NewSchemaCompatibility().Compatible(rf.Type(), wf.Type())
		if err == nil {
			continue
		}
		rt, wt := rf.Type(), wf.Type()
		if ra, ok := rt.(*avro.ArraySchema); ok {
			if wa, ok := wt.(*avro.ArraySchema); ok {
				rt, wt, name = ra.Items(), wa.Items(), name+"[]"
			}
		}
		if nested := explainIncompatible(rt, wt, name+"."); len(nested) > 0 {
			faults = append(faults, nested...)
			continue
		}
		faults = append(faults, fmt.Sprintf("field %q: %v", name, err))
	}
	return faults
}

// decodeAcross writes a record generated from writerSrc with goavro, decodes
// it with hamba through the resolution of reader against writer, and checks
// every reader field: the written value where the writer has the field, the
// reader's default where it does not.
func decodeAcross(writerSrc string, reader, writer avro.Schema) error {
	var writerJSON any
	if err := json.Unmarshal([]byte(writerSrc), &writerJSON); err != nil {
		return err
	}
	g := &sampler{named: map[string]any{}}
	native, writtenPlain := g.value(writerJSON, "")
	written := native.(map[string]any)
	codec, err := goavro.NewCodec(writerSrc)
	if err != nil {
		return fmt.Errorf("goavro: %w", err)
	}
	body, err := codec.BinaryFromNative(nil, written)
	if err != nil {
		return fmt.Errorf("goavro encodes a generated record: %w", err)
	}
	resolved, err := avro.NewSchemaCompatibility().Resolve(reader, writer)
	if err != nil {
		return fmt.Errorf("resolve: %w", err)
	}
	var read map[string]any
	if err := avro.Unmarshal(resolved, body, &read); err != nil {
		return fmt.Errorf("decode through resolution: %w", err)
	}
	want := expect(reader, writer, writtenPlain).(map[string]any)
	var faults []string
	for _, f := range reader.(*avro.RecordSchema).Fields() {
		got, ok := read[f.Name()]
		if !ok {
			faults = append(faults, fmt.Sprintf("field %q: not decoded", f.Name()))
			continue
		}
		if w, r := norm(want[f.Name()]), norm(got); !reflect.DeepEqual(w, r) {
			faults = append(faults, fmt.Sprintf("field %q: want %#v, read %#v", f.Name(), w, r))
		}
	}
	if len(faults) > 0 {
		return errors.New(strings.Join(faults, "; "))
	}
	return nil
}

// expect returns what a reader of schema reader should see for the value v
// written with schema writer: the reader's fields, each from the writer's
// field of that name (or alias) or else from the reader's default.
func expect(reader, writer avro.Schema, v any) any {
	if ref, ok := reader.(*avro.RefSchema); ok {
		reader = ref.Schema()
	}
	if ref, ok := writer.(*avro.RefSchema); ok {
		writer = ref.Schema()
	}
	switch r := reader.(type) {
	case *avro.RecordSchema:
		w, ok := writer.(*avro.RecordSchema)
		vm, _ := v.(map[string]any)
		if !ok {
			return v
		}
		out := map[string]any{}
		for _, rf := range r.Fields() {
			i := slices.IndexFunc(w.Fields(), func(wf *avro.Field) bool {
				return wf.Name() == rf.Name() || slices.Contains(rf.Aliases(), wf.Name())
			})
			if i < 0 {
				out[rf.Name()] = defaultOf(rf)
				continue
			}
			out[rf.Name()] = expect(rf.Type(), w.Fields()[i].Type(), vm[w.Fields()[i].Name()])
		}
		return out
	case *avro.ArraySchema:
		w, ok := writer.(*avro.ArraySchema)
		items, _ := v.([]any)
		if !ok {
			return v
		}
		out := make([]any, len(items))
		for i, e := range items {
			out[i] = expect(r.Items(), w.Items(), e)
		}
		return out
	case *avro.MapSchema:
		w, ok := writer.(*avro.MapSchema)
		entries, _ := v.(map[string]any)
		if !ok {
			return v
		}
		out := make(map[string]any, len(entries))
		for k, e := range entries {
			out[k] = expect(r.Values(), w.Values(), e)
		}
		return out
	case *avro.UnionSchema:
		if v == nil {
			return nil
		}
		w, ok := writer.(*avro.UnionSchema)
		if vm, named := v.(map[string]any); ok && named && len(vm) == 1 && len(r.Types()) > 2 {
			// A union of several types, read as {branch name: value}.
			for name, e := range vm {
				rb, _ := r.Types().Get(name)
				wb, _ := w.Types().Get(name)
				if rb == nil || wb == nil {
					return v
				}
				return map[string]any{name: expect(rb, wb, e)}
			}
		}
		return expect(nonNull(r), nonNull(writer), v)
	}
	return v
}

func nonNull(s avro.Schema) avro.Schema {
	if u, ok := s.(*avro.UnionSchema); ok {
		for _, b := range u.Types() {
			if b.Type() != avro.Null {
				return b
			}
		}
	}
	return s
}

// defaultOf is the value a reader fills in for field f, from its default.
func defaultOf(f *avro.Field) any {
	d := f.Default()
	if str, ok := d.(string); ok && nonNull(f.Type()).Type() == avro.Bytes {
		// Avro JSON: the code points of a bytes default are the bytes.
		b := make([]byte, 0, len(str))
		for _, r := range str {
			b = append(b, byte(r))
		}
		return b
	}
	return d
}

// sampler generates a value for a schema, with a different value in every
// field so that a swap shows. It returns the value twice: in goavro's native
// form, to encode, and plain, as hamba decodes it into a map (a ["null", T]
// union as the bare value, not goavro's {"T": value}).
type sampler struct {
	n     int
	named map[string]any // named types by name, as JSON
	// ns is the namespace of the outermost record: the one of the names
	// inside it that give none.
	ns string
}

func (g *sampler) value(schema any, field string) (native, plain any) {
	g.n++
	switch s := schema.(type) {
	case string:
		var v any
		switch s {
		case "null":
			v = nil
		case "boolean":
			v = g.n%2 == 0
		case "int":
			v = int32(g.n)
		case "long":
			v = int64(g.n) * 1_000_003
		case "float":
			v = float32(g.n) / 4
		case "double":
			v = float64(g.n) / 8
		case "bytes":
			v = []byte(fmt.Sprintf("%s-%d-\xff", field, g.n))
		case "string":
			v = fmt.Sprintf("%s-%s-%d", field, uni, g.n)
		default:
			return g.value(g.named[s], field)
		}
		return v, v
	case []any:
		branches := 0
		for _, b := range s {
			if b != "null" {
				branches++
			}
		}
		for _, b := range s {
			if b != "null" {
				n, p := g.value(b, field)
				name := g.typeName(b)
				if branches > 1 {
					// hamba reads a union of several types as its
					// branch's name and value; a nullable one as the
					// value.
					p = map[string]any{name: p}
				}
				return goavro.Union(name, n), p
			}
		}
		return nil, nil
	case map[string]any:
		if name, ok := s["name"].(string); ok {
			g.named[name] = s
			if ns, ok := s["namespace"].(string); ok {
				g.named[ns+"."+name] = s
				if g.ns == "" {
					g.ns = ns
				}
			}
		}
		switch s["type"] {
		case "record":
			n, p := map[string]any{}, map[string]any{}
			for _, f := range s["fields"].([]any) {
				fm := f.(map[string]any)
				name := fm["name"].(string)
				n[name], p[name] = g.value(fm["type"], name)
			}
			return n, p
		case "enum":
			symbols := s["symbols"].([]any)
			v := symbols[g.n%len(symbols)]
			return v, v
		case "array":
			n0, p0 := g.value(s["items"], field+"[0]")
			n1, p1 := g.value(s["items"], field+"[1]")
			return []any{n0, n1}, []any{p0, p1}
		case "map":
			n0, p0 := g.value(s["values"], field+".k")
			n1, p1 := g.value(s["values"], field+".e")
			return map[string]any{"k-" + uni: n0, "": n1}, map[string]any{"k-" + uni: p0, "": p1}
		case "fixed":
			v := make([]byte, int(s["size"].(float64)))
			return v, v
		}
		if s["logicalType"] == "timestamp-micros" {
			// A whole number of milliseconds, which norm compares.
			g.n++
			v := int64(g.n) * 1_000_003 * 1000
			return v, v / 1000
		}
		return g.value(s["type"], field)
	}
	panic(fmt.Sprintf("sampler: unexpected schema %T", schema))
}

// typeName is the name goavro and hamba give a union branch: a named
// type's full name, in the outermost record's namespace when it gives none.
func (g *sampler) typeName(schema any) string {
	full := func(name string, s map[string]any) string {
		if strings.Contains(name, ".") {
			return name
		}
		if ns, ok := s["namespace"].(string); ok {
			return ns + "." + name
		}
		if g.ns != "" {
			return g.ns + "." + name
		}
		return name
	}
	switch s := schema.(type) {
	case string:
		if named, ok := g.named[s].(map[string]any); ok {
			return full(s, named)
		}
		return s
	case map[string]any:
		if name, ok := s["name"].(string); ok {
			return full(name, s)
		}
		if t, ok := s["type"].(string); ok {
			return t
		}
	}
	return fmt.Sprint(schema)
}

// norm maps goavro's and hamba's native forms onto one: integers to int64,
// floats to float64, times to Unix milliseconds, empty collections to nil.
func norm(v any) any {
	switch v := v.(type) {
	case int:
		return int64(v)
	case int32:
		return int64(v)
	case float32:
		return float64(v)
	case time.Time:
		return v.UnixMilli()
	case []byte:
		if len(v) == 0 {
			return nil
		}
		return v
	case map[string]any:
		if len(v) == 0 {
			return nil
		}
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = norm(e)
		}
		return out
	case []any:
		if len(v) == 0 {
			return nil
		}
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = norm(e)
		}
		return out
	}
	return v
}
