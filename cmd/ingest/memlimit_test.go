package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/internal/memlimit"
)

// TestMain lets a test start this test binary as bouncer-ingest: with
// BOUNCER_TEST_RUN_MAIN=1 it runs main's run() on its arguments.
func TestMain(m *testing.M) {
	if os.Getenv("BOUNCER_TEST_RUN_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestMemoryLimit(t *testing.T) {
	const writerCache = 64 << 20
	tests := []struct {
		value, gomemlimit, cgroup string
		outside                   int64
		limit                     int64
		source                    string
		err                       string
	}{
		{value: "auto", limit: 384 << 20, source: "384 MiB"},
		{value: "", limit: 384 << 20, source: "384 MiB"},
		{value: "auto", cgroup: "max\n", limit: 384 << 20, source: "384 MiB"},
		{value: "auto", outside: writerCache, limit: 320 << 20, source: "384 MiB less SQLite's writer cache"},
		{value: "auto", cgroup: "314572800\n", limit: 314572800 / 10 * 9, source: "90% of the cgroup's memory.max"},
		{value: "auto", cgroup: "314572800\n", outside: writerCache, limit: 314572800/10*9 - writerCache, source: "90% of the cgroup's memory.max less SQLite's writer cache"},
		// The cache is not taken off where what is left would not hold
		// the fetches in flight.
		{value: "auto", cgroup: "104857600\n", outside: writerCache, limit: 104857600 / 10 * 9, source: "90% of the cgroup's memory.max"},
		{value: "auto", gomemlimit: "1GiB", limit: -1, source: "GOMEMLIMIT"},
		{value: "off", limit: math.MaxInt64, source: "off"},
		{value: "700MiB", outside: writerCache, limit: 700 << 20, source: "--memory-limit"},
		{value: "48MiB", err: "not above ingest's fetches in flight"},
		{value: "1GB", err: "want a byte count"},
		{value: "much", err: "want a byte count"},
	}
	for _, tt := range tests {
		limit, source, err := memoryLimit(tt.value, tt.outside, tt.gomemlimit, tt.cgroup)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("memoryLimit(%q) error = %v, want one saying %q", tt.value, err, tt.err)
			}
			continue
		}
		if err != nil || limit != tt.limit || source != tt.source {
			t.Errorf("memoryLimit(%q, outside %d, GOMEMLIMIT %q, cgroup %q) = %d, %q, %v; want %d, %q",
				tt.value, tt.outside, tt.gomemlimit, tt.cgroup, limit, source, err, tt.limit, tt.source)
		}
	}
}

// TestMemoryLimitApplied runs bouncer-ingest as a process (this test
// binary, TestMain) and reads the limit its Go runtime has from /metrics:
// 600 MiB given, and by default what memoryLimit makes of this machine's
// cgroup (384 MiB less SQLite's writer cache where it has room).
func TestMemoryLimitApplied(t *testing.T) {
	url, _ := startNATS(t)
	auto, _, err := memoryLimit("auto", Options{}.outsideGoHeap(), "", memlimit.CgroupMax())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want float64
	}{
		{[]string{"--memory-limit", "600MiB"}, 600 << 20},
		{nil, float64(auto)},
	} {
		addr := freeAddr(t)
		args := append([]string{"--nats-url", url, "--data-dir", t.TempDir(), "--http-addr", addr}, tc.args...)
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), "BOUNCER_TEST_RUN_MAIN=1", "GOMEMLIMIT=")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logged := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "Go memory limit") {
					logged <- sc.Text()
				}
			}
		}()
		got, err := gomemlimit(addr, 30*time.Second)
		cmd.Process.Kill()
		cmd.Wait()
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if got != tc.want {
			t.Errorf("%q: go_gc_gomemlimit_bytes = %v, want %v", tc.args, got, tc.want)
		}
		select {
		case line := <-logged:
			if !strings.Contains(line, "bytes="+strconv.FormatFloat(tc.want, 'f', -1, 64)) {
				t.Errorf("%q: logged %q, want the limit in it", tc.args, line)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%q: the limit was not logged", tc.args)
		}
	}
}

// freeAddr returns a loopback address whose port is free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// gomemlimit reads go_gc_gomemlimit_bytes from the worker's /metrics at
// addr once it answers, waiting at most wait.
func gomemlimit(addr string, wait time.Duration) (float64, error) {
	deadline := time.Now().Add(wait)
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return 0, err
			}
			for _, line := range strings.Split(string(body), "\n") {
				if v, ok := strings.CutPrefix(line, "go_gc_gomemlimit_bytes "); ok {
					return strconv.ParseFloat(v, 64)
				}
			}
			return 0, fmt.Errorf("/metrics has no go_gc_gomemlimit_bytes")
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("/metrics did not answer within %s: %w", wait, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
