package main

import (
	"github.com/bouncer-mail/bouncer/internal/memlimit"
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
// comes from (memlimit.Resolve): "auto" is GOMEMLIMIT when it is set,
// else inflight + memoryHeadroom, or 90% of the cgroup's memory.max
// (cgroupMax, the file's content) when that is lower, less outside while
// that leaves more than inflight; a size must be above inflight. outside
// is what the process holds beside the Go heap, which the Go runtime
// neither counts nor limits: SQLite's writer page cache when SQLite is
// the store.
func memoryLimit(value string, inflight, outside int64, gomemlimit, cgroupMax string) (limit int64, source string, err error) {
	return memlimit.Resolve(value, gomemlimit, memlimit.Auto{
		Need: inflight + memoryHeadroom, NeedSource: "--max-inflight-bytes + 256 MiB",
		Floor: inflight, FloorName: "--max-inflight-bytes",
		Outside: outside, CgroupMax: cgroupMax,
	})
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
