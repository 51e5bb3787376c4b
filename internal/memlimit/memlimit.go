// Package memlimit decides the soft memory limit a bouncer process asks
// the Go runtime to keep (runtime/debug.SetMemoryLimit), from its
// --memory-limit flag, GOMEMLIMIT and the cgroup it runs in.
//
// Without a limit the Go garbage collector lets the heap grow to twice
// what was live after the last collection, so a process whose live heap
// rises for a while (ingest behind a backlog, with full batches in
// flight) takes twice that from the system. With one, the collector runs
// harder as the heap nears the limit instead.
package memlimit

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Auto is what "auto" is made of for one process.
type Auto struct {
	// Need is the limit the process asks for, and NeedSource how it was
	// found ("--max-inflight-bytes + 256 MiB"), for the log.
	Need       int64
	NeedSource string
	// Floor is what the process may hold whatever the limit (the
	// listener's messages in flight), FloorName what that is, for the
	// error: a limit at or below it is refused, and Outside is taken off
	// only while the limit stays above it. 0: none.
	Floor     int64
	FloorName string
	// Outside is what the process holds beside the Go heap, which the Go
	// runtime neither counts nor limits (SQLite's writer page cache),
	// taken off the limit.
	Outside int64
	// CgroupMax is the content of the cgroup's memory.max ("max" or a
	// byte count), "" when there is none.
	CgroupMax string
}

// Resolve returns the limit for --memory-limit value and where it comes
// from. "auto" (or ""): GOMEMLIMIT when it is set (the runtime already
// took it: limit is then -1, meaning leave it), else a.Need, or 90% of
// the cgroup's memory.max when that is lower, less a.Outside while that
// leaves more than a.Floor. "off" (or 0): no limit (math.MaxInt64).
// Otherwise a size: bytes, or a number with a B, KiB, MiB, GiB or TiB
// suffix, as GOMEMLIMIT takes, above a.Floor.
func Resolve(value, gomemlimit string, a Auto) (limit int64, source string, err error) {
	switch strings.TrimSpace(value) {
	case "auto", "":
		if gomemlimit != "" {
			return -1, "GOMEMLIMIT", nil
		}
		limit, source = a.Need, a.NeedSource
		if c, err := strconv.ParseInt(strings.TrimSpace(a.CgroupMax), 10, 64); err == nil && c > 0 && c/10*9 < limit {
			limit, source = c/10*9, "90% of the cgroup's memory.max"
		}
		if a.Outside > 0 && limit-a.Outside > a.Floor {
			limit, source = limit-a.Outside, source+" less SQLite's writer cache"
		}
		return limit, source, nil
	case "off", "0":
		return math.MaxInt64, "off", nil
	}
	limit, err = ParseSize(value)
	if err != nil {
		return 0, "", fmt.Errorf("--memory-limit %q: %w", value, err)
	}
	if limit <= a.Floor {
		return 0, "", fmt.Errorf("--memory-limit %q is not above %s (%d bytes), which the process may hold whatever the limit", value, a.FloorName, a.Floor)
	}
	return limit, "--memory-limit", nil
}

// CgroupMax returns the content of this process's cgroup's memory.max
// (cgroup v2), "" when there is none, for Auto.CgroupMax.
func CgroupMax() string {
	b, _ := os.ReadFile("/sys/fs/cgroup/memory.max")
	return string(b)
}

// Apply asks the Go runtime to keep to limit (Resolve's; -1 leaves the
// limit the runtime has, from GOMEMLIMIT) and logs the limit in force,
// if any, and where it comes from.
func Apply(limit int64, source string, log *slog.Logger) {
	if limit >= 0 {
		debug.SetMemoryLimit(limit)
	}
	if limit = debug.SetMemoryLimit(-1); limit < math.MaxInt64 {
		log.Info("Go memory limit", "bytes", limit, "from", source)
	}
}

// ParseSize reads a byte count in GOMEMLIMIT's syntax: digits, then
// nothing or B, KiB, MiB, GiB, TiB.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}
	shift := uint(0)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, shift = n, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil || n < 0:
		return 0, errors.New("want a byte count, such as 400MiB or 2GiB")
	case n > math.MaxInt64>>shift:
		return 0, errors.New("too large")
	}
	return n << shift, nil
}
