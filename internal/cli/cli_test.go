package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{"brokers": "SG_BROKERS", "topic-prefix": "SG_TOPIC_PREFIX", "sleep-max-delay": "SG_SLEEP_MAX_DELAY"} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

// testCommand records the flags it ran with.
func testCommand(got *string, gotDur *time.Duration) *Command {
	return &Command{
		Name: "probe", Summary: "probe flags", Usage: "probe [flags]",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(got, "topic-prefix", "sg.", "prefix")
			fs.DurationVar(gotDur, "tick", time.Second, "tick")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 && args[0] == "fail" {
				return errors.New("it failed")
			}
			return nil
		},
	}
}

func TestFlagsFromEnv(t *testing.T) {
	var prefix string
	var tick time.Duration
	cmds := []*Command{testCommand(&prefix, &tick)}
	var out, errOut bytes.Buffer

	t.Setenv("SG_TOPIC_PREFIX", "env.")
	t.Setenv("SG_TICK", "250ms")
	if code := Main(t.Context(), []string{"probe"}, cmds, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if prefix != "env." || tick != 250*time.Millisecond {
		t.Errorf("from env: prefix %q tick %s", prefix, tick)
	}
	// The command line wins over the environment.
	if code := Main(t.Context(), []string{"probe", "--topic-prefix", "flag."}, cmds, &out, &errOut); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if prefix != "flag." {
		t.Errorf("flag did not win over env: %q", prefix)
	}
	// A bad environment value is an error naming the variable.
	t.Setenv("SG_TICK", "often")
	errOut.Reset()
	if code := Main(t.Context(), []string{"probe"}, cmds, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "SG_TICK") ||
		!strings.Contains(errOut.String(), "want a duration such as 1.5s") {
		t.Errorf("bad env: exit %d, stderr %q", code, errOut.String())
	}
}

func TestMainExitCodes(t *testing.T) {
	var prefix string
	var tick time.Duration
	cmds := []*Command{testCommand(&prefix, &tick)}
	var out, errOut bytes.Buffer
	if code := Main(t.Context(), []string{"nope"}, cmds, &out, &errOut); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
	if code := Main(t.Context(), []string{"probe", "fail"}, cmds, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "it failed") {
		t.Errorf("failing command: exit %d, %q", code, errOut.String())
	}
	if code := Main(t.Context(), []string{"probe", "--no-such-flag"}, cmds, &out, &errOut); code != 2 {
		t.Errorf("bad flag: exit %d", code)
	}
}

// TestHelpOnEveryCommand: every real command has a summary, usage and help
// text, and its help names each flag's environment variable.
func TestHelpOnEveryCommand(t *testing.T) {
	for _, c := range Commands() {
		t.Run(c.Name, func(t *testing.T) {
			if c.Summary == "" || c.Usage == "" {
				t.Fatalf("%s: missing summary or usage", c.Name)
			}
			var out, errOut bytes.Buffer
			if code := Main(t.Context(), []string{c.Name, "--help"}, Commands(), &out, &errOut); code != 0 {
				t.Fatalf("--help exit %d: %s", code, errOut.String())
			}
			help := out.String()
			if !strings.Contains(help, "Usage: scattergather "+c.Name) {
				t.Errorf("help does not start with usage:\n%s", help)
			}
			fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
			if c.Flags != nil {
				c.Flags(fs)
			}
			fs.VisitAll(func(f *flag.Flag) {
				if f.Usage == "" {
					t.Errorf("flag --%s has no help text", f.Name)
				}
				if !strings.Contains(help, "--"+f.Name) || !strings.Contains(help, EnvName(f.Name)) {
					t.Errorf("help lacks --%s or %s", f.Name, EnvName(f.Name))
				}
			})
		})
	}
	var out bytes.Buffer
	Main(t.Context(), []string{"--help"}, Commands(), &out, &out)
	for _, c := range Commands() {
		if !strings.Contains(out.String(), c.Name) {
			t.Errorf("top-level help does not list %s", c.Name)
		}
	}
}

func TestRoleFlagErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"processor"}, "--route is required"},
		{[]string{"processor", "--route", "echo", "--handler", "magic"}, "--handler"},
		// Refused before anything connects (no broker listens on the
		// default address here), naming the recipient and the known ones.
		{[]string{"processor", "--route", "quotes", "--recipient", "acmee"}, `--recipient: recipient "acmee" is unknown to route quotes, whose recipients are acme, globex, initech`},
		{[]string{"processor", "--route", "quotes"}, "--recipient: route quotes broadcasts to acme, globex, initech"},
		{[]string{"processor", "--route", "echo", "--recipient", "acme"}, `--recipient: recipient "acme": route echo is a split route and has no recipients`},
		{[]string{"scatterer", "--guarantee", "maybe"}, "--guarantee"},
		{[]string{"aggregator", "--log-format", "xml"}, "log format"},
		{[]string{"request"}, "--route is required"},
	}
	for _, tt := range tests {
		errOut.Reset()
		if code := Main(t.Context(), tt.args, Commands(), &out, &errOut); code == 0 || !strings.Contains(errOut.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want an error naming %q", tt.args, code, errOut.String(), tt.want)
		}
	}
}

