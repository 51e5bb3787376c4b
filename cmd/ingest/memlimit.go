package main

import (
	"github.com/bouncer-mail/bouncer/ingest"
	"github.com/bouncer-mail/bouncer/internal/memlimit"
	"github.com/bouncer-mail/bouncer/store/sqlite"
)

// workerMemory is the soft memory limit "auto" asks for: what a worker
// holds behind a backlog, when every batch is full (ingest's fetches in
// flight, ingest.DefaultBatchBytes; the batch being decoded and written
// and the one being re-folded behind them; the ClickHouse client's column
// buffers; the classifier's rules), with room for the collector. Without
// a limit the collector let the heap grow to twice what was live: in the
// split soak at 2,500 reports/s asked (cmd/reliability -scenario
// soak-clickhouse, docs/reliability.md) the worker's RSS rose with its
// lag to 455 MiB at the samples and 533 MiB by the kernel's high-water
// mark.
const workerMemory = 384 << 20

// memoryLimit is the soft memory limit the Go runtime is asked to keep
// for --memory-limit value, and where it comes from (memlimit.Resolve):
// "auto" is GOMEMLIMIT when it is set, else workerMemory, or 90% of the
// cgroup's memory.max (cgroupMax, the file's content) when that is
// lower, less outside (SQLite's writer cache, outside the Go heap); a
// size must be above what the fetches in flight may hold.
func memoryLimit(value string, outside int64, gomemlimit, cgroupMax string) (limit int64, source string, err error) {
	return memlimit.Resolve(value, gomemlimit, memlimit.Auto{
		Need: workerMemory, NeedSource: "384 MiB",
		Floor: ingest.DefaultBatchBytes, FloorName: "ingest's fetches in flight",
		Outside: outside, CgroupMax: cgroupMax,
	})
}

// outsideGoHeap is what the worker holds outside the Go heap, for
// memoryLimit: the memory of SQLite's writer cache (twice its size,
// sqlite.CacheMemory), unless the store is ClickHouse.
func (o Options) outsideGoHeap() int64 {
	if o.ClickHouseDSN != "" {
		return 0
	}
	return sqlite.CacheMemory(sqlite.DefaultWriterCacheBytes)
}
