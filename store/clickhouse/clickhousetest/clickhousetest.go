// Package clickhousetest starts throwaway clickhouse-server processes for
// tests: a temporary directory, free loopback ports, the packaged
// config.xml with the paths and ports overridden on the command line, and
// a process group that is killed when the test ends.
//
// As root (CI, the dev machines) the server runs as the clickhouse user
// the Debian package creates, through setpriv, exactly as
// ../shared/PEERS.md describes; as any other user it runs as that user.
// A missing clickhouse-server is a test failure that says how to install
// it, never a silent skip: .ci/run installs clickhouse-server.
//
// One server per test is cheap (about half a second to answer /ping). A
// package with many tests can share one through Main:
//
//	func TestMain(m *testing.M) { os.Exit(clickhousetest.Main(m)) }
//
// after which Start hands out a fresh database on the shared server.
package clickhousetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Where the Debian package installs things.
const (
	DefaultServerBinary = "/usr/sbin/clickhouse-server"
	DefaultClientBinary = "/usr/bin/clickhouse-client"
	DefaultConfig       = "/etc/clickhouse-server/config.xml"
	serverUser          = "clickhouse"
)

// Environment variables that point the harness at another installation.
const (
	EnvServer = "BOUNCER_CLICKHOUSE_SERVER" // clickhouse-server binary
	EnvClient = "BOUNCER_CLICKHOUSE_CLIENT" // clickhouse-client binary
	EnvConfig = "BOUNCER_CLICKHOUSE_CONFIG" // config.xml the server starts from
)

// installHint ends every "not installed" failure.
const installHint = "install it: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y clickhouse-server clickhouse-client (.ci/run does)"

// startTimeout bounds the wait for /ping; stopTimeout the wait for the
// killed process to be reaped.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
)

// ClusterName is the cluster a server started with Options.Cluster
// defines: one shard of one replica, itself.
const ClusterName = "clickhousetest"

// Options adjusts a server started by NewServerOptions.
type Options struct {
	// Cluster gives the server a copy of the packaged configuration with
	// a cluster named ClusterName (one shard, one replica: the server
	// itself) and the macros {shard} = 01 and {replica} = replica1, so
	// Distributed tables and ON CLUSTER-free cluster DDL can be tried.
	// There is no ZooKeeper: Replicated tables cannot be created.
	Cluster bool
}

// Server is one throwaway clickhouse-server. Its directory and ports stay
// the same across Stop and Start, so a test can restart it and find its
// data again.
type Server struct {
	Dir             string // the server's --path, logs in Dir/log and Dir/err
	TCPPort         int    // native protocol
	HTTPPort        int
	InterserverPort int

	opts Options

	mu      sync.Mutex
	cmd     *exec.Cmd     // nil while stopped
	exited  chan struct{} // closed when cmd has been reaped
	waitErr error         // cmd.Wait's result, valid after exited is closed
}

// NewServer starts a server for the test and stops it, removing its
// directory, when the test ends. It fails the test with a clear message
// when clickhouse-server is not installed or does not come up.
func NewServer(t testing.TB) *Server {
	t.Helper()
	return NewServerOptions(t, Options{})
}

// NewServerOptions is NewServer with options.
func NewServerOptions(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := newServer(opts)
	if err != nil {
		t.Fatalf("clickhousetest: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("clickhousetest: server log tail (%s):\n%s", s.Dir, s.logTail())
		}
		if err := s.destroy(); err != nil {
			t.Errorf("clickhousetest: %v", err)
		}
	})
	return s
}

// Start returns the DSN of a fresh, not yet created database for the
// test: on the package's shared server when the package's TestMain runs
// Main, otherwise on a server of the test's own.
func Start(t testing.TB) (dsn string) {
	t.Helper()
	if shared.inMain.Load() {
		shared.once.Do(func() { shared.srv, shared.err = newServer(Options{}) })
		if shared.err != nil {
			t.Fatalf("clickhousetest: shared server: %v", shared.err)
		}
		return shared.srv.DSN(NewDatabaseName(t))
	}
	return NewServer(t).DSN(NewDatabaseName(t))
}

var shared struct {
	inMain atomic.Bool
	once   sync.Once
	srv    *Server
	err    error
}