func TestChaosFlags(t *testing.T) {
	parse := func(t *testing.T, args ...string) chaosFlags {
		t.Helper()
		var f chaosFlags
		fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
		f.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := parse(t, "--brokers", "127.0.0.1:27092, 127.0.0.1:27093,127.0.0.1:27094", "--replication-factor", "3",
		"--broker-kills", "2", "--broker-bounces", "1", "--broker-pause-min", "6s", "--broker-pause-max", "9s",
		"--kafka-home", "/tmp/k", "--straggler-rate", "0")
	cfg, err := f.config()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Brokers) != 3 || cfg.Brokers[1] != "127.0.0.1:27093" || cfg.ReplicationFactor != 3 || cfg.BrokerKills != 2 ||
		cfg.BrokerBounces != 1 || cfg.BrokerPauseMin != 6*time.Second || cfg.BrokerPauseMax != 9*time.Second ||
		cfg.KafkaLocal != "scripts/kafka-local.sh" || cfg.KafkaHome != "/tmp/k" || cfg.AllowBrokerOutage || cfg.StragglerRate != -1 {
		t.Errorf("config: %+v", cfg)
	}
	cfg.Out = io.Discard
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	// Defaults: no broker faults, the broker's replication factor.
	f = parse(t)
	cfg, err = f.config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BrokerKills != 0 || cfg.BrokerBounces != 0 || cfg.ReplicationFactor != -1 || cfg.BrokerPauseMin != 5*time.Second || cfg.BrokerPauseMax != 15*time.Second {
		t.Errorf("defaults: %+v", cfg)
	}

	// What the harness refuses comes back from the command.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"chaos", "--broker-bounces", "1"}, "broker bounces: only with brokers"},
		{[]string{"chaos", "--brokers", "127.0.0.1:27092", "--broker-kills", "1", "--kafka-local", ""}, "kafka local"},
		{[]string{"chaos", "--replication-factor", "3"}, "needs brokers"},
		{[]string{"chaos", "--guarantee", "maybe"}, "--guarantee"},
	} {
		var out, errOut bytes.Buffer
		if code := Main(t.Context(), tc.args, Commands(), &out, &errOut); code == 0 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want an error naming %q", tc.args, code, errOut.String(), tc.want)
		}
	}

	// SG_KAFKA_HOME, which kafka-local.sh reads, is --kafka-home's variable.
	_, fs, err := ParseOnly([]string{"chaos"}, map[string]string{"SG_KAFKA_HOME": "/work/x/.kafka"})
	if err != nil {
		t.Fatal(err)
	}
	if got := fs.Lookup("kafka-home").Value.String(); got != "/work/x/.kafka" {
		t.Errorf("--kafka-home from SG_KAFKA_HOME: %q", got)
	}
}
