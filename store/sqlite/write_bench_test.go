package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/internal/procio"
	"github.com/bouncer-mail/bouncer/store"
)

var writeBenchFill = flag.Int("write-bench-fill", 200000, "BenchmarkWriteAsStoreGrows: reports stored before the last measure")

// writeBenchBatch is a batch of ingest's size (IngestBatchSize): n
// reports of about 4 KB from seq on, each with one event for a recipient
// of its own, ids as the listener and ingest make them.
func writeBenchBatch(seq, n int, at time.Time) ([]store.Report, []store.Event) {
	raw := []byte(strings.Repeat("Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n", 85))
	reports := make([]store.Report, 0, n)
	events := make([]store.Event, 0, n)
	for i := seq; i < seq+n; i++ {
		sum := sha256.Sum256(fmt.Appendf(nil, "report %d", i))
		id := hex.EncodeToString(sum[:])
		rcpt := fmt.Sprintf("user%d@example%d.com", i, i%977)
		reports = append(reports, store.Report{Envelope: event.Envelope{ID: id, Received: at, ReturnPath: "b+" + id[:12] + "@bounces.example.com", Recipients: []string{rcpt}}, Raw: raw})
		events = append(events, store.Event{ID: store.EventID(id, 0), ReportID: id, Version: 1, Time: at, Source: "ndr",
			Event: event.Event{Recipient: rcpt, Class: event.ClassHard, Reason: event.ReasonUserUnknown, Status: "5.1.1",
				Diagnostic: "smtp; 550 5.1.1 user unknown", Provider: "gmail"}})
	}
	return reports, events
}

// BenchmarkWriteAsStoreGrows measures Store.Write of ingest-sized
// batches on a store holding more and more reports (up to
// -write-bench-fill), with 16 KiB pages and 4 KiB ones (what Open makes). Each report's id, its event's id and its recipient are index
// keys in random order: once an index has many more leaf pages than a
// batch has rows, nearly every row dirties a page of its own in each of
// them, and a page is written to the WAL and again at the checkpoint.
//
//	go test -run '^$' -bench WriteAsStoreGrows -benchtime 20x ./store/sqlite/ -args -write-bench-fill 2000000
func BenchmarkWriteAsStoreGrows(b *testing.B) {
	for _, v := range []struct {
		name     string
		pageSize int
		cache    int64
	}{
		{"page=16384/cache=2MiB", 16384, 2 << 20}, // about SQLite's own default
		{"page=16384/cache=64MiB", 16384, 64 << 20},
		{"page=4096/cache=2MiB", 4096, 2 << 20},
		{"page=4096/cache=64MiB", 4096, 64 << 20},
	} {
		pageSize := v.pageSize
		b.Run(v.name, func(b *testing.B) {
			ctx := context.Background()
			path := filepath.Join(b.TempDir(), "bouncer.db")
			// Made here whatever the size: Open keeps an existing file's.
			db, err := sql.Open("sqlite", "file:"+path)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := db.Exec(fmt.Sprintf("PRAGMA page_size=%d; PRAGMA journal_mode=WAL; CREATE TABLE x(y); DROP TABLE x;", pageSize)); err != nil {
				b.Fatal(err)
			}
			db.Close()
			s, err := Open(ctx, path, Options{WriterCacheBytes: v.cache})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const batch = 2000
			seq := 0
			at := time.Now().UTC()
			stored := 0
			for _, fill := range []int{0, *writeBenchFill / 4, *writeBenchFill} {
				for ; stored < fill; stored += batch {
					r, e := writeBenchBatch(seq, batch, at)
					seq += batch
					if err := s.Write(ctx, r, e); err != nil {
						b.Fatal(err)
					}
				}
				b.Run(fmt.Sprintf("stored=%d", stored), func(b *testing.B) {
					began, n := time.Now(), 0
					r0, w0 := procIO(b)
					for b.Loop() {
						r, e := writeBenchBatch(seq, batch, at)
						seq += batch
						if err := s.Write(ctx, r, e); err != nil {
							b.Fatal(err)
						}
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
