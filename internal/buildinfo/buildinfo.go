// Package buildinfo reads what the Go toolchain stamped into the binary:
// the module version, the VCS commit and time, and whether the tree had
// uncommitted changes. `scattergather version` prints it and bench reports
// record it, so a figure can be traced to the code that produced it.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Info is the build's identity. Fields the toolchain did not stamp (a test
// binary, `go run` outside a repository) are empty.
type Info struct {
	Module    string `json:"module"`
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	Time      string `json:"commit_time,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go_version"`
}

// Read returns the running binary's Info.
func Read() Info {
	i := Info{GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return i
	}
	i.Module, i.Version = bi.Main.Path, bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Commit = s.Value
		case "vcs.time":
			i.Time = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	return i
}

// Short is the commit's first 12 characters, with "+dirty" when the tree
// had uncommitted changes; "unknown" when no commit was stamped.
func (i Info) Short() string {
	c := i.Commit
	if c == "" {
		return "unknown"
	}
	if len(c) > 12 {
		c = c[:12]
	}
	if i.Modified {
		c += "+dirty"
	}
	return c
}

// String is one line: "scattergather <version> commit <short> (<time>) <go version>".
func (i Info) String() string {
	v := i.Version
	if v == "" {
		v = "(unknown version)"
	}
	s := fmt.Sprintf("scattergather %s commit %s", v, i.Short())
	if i.Time != "" {
		s += " (" + i.Time + ")"
	}
	return s + " " + i.GoVersion
}
