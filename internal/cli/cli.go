// Package cli is the thin command layer of the scattergather binary: each
// subcommand defines flags (every flag also read from SG_<NAME>), builds a
// role's Config from them and runs it until SIGINT/SIGTERM.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// Command is one subcommand.
type Command struct {
	Name    string
	Summary string
	// Usage is the synopsis after the binary's name, e.g. "processor [flags]".
	Usage string
	// Long explains the command; printed by --help above the flags.
	Long string
	// Flags defines the command's flags on fs.
	Flags func(fs *flag.FlagSet)
	// Run runs the command; ctx ends on the first SIGINT or SIGTERM.
	Run func(ctx context.Context, args []string) error
}

// EnvName returns the environment variable that sets flag name.
func EnvName(name string) string {
	return "SG_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// ExitError carries a process exit code.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Main runs the subcommand named by args[0] and returns the exit code. ctx
// should end on SIGINT/SIGTERM: every command drains and returns then.
func Main(ctx context.Context, args []string, cmds []*Command, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 {
			for _, c := range cmds {
				if c.Name == args[1] {
					return run(ctx, c, []string{"--help"}, stdout, stderr)
				}
			}
		}
		topUsage(stdout, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range cmds {
		if c.Name == args[0] {
			return run(ctx, c, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "scattergather: unknown command %q\n\n", args[0])
	topUsage(stderr, cmds)
	return 2
}

func topUsage(w io.Writer, cmds []*Command) {
	fmt.Fprintf(w, "scattergather: a Kafka-native scatter-gather pipeline.\n\nUsage:\n  scattergather <command> [flags]\n\nCommands:\n")
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-12s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintf(w, "\nEvery flag can also be set by an environment variable: SG_ and the flag's name in capitals\n(--brokers is SG_BROKERS, --topic-prefix is SG_TOPIC_PREFIX); a flag on the command line wins.\nRun 'scattergather <command> --help' for a command's flags.\n")
}

func run(ctx context.Context, c *Command, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if c.Flags != nil {
		c.Flags(fs)
	}
	fs.Usage = func() { commandUsage(stdout, c, fs) }
	if err := applyEnv(fs); err != nil {
		fmt.Fprintf(stderr, "scattergather %s: %v\n", c.Name, err)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := c.Run(ctx, fs.Args()); err != nil {
		var ee ExitError
		if errors.As(err, &ee) {
			return ee.Code
		}
		fmt.Fprintf(stderr, "scattergather %s: %v\n", c.Name, err)
		return 1
	}
	return 0
}

// applyEnv sets each flag from its environment variable, before the command
// line is parsed so that the command line wins.
func applyEnv(fs *flag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q (--%s): %w%s", EnvName(f.Name), v, f.Name, err, wantFormat(f)))
			}
		}
	})
	return errors.Join(errs...)
}

func commandUsage(w io.Writer, c *Command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: scattergather %s\n\n%s\n", c.Usage, c.Summary)
	if c.Long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.Long))
	}
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	if len(flags) == 0 {
		return
	}
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	fmt.Fprintf(w, "\nFlags:\n")
	for _, f := range flags {
		name, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s %s\n", f.Name, name)
		fmt.Fprintf(w, "        %s", usage)
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "0s" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, " [env %s]\n", EnvName(f.Name))
	}
}

// wantFormat says what a flag's value must look like, for an error about
// it: the flag package's own errors say only "parse error".
func wantFormat(f *flag.Flag) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return ""
	}
	switch g.Get().(type) {
	case time.Duration:
		return "; want a duration such as 1.5s, 250ms or 2m"
	case bool:
		return "; want true or false"
	case int, int64, uint, uint64:
		return "; want a whole number"
	case float64:
		return "; want a number"
	}
	return ""
}