// Main runs a package's tests with one server shared by every Start
// call, started on first use and stopped after the last test. It returns
// m.Run's exit code, for os.Exit.
func Main(m *testing.M) int {
	shared.inMain.Store(true)
	code := m.Run()
	if shared.srv != nil {
		if err := shared.srv.destroy(); err != nil {
			fmt.Fprintf(os.Stderr, "clickhousetest: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

var dbSeq atomic.Int64

var notIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDatabaseName returns a database name unique within the process,
// readable in the server's log: the test's name, lower-cased, and a
// sequence number.
func NewDatabaseName(t testing.TB) string {
	name := strings.Trim(notIdent.ReplaceAllString(strings.ToLower(t.Name()), "_"), "_")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return fmt.Sprintf("t%d_%s", dbSeq.Add(1), name)
}

// Addr is the native protocol's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.TCPPort)) }

// DSN returns a clickhouse-go DSN for database on this server.
func (s *Server) DSN(database string) string {
	return "clickhouse://" + s.Addr() + "/" + database + "?dial_timeout=5s"
}

// Client returns a clickhouse-client command connected to the server,
// with args appended.
func (s *Server) Client(ctx context.Context, args ...string) (*exec.Cmd, error) {
	bin, err := binary(EnvClient, DefaultClientBinary, "clickhouse-client")
	if err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, bin, append([]string{"--host=127.0.0.1", "--port=" + strconv.Itoa(s.TCPPort)}, args...)...), nil
}

// Stop kills the server's process group (SIGKILL, a crash as far as the
// server knows) and waits for it to exit. Stopping a stopped server does
// nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

// Start starts a stopped server again, on the same directory and ports,
// and waits until it answers /ping.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("server already running")
	}
	return s.startLocked()
}

// Freeze stops the server with SIGSTOP: connections stay open and nothing
// answers, the way a wedged or partitioned server looks. Thaw resumes it.
func (s *Server) Freeze() error { return s.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server.
func (s *Server) Thaw() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("server not running")
	}
	return syscall.Kill(-s.cmd.Process.Pid, sig)
}

func newServer(opts Options) (*Server, error) {
	_, err := binary(EnvServer, DefaultServerBinary, "clickhouse-server")
	if err != nil {
		return nil, err
	}
	config := envOr(EnvConfig, DefaultConfig)
	if _, err := os.Stat(config); err != nil {
		return nil, fmt.Errorf("server config: %w; %s", err, installHint)
	}
	asUser, err := runAs()
	if err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp("", "clickhousetest-")
	if err != nil {
		return nil, err
	}
	// os.MkdirTemp makes the directory 0700 for root; the server's user
	// needs it as its own.
	if asUser != nil {
		if err := os.Chown(dir, asUser.uid, asUser.gid); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("chown %s to %s: %w", dir, serverUser, err)
		}
	}
	s := &Server{Dir: dir, opts: opts}

	// Ports are picked free and then released, so another process can
	// take one before the server binds it: try again with new ones.
	const attempts = 3
	for i := range attempts {
		ports, err := freePorts(3)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s.TCPPort, s.HTTPPort, s.InterserverPort = ports[0], ports[1], ports[2]
		s.mu.Lock()
		err = s.startLocked()
		s.mu.Unlock()
		if err == nil {
			return s, nil
		}
		if i == attempts-1 || !strings.Contains(s.logTail(), "Address already in use") {
			tail := s.logTail()
			os.RemoveAll(dir)
			return nil, fmt.Errorf("%w\nserver log tail:\n%s", err, tail)
		}
	}
	panic("unreachable")
}

type uidGid struct{ uid, gid int }

// runAs returns the user to run the server as, nil for the current one.
func runAs() (*uidGid, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(serverUser)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w; the clickhouse-server package creates it, %s", serverUser, err, installHint)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("user %q: uid %q: %w", serverUser, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("user %q: gid %q: %w", serverUser, u.Gid, err)
	}
	return &uidGid{uid, gid}, nil
}

