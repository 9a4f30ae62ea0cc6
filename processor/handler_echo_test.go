package processor

import (
	"bytes"
	"testing"

	"github.com/scattergather/scattergather/schemas"
)

func TestEcho(t *testing.T) {
	for _, payload := range [][]byte{nil, {}, []byte(`{"q":"x"}`), {0, 0xff, 0xc3}} {
		got, err := Echo().Handle(t.Context(), schemas.Task{Payload: payload})
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("Echo(%q) = %q, %v", payload, got, err)
		}
	}
}
