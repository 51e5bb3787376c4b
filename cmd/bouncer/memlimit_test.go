package main

import (
	"math"
	"strings"
	"testing"
)

func TestMemoryLimit(t *testing.T) {
	const inflight = 128 << 20
	tests := []struct {
		value, gomemlimit, cgroup string
		outside                   int64
		limit                     int64
		source                    string
		err                       string
	}{
		{value: "auto", limit: 384 << 20, source: "--max-inflight-bytes + 256 MiB"},
		{value: "", limit: 384 << 20, source: "--max-inflight-bytes + 256 MiB"},
		{value: "auto", cgroup: "max\n", limit: 384 << 20, source: "--max-inflight-bytes + 256 MiB"},
		{value: "auto", cgroup: "8589934592\n", limit: 384 << 20, source: "--max-inflight-bytes + 256 MiB"},
		{value: "auto", cgroup: "314572800\n", limit: 314572800 / 10 * 9, source: "90% of the cgroup's memory.max"},
		{value: "auto", cgroup: "314572800\n", outside: 64 << 20, limit: 314572800/10*9 - 64<<20, source: "90% of the cgroup's memory.max less SQLite's writer cache"},
		{value: "auto", outside: 64 << 20, limit: 320 << 20, source: "--max-inflight-bytes + 256 MiB less SQLite's writer cache"},
		{value: "auto", cgroup: "8589934592\n", outside: 64 << 20, limit: 320 << 20, source: "--max-inflight-bytes + 256 MiB less SQLite's writer cache"},
		{value: "auto", outside: 1 << 30, limit: 384 << 20, source: "--max-inflight-bytes + 256 MiB"},
		{value: "auto", cgroup: "52428800\n", outside: 64 << 20, limit: 52428800 / 10 * 9, source: "90% of the cgroup's memory.max"},
		{value: "auto", gomemlimit: "1GiB", cgroup: "314572800", limit: -1, source: "GOMEMLIMIT"},
		{value: "off", limit: math.MaxInt64, source: "off"},
		{value: "0", limit: math.MaxInt64, source: "off"},
		{value: "1GiB", gomemlimit: "200MiB", limit: 1 << 30, source: "--memory-limit"},
		{value: "600MiB", limit: 600 << 20, source: "--memory-limit"},
		{value: "734003200", limit: 734003200, source: "--memory-limit"},
		{value: "2048KiB", err: "not above --max-inflight-bytes"},
		{value: "128MiB", err: "not above --max-inflight-bytes"},
		{value: "400MB", err: "want a byte count"},
		{value: "-5GiB", err: "want a byte count"},
		{value: "lots", err: "want a byte count"},
		{value: "9999999TiB", err: "too large"},
	}
	for _, tt := range tests {
		limit, source, err := memoryLimit(tt.value, inflight, tt.outside, tt.gomemlimit, tt.cgroup)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("memoryLimit(%q) error = %v, want one saying %q", tt.value, err, tt.err)
			}
			continue
		}
		if err != nil || limit != tt.limit || source != tt.source {
			t.Errorf("memoryLimit(%q, GOMEMLIMIT %q, cgroup %q) = %d, %q, %v; want %d, %q", tt.value, tt.gomemlimit, tt.cgroup, limit, source, err, tt.limit, tt.source)
		}
	}
}

// TestMemoryLimitApplied runs bouncer with --memory-limit and reads the
// limit the Go runtime then has, from /metrics.
func TestMemoryLimitApplied(t *testing.T) {
	p := startProcess(t, t.TempDir(), "--memory-limit", "600MiB")
	got, ok := scrapeAddr(t, p.http).samples["go_gc_gomemlimit_bytes"]
	if !ok || got != 600<<20 {
		t.Errorf("go_gc_gomemlimit_bytes = %v (exposed: %v), want %d (600 MiB)", got, ok, 600<<20)
	}
}
