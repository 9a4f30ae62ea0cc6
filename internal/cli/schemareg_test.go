package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/schemareg/registrytest"
)

func TestSchemaRegistryFlags(t *testing.T) {
	reg := registrytest.New(t, registrytest.BasicAuth("sg", "s3cret"))
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cc := kafka.ClientConfig{Brokers: []string{"127.0.0.1:9092"}}

	t.Run("from env, registers and adds the hooks", func(t *testing.T) {
		_, fs, err := ParseOnly([]string{"aggregator"}, map[string]string{
			"SG_SCHEMA_REGISTRY": reg.URL, "SG_SCHEMA_REGISTRY_USER": "sg", "SG_SCHEMA_REGISTRY_PASSWORD_FILE": pw,
		})
		if err != nil {
			t.Fatal(err)
		}
		r := registryFlags{url: fs.Lookup("schema-registry").Value.String(), user: fs.Lookup("schema-registry-user").Value.String(),
			passwordFile: fs.Lookup("schema-registry-password-file").Value.String()}
		got, err := r.apply(t.Context(), cc, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Hooks) != 1 || len(cc.Hooks) != 0 {
			t.Errorf("hooks %d (input %d), want 1 (0)", len(got.Hooks), len(cc.Hooks))
		}
		if n := len(reg.Subjects()); n != 5 {
			t.Errorf("%d subjects registered, want 5", n)
		}
	})
	t.Run("off", func(t *testing.T) {
		var r registryFlags
		got, err := r.apply(t.Context(), cc, nil)
		if err != nil || len(got.Hooks) != 0 {
			t.Errorf("no --schema-registry: hooks %d, err %v", len(got.Hooks), err)
		}
	})
	for _, tc := range []struct {
		name string
		r    registryFlags
		want string
	}{
		{"user without url", registryFlags{user: "sg"}, "without --schema-registry"},
		{"missing password file", registryFlags{url: reg.URL, user: "sg", passwordFile: filepath.Join(t.TempDir(), "none")}, "--schema-registry-password-file"},
		{"no password", registryFlags{url: reg.URL, user: "sg"}, "401"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.r.apply(t.Context(), cc, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %q", err, tc.want)
			}
		})
	}

	// A role with an unreachable registry stops at start with an error
	// naming the flag and the URL (before it needs the brokers).
	for _, role := range []string{"scatterer", "processor", "aggregator", "gateway"} {
		t.Run(role+" unreachable", func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := []string{role, "--brokers", "127.0.0.1:1", "--schema-registry", "http://127.0.0.1:1", "--route", "echo"}
			if role != "processor" {
				args = args[:len(args)-2]
			}
			code := Main(t.Context(), args, Commands(), &out, &errOut)
			if code == 0 || !strings.Contains(errOut.String(), "--schema-registry: schema registry http://127.0.0.1:1") {
				t.Errorf("exit %d, stderr %q", code, errOut.String())
			}
		})
	}
}
