package clickhousetest

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestServerStopStart(t *testing.T) {
	start := time.Now()
	s := NewServer(t)
	t.Logf("started in %v at %s", time.Since(start), s.Dir)

	query := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd, err := s.Client(ctx, "--query", "SELECT version()")
		if err != nil {
			return "", err
		}
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	v, err := query()
	if err != nil {
		t.Fatalf("clickhouse-client: %v: %s", err, v)
	}
	t.Logf("server version %s", v)

	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if out, err := query(); err == nil {
		t.Fatalf("query after Stop succeeded: %s", out)
	}
	start = time.Now()
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("restarted in %v", time.Since(start))
	if out, err := query(); err != nil {
		t.Fatalf("query after restart: %v: %s", err, out)
	}
}

func TestStartDistinctDatabases(t *testing.T) {
	a, b := Start(t), Start(t)
	if a == b {
		t.Errorf("Start twice = %q both times", a)
	}
	if !strings.HasPrefix(a, "clickhouse://127.0.0.1:") {
		t.Errorf("Start = %q, want a clickhouse:// DSN on loopback", a)
	}
}

func TestClusterServer(t *testing.T) {
	s := NewServerOptions(t, Options{Cluster: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd, err := s.Client(ctx, "--query",
		"SELECT count() FROM system.clusters WHERE cluster = '"+ClusterName+"' AND port = "+strconv.Itoa(s.TCPPort))
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("cluster %s on port %d: %v: %q, want 1", ClusterName, s.TCPPort, err, out)
	}
	cmd, _ = s.Client(ctx, "--query", "SELECT substitution FROM system.macros ORDER BY macro")
	out, err = cmd.CombinedOutput()
	if got := strings.Fields(string(out)); err != nil || strings.Join(got, " ") != "replica1 01" {
		t.Errorf("macros: %v: %q, want replica1 01", err, out)
	}
}

// A missing binary fails with a message that says what to install.
func TestMissingBinary(t *testing.T) {
	t.Setenv(EnvServer, "/nonexistent/clickhouse-server")
	_, err := newServer(Options{})
	if err == nil {
		t.Fatal("newServer with a missing binary succeeded")
	}
	if !strings.Contains(err.Error(), EnvServer) {
		t.Errorf("error %q does not name %s", err, EnvServer)
	}
	os.Unsetenv(EnvServer)
	_, err = binary(EnvServer, "/nonexistent/clickhouse-server", "no-such-clickhouse-server")
	if err == nil || !strings.Contains(err.Error(), "apt-get install") {
		t.Errorf("binary() error = %v, want an install hint", err)
	}
}
