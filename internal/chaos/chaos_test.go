package chaos_test

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scattergather/scattergather/internal/chaos"
	"github.com/scattergather/scattergather/internal/cli"
	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// envExec makes the test binary act as the scattergather binary, so that
// the harness can run the roles as child processes of the code under test
// without building cmd/scattergather first.
const envExec = "SG_CHAOS_TEST_EXEC"

func TestMain(m *testing.M) {
	if os.Getenv(envExec) == "1" {
		os.Exit(runCLI())
	}
	testkafka.Main(m)
}

// runCLI is cmd/scattergather's main: the first SIGINT/SIGTERM cancels the
// command's context, a second one exits at once.
func runCLI() int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		<-sigs
		os.Exit(130)
	}()
	return cli.Main(ctx, os.Args[1:], cli.Commands(), os.Stdout, os.Stderr)
}

// runChaos runs the harness with the roles re-executing this test binary,
// against the test's broker and on its topic prefix.
func runChaos(t *testing.T, cfg chaos.Config) chaos.Report {
	t.Helper()
	c := testkafka.New(t)
	cfg.Exe = os.Args[0]
	cfg.Env = []string{envExec + "=1"}
	cfg.Brokers = c.Brokers
	cfg.Prefix = c.Prefix
	cfg.Out = t.Output()
	h, err := chaos.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := h.Run(t.Context())
	if err != nil {
		t.Fatalf("chaos run: %v", err)
	}
	return rep
}

// TestSIGTERMUnderLoad stops an aggregator, a processor and the scatterer
// with SIGTERM in the middle of the load (each restarted after a pause):
// each must exit 0 within the bound, and no request may lose its reply,
// get two, or get a wrong one. Every role is stopped with SIGTERM at the end
// as well, under the same rule.
func TestSIGTERMUnderLoad(t *testing.T) {
	for _, g := range []kafkaconfig.Guarantee{kafkaconfig.ExactlyOnce, kafkaconfig.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			rep := runChaos(t, chaos.Config{
				Guarantee: g, Requests: 240, Rate: 40, Kills: 0, Terms: 3,
				StopBound: 15 * time.Second, StragglerRate: -1, Progress: 2 * time.Second,
			})
			if rep.Terms != 3 || len(rep.Stops) != 3+5 {
				t.Errorf("%d SIGTERMs under load and %d stops in all, want 3 and 8", rep.Terms, len(rep.Stops))
			}
			for _, s := range rep.Stops {
				if s.Code != 0 || s.Err != nil || s.Took > 15*time.Second {
					t.Errorf("%s (final %v): exit status %d after %s, err %v", s.Role, s.Final, s.Code, s.Took, s.Err)
				}
			}
			if rep.Lost != 0 || rep.Wrong != 0 || rep.DuplicateReplies != 0 {
				t.Errorf("%s; problems: %s", rep.Line(), strings.Join(rep.Problems, "; "))
			}
			if g == kafkaconfig.ExactlyOnce && rep.Duplicated != 0 {
				t.Errorf("exactly-once: %d records committed twice", rep.Duplicated)
			}
			if !rep.OK() {
				t.Errorf("not OK: %s (errors %q)", rep.Line(), rep.Errors)
			}
			if rep.Requests != 240 || rep.Replies < 240 {
				t.Errorf("%s: want 240 requests with a reply each", rep.Line())
			}
		})
	}
}

// TestSIGKILLUnderLoad kills both aggregators, the scatterer and a
// processor with SIGKILL under load, under exactly-once: nothing lost,
// duplicated or wrong.
func TestSIGKILLUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("kills take a session timeout each to recover from")
	}
	rep := runChaos(t, chaos.Config{
		Guarantee: kafkaconfig.ExactlyOnce, Requests: 400, Rate: 40, Kills: 4, Progress: 5 * time.Second,
	})
	if rep.Kills != 4 {
		t.Errorf("%d kills, want 4", rep.Kills)
	}
	if !rep.OK() {
		t.Errorf("%s\nerrors: %q\nproblems:\n%s", rep.Line(), rep.Errors, strings.Join(rep.Problems, "\n"))
	}
}

// TestFencesAndKicksUnderLoad fences live roles' producers (another
// InitProducerID with their transactional id) and has the coordinator
// remove live roles from their groups, under load: no role may exit, and
// every request still gets exactly one right reply.
func TestFencesAndKicksUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		g             kafkaconfig.Guarantee
		fences, kicks int
	}{
		{kafkaconfig.ExactlyOnce, 3, 3},
		{kafkaconfig.AtLeastOnce, 0, 3},
	} {
		t.Run(string(tc.g), func(t *testing.T) {
			rep := runChaos(t, chaos.Config{
				Guarantee: tc.g, Requests: 300, Rate: 40, Kills: 0, Fences: tc.fences, Kicks: tc.kicks,
				StragglerRate: -1, Progress: 2 * time.Second,
			})
			if rep.Fences != tc.fences || rep.Kicks != tc.kicks {
				t.Errorf("%d fences and %d kicks, want %d and %d (errors %q)", rep.Fences, rep.Kicks, tc.fences, tc.kicks, rep.Errors)
			}
			if rep.UnexpectedExits != 0 {
				t.Errorf("%d roles exited on their own", rep.UnexpectedExits)
			}
			if rep.ClientRestarts < tc.fences {
				t.Errorf("%d client restarts in the role logs, want at least one per fence (%d)", rep.ClientRestarts, tc.fences)
			}
			if !rep.OK() {
				t.Errorf("%s\nerrors: %q\nproblems:\n%s", rep.Line(), rep.Errors, strings.Join(rep.Problems, "\n"))
			}
			t.Logf("%s; client restarts %d", rep.Line(), rep.ClientRestarts)
		})
	}
}
