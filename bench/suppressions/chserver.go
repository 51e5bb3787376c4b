package main

import (
	"fmt"
	"io"
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
	chConfig    = "/etc/clickhouse-server/config.xml"
)

// chServer is a throwaway clickhouse-server: its own directory under the
// work dir, free loopback ports, the packaged config with paths and ports
// overridden, run as the clickhouse user when we are root: the recipe of
// store/clickhouse/clickhousetest, which needs a testing.TB.
type chServer struct {
	dir               string
	tcpPort, httpPort int
	cmd               *exec.Cmd
	exited            chan struct{}
}

func startClickHouse(dir string) (*chServer, error) {
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
	s := &chServer{dir: dir, tcpPort: ports[0], httpPort: ports[1], exited: make(chan struct{})}
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
			s.stop()
			return nil, fmt.Errorf("clickhouse-server not answering /ping after 30 s; see %s/err", dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dsn is a clickhouse-go DSN for database on the server.
func (s *chServer) dsn(database string) string {
	return fmt.Sprintf("clickhouse://127.0.0.1:%d/%s?dial_timeout=5s", s.tcpPort, database)
}

// pid is the server process's id, for its CPU time.
func (s *chServer) pid() int { return s.cmd.Process.Pid }

// stop kills the server's process group and waits for it.
func (s *chServer) stop() {
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
	}
}
