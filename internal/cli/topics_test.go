package cli

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/internal/testkafka"
)

// TestMissingTopicsReadyz: a role started with --create-topics=false
// before its topics exist warns in its log and answers /readyz 503 naming
// the missing topics and the `scattergather topics` command that creates
// them; once that command ran (as the hint says), /readyz turns 200.
func TestMissingTopicsReadyz(t *testing.T) {
	for _, role := range []struct {
		name    string
		args    []string
		missing []string // topic names after the prefix
	}{
		{"processor", []string{"processor", "--route", "echo"}, []string{"tasks.echo", "results", "dlq"}},
		{"gateway", []string{"gateway", "--addr", "127.0.0.1:0"}, []string{"requests", "replies", "results"}},
	} {
		t.Run(role.name, func(t *testing.T) {
			c := testkafka.New(t)
			brokers := strings.Join(c.Brokers, ",")
			admin := freeAddr(t)
			args := append(role.args, "--brokers", brokers, "--topic-prefix", c.Prefix, "--create-topics=false",
				"--metrics-addr", admin, "--log-level", "info", "--kafka-log-level", "none")
			log := captureStderr(t) // the roles log to os.Stderr
			stderr := runCommand(t, args)
			hint := "scattergather topics --brokers " + brokers + " --topic-prefix " + c.Prefix
			var code int
			var body string
			deadline := time.Now().Add(30 * time.Second)
			for {
				code, body = getReadyz(t, admin)
				if code == http.StatusServiceUnavailable && strings.Contains(body, "topics: missing topics") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("/readyz %d %q after 30s; want 503 naming the missing topics; stderr: %s %s", code, body, stderr, log)
				}
				time.Sleep(50 * time.Millisecond)
			}
			for _, m := range role.missing {
				if !strings.Contains(body, c.Prefix+m) {
					t.Errorf("/readyz %q does not name %s", body, c.Prefix+m)
				}
				if !strings.Contains(log.String(), c.Prefix+m) {
					t.Errorf("log does not name %s: %s", c.Prefix+m, log)
				}
			}
			if !strings.Contains(body, hint) || !strings.Contains(body, "--create-topics") {
				t.Errorf("/readyz %q does not say how to create the topics (%s)", body, hint)
			}
			if l := log.String(); !strings.Contains(l, "level=WARN msg=\"topics missing") || !strings.Contains(l, hint) {
				t.Errorf("log does not warn with the command: %s", log)
			}

			// Do what it says.
			var out, errOut bytes.Buffer
			topicsArgs := append(strings.Fields(strings.TrimPrefix(hint, "scattergather ")), "--partitions", "1", "--result-partitions", "1")
			if code := Main(t.Context(), topicsArgs, Commands(), &out, &errOut); code != 0 {
				t.Fatalf("%v: exit %d: %s", topicsArgs, code, errOut.String())
			}
			waitReadyz(t, admin, stderr)
			if !strings.Contains(log.String(), "topics exist now") {
				t.Errorf("log does not say the topics exist now: %s", log)
			}
		})
	}
}

// getReadyz returns the status and body of http://addr/readyz (0 and the
// error while nothing listens).
func getReadyz(t *testing.T, addr string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// captureStderr sends os.Stderr to the buffer it returns until the test
// ends (after the command's own cleanup, registered later, has stopped it).
func captureStderr(t *testing.T) *lockedBuffer {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	orig := os.Stderr
	os.Stderr = w
	var buf lockedBuffer
	done := make(chan struct{})
	// Copies until the write end is closed below.
	go func() {
		io.Copy(&buf, r)
		close(done)
	}()
	t.Cleanup(func() {
		os.Stderr = orig
		w.Close()
		<-done
		r.Close()
	})
	return &buf
}
