package ingest

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/internal/procio"
	"github.com/bouncer-mail/bouncer/store/sqlite"
	"github.com/bouncer-mail/bouncer/store/storetest"
	"github.com/bouncer-mail/bouncer/suppress"
)

var storeGrowsFill = flag.Int("store-grows-fill", 200000, "BenchmarkBatchAsStoreGrows: reports stored before the last measure")

// BenchmarkBatchAsStoreGrows measures what ingest asks of SQLite for one
// batch (its Write, then the re-fold of its recipients: events and
// outcomes read, outcomes written, suppressions read and put) on a store
// holding more and more reports, up to -store-grows-fill, for writer
// page caches of a few sizes. Every key of the batch (report id, event
// id, recipient, return path, outcome key) falls in random places of its
// index: once an index has many more pages than a batch has rows, each
// row reads and dirties pages of its own. MiB-read/op and
// MiB-written/op are the bytes of the process's read and write system
// calls (/proc/self/io): page reads, WAL frames and checkpoints.
//
//	go test -run '^$' -bench BatchAsStoreGrows -benchtime 10x ./ingest/ -args -store-grows-fill 400000
func BenchmarkBatchAsStoreGrows(b *testing.B) {
	const batch = 2000 // what ingest writes when its batches are not full
	for _, v := range []struct {
		page  int
		cache int64
	}{{16384, 2 << 20}, {16384, 64 << 20}, {4096, 2 << 20}, {4096, 32 << 20}, {4096, 64 << 20}} { // 2 MiB: about SQLite's own default
		cache := v.cache
		b.Run(fmt.Sprintf("page=%d/cache=%dMiB", v.page, cache>>20), func(b *testing.B) {
			ctx := context.Background()
			path := filepath.Join(b.TempDir(), "bouncer.db")
			// Made here whatever the size: Open keeps an existing file's.
			db, err := sql.Open("sqlite", "file:"+path)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := db.Exec(fmt.Sprintf("PRAGMA page_size=%d; PRAGMA journal_mode=WAL; CREATE TABLE x(y); DROP TABLE x;", v.page)); err != nil {
				b.Fatal(err)
			}
			db.Close()
			s, err := sqlite.Open(ctx, path, sqlite.Options{WriterCacheBytes: cache})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			at := time.Now().UTC()
			rf := &Refolder{Store: s, Policy: suppress.Default, Now: func() time.Time { return at }}
			seq := 0
			one := func() {
				reports, events := storetest.GrowingBatch(seq, batch, at, ClassificationVersion)
				seq += batch
				if err := s.Write(ctx, reports, events); err != nil {
					b.Fatal(err)
				}
				rcpts := make([]string, len(events))
				for i, e := range events {
					rcpts[i] = e.Recipient
				}
				res, err := rf.Recipients(ctx, rcpts)
				if err != nil {
					b.Fatal(err)
				}
				if len(res.Suppressed) != batch {
					b.Fatalf("re-fold put %d suppressions, want %d (one per hard bounce)", len(res.Suppressed), batch)
				}
			}
			for _, fill := range []int{0, *storeGrowsFill / 4, *storeGrowsFill} {
				for seq < fill {
					one()
				}
				b.Run(fmt.Sprintf("stored=%d", seq), func(b *testing.B) {
					began, n := time.Now(), 0
					r0, w0 := procIO(b)
					for b.Loop() {
						one()
						n += batch
					}
					b.ReportMetric(float64(n)/time.Since(began).Seconds(), "reports/s")
					r1, w1 := procIO(b)
					b.ReportMetric(float64(r1-r0)/float64(b.N)/(1<<20), "MiB-read/op")
					b.ReportMetric(float64(w1-w0)/float64(b.N)/(1<<20), "MiB-written/op")
					if fi, err := os.Stat(path); err == nil {
						b.ReportMetric(float64(fi.Size())/(1<<20), "MiB-file")
					}
				})
			}
		})
	}
}

// procIO is procio.Self for a benchmark.
func procIO(b *testing.B) (read, written int64) {
	r, w, err := procio.Self()
	if err != nil {
		b.Skip(err)
	}
	return r, w
}
