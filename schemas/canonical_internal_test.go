package schemas

import (
	"encoding/binary"
	"testing"

	"github.com/linkedin/goavro/v2"
)

// TestCanonicalFormSpecVectors checks canonicalForm and crc64Avro against
// the test vectors that the Avro project ships for every implementation
// (share/test/data/schema-tests.txt in apache/avro; the Java tests verify
// them), plus the logical-type case the file lacks, where the
// specification's [STRIP] rule leaves the bare primitive name, as Java's
// SchemaNormalization does.
func TestCanonicalFormSpecVectors(t *testing.T) {
	cases := []struct {
		in, canonical string
		fingerprint   int64 // as printed in schema-tests.txt; 0: not given there
	}{
		{`"null"`, `"null"`, 7195948357588979594},
		{`{"type":"null"}`, `"null"`, 0},
		{`"boolean"`, `"boolean"`, -6970731678124411036},
		{`"int"`, `"int"`, 8247732601305521295},
		{`"long"`, `"long"`, -3434872931120570953},
		{`{"type":"long"}`, `"long"`, 0},
		{`"float"`, `"float"`, 5583340709985441680},
		{`"double"`, `"double"`, -8181574048448539266},
		{`"bytes"`, `"bytes"`, 5746618253357095269},
		{`"string"`, `"string"`, -8142146995180207161},
		{`[  ]`, `[]`, -1241056759729112623},
		{`[ "int"  ]`, `["int"]`, -5232228896498058493},
		{`[ "int" , {"type":"boolean"} ]`, `["int","boolean"]`, 5392556393470105090},
		{`{"fields":[], "type":"record", "name":"foo"}`, `{"name":"foo","type":"record","fields":[]}`, -4824392279771201922},
		{`{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}`, `{"name":"x.y.foo","type":"record","fields":[]}`, 5916914534497305771},
		{`{"fields":[], "type":"record", "name":"a.b.foo", "namespace":"x.y"}`, `{"name":"a.b.foo","type":"record","fields":[]}`, -4616218487480524110},
		{`{"fields":[], "type":"record", "name":"foo", "doc":"Useful info"}`, `{"name":"foo","type":"record","fields":[]}`, -4824392279771201922},
		{`{"fields":[], "type":"record", "name":"foo", "doc":"foo", "aliases":["foo","bar"]}`, `{"name":"foo","type":"record","fields":[]}`, -4824392279771201922},
		{`{"fields":[{"type":{"type":"boolean"}, "name":"f1"}], "type":"record", "name":"foo"}`, `{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}`, 7843277075252814651},
		{`{ "fields":[{"type":"boolean", "aliases":[], "name":"f1", "default":"true"},
		            {"order":"descending","name":"f2","doc":"Hello","type":"int"}],
		  "type":"record", "name":"foo"}`, `{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},{"name":"f2","type":"int"}]}`, -4860222112080293046},
		{`{"type":"enum", "name":"foo", "symbols":["A1"]}`, `{"name":"foo","type":"enum","symbols":["A1"]}`, -6342190197741309591},
		{`{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", "symbols":["A1", "A2"]}`, `{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}`, -4448647247586288245},
		{`{"name":"foo","type":"fixed","size":15}`, `{"name":"foo","type":"fixed","size":15}`, 1756455273707447556},
		{`{"namespace":"x.y.z", "type":"fixed", "name":"foo", "doc":"foo bar", "size":32}`, `{"name":"x.y.z.foo","type":"fixed","size":32}`, -3064184465700546786},
		{`{ "items":{"type":"null"}, "type":"array"}`, `{"type":"array","items":"null"}`, -589620603366471059},
		{`{ "values":"string", "type":"map"}`, `{"type":"map","values":"string"}`, -8732877298790414990},
		{`{"name":"PigValue","type":"record",
		   "fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}`, `{"name":"PigValue","type":"record","fields":[{"name":"value","type":["null","int","long","PigValue"]}]}`, -1759257747318642341},
		// Not in schema-tests.txt.
		{`{"type":"long","logicalType":"timestamp-millis"}`, `"long"`, -3434872931120570953},
		{`{"type":"record","name":"R","namespace":"n","fields":[{"name":"e","type":{"type":"enum","name":"E","symbols":["A"]}},{"name":"f","type":"E"}]}`,
			`{"name":"n.R","type":"record","fields":[{"name":"e","type":{"name":"n.E","type":"enum","symbols":["A"]}},{"name":"f","type":"n.E"}]}`, 0},
	}
	for _, tc := range cases {
		t.Run(tc.canonical, func(t *testing.T) {
			got, err := canonicalForm(tc.in, canonicalSpec)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.canonical {
				t.Fatalf("canonical form\n got %s\nwant %s", got, tc.canonical)
			}
			if tc.fingerprint != 0 {
				if fp := int64(crc64Avro([]byte(got))); fp != tc.fingerprint {
					t.Fatalf("fingerprint %d, want %d", fp, tc.fingerprint)
				}
			}
		})
	}
}

// TestLegacyFingerprintsAreRead checks that records carrying goavro's own
// fingerprint (what this package wrote before it computed the spec's) are
// still read.
func TestLegacyFingerprintsAreRead(t *testing.T) {
	for _, k := range Kinds {
		t.Run(string(k), func(t *testing.T) {
			src, err := Schema(k)
			if err != nil {
				t.Fatal(err)
			}
			c, err := goavro.NewCodec(src)
			if err != nil {
				t.Fatal(err)
			}
			spec, err := Fingerprint(k)
			if err != nil {
				t.Fatal(err)
			}
			if spec == uint64(c.Rabin) {
				t.Fatalf("goavro's fingerprint equals the spec's; the alias is not needed")
			}
			b := binary.LittleEndian.AppendUint64([]byte{0xC3, 0x01}, uint64(c.Rabin))
			if got, err := KindOf(b); err != nil || got != k {
				t.Fatalf("KindOf = %q, %v", got, err)
			}
		})
	}
}
