package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/schemareg/registrytest"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

func TestSchemaRegistryFlags(t *testing.T) {
	reg := registrytest.New(t, registrytest.BasicAuth("sg", "s3cret"))
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cc := kafkaconfig.Client{Brokers: []string{"127.0.0.1:9092"}}

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
	for _, role := range []string{"scatterer", "processor", "aggregator", "gateway", "bench"} {
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

// TestBenchInRegistryMode: bench --schema-registry registers the schemas and
// the pipeline it measures writes the Confluent wire format; every request
// is answered.
func TestBenchInRegistryMode(t *testing.T) {
	c := testkafka.New(t)
	reg := registrytest.New(t)
	out := filepath.Join(t.TempDir(), "bench.json")
	var stdout, stderr bytes.Buffer
	code := Main(t.Context(), []string{"bench", "--brokers", strings.Join(c.Brokers, ","), "--topic-prefix", c.Prefix,
		"--schema-registry", reg.URL, "--requests", "20", "--warmup", "0s", "--concurrency", "4", "--fanout", "2",
		"--partitions", "1", "--result-partitions", "1", "--guarantee", "at-least-once", "--keep-topics", "--quiet", "--json", out},
		Commands(), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("bench exited %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct{ Complete, Requests int }
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Requests != 20 || rep.Complete != 20 {
		t.Errorf("%d requests, %d COMPLETE; want 20 and 20", rep.Requests, rep.Complete)
	}
	if n := len(reg.Subjects()); n != 5 {
		t.Errorf("%d subjects registered, want 5", n)
	}
	topics, err := c.Admin(t).ListTopics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var requests string
	for _, name := range topics.Names() {
		if strings.HasPrefix(name, c.Prefix) && strings.HasSuffix(name, ".pipeline.requests") {
			requests = name
		}
	}
	if requests == "" {
		t.Fatalf("no pipeline requests topic under %s in %v", c.Prefix, topics.Names())
	}
	cl := c.Client(t, kgo.ConsumeTopics(requests), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	fs := cl.PollFetches(ctx)
	if err := fs.Err0(); err != nil {
		t.Fatal(err)
	}
	recs := fs.Records()
	if len(recs) == 0 {
		t.Fatal("no request records")
	}
	for _, r := range recs {
		if len(r.Value) < 5 || r.Value[0] != 0 {
			t.Fatalf("request record starts % x, want the Confluent magic byte 00", r.Value[:min(len(r.Value), 5)])
		}
	}
}

// TestBenchSecurityNeedsBrokers: TLS or SASL flags without --brokers are an
// error, since the embedded broker speaks plaintext.
func TestBenchSecurityNeedsBrokers(t *testing.T) {
	var out, errOut bytes.Buffer
	code := Main(t.Context(), []string{"bench", "--sasl-mechanism", "SCRAM-SHA-256", "--sasl-user", "u", "--sasl-password-file", "/dev/null"},
		Commands(), &out, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), "need --brokers") || !strings.Contains(errOut.String(), "sasl=SCRAM-SHA-256") {
		t.Errorf("exit %d, stderr %q; want an error naming the SASL flags and --brokers", code, errOut.String())
	}
}
