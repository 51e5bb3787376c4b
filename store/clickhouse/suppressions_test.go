package clickhouse

import (
	"context"
	"errors"
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

// BenchmarkCheckSuppressions measures the check before a send over the
// same rows once the filter has loaded: a miss is answered from memory,
// a hit is an AddressSuppressions. It reports the filter's memory.
func BenchmarkCheckSuppressions(b *testing.B) {
	s := benchSuppressionStore(b)
	defer s.Close()
	ctx := context.Background()
	now := time.Now()
	if _, err := s.CheckSuppressions(ctx, "a@example.com", now); err != nil {
		b.Fatal(err)
	}
	f := s.checks.filter.Load()
	for !f.Stats().Loaded {
		time.Sleep(10 * time.Millisecond)
	}
	b.Run("hit", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i = (i + 7919) % (benchSuppressions / 2)
			got, err := s.CheckSuppressions(ctx, fillAddress(i), now)
			if err != nil || len(got) != 2 {
				b.Fatalf("CheckSuppressions(%s) = %d rows, %v; want 2", fillAddress(i), len(got), err)
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i = (i + 7919) % (benchSuppressions / 2)
			// Addresses that sort among the stored ones.
			got, err := s.CheckSuppressions(ctx, fillAddress(benchSuppressions/2+i), now)
			if err != nil || len(got) != 0 {
				b.Fatalf("CheckSuppressions = %d rows, %v; want none", len(got), err)
			}
		}
		st := f.Stats()
		b.ReportMetric(float64(st.Bytes)/float64(st.Addresses), "filter-B/address")
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

// The check filter of CheckSuppressions, between two Stores on one
// database as between two processes: a check answers from the filter
// only while it is fresh, so a suppression written by the other Store
// shows once a refresh that began after the write has run, or once the
// filter is older than store.MaxCheckStaleness; a write through the
// checking Store shows at once. The clock is the test's, and the
// refreshes are called by hand, so nothing here depends on timing.
func TestCheckSuppressionsFilter(t *testing.T) {
	dsn := clickhousetest.Start(t)
	checker, writer := openDSN(t, dsn, Options{}), openDSN(t, dsn, Options{})
	defer writer.Close()
	defer checker.Close()
	ctx := context.Background()
	// The filter's clock stands at the test's start until moved: within
	// the overlap (a minute) of the real times the versions hold.
	start := time.Now()
	var offset atomic.Int64
	checker.checks.opts.Now = func() time.Time { return start.Add(time.Duration(offset.Load())) }
	checker.checks.noRun = true

	fillSuppressions(t, writer, 2000, uint64(time.Now().Add(-time.Minute).UnixNano())) // user0..user999, two streams each
	check := func(address string) []store.Suppression {
		t.Helper()
		got, err := checker.CheckSuppressions(ctx, address, time.Now())
		if err != nil {
			t.Fatalf("CheckSuppressions(%s): %v", address, err)
		}
		return got
	}
	// Before the filter has read anything, every check is a query.
	if got := check(fillAddress(7)); len(got) != 2 {
		t.Fatalf("before the first read: CheckSuppressions = %v, want both streams", got)
	}
	f := checker.checks.filter.Load()
	if f == nil {
		t.Fatal("no filter after the first CheckSuppressions")
	}
	if err := f.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if st := f.Stats(); st.Addresses != 1000 || st.Bytes < 8000 {
		t.Errorf("filter after Load: %+v, want the 1000 addresses", st)
	}
	for i := range 1000 {
		if f.Absent(fillAddress(i)) || !f.Absent("nobody"+fillAddress(i)) {
			t.Fatalf("filter: Absent(%s) or not Absent(nobody%s)", fillAddress(i), fillAddress(i))
		}
	}
	for i := range 1000 {
		if got := check(fillAddress(i)); len(got) != 2 {
			t.Fatalf("CheckSuppressions(%s) = %v, want both streams", fillAddress(i), got)
		}
		if got := check("nobody" + fillAddress(i)); len(got) != 0 {
			t.Fatalf("CheckSuppressions(nobody%s) = %v, want none", fillAddress(i), got)
		}
	}

	// The other process writes: the fresh filter does not know it yet.
	other := store.Suppression{Address: "other@example.com", Source: store.SourceManual, Since: time.Now().Add(-time.Minute), Actor: "ops", Note: "n"}
	if err := writer.PutSuppressions(ctx, []store.Suppression{other}); err != nil {
		t.Fatal(err)
	}
	if got := check(other.Address); len(got) != 0 {
		t.Fatalf("another process's write seen before a refresh (%v): the filter is not being used", got)
	}
	// A refresh that began after the write returned brings it.
	if err := f.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := check(other.Address); len(got) != 1 {
		t.Errorf("after a refresh: CheckSuppressions(other) = %v, want it", got)
	}

	// Without refreshes, the filter goes stale: once its last read began
	// more than MaxCheckStaleness ago, every check is a query, and a write
	// it never read shows.
	late := other
	late.Address = "late@example.com"
	if err := writer.PutSuppressions(ctx, []store.Suppression{late}); err != nil {
		t.Fatal(err)
	}
	if got := check(late.Address); len(got) != 0 {
		t.Fatalf("a write seen by a fresh filter that has not read it (%v)", got)
	}
	offset.Store(int64(store.MaxCheckStaleness + time.Millisecond))
	if got := check(late.Address); len(got) != 1 {
		t.Errorf("stale filter: CheckSuppressions(late) = %v, want it", got)
	}
	if err := f.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := check(late.Address); len(got) != 1 {
		t.Errorf("after the refresh: CheckSuppressions(late) = %v, want it", got)
	}

	// The checking process's own write: at once, no refresh.
	mine := other
	mine.Address = "mine@example.com"
	if err := checker.PutSuppressions(ctx, []store.Suppression{mine}); err != nil {
		t.Fatal(err)
	}
	if got := check(mine.Address); len(got) != 1 {
		t.Errorf("this process's write: CheckSuppressions(mine) = %v, want it at once", got)
	}
	// A removal needs nothing from the filter: the check queries.
	rm := store.SuppressionChange{Time: time.Now(), Address: other.Address, Action: store.ActionRemove, Source: store.SourceManual, Actor: "ops"}
	if err := writer.RemoveSuppression(ctx, store.SuppressionKey{Address: other.Address}, rm); err != nil {
		t.Fatal(err)
	}
	if got := check(other.Address); len(got) != 0 {
		t.Errorf("after the other process removed it: CheckSuppressions(other) = %v, want none", got)
	}
}

// With its refresh goroutine, the filter brings another process's write
// without help; the wait is generous, the bound is the test above's.
func TestCheckSuppressionsFilterRuns(t *testing.T) {
	dsn := clickhousetest.Start(t)
	checker, writer := openDSN(t, dsn, Options{}), openDSN(t, dsn, Options{})
	defer writer.Close()
	ctx := context.Background()
	if got, err := checker.CheckSuppressions(ctx, "a@example.com", time.Now()); err != nil || len(got) != 0 {
		t.Fatalf("CheckSuppressions on an empty store = %v, %v", got, err)
	}
	f := checker.checks.filter.Load()
	for deadline := time.Now().Add(30 * time.Second); !f.Stats().Loaded; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the filter has not loaded: %+v", f.Stats())
		}
	}
	r := store.Suppression{Address: "a@example.com", Source: store.SourceManual, Since: time.Now().Add(-time.Minute), Actor: "ops", Note: "n"}
	if err := writer.PutSuppressions(ctx, []store.Suppression{r}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got, err := checker.CheckSuppressions(ctx, r.Address, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("another process's write not seen after 30 s: %+v", f.Stats())
		}
	}
	// Closing the Store ends the refresh goroutine: its next read is
	// refused, and Run returns.
	if err := checker.Close(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); !errors.Is(f.Refresh(ctx), store.ErrClosed); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the filter still reads after Close")
		}
	}
}
