package registrytest

import (
	"encoding/json"
	"testing"

	"github.com/scattergather/scattergather/internal/schemareg"
	"github.com/scattergather/scattergather/schemas"
)

// Variants returns what another producer may register for the record kind
// k: its subject (the record's full name), the same schema in another text
// (compact JSON, as another library writes it: another id, the same
// fingerprint), and a changed schema (an extra field with a default) that
// the schemas package does not know.
func Variants(t testing.TB, k schemas.Kind) (subject, same, changed string) {
	t.Helper()
	src, err := schemas.Schema(k)
	if err != nil {
		t.Fatal(err)
	}
	if subject, err = schemareg.Subject(src); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(src), &m); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	m["fields"] = append(m["fields"].([]any), map[string]any{"name": "extra", "type": "string", "default": ""})
	c, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return subject, string(b), string(c)
}
