package clickhouse

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
	"github.com/bouncer-mail/bouncer/store/storetest"
)

// The conformance tests of the whole-list and send-time reads
// (storetest.RunSuppressionReads; storetest.Run has the rest).
func TestSuppressionReads(t *testing.T) {
	storetest.RunSuppressionReads(t, func(t *testing.T) store.Store { return openDSN(t, clickhousetest.Start(t), Options{}) })
}

// fillSuppressions inserts n suppressions server-side, two per address
// (global and "news"), since an hour ago, version v: what a large list
// looks like, without n rows through Go.
func fillSuppressions(t testing.TB, s *Store, n int, v uint64) {
	t.Helper()
	since := time.Now().Add(-time.Hour).UnixNano()
	q := fmt.Sprintf(`INSERT INTO suppressions %s
SELECT concat('user', toString(intDiv(number, 2)), '@example', toString(intDiv(number, 2) %% 100), '.com'),
	if(number %% 2 = 0, '', 'news'), toUInt64(%d), toUInt8(0), 'policy', 'hard', 'userunknown', 'hard',
	toInt64(%d), toInt64(0), 'policy', ''
FROM numbers(%d)`, suppressionsTable.columnList(), v, since, n)
	if err := s.conn.Exec(context.Background(), q); err != nil {
		t.Fatal(err)
	}
}

// fillAddress is the address fillSuppressions gives rows 2i and 2i+1.
func fillAddress(i int) string { return fmt.Sprintf("user%d@example%d.com", i, i%100) }

// rowsRead runs f with a context that counts the rows the server reads.
func rowsRead(f func(ctx context.Context)) uint64 {
	var n atomic.Uint64
	f(ch.Context(context.Background(), ch.WithProgress(func(p *ch.Progress) { n.Add(p.Rows) })))
	return n.Load()
}

// The send-time check reads one address's granule, not the table: the
// point of ORDER BY (address, stream) and index_granularity = 256.
func TestAddressSuppressionsReadsOneGranule(t *testing.T) {
	s := openDSN(t, clickhousetest.Start(t), Options{})
	defer s.Close()
	fillSuppressions(t, s, 100000, uint64(time.Now().UnixNano()))
	var parts uint64
	if err := s.conn.QueryRow(context.Background(), `SELECT count() FROM system.parts
		WHERE database = currentDatabase() AND table = 'suppressions' AND active`).Scan(&parts); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 12345, 49999} {
		var got []store.Suppression
		read := rowsRead(func(ctx context.Context) {
			var err error
			got, err = s.AddressSuppressions(ctx, fillAddress(i), time.Now())
			if err != nil {
				t.Fatal(err)
			}
		})
		if len(got) != 2 || got[0].Stream != "" || got[1].Stream != "news" {
			t.Errorf("AddressSuppressions(%s) = %+v, want the global and the news one", fillAddress(i), got)
		}
		t.Logf("AddressSuppressions(%s) read %d rows in %d parts", fillAddress(i), read, parts)
		// An address's two rows may straddle two granules.
		if max := 2 * 256 * parts; read == 0 || read > max {
			t.Errorf("AddressSuppressions(%s) read %d rows of 100000 in %d parts, want 1 to %d", fillAddress(i), read, parts, max)
		}
	}
}

