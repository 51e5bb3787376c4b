// Package chserver starts a throwaway clickhouse-server for the bench
// tools: its own directory, free loopback ports, the packaged config with
// paths and ports overridden, run as the clickhouse user when we are root,
// as ../shared/PEERS.md describes (the recipe of
// store/clickhouse/clickhousetest, which needs a testing.TB).
package chserver

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Where the Debian package installs ClickHouse (../shared/PEERS.md).
const (
	chServerBin = "/usr/sbin/clickhouse-server"
	chClientBin = "/usr/bin/clickhouse-client"
	chConfig    = "/etc/clickhouse-server/config.xml"
)

// Server is a running throwaway clickhouse-server.
type Server struct {
	dir               string
	tcpPort, httpPort int
	cmd               *exec.Cmd
	exited            chan struct{}
}

// Start starts a server in dir (created if absent) and waits until it
// answers /ping, 30 s at most.
func Start(dir string) (*Server, error) {
	if _, err := os.Stat(chServerBin); err != nil {
		return nil, fmt.Errorf("%s: %w; apt-get install -y clickhouse-server clickhouse-client", chServerBin, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("clickhouse")
		if err != nil {
			return nil, fmt.Errorf("user clickhouse (made by the clickhouse-server package): %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	s := &Server{dir: dir, tcpPort: ports[0], httpPort: ports[1], exited: make(chan struct{})}
	d := dir + "/"
	s.cmd = exec.Command(chServerBin, "--config-file="+chConfig, "--",
		"--path="+d, "--tmp_path="+d+"tmp/", "--user_files_path="+d+"user_files/",
		"--format_schema_path="+d+"format_schemas/",
		"--tcp_port="+strconv.Itoa(ports[0]), "--http_port="+strconv.Itoa(ports[1]),
		"--interserver_http_port="+strconv.Itoa(ports[2]),
		"--logger.log="+filepath.Join(dir, "log"), "--logger.errorlog="+filepath.Join(dir, "err"))
	s.cmd.Dir = dir
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		return nil, err
	}
	s.cmd.Stdout, s.cmd.Stderr = out, out
	if err := s.cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("starting clickhouse-server: %w", err)
	}
	go func() {
		s.cmd.Wait()
		out.Close()
		close(s.exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ping", s.httpPort))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.TrimSpace(string(b)) == "Ok." {
				return s, nil
			}
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("clickhouse-server exited at start; see %s/err", dir)
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("clickhouse-server not answering /ping after 30 s; see %s/err", dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// DSN is a clickhouse-go DSN for database on the server.
func (s *Server) DSN(database string) string {
	return fmt.Sprintf("clickhouse://127.0.0.1:%d/%s?dial_timeout=5s", s.tcpPort, database)
}

// Client returns a clickhouse-client command against the server.
func (s *Server) Client(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, chClientBin, append([]string{"--host=127.0.0.1", "--port=" + strconv.Itoa(s.tcpPort)}, args...)...)
}

// Query runs one statement with clickhouse-client and returns its
// output, trimmed.
func (s *Server) Query(q string) (string, error) {
	out, err := s.Client(context.Background(), "--query", q).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("clickhouse-client --query %q: %v: %s", q, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// Stop kills the server's process group and waits for it.
func (s *Server) Stop() {
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
	}
}

// PID is the server process's id, for its CPU time.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// freePort returns a loopback TCP port free at the time of the call.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