// startLocked starts the process and waits for /ping. s.mu is held.
func (s *Server) startLocked() error {
	bin, err := binary(EnvServer, DefaultServerBinary, "clickhouse-server")
	if err != nil {
		return err
	}
	asUser, err := runAs()
	if err != nil {
		return err
	}
	config := envOr(EnvConfig, DefaultConfig)
	if s.opts.Cluster {
		if config, err = s.writeClusterConfig(config); err != nil {
			return err
		}
	}
	dir := s.Dir + "/"
	serverArgs := []string{
		"--config-file=" + config,
		"--",
		"--path=" + dir,
		"--tmp_path=" + dir + "tmp/",
		"--user_files_path=" + dir + "user_files/",
		"--format_schema_path=" + dir + "format_schemas/",
		"--tcp_port=" + strconv.Itoa(s.TCPPort),
		"--http_port=" + strconv.Itoa(s.HTTPPort),
		"--interserver_http_port=" + strconv.Itoa(s.InterserverPort),
		"--logger.log=" + filepath.Join(s.Dir, "log"),
		"--logger.errorlog=" + filepath.Join(s.Dir, "err"),
	}
	var cmd *exec.Cmd
	if asUser != nil {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			return fmt.Errorf("setpriv (util-linux) is needed to run the server as %s: %w", serverUser, err)
		}
		// --pdeathsig: the server dies with the test binary even when
		// that is killed (go test -timeout), instead of lingering.
		cmd = exec.Command(setpriv, append([]string{"--reuid=" + serverUser, "--regid=" + serverUser,
			"--init-groups", "--pdeathsig=KILL", bin}, serverArgs...)...)
	} else {
		cmd = exec.Command(bin, serverArgs...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.Dir = s.Dir
	out, err := os.OpenFile(filepath.Join(s.Dir, "stdout"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func(exited chan struct{}) {
		s.waitErr = cmd.Wait()
		close(exited)
	}(s.exited)

	if err := s.waitReady(); err != nil {
		s.stopLocked()
		return err
	}
	return nil
}

// writeClusterConfig copies the packaged config.xml and the users.xml
// beside it (config.xml names it relatively) into Dir/etc, adds
// config.d/clickhousetest.xml with the cluster and macros, and returns
// the copy's path. It runs at every start, as the ports may have changed.
func (s *Server) writeClusterConfig(config string) (string, error) {
	etc := filepath.Join(s.Dir, "etc")
	if err := os.MkdirAll(filepath.Join(etc, "config.d"), 0o755); err != nil {
		return "", err
	}
	for _, name := range []string{filepath.Base(config), "users.xml"} {
		data, err := os.ReadFile(filepath.Join(filepath.Dir(config), name))
		if err != nil {
			return "", fmt.Errorf("copying the server config: %w", err)
		}
		if err := os.WriteFile(filepath.Join(etc, name), data, 0o644); err != nil {
			return "", err
		}
	}
	extra := fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
    <remote_servers>
        <%[1]s>
            <shard>
                <replica>
                    <host>127.0.0.1</host>
                    <port>%[2]d</port>
                </replica>
            </shard>
        </%[1]s>
    </remote_servers>
    <macros>
        <shard>01</shard>
        <replica>replica1</replica>
    </macros>
</yandex>
`, ClusterName, s.TCPPort)
	if err := os.WriteFile(filepath.Join(etc, "config.d", "clickhousetest.xml"), []byte(extra), 0o644); err != nil {
		return "", err
	}
	return filepath.Join(etc, filepath.Base(config)), nil
}

// waitReady polls /ping until it answers "Ok.", the process exits or
// startTimeout passes. s.mu is held.
func (s *Server) waitReady() error {
	url := "http://127.0.0.1:" + strconv.Itoa(s.HTTPPort) + "/ping"
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "Ok." {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("clickhouse-server exited before answering %s: %v", url, s.waitErr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("clickhouse-server did not answer %s within %v", url, startTimeout)
		}
	}
}

// stopLocked kills the process group and reaps the process. s.mu is held.
func (s *Server) stopLocked() error {
	if s.cmd == nil {
		return nil
	}
	pid := s.cmd.Process.Pid
	// The group first (the server and anything it forked), then the
	// process itself in case it left the group.
	err := syscall.Kill(-pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		err = nil
	}
	s.cmd.Process.Kill()
	// A frozen (SIGSTOPped) process still dies of SIGKILL.
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		return fmt.Errorf("clickhouse-server (pid %d) still running %v after SIGKILL", pid, stopTimeout)
	}
	s.cmd = nil
	return err
}

// destroy stops the server and removes its directory.
func (s *Server) destroy() error {
	err := s.Stop()
	return errors.Join(err, os.RemoveAll(s.Dir))
}

// logTail returns the end of the server's error log, for failure messages.
func (s *Server) logTail() string {
	var b strings.Builder
	for _, name := range []string{"err", "stdout"} {
		data, err := os.ReadFile(filepath.Join(s.Dir, name))
		if err != nil || len(data) == 0 {
			continue
		}
		const max = 4 << 10
		if len(data) > max {
			data = data[len(data)-max:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", name, data)
	}
	return b.String()
}

// binary finds a ClickHouse program: the environment's override, the
// Debian path, then $PATH.
func binary(env, def, name string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", env, p, err)
		}
		return p, nil
	}
	if _, err := os.Stat(def); err == nil {
		return def, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found (not at %s, not in $PATH, %s not set); %s", name, def, env, installHint)
}

func envOr(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
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
