package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// ParseOnly parses args (a command name and its flags, as after the
// binary's name) the way Main would, with env as the only environment,
// without running anything. It returns the command and its parsed flag set,
// or the error Main would report. Deployment tests use it to check command
// lines, e.g. those of compose.yaml.
func ParseOnly(args []string, env map[string]string) (*Command, *flag.FlagSet, error) {
	if len(args) == 0 {
		return nil, nil, errors.New("no command")
	}
	var cmd *Command
	for _, c := range Commands() {
		if c.Name == args[0] {
			cmd = c
		}
	}
	if cmd == nil {
		return nil, nil, fmt.Errorf("unknown command %q", args[0])
	}
	fs := flag.NewFlagSet(cmd.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if cmd.Flags != nil {
		cmd.Flags(fs)
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := env[EnvName(f.Name)]; ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return cmd, fs, err
	}
	if err := fs.Parse(args[1:]); err != nil {
		return cmd, fs, fmt.Errorf("%s: %w", cmd.Name, err)
	}
	if fs.NArg() > 0 {
		return cmd, fs, fmt.Errorf("%s: unexpected arguments %q", cmd.Name, fs.Args())
	}
	return cmd, fs, nil
}
