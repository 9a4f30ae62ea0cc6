package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one role (or the broker) run as a child process: the binary
// re-executed with a subcommand. Its output goes to a log file that every
// restart appends to. It runs in a process group of its own, so a signal
// reaches everything it started, and (on Linux) dies with the harness.
type proc struct {
	name    string // "aggregator-1"
	role    string // "aggregator"
	exe     string
	args    []string
	env     []string
	logPath string
	// deferred: not started with the run, but by a scale event
	// (Config.ScaleProcessors).
	deferred bool

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the current process has been waited for
	state   *os.ProcessState
	starts  int
	started time.Time // when the current process was started
	stopped bool      // a signal was sent on purpose; the exit is expected
}

// upBeforeTerm is how long a process has run before a graceful stop
// (SIGTERM) is sent to it: a process signalled in its first milliseconds,
// before its runtime has installed a handler, dies of the signal (exit 143)
// without a chance to stop gracefully. An orchestrator does the same: a
// rolling update stops the next instance only once the previous one is up.
const upBeforeTerm = 2 * time.Second

// start starts the process; the goroutine that waits for it exits when the
// process does (its owner waits on exited).
func (p *proc) start(stdout io.Writer) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	lf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("%s: log file: %w", p.name, err)
	}
	p.starts++
	fmt.Fprintf(lf, "===== chaos: start #%d of %s at %s: %s %s\n", p.starts, p.name, time.Now().Format(time.RFC3339Nano), p.exe, strings.Join(p.args, " "))
	cmd := exec.Command(p.exe, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout = lf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.Stderr = lf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("%s: start: %w", p.name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.state, p.stopped, p.started = cmd, exited, nil, false, time.Now()
	go func() {
		// Exits when the process does.
		_ = cmd.Wait()
		lf.Close()
		p.mu.Lock()
		p.state = cmd.ProcessState
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

// running returns the pid and the channel closed at exit of the current
// process.
func (p *proc) running() (int, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0, nil
	}
	return p.cmd.Process.Pid, p.exited
}

// signal sends sig to the process group of the current process and marks
// the exit as expected.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return errors.New("not started")
	}
	p.stopped = true
	return killGroup(p.cmd.Process.Pid, sig)
}

// untilUp is how much longer the current process must run to have been up
// for d (zero or less once it has).
func (p *proc) untilUp(d time.Duration) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return d - time.Since(p.started)
}

// exitState returns how the last process ended and whether its end was
// asked for.
func (p *proc) exitState() (*os.ProcessState, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state, p.stopped
}

// stop sends sig and waits for the exit. A SIGTERM not obeyed within bound
// is followed by SIGKILL; stop then reports the overrun.
func (p *proc) stop(sig syscall.Signal, bound time.Duration) (code int, took time.Duration, err error) {
	_, exited := p.running()
	if exited == nil {
		return 0, 0, errors.New("not started")
	}
	t0 := time.Now()
	if err := p.signal(sig); err != nil {
		return 0, 0, fmt.Errorf("%s: signal %s: %w", p.name, sig, err)
	}
	timer := time.NewTimer(bound)
	defer timer.Stop()
	select {
	case <-exited:
	case <-timer.C:
		_ = p.signal(syscall.SIGKILL)
		<-exited
		err = fmt.Errorf("%s did not exit within %s of %s; killed", p.name, bound, sig)
	}
	st, _ := p.exitState()
	return exitCode(st), time.Since(t0), err
}

// exitCode is the process's exit status, or 128+signal when a signal ended it.
func exitCode(st *os.ProcessState) int {
	if st == nil {
		return -1
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) []string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return []string{fmt.Sprintf("(no log: %v)", err)}
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 4*n {
			lines = append(lines[:0], lines[len(lines)-n:]...)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// keep runs p until ctx ends: it restarts p when it exits on its own
// (reported on unexpected) and carries out the actions sent to it. When ctx
// ends it kills p and returns. Runs on a goroutine of its own; it returns
// once p's process has exited.
func (p *proc) keep(ctx context.Context, actions <-chan action, unexpected func(p *proc, code int), say func(format string, args ...any)) {
	for {
		pid, exited := p.running()
		if exited == nil {
			return
		}
		select {
		case <-ctx.Done():
			_ = p.signal(syscall.SIGKILL)
			<-exited
			return
		case <-exited:
			if st, asked := p.exitState(); !asked {
				unexpected(p, exitCode(st))
			}
			if !sleepCtx(ctx, time.Second) {
				return
			}
			if err := p.start(nil); err != nil {
				say("%s: restart failed: %v", p.name, err)
				return
			}
		case a := <-actions:
			if a.sig == syscall.SIGTERM && !sleepCtx(ctx, p.untilUp(upBeforeTerm)) {
				a.done <- actionResult{pid: pid}
				_ = p.signal(syscall.SIGKILL)
				<-exited
				return
			}
			res := actionResult{pid: pid}
			res.code, res.took, res.err = p.stop(a.sig, a.bound)
			if a.final {
				a.done <- res
				return
			}
			if !sleepCtx(ctx, a.pause) {
				a.done <- res
				return
			}
			if err := p.start(nil); err != nil {
				res.err = errors.Join(res.err, err)
				a.done <- res
				return
			}
			res.restarted, _ = p.running()
			a.done <- res
		}
	}
}

// action asks a keeper to signal its process, wait for the exit and (unless
// final) restart it after pause.
type action struct {
	sig   syscall.Signal
	bound time.Duration
	pause time.Duration
	final bool
	done  chan actionResult // buffered 1
}

type actionResult struct {
	pid, restarted int
	code           int
	took           time.Duration
	err            error
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
