package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

// lockedBuffer is a bytes.Buffer safe for the roles' concurrent logging.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(l.b.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		out = append(out, bytes.Clone(sc.Bytes()))
	}
	return out
}

// TestLogsHaveNoDuplicateKeys: every role names itself once in its logs;
// a JSON log line with a key twice is refused by strict ingesters (#17: the
// processor's lines carried role and route twice, from the command and
// from the role).
func TestLogsHaveNoDuplicateKeys(t *testing.T) {
	c := testkafka.New(t)
	var buf lockedBuffer
	p := startPipeline(t, c, stack.Config{
		Routes: table(t, `{"routes":[{"name":"echo","mode":"split","fanout":2},
			{"name":"quotes","mode":"broadcast","recipients":["a"]}]}`),
		Processors: []stack.ProcessorSpec{{Route: "echo", Handler: processor.Echo()}, {Route: "quotes", Recipient: "a", Handler: processor.Echo()}},
		Logger:     slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	for _, route := range []string{"echo", "quotes"} {
		if _, err := p.client.Do(t.Context(), schemas.Route(route), []byte(`{}`), client.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	lines := buf.lines()
	if len(lines) == 0 {
		t.Fatal("no log lines")
	}
	roles := map[string]bool{}
	for _, line := range lines {
		var pairs []string
		dec := json.NewDecoder(bytes.NewReader(line))
		if _, err := dec.Token(); err != nil { // {
			t.Fatalf("not JSON: %s", line)
		}
		var role string
		for dec.More() {
			k, _ := dec.Token()
			var v any
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			pairs = append(pairs, k.(string))
			if k == "role" {
				role, _ = v.(string)
			}
		}
		seen := map[string]bool{}
		for _, k := range pairs {
			if seen[k] {
				t.Fatalf("key %q twice in %s", k, line)
			}
			seen[k] = true
		}
		roles[role] = true
	}
	for _, r := range []string{"scatterer", "processor", "aggregator"} {
		if !roles[r] {
			t.Errorf("no log line names role %s; roles seen: %v", r, roles)
		}
	}
}
