package reliability

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// ClickHouse is a throwaway clickhouse-server in a directory of the work
// directory, on free ports, started as the clickhouse user when the
// harness runs as root (../shared/PEERS.md). Like
// store/clickhouse/clickhousetest, whose Server needs a testing.TB, which
// the command-line runner has not: directory and ports survive Kill and
// Start, so a restarted server finds its data.
type ClickHouse struct {
	Dir                            string
	TCPPort, HTTPPort, Interserver int
	LogPath                        string
	bin                            string
	p                              *proc
}

// StartClickHouse starts a server and waits until it answers /ping.
func (e *Env) StartClickHouse() (*ClickHouse, error) {
	bin, err := findProgram("clickhouse-server", "clickhouse-server clickhouse-client")
	if err != nil {
		return nil, err
	}
	dir, err := e.subdir("clickhouse")
	if err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("clickhouse")
		if err != nil {
			return nil, fmt.Errorf("%w: user clickhouse (the clickhouse-server package creates it): %v", ErrPeerMissing, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	ch := &ClickHouse{Dir: dir, TCPPort: ports[0], HTTPPort: ports[1], Interserver: ports[2],
		LogPath: filepath.Join(e.Dir, filepath.Base(dir)+".log"), bin: bin}
	return ch, ch.Start()
}

// DSN is a clickhouse-go DSN of database on the server.
func (c *ClickHouse) DSN(database string) string {
	return fmt.Sprintf("clickhouse://127.0.0.1:%d/%s?dial_timeout=5s", c.TCPPort, database)
}

// Start runs the server (again) and waits for /ping.
func (c *ClickHouse) Start() error {
	if c.p != nil && c.p.running() {
		return fmt.Errorf("clickhouse-server already running")
	}
	argv := []string{c.bin, "--config-file=/etc/clickhouse-server/config.xml", "--",
		"--path=" + c.Dir + "/", "--tmp_path=" + c.Dir + "/tmp/",
		"--user_files_path=" + c.Dir + "/user_files/", "--format_schema_path=" + c.Dir + "/format_schemas/",
		"--tcp_port=" + strconv.Itoa(c.TCPPort), "--http_port=" + strconv.Itoa(c.HTTPPort),
		"--interserver_http_port=" + strconv.Itoa(c.Interserver),
		"--logger.log=" + c.Dir + "/log", "--logger.errorlog=" + c.Dir + "/err"}
	if os.Geteuid() == 0 {
		setpriv, err := findProgram("setpriv", "util-linux")
		if err != nil {
			return err
		}
		argv = append([]string{setpriv, "--reuid=clickhouse", "--regid=clickhouse", "--init-groups", "--pdeathsig=KILL"}, argv...)
	}
	p, err := startProc("clickhouse-server", c.LogPath, nil, argv...)
	if err != nil {
		return err
	}
	c.p = p
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/ping", c.HTTPPort))
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
			resp.Body.Close()
			if strings.TrimSpace(string(body)) == "Ok." {
				return nil
			}
		}
		if !p.running() {
			return fmt.Errorf("clickhouse-server exited at start (%v):\n%s\n%s", p.waitErr, p.logTail(2000), fileTail(c.Dir+"/err", 2000))
		}
		if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("clickhouse-server: no /ping answer after %s:\n%s", startTimeout, fileTail(c.Dir+"/err", 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill ends the server with SIGKILL (a frozen one too).
func (c *ClickHouse) Kill() error {
	if c.p == nil {
		return nil
	}
	return c.p.kill()
}

// Freeze stops the server with SIGSTOP: its connections stay open and
// nothing answers, as a wedged server or a lost network looks. Thaw
// resumes it.
func (c *ClickHouse) Freeze() error { return c.p.freeze() }

// Thaw resumes a frozen server.
func (c *ClickHouse) Thaw() error { return c.p.thaw() }

// Close kills the server; the directory goes with the work directory.
func (c *ClickHouse) Close() error { return c.Kill() }

// open connects to database on the server with clickhouse-go.
func (c *ClickHouse) open(ctx context.Context, database string) (clickhouse.Conn, error) {
	opts, err := clickhouse.ParseDSN(c.DSN(database))
	if err != nil {
		return nil, err
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, err
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}
