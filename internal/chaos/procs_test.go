package chaos

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestTermWaitsUntilUp sends a graceful stop to a process the moment it
// has started. The process handles SIGTERM only after 300ms, as a Go
// binary does only once its runtime and main have run: the keeper must
// hold the signal until the process has been up for upBeforeTerm, so the
// stop is graceful (exit 0), not a death by the signal (143). CI once saw
// a rolling restart count a bad stop for a processor signalled 0s after
// its restart.
func TestTermWaitsUntilUp(t *testing.T) {
	sh, err := os.Stat("/bin/sh")
	if err != nil || sh.IsDir() {
		t.Fatalf("this test needs /bin/sh: %v", err)
	}
	p := &proc{
		name:    "late-handler",
		role:    "processor",
		exe:     "/bin/sh",
		args:    []string{"-c", `sleep 0.3; trap 'exit 0' TERM; while :; do sleep 0.05; done`},
		logPath: filepath.Join(t.TempDir(), "late-handler.log"),
	}
	if err := p.start(nil); err != nil {
		t.Fatal(err)
	}
	actions := make(chan action)
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		p.keep(t.Context(), actions, func(*proc, int) { t.Error("unexpected exit") }, t.Logf)
	}()
	a := action{sig: syscall.SIGTERM, bound: 10 * time.Second, final: true, done: make(chan actionResult, 1)}
	actions <- a
	res := <-a.done
	<-kept
	if res.code != 0 || res.err != nil {
		t.Fatalf("SIGTERM right after start: exit status %d, err %v; want a graceful exit 0", res.code, res.err)
	}
	if up := time.Since(p.started); up < upBeforeTerm {
		t.Fatalf("the process was stopped after %s; want at least %s up", up, upBeforeTerm)
	}
}
