package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/internal/testkafka"
)

// TestTLSFlagsRealKafka: the --tls-* and --sasl-* flags reach the real
// broker's SSL and SASL_SSL listeners (scripts/kafka-local.sh), and with a
// CA that did not sign the broker's certificate every command that talks
// to the cluster exits within 10s naming the certificate problem, the
// roles too when they do not create topics first (--create-topics=false).
func TestTLSFlagsRealKafka(t *testing.T) {
	sec := testkafka.TLS(t)
	c := testkafka.New(t)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(sec.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherCA := testkafka.OtherCA(t)
	tlsArgs := func(ca string) []string {
		return []string{"--brokers", strings.Join(sec.TLSBrokers, ","), "--tls-ca-file", ca, "--topic-prefix", c.Prefix}
	}
	saslSSLArgs := func(ca string) []string {
		return []string{"--brokers", strings.Join(sec.SASLSSLBrokers, ","), "--tls-ca-file", ca, "--topic-prefix", c.Prefix,
			"--sasl-mechanism", "SCRAM-SHA-512", "--sasl-user", sec.User, "--sasl-password-file", pwFile}
	}
	run := func(t *testing.T, args []string) (int, string, time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		var out, errOut bytes.Buffer
		start := time.Now()
		code := Main(ctx, args, Commands(), &out, &errOut)
		return code, errOut.String(), time.Since(start)
	}
	for name, args := range map[string][]string{"tls": tlsArgs(sec.CAFile), "tls+sasl": saslSSLArgs(sec.CAFile)} {
		t.Run(name+"/topics", func(t *testing.T) {
			if code, stderr, _ := run(t, append([]string{"topics"}, args...)); code != 0 {
				t.Fatalf("topics over %s: exit %d: %s", name, code, stderr)
			}
		})
	}
	const want = "x509: certificate signed by unknown authority"
	for name, args := range map[string][]string{"tls": tlsArgs(otherCA), "tls+sasl": saslSSLArgs(otherCA)} {
		for _, cmd := range [][]string{
			{"topics"},
			{"scatterer", "--create-topics=false", "--metrics-addr="},
			{"processor", "--route", "echo", "--handler", "echo", "--create-topics=false", "--metrics-addr="},
			{"aggregator", "--create-topics=false", "--metrics-addr="},
			{"aggregator", "--metrics-addr="}, // creates the topics first
		} {
			t.Run(name+"/wrong CA/"+strings.Join(cmd, " "), func(t *testing.T) {
				code, stderr, took := run(t, append(cmd, args...))
				if code == 0 || !strings.Contains(stderr, want) {
					t.Fatalf("exit %d after %v, stderr %q; want a failure naming %q", code, took.Round(time.Millisecond), stderr, want)
				}
				if took > 10*time.Second {
					t.Fatalf("took %v to fail, want under 10s: %s", took.Round(time.Millisecond), stderr)
				}
				t.Logf("exit %d in %v: %s", code, took.Round(time.Millisecond), strings.TrimSpace(stderr))
			})
		}
	}
}
