package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/scattergather/scattergather/internal/buildinfo"
)

func versionCmd() *Command {
	var asJSON bool
	return &Command{
		Name:    "version",
		Summary: "Print the version, commit and Go version of this binary.",
		Usage:   "version [--json]",
		Long: `Prints what the Go toolchain stamped into the binary: the module version
(a pseudo-version for a build from a checkout, "(devel)" when no commit was
stamped), the VCS commit ("+dirty" when the tree had uncommitted changes)
and its time, and the Go version:

  scattergather v0.0.0-20261206155900-71a1c670b910 commit 71a1c670b910 (2026-12-06T15:59:00Z) go1.26.8

make build stamps the commit (go build -buildvcs=auto); bench reports
(--json, --html and the table) record the same commit.`,
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print a JSON object (module, version, commit, commit_time, modified, go_version)")
		},
		Run: func(_ context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected arguments %q", args)
			}
			info := buildinfo.Read()
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			fmt.Println(info)
			return nil
		},
	}
}
