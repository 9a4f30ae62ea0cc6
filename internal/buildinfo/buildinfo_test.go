package buildinfo

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestShort(t *testing.T) {
	for _, tc := range []struct {
		in   Info
		want string
	}{
		{Info{}, "unknown"},
		{Info{Commit: "0123456789abcdef0123"}, "0123456789ab"},
		{Info{Commit: "0123456789abcdef0123", Modified: true}, "0123456789ab+dirty"},
	} {
		if got := tc.in.Short(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestBinaryStampsCommit builds the command and checks that `version`
// prints the commit git reports for HEAD.
func TestBinaryStampsCommit(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not in a git checkout: %v", err) // a source tarball
	}
	bin := filepath.Join(t.TempDir(), "scattergather")
	if out, err := exec.Command("go", "build", "-buildvcs=auto", "-o", bin, "../../cmd/scattergather").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("version: %v\n%s", err, out)
	}
	if want := "commit " + strings.TrimSpace(string(head))[:12]; !strings.Contains(string(out), want) {
		t.Fatalf("version printed %q, want it to contain %q", out, want)
	}
}
