package schemas

import (
	"encoding/binary"
	"maps"
	"testing"
)

// TestOpenBodyChoosesTheDecoder checks the dispatch of the decoders: a
// record written with the current schema of its kind (under any of the
// fingerprints we read for it) goes to the hand-written decoder, one whose
// writer's schema is another goes to goavro, and one of another kind or an
// unknown fingerprint fails.
func TestOpenBodyChoosesTheDecoder(t *testing.T) {
	r, err := loadRegistry()
	if err != nil {
		t.Fatal(err)
	}
	const released = 0x0123456789abcdef // a made-up fingerprint of an older Task schema
	withRelease := *r
	withRelease.byFingerprint = maps.Clone(r.byFingerprint)
	withRelease.byFingerprint[released] = writer{kind: KindTask, current: false}

	body := []byte{2, 'c'}
	record := func(fp uint64) []byte {
		return append(binary.LittleEndian.AppendUint64([]byte{0xC3, 0x01}, fp), body...)
	}
	taskFP := binary.LittleEndian.Uint64(r.header[KindTask][2:])
	resultFP := binary.LittleEndian.Uint64(r.header[KindResult][2:])
	goavroFP := uint64(r.byKind[KindTask].Rabin)
	cases := []struct {
		name   string
		fp     uint64
		fast   bool
		reason string
	}{
		{"current schema", taskFP, true, ""},
		{"current schema, goavro's fingerprint", goavroFP, true, ""},
		{"released schema", released, false, ""},
		{"another kind", resultFP, false, "wrong-schema"},
		{"unknown fingerprint", 42, false, "unknown-schema"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, fast, err := withRelease.openBody(KindTask, record(tc.fp))
			if fast != tc.fast {
				t.Fatalf("fast = %t, want %t (err %v)", fast, tc.fast, err)
			}
			if tc.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if de, ok := err.(*DecodeError); !ok || de.Reason != tc.reason || de.Kind != KindTask {
				t.Fatalf("error %v, want a %s DecodeError of kind task", err, tc.reason)
			}
			if fast && string(d.b) != string(body) {
				t.Fatalf("decoder body %x, want %x", d.b, body)
			}
		})
	}
}

// TestDecodeRecoversPanicsInTheFastDecoder: should a hand-written decoder
// ever panic, the record is malformed and the value zero.
func TestDecodeRecoversPanicsInTheFastDecoder(t *testing.T) {
	decodePanicking := func() (v Task, err error) {
		defer recoverMalformed(KindTask, &v, &err)
		v.CorrelationID = "partly read"
		var parts []PartID
		_ = parts[1] // panics
		return v, nil
	}
	v, err := decodePanicking()
	de, ok := err.(*DecodeError)
	if !ok || de.Kind != KindTask || de.Reason != "malformed" {
		t.Fatalf("err = %v, want a malformed DecodeError", err)
	}
	if v.CorrelationID != "" {
		t.Fatalf("value %+v returned with the error", v)
	}
}