// The tables are what the contract needs: the suppressions' granules
// small, the audit trail a MergeTree that keeps every line even when two
// share (address, time), reads right before and after merges.
func TestSuppressionMerges(t *testing.T) {
	s := openDSN(t, clickhousetest.Start(t), Options{})
	defer s.Close()
	ctx := context.Background()
	for _, name := range []string{suppressionsTable.name, suppressionAuditTable.name} {
		var engine string
		if err := s.conn.QueryRow(ctx, `SELECT engine_full FROM system.tables
			WHERE database = currentDatabase() AND name = ?`, name).Scan(&engine); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(engine, "index_granularity = 256") {
			t.Errorf("%s: engine %s, want index_granularity = 256", name, engine)
		}
	}

	now := time.Now()
	r := store.Suppression{Address: "a@example.com", Source: store.SourceManual, Since: now.Add(-time.Hour), Actor: "ops", Note: "v1"}
	if err := s.PutSuppressions(ctx, []store.Suppression{r}); err != nil {
		t.Fatal(err)
	}
	rm := store.SuppressionChange{Time: time.Now(), Address: r.Address, Action: store.ActionRemove, Source: store.SourceManual, Actor: "ops"}
	if err := s.RemoveSuppression(ctx, store.SuppressionKey{Address: r.Address}, rm); err != nil {
		t.Fatal(err)
	}
	r.Note = "v3"
	if err := s.PutSuppressions(ctx, []store.Suppression{r}); err != nil {
		t.Fatal(err)
	}
	// Two audit lines of one address and time.
	same := store.SuppressionChange{Time: now, Address: "b@example.com", Action: store.ActionRemove, Source: store.SourceManual, Actor: "ops"}
	if err := s.insertAudit(ctx, []store.SuppressionChange{same, same}); err != nil {
		t.Fatal(err)
	}

	check := func(when string) {
		t.Helper()
		got, err := s.AddressSuppressions(ctx, r.Address, time.Now())
		if err != nil || len(got) != 1 || got[0].Note != "v3" {
			t.Errorf("%s: AddressSuppressions = %+v, %v; want version v3", when, got, err)
		}
		h, err := s.SuppressionHistory(ctx, "b@example.com", 10)
		if err != nil || len(h) != 2 {
			t.Errorf("%s: history of b = %d lines, %v; want both", when, len(h), err)
		}
	}
	var versions uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM suppressions").Scan(&versions); err != nil || versions != 3 {
		t.Fatalf("before merging: %d versions stored, %v; want 3", versions, err)
	}
	check("before merging")
	for _, name := range []string{suppressionsTable.name, suppressionAuditTable.name} {
		if err := s.conn.Exec(ctx, "OPTIMIZE TABLE "+name+" FINAL"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM suppressions").Scan(&versions); err != nil || versions != 1 {
		t.Errorf("after merging: %d versions stored, %v; want 1", versions, err)
	}
	check("after merging")
}

// A stored version ahead of the clock (a writer whose clock ran fast)
// does not hide a later put: the put's version is one past it.
func TestSuppressionVersionAfterStored(t *testing.T) {
	s := openDSN(t, clickhousetest.Start(t), Options{})
	defer s.Close()
	ctx := context.Background()
	ahead := uint64(time.Now().Add(time.Hour).UnixNano())
	fillSuppressions(t, s, 2, ahead) // user0@example0.com, global and news
	r := store.Suppression{Address: fillAddress(0), Stream: "news", Source: store.SourceManual,
		Since: time.Now().Add(-time.Minute), Actor: "ops", Note: "later put"}
	if err := s.PutSuppressions(ctx, []store.Suppression{r}); err != nil {
		t.Fatal(err)
	}
	got, err := s.AddressSuppressions(ctx, r.Address, time.Now())
	if err != nil || len(got) != 2 || got[1].Note != "later put" {
		t.Fatalf("AddressSuppressions = %+v, %v; want the put's row on news", got, err)
	}
	if want := time.Unix(0, int64(ahead)+1).UTC(); !got[1].Updated.Equal(want) {
		t.Errorf("Updated = %v, want one nanosecond after the stored %v", got[1].Updated, time.Unix(0, int64(ahead)))
	}
	rm := store.SuppressionChange{Time: time.Now(), Address: r.Address, Action: store.ActionRemove, Source: store.SourceManual, Actor: "ops"}
	if err := s.RemoveSuppression(ctx, store.SuppressionKey{Address: r.Address}, rm); err != nil {
		t.Fatal(err)
	}
	if got, err := s.AddressSuppressions(ctx, r.Address, time.Now()); err != nil || len(got) != 1 || got[0].Stream != "news" {
		t.Errorf("after removing the global one: %+v, %v; want news only", got, err)
	}
}

// benchSuppressions is how many suppressions the benchmarks load: half a
// million addresses, each suppressed globally and on one stream.
const benchSuppressions = 1000000

