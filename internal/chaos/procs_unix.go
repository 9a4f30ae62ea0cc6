//go:build unix && !linux

package chaos

import "syscall"

// sysProcAttr puts a child in a process group of its own, so that a signal
// reaches everything it started and the terminal's Ctrl-C reaches only the
// harness (which then kills the children). Unlike Linux, there is no
// parent-death signal: a harness killed with SIGKILL leaves its children.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// killGroup sends sig to the process group led by pid.
func killGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }
