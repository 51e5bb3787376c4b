package clickhouse

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
	"github.com/bouncer-mail/bouncer/store/storetest"
)

var (
	writeGrowsFill = flag.Int("write-grows-fill", 200000, "BenchmarkWriteAsStoreGrows: reports stored before the last measure")
	writeGrowsRate = flag.Int("write-grows-rate", 3000, "BenchmarkWriteAsStoreGrows: reports received a second, for their received times")
)

// serverEvent reads one of the server's cumulative counters
// (system.events; an event that has not happened yet has no row): the
// server is the benchmark's own.
func serverEvent(b *testing.B, s *Store, name string) int64 {
	b.Helper()
	var v uint64
	err := s.conn.QueryRow(context.Background(), "SELECT sum(value) FROM system.events WHERE event = ?", name).Scan(&v)
	if err != nil {
		b.Fatalf("system.events %s: %v", name, err)
	}
	return int64(v)
}

// BenchmarkWriteAsStoreGrows measures Write of a 2,000-report batch (the
// size ingest writes when its batches are not full) on a store holding
// more and more reports, up to -write-grows-fill, received at
// -write-grows-rate a second. Before migration 8, Write looked up the
// batch's report ids in reports, report_versions and events, tables
// ordered by report id or recipient; with ids that are hashes, every
// granule of every part could hold one, so what a lookup read grew with
// the table (the hour of docs/reliability.md "Pipelining senders, and
// what ClickHouse reads" read 299 KB decompressed a report at 5-9
// million stored). Now it reads the keys received within
// ReportLookback (report_keys), which stop growing once the store holds
// more than the lookback's worth (1.8 million at 3,000/s). marks/op is
// the index marks the server selected for the batch's SELECTs
// (system.events SelectedMarks); MB-decompressed/op is
// CompressedReadBufferBytes, which counts the server's merges as well.
//
//	go test -run '^$' -bench WriteAsStoreGrows -benchtime 10x ./store/clickhouse/ -args -write-grows-fill 1000000
func BenchmarkWriteAsStoreGrows(b *testing.B) {
	const batch = 2000
	srv := clickhousetest.NewServer(b)
	s := openDSN(b, srv.DSN("bench_grows"), Options{})
	defer s.Close()
	ctx := context.Background()
	start := time.Now().UTC().Truncate(time.Second)
	seq := 0
	one := func() {
		at := start.Add(time.Duration(seq) * time.Second / time.Duration(*writeGrowsRate))
		reports, events := storetest.GrowingBatch(seq, batch, at, 1)
		seq += batch
		if err := s.Write(ctx, reports, events); err != nil {
			b.Fatal(err)
		}
	}
	for _, fill := range []int{0, *writeGrowsFill / 4, *writeGrowsFill} {
		for seq < fill {
			one()
		}
		b.Run(fmt.Sprintf("stored=%d", seq), func(b *testing.B) {
			marks0, read0 := serverEvent(b, s, "SelectedMarks"), serverEvent(b, s, "CompressedReadBufferBytes")
			began, n := time.Now(), 0
			for b.Loop() {
				one()
				n += batch
			}
			b.ReportMetric(float64(n)/time.Since(began).Seconds(), "reports/s")
			b.ReportMetric(float64(serverEvent(b, s, "SelectedMarks")-marks0)/float64(b.N), "marks/op")
			b.ReportMetric(float64(serverEvent(b, s, "CompressedReadBufferBytes")-read0)/float64(b.N)/1e6, "MB-decompressed/op")
		})
	}
}
