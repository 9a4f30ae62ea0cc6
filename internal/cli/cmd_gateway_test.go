package cli

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scattergather/scattergather/internal/testkafka"
)

// TestGatewayCommand runs the gateway command as a user would, with a
// token file and an admin port: the API's port serves only /v1/ (behind
// the token), the admin port /metrics, /healthz and /readyz.
func TestGatewayCommand(t *testing.T) {
	c := testkafka.New(t)
	const token = "cli-test-token-0123456789"
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	api, admin := freeAddr(t), freeAddr(t)
	args := []string{"gateway", "--brokers", strings.Join(c.Brokers, ","), "--topic-prefix", c.Prefix,
		"--partitions", "1", "--result-partitions", "1",
		"--addr", api, "--admin-addr", admin, "--auth-token-file", tokens, "--max-in-flight", "7",
		"--log-level", "warn", "--kafka-log-level", "none"}
	errOut := runCommand(t, args)
	get := func(addr, path, tok string) (int, http.Header, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	waitReadyz(t, admin, errOut)
	for _, tc := range []struct {
		name, addr, path, token string
		status                  int
		says                    string
	}{
		{"admin healthz", admin, "/healthz", "", 200, "ok"},
		{"admin metrics", admin, "/metrics", "", 200, "scattergather_gateway_in_flight_requests 0"},
		{"admin ready check", admin, "/metrics", "", 200, `scattergather_ready{check="gateway"} 1`},
		{"no healthz on the API", api, "/healthz", "", 404, "--admin-addr"},
		{"no readyz on the API", api, "/readyz", "", 404, "--admin-addr"},
		{"no metrics on the API", api, "/metrics", "", 404, "--admin-addr"},
		{"API without a token", api, "/v1/routes", "", 401, `"code":"unauthorized"`},
		{"API with a wrong token", api, "/v1/routes", "not-the-token-at-all", 401, `"code":"unauthorized"`},
		{"API with the token", api, "/v1/routes", token, 200, `"name":"search"`},
		{"no API on the admin port", admin, "/v1/routes", token, 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, h, body := get(tc.addr, tc.path, tc.token)
			if code != tc.status || !strings.Contains(body, tc.says) {
				t.Errorf("GET %s%s: %d %s; want %d saying %q", tc.addr, tc.path, code, body, tc.status, tc.says)
			}
			if code == 401 && h.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	if strings.Contains(errOut.String(), token) {
		t.Errorf("the token is in the logs: %s", errOut.String())
	}
}

// TestGatewayFlags: --metrics-addr is still the admin address's other
// name, and a bad token file fails at start naming the flag's file.
func TestGatewayFlags(t *testing.T) {
	_, fs, err := ParseOnly([]string{"gateway", "--metrics-addr", "0.0.0.0:9999"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := fs.Lookup("admin-addr").Value.String(); got != "0.0.0.0:9999" {
		t.Errorf("--metrics-addr set --admin-addr to %q", got)
	}
	_, fs, err = ParseOnly([]string{"gateway"}, map[string]string{"SG_ADMIN_ADDR": ":9191", "SG_AUTH_TOKEN_FILE": "/run/secrets/tokens", "SG_MAX_IN_FLIGHT": "50"})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"admin-addr": ":9191", "auth-token-file": "/run/secrets/tokens", "max-in-flight": "50"} {
		if got := fs.Lookup(name).Value.String(); got != want {
			t.Errorf("--%s = %q from the environment, want %q", name, got, want)
		}
	}

	var out, errOut bytes.Buffer
	missing := filepath.Join(t.TempDir(), "nope")
	code := Main(t.Context(), []string{"gateway", "--brokers", "127.0.0.1:1", "--create-topics=false", "--addr", "127.0.0.1:0",
		"--admin-addr", "", "--auth-token-file", missing}, Commands(), &out, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), "auth token file") || !strings.Contains(errOut.String(), missing) {
		t.Errorf("exit %d, stderr %q; want an error about the token file", code, errOut.String())
	}

	// 0 is no limit nowhere: it is refused, naming each flag.
	out.Reset()
	errOut.Reset()
	code = Main(t.Context(), []string{"gateway", "--brokers", "127.0.0.1:1", "--create-topics=false", "--addr", "127.0.0.1:0",
		"--admin-addr", "", "--max-in-flight", "0", "--max-streams", "-1", "--max-wait", "0s"}, Commands(), &out, &errOut)
	for _, want := range []string{"--max-in-flight 0: want at least 1", "--max-streams -1", "--max-wait 0s: want a positive duration"} {
		if code == 0 || !strings.Contains(errOut.String(), want) {
			t.Errorf("exit %d, stderr %q; want an error naming %q", code, errOut.String(), want)
		}
	}
}
