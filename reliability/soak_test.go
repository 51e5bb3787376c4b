package reliability

import (
	"os"
	"runtime"
	"testing"
)

// TestSoak is the sustained load in its CI size: a few seconds. The hour
// is run by hand (docs/reliability.md).
func TestSoak(t *testing.T) { runScenario(t, "soak") }

// TestQuantile checks the bucket arithmetic the soak's notes rest on.
func TestQuantile(t *testing.T) {
	inf := 1.0 / zero
	cum := map[float64]float64{0.001: 50, 0.01: 90, 0.1: 99, 1: 100, inf: 100}
	prev := map[float64]float64{0.001: 50, 0.01: 50, 0.1: 50, 1: 50, inf: 50}
	tests := []struct {
		prev map[float64]float64
		q    float64
		want string
	}{
		{nil, 0.5, "≤ 1 ms"},
		{nil, 0.9, "≤ 10 ms"},
		{nil, 0.99, "≤ 100 ms"},
		{nil, 1, "≤ 1000 ms"},
		// Of the 50 since prev: 40 by 10 ms, 49 by 100 ms, 50 by 1 s.
		{prev, 0.5, "≤ 10 ms"},
		{prev, 0.98, "≤ 100 ms"},
		{prev, 0.99, "≤ 1000 ms"},
		{cum, 0.99, "no observations"},
	}
	for _, tt := range tests {
		if got := quantile(cum, tt.prev, tt.q); got != tt.want {
			t.Errorf("quantile(q=%v, prev %v) = %q, want %q", tt.q, tt.prev != nil, got, tt.want)
		}
	}
	over := map[float64]float64{0.5: 1, inf: 10}
	if got := quantile(over, nil, 0.99); got != "> 500 ms" {
		t.Errorf("quantile past the last bound = %q, want > 500 ms", got)
	}
}

var zero float64

// TestRSSGrowth checks the soak's flatness measure: level memory with a
// backlog's spikes passes, a steady climb does not, and a run too short
// to have thirds is not judged.
func TestRSSGrowth(t *testing.T) {
	rss := func(mib ...int64) []soakSample {
		ss := make([]soakSample, len(mib))
		for i, m := range mib {
			ss[i] = soakSample{rss: m << 10}
		}
		return ss
	}
	tests := []struct {
		name    string
		samples []soakSample
		ok      bool
		over    bool // beyond soakRSSGrowth
	}{
		{"the 46-minute soak's tenths, with spikes", rss(314, 418, 424, 438, 432, 458, 463, 441, 438, 514, 416, 442), true, false},
		{"warm-up in the first third only", rss(100, 200, 300, 420, 430, 425, 428, 431, 426), true, false},
		{"a climb of 25 MiB a sample", rss(300, 325, 350, 375, 400, 425, 450, 475, 500), true, true},
		{"too short", rss(100, 200, 300, 400, 500, 600, 700, 800), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, ok := rssGrowth(tt.samples)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if ok && (g > soakRSSGrowth) != tt.over {
				t.Errorf("growth %.3f: over the bound %v, want %v", g, g > soakRSSGrowth, tt.over)
			}
		})
	}
}

// TestProcStatusKiB: the soak's memory readings come from /proc. For this
// process, the high-water mark is at least the resident set, and both
// are there; a field that does not exist, or a process that does not,
// reads 0.
func TestProcStatusKiB(t *testing.T) {
	pid := os.Getpid()
	ballast := make([]byte, 64<<20)
	for i := range ballast {
		ballast[i] = 1
	}
	rss, hwm := vmRSS(pid), vmHWM(pid)
	if rss < 64<<10 {
		t.Errorf("VmRSS = %d KiB with 64 MiB touched, want at least 65536", rss)
	}
	if hwm < rss {
		t.Errorf("VmHWM = %d KiB below VmRSS %d KiB", hwm, rss)
	}
	if got := procStatusKiB(pid, "NoSuchField:"); got != 0 {
		t.Errorf("an unknown field reads %d, want 0", got)
	}
	if got := vmHWM(-1); got != 0 {
		t.Errorf("pid -1 reads %d, want 0", got)
	}
	runtime.KeepAlive(ballast)
}

// TestSoakFaults is the soak with faults at intervals in its CI size:
// each of soakFaults once in 2 s of load.
func TestSoakFaults(t *testing.T) { runScenario(t, "soak-faults") }

// TestSoakClickHouse is the soak of the split topology (listener-only
// bouncer, bouncer-ingest, ClickHouse) in its CI size.
func TestSoakClickHouse(t *testing.T) { runScenario(t, "soak-clickhouse") }
