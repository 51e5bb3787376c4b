package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/bouncer-mail/bouncer/store/sqlite"
)

// memoryHeadroom is what the all-in-one needs beside the messages its
// listener holds (--max-inflight-bytes): the embedded NATS server's block
// caches and delivery buffers, ingest's batches, the read pool's SQLite
// page caches (the writer's is outside the Go heap: see memoryLimit). An
// unpaced soak (cmd/reliability -scenario soak -rate 0) with the limit at
// 400 MiB held its RSS at 390-430 MiB at the same rate as without one,
// where without one it climbed past 600 MiB. SQLite's writer cache is
// outside the Go heap and its memory comes off the limit. A cache of 64
// MiB took 116 MiB (sqlite.CacheMemory); taking only 64 off, the paced
// soak at 2,500 reports/s went over 512 MiB within 6 minutes (505-515
// MiB). Now the cache is 32 MiB, its 64 MiB come off: 320 MiB.
const memoryHeadroom = 256 << 20

// memoryLimit is the soft memory limit the Go runtime is asked to keep
// (runtime/debug.SetMemoryLimit) for --memory-limit value, and where it
// comes from. "auto": GOMEMLIMIT when it is set (the runtime already took
// it: limit is then -1, meaning leave it), else inflight + memoryHeadroom,
// or 90% of the cgroup's memory.max (cgroupMax, the file's content) when
// that is lower, less outside while that leaves more than inflight.
// outside is what the process holds beside the Go heap, which the Go
// runtime neither counts nor limits: SQLite's writer page cache when
// SQLite is the store. "off" (or 0): no limit. Otherwise a size: bytes,
// or a number with a B, KiB, MiB, GiB or TiB suffix, as GOMEMLIMIT takes.
func memoryLimit(value string, inflight, outside int64, gomemlimit, cgroupMax string) (limit int64, source string, err error) {
	switch strings.TrimSpace(value) {
	case "auto", "":
		if gomemlimit != "" {
			return -1, "GOMEMLIMIT", nil
		}
		limit, source = inflight+memoryHeadroom, "--max-inflight-bytes + 256 MiB"
		if c, err := strconv.ParseInt(strings.TrimSpace(cgroupMax), 10, 64); err == nil && c > 0 && c/10*9 < limit {
			limit, source = c/10*9, "90% of the cgroup's memory.max"
		}
		if outside > 0 && limit-outside > inflight {
			limit, source = limit-outside, source+" less SQLite's writer cache"
		}
		return limit, source, nil
	case "off", "0":
		return math.MaxInt64, "off", nil
	}
	limit, err = parseSize(value)
	if err != nil {
		return 0, "", fmt.Errorf("--memory-limit %q: %w", value, err)
	}
	if limit <= inflight {
		return 0, "", fmt.Errorf("--memory-limit %q is not above --max-inflight-bytes (%d): the listener alone may hold that much", value, inflight)
	}
	return limit, "--memory-limit", nil
}

// parseSize reads a byte count in GOMEMLIMIT's syntax: digits, then
// nothing or B, KiB, MiB, GiB, TiB.
func parseSize(s string) (int64, error) {
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

// outsideGoHeap is what the service holds outside the Go heap, for
// memoryLimit: the memory of SQLite's writer cache (twice its size,
// sqlite.CacheMemory), unless the store is ClickHouse.
func (o Options) outsideGoHeap() int64 {
	if o.ClickHouseDSN != "" {
		return 0
	}
	return sqlite.CacheMemory(sqlite.DefaultWriterCacheBytes)
}
