package reliability

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// proc is one child process whose output goes to a log file. It dies with
// the harness (Pdeathsig), so a killed test leaves nothing behind.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
}

// startProc starts argv with env added to the harness's environment minus
// every BOUNCER_* variable, appending its output to logPath.
func startProc(name, logPath string, env []string, argv ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BOUNCER_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// pid is the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// running reports whether the process has not exited yet.
func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL to the process group and waits for the exit: nothing
// of the process runs after it, no shutdown code, no flush.
func (p *proc) kill() error {
	syscall.Kill(-p.pid(), syscall.SIGKILL)
	p.cmd.Process.Kill()
	select {
	case <-p.exited:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s (pid %d) still running 30s after SIGKILL", p.name, p.pid())
	}
}

// freeze stops the process group with SIGSTOP; thaw resumes it.
func (p *proc) freeze() error { return syscall.Kill(-p.pid(), syscall.SIGSTOP) }
func (p *proc) thaw() error   { return syscall.Kill(-p.pid(), syscall.SIGCONT) }

// stop sends SIGTERM and waits up to timeout for the exit, then kills.
func (p *proc) stop(timeout time.Duration) error {
	if !p.running() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("%s (pid %d) did not stop within %s of SIGTERM; killed", p.name, p.pid(), timeout)
	}
}

// logTail returns the last n bytes of the process's log, for errors.
func (p *proc) logTail(n int) string { return fileTail(p.logPath, n) }

func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// freePorts returns n distinct loopback ports that were free a moment ago.
// A process started on them later may lose one to another program; the
// starters report that as a start failure with the log.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitSMTP waits until addr greets with 220, the process exits or timeout
// passes.
func waitSMTP(addr string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "220") {
				return nil
			}
			err = fmt.Errorf("greeting %q: %v", strings.TrimSpace(line), rerr)
		}
		if p != nil && !p.running() {
			return fmt.Errorf("%s exited (%v) before %s answered; log %s:\n%s", p.name, p.waitErr, addr, p.logPath, p.logTail(3000))
		}
		if time.Now().After(deadline) {
			tail := ""
			if p != nil {
				tail = fmt.Sprintf("; log %s:\n%s", p.logPath, p.logTail(3000))
			}
			return fmt.Errorf("%s not ready after %s: %w%s", addr, timeout, err, tail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Errors a scenario returns, wrapped, when it cannot run here. Tests skip
// on ErrNeedsRoot, and on ErrPeerMissing only when told to (see the tests).
var (
	ErrPeerMissing = errors.New("peer program not installed")
	ErrNeedsRoot   = errors.New("needs root")
)

// findProgram locates a program in $PATH or the sbin directories a non-root
// PATH may lack.
func findProgram(name, pkg string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		if _, err := os.Stat(dir + "/" + name); err == nil {
			return dir + "/" + name, nil
		}
	}
	return "", fmt.Errorf("%w: %s (apt-get install -y %s; .ci/run does)", ErrPeerMissing, name, pkg)
}
