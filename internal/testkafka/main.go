package testkafka

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
)

// used remembers which brokers this test binary's tests ran against, for
// Main's summary line. Package state, because a TestMain sees the package's
// tests only through it.
var used struct {
	mu    sync.Mutex
	kinds map[string]*usage // by Kind
}

type usage struct {
	brokers string // seeds, or "in-process" for kfake
	version string
	tests   int
}

func record(c *Cluster) {
	used.mu.Lock()
	defer used.mu.Unlock()
	if used.kinds == nil {
		used.kinds = make(map[string]*usage)
	}
	u := used.kinds[c.Kind]
	if u == nil {
		u = &usage{brokers: strings.Join(c.Brokers, ","), version: c.version}
		if c.Kind == KindKfake {
			u.brokers = "in-process"
		}
		used.kinds[c.Kind] = u
	}
	u.tests++
}

// Main runs the package's tests, stops the shared Kafka container if one
// was started, and prints one line saying which broker the suite ran
// against:
//
//	testkafka: suite github.com/.../aggregator ran against kafka v4.4 at 127.0.0.1:19092 (12 New calls)
//
// Call it as the whole of TestMain; the test binary then exits with the
// tests' status (Go does that when TestMain returns):
//
//	func TestMain(m *testing.M) { testkafka.Main(m) }
//
// `go test ./...` hides the output of passing packages, so when
// SG_TESTKAFKA_REPORT names a file, the line is also appended there;
// `make test-kafka` and .ci/run print that file at the end.
func Main(m *testing.M) {
	pkg := callerPackage()
	m.Run()
	stopContainer()
	line := Summary(pkg)
	fmt.Println(line)
	if path := os.Getenv("SG_TESTKAFKA_REPORT"); path != "" {
		// One short O_APPEND write per package: parallel test binaries
		// do not interleave within a line.
		if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			_, _ = f.WriteString(line + "\n")
			_ = f.Close()
		}
	}
}

// Summary returns Main's line for pkg from what this binary's tests used.
func Summary(pkg string) string {
	used.mu.Lock()
	defer used.mu.Unlock()
	if len(used.kinds) == 0 {
		return fmt.Sprintf("testkafka: suite %s ran against no broker (no test called testkafka.New)", pkg)
	}
	kinds := make([]string, 0, len(used.kinds))
	for k := range used.kinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	parts := make([]string, 0, len(kinds))
	for _, k := range kinds {
		u := used.kinds[k]
		what := k
		if k != KindKfake && u.version != "" {
			what += " " + u.version
		}
		parts = append(parts, fmt.Sprintf("%s at %s (%d New calls)", what, u.brokers, u.tests))
	}
	return fmt.Sprintf("testkafka: suite %s ran against %s", pkg, strings.Join(parts, "; "))
}

// callerPackage is the import path of the package whose TestMain called
// Main: the frame two up is "<import path>[_test].TestMain".
func callerPackage() string {
	pc, _, _, ok := runtime.Caller(2)
	if !ok {
		return "?"
	}
	fn := runtime.FuncForPC(pc).Name()
	slash := strings.LastIndex(fn, "/")
	dot := strings.Index(fn[slash+1:], ".")
	if dot < 0 {
		return fn
	}
	return strings.TrimSuffix(fn[:slash+1+dot], "_test")
}
