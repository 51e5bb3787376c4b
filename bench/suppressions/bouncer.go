package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// bouncerProc is a bouncer binary running as a separate process with its
// own data dir and ports, on SQLite under the data dir or on the
// ClickHouse a DSN names. No API token is configured, so the API answers
// this tool (a loopback client) without one.
type bouncerProc struct {
	cmd        *exec.Cmd
	httpAddr   string
	log        string
	readyAfter time.Duration
	exited     chan struct{}
}

func startBouncer(bin, dataDir, clickhouseDSN string) (*bouncerProc, error) {
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	b := &bouncerProc{
		httpAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		log:      dataDir + ".log",
		exited:   make(chan struct{}),
	}
	logf, err := os.OpenFile(b.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, err
	}
	args := []string{"--data-dir", dataDir, "--domain", "bounces.example.com", "--hostname", "bouncer.bench",
		"--smtp-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--http-addr", b.httpAddr,
		"--nats-listen", fmt.Sprintf("127.0.0.1:%d", ports[2]), "--log-level", "warn"}
	if clickhouseDSN != "" {
		args = append(args, "--clickhouse-dsn", clickhouseDSN)
	}
	b.cmd = exec.Command(bin, args...)
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BOUNCER_") {
			env = append(env, kv)
		}
	}
	b.cmd.Env = env
	// Should this tool be killed, bouncer goes too (SIGTERM: it shuts
	// down as it would at the end of a run).
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	start := time.Now()
	if err := b.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		b.cmd.Wait()
		logf.Close()
		close(b.exited)
	}()
	if err := b.waitReady(60 * time.Second); err != nil {
		b.kill()
		return nil, fmt.Errorf("bouncer (log %s): %w", b.log, err)
	}
	b.readyAfter = time.Since(start)
	return b, nil
}

// waitReady waits until /readyz answers 200: the store is open and
// answers, the listener is bound.
func (b *bouncerProc) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get("http://" + b.httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz: HTTP %d", resp.StatusCode)
		}
		select {
		case <-b.exited:
			return fmt.Errorf("exited at start")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends bouncer with SIGTERM (a graceful shutdown) and waits.
func (b *bouncerProc) stop() {
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(40 * time.Second):
		b.kill()
	}
}

func (b *bouncerProc) kill() {
	b.cmd.Process.Kill()
	<-b.exited
}

// status reads a kB field (VmRSS, VmHWM) of /proc/PID/status.
func (b *bouncerProc) status(field string) int64 {
	return procStatus(b.cmd.Process.Pid, field)
}

func procStatus(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return -1
}

// resetHWM resets the process's peak RSS (VmHWM) to its current RSS, so
// a later VmHWM is the peak of what ran in between (Linux: write 5 to
// /proc/PID/clear_refs). It reports whether the kernel took it.
func (b *bouncerProc) resetHWM() bool {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", b.cmd.Process.Pid), []byte("5"), 0) == nil
}

// cpuTime is the user plus system time a process used so far.
func cpuTime(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}
