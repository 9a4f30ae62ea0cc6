package schemas

import (
	"errors"
	"testing"
)

// TestDecodeRecoversPanics checks the last line of defence: should the
// conversion from goavro's native form ever panic on a record that passed
// the walk, the decoder returns a *DecodeError instead of crashing the role.
func TestDecodeRecoversPanics(t *testing.T) {
	b, err := EncodeResult(Result{CorrelationID: "c", Status: ResultOK})
	if err != nil {
		t.Fatal(err)
	}
	v, err := decode(KindResult, b, func(m map[string]any) (Result, error) {
		_ = m["no such field"].(string) // panics
		return Result{CorrelationID: "unreachable"}, nil
	})
	var de *DecodeError
	if !errors.As(err, &de) || de.Kind != KindResult || de.Reason != "malformed" {
		t.Fatalf("decode = %+v, %v; want a malformed DecodeError", v, err)
	}
	if v.CorrelationID != "" {
		t.Fatalf("decode returned a value with the error: %+v", v)
	}
}