// BenchmarkAddressSuppressions measures the send-time check, one
// address's suppressions, with benchSuppressions rows stored (one part,
// loaded server-side by INSERT ... SELECT FROM numbers(), a second or
// two), and a second, unmerged part holding a newer version of every
// 100th key, as a table between merges has:
//
//	go test -run '^$' -bench 'Suppression' ./store/clickhouse/
//
// Benchmarks run only under -bench, so plain go test never loads them.
func BenchmarkAddressSuppressions(b *testing.B) {
	s := benchSuppressionStore(b)
	defer s.Close()
	ctx := context.Background()
	now := time.Now()
	b.Run("hit", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i = (i + 7919) % (benchSuppressions / 2)
			got, err := s.AddressSuppressions(ctx, fillAddress(i), now)
			if err != nil || len(got) != 2 {
				b.Fatalf("AddressSuppressions(%s) = %d rows, %v; want 2", fillAddress(i), len(got), err)
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i = (i + 7919) % (benchSuppressions / 2)
			got, err := s.AddressSuppressions(ctx, "nobody"+fillAddress(i), now)
			if err != nil || len(got) != 0 {
				b.Fatalf("AddressSuppressions = %d rows, %v; want none", len(got), err)
			}
		}
	})
}

// BenchmarkEachSuppression measures the export of every suppression
// over the same rows: one query, each row handed over as it arrives.
func BenchmarkEachSuppression(b *testing.B) {
	s := benchSuppressionStore(b)
	defer s.Close()
	ctx := context.Background()
	for b.Loop() {
		n := 0
		if err := s.EachSuppression(ctx, store.SuppressionQuery{AllStreams: true, Now: time.Now()}, func(store.Suppression) error {
			n++
			return nil
		}); err != nil || n != benchSuppressions {
			b.Fatalf("EachSuppression = %d rows, %v; want %d", n, err, benchSuppressions)
		}
	}
}

// BenchmarkSuppressionsPage measures listing pages of 1,000 over the
// same rows: the first page, one from the middle, and the last.
func BenchmarkSuppressionsPage(b *testing.B) {
	s := benchSuppressionStore(b)
	defer s.Close()
	ctx := context.Background()
	now := time.Now()
	// Cursors among the keys, not the rows (some keys have two).
	var mid, last store.SuppressionKey
	if err := s.conn.QueryRow(ctx, `SELECT address, stream FROM suppressions GROUP BY address, stream
		ORDER BY address, stream LIMIT 1 OFFSET 500000`).Scan(&mid.Address, &mid.Stream); err != nil {
		b.Fatal(err)
	}
	if err := s.conn.QueryRow(ctx, `SELECT address, stream FROM suppressions GROUP BY address, stream
		ORDER BY address DESC, stream DESC LIMIT 1 OFFSET 1000`).Scan(&last.Address, &last.Stream); err != nil {
		b.Fatal(err)
	}
	for _, bb := range []struct {
		name  string
		after store.SuppressionKey
	}{{"first", store.SuppressionKey{}}, {"middle", mid}, {"last", last}} {
		b.Run(bb.name, func(b *testing.B) {
			for b.Loop() {
				got, err := s.Suppressions(ctx, store.SuppressionQuery{AllStreams: true, Now: now, After: bb.after, Limit: 1000})
				if err != nil || len(got) != 1000 {
					b.Fatalf("Suppressions = %d rows, %v; want 1000", len(got), err)
				}
			}
		})
	}
}

// BenchmarkSuppressionStats measures SuppressionStats over the same
// rows: it groups every key.
func BenchmarkSuppressionStats(b *testing.B) {
	s := benchSuppressionStore(b)
	defer s.Close()
	ctx := context.Background()
	for b.Loop() {
		st, err := s.SuppressionStats(ctx, time.Now())
		if err != nil || st.Total != benchSuppressions {
			b.Fatalf("SuppressionStats = %d in force, %v; want %d", st.Total, err, benchSuppressions)
		}
	}
}

func benchSuppressionStore(b *testing.B) *Store {
	srv := clickhousetest.NewServer(b)
	s := openDSN(b, srv.DSN("bench_suppressions"), Options{})
	v := uint64(time.Now().Add(-time.Minute).UnixNano())
	fillSuppressions(b, s, benchSuppressions, v)
	if err := s.conn.Exec(context.Background(), fmt.Sprintf(`INSERT INTO suppressions %s
SELECT address, stream, version + 1, removed, source, class, reason, rule, since, until, actor, 'newer'
FROM suppressions WHERE cityHash64(address) %% 100 = 0`, suppressionsTable.columnList())); err != nil {
		b.Fatal(err)
	}
	return s
}
