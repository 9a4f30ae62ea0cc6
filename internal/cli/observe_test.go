package cli

import (
	"bytes"
	"net"
	"strings"
	"testing"
)

// TestLogFlagsOnEveryRole: every command that logs takes --log-level and
// --log-format and rejects bad values before it connects to anything.
func TestLogFlagsOnEveryRole(t *testing.T) {
	base := map[string][]string{
		"scatterer": nil, "processor": {"--route", "echo"}, "aggregator": nil, "topics": nil, "dev": nil, "demo": nil,
	}
	for name, extra := range base {
		t.Run(name, func(t *testing.T) {
			for _, bad := range [][]string{{"--log-format", "xml"}, {"--log-level", "loud"}} {
				var out, errOut bytes.Buffer
				args := append(append([]string{name, "--brokers", "127.0.0.1:1"}, extra...), bad...)
				if name == "dev" || name == "demo" {
					args = append([]string{name}, bad...)
				}
				code := Main(t.Context(), args, Commands(), &out, &errOut)
				if code == 0 || !strings.Contains(errOut.String(), "log") {
					t.Errorf("%v: exit %d, stderr %q; want an error about the log flag", args, code, errOut.String())
				}
			}
		})
	}
}

// TestMetricsAddrTaken: a role whose metrics address is taken says so and
// names the flag.
func TestMetricsAddrTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var out, errOut bytes.Buffer
	code := Main(t.Context(), []string{"aggregator", "--brokers", "127.0.0.1:1", "--create-topics=false", "--metrics-addr", ln.Addr().String()},
		Commands(), &out, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), "--metrics-addr") {
		t.Errorf("exit %d, stderr %q; want an error naming --metrics-addr", code, errOut.String())
	}
}

func TestParseOnly(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		ok   bool
	}{
		{[]string{"processor", "--route", "search", "--handler", "search"}, map[string]string{"SG_METRICS_ADDR": "0.0.0.0:9090"}, true},
		{[]string{"scatterer", "--no-such-flag"}, nil, false},
		{[]string{"aggregator"}, map[string]string{"SG_TICK": "often"}, false},
		{[]string{"nope"}, nil, false},
		{[]string{"aggregator", "extra"}, nil, false},
	}
	for _, tt := range tests {
		_, fs, err := ParseOnly(tt.args, tt.env)
		if (err == nil) != tt.ok {
			t.Errorf("ParseOnly(%v, %v) = %v, want ok=%v", tt.args, tt.env, err, tt.ok)
		}
		if tt.ok && tt.env["SG_METRICS_ADDR"] != "" && fs.Lookup("metrics-addr").Value.String() != tt.env["SG_METRICS_ADDR"] {
			t.Errorf("env not applied: %s", fs.Lookup("metrics-addr").Value)
		}
	}
}
