package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/storetest"
)

// The conformance tests of the whole-list and send-time reads
// (storetest.RunSuppressionReads; storetest.Run has the rest).
func TestSuppressionReads(t *testing.T) {
	storetest.RunSuppressionReads(t, func(t *testing.T) store.Store { return openTemp(t) })
}

// queryPlan is EXPLAIN QUERY PLAN's detail lines for query.
func queryPlan(t testing.TB, s *Store, query string, args ...any) string {
	t.Helper()
	rows, err := s.r.Query("EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "\n")
}

// The send-time check is a primary-key lookup, a listing page a key
// range read in key order, a history an index range read backwards:
// none scans the table or sorts.
func TestSuppressionQueryPlans(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	tests := []struct {
		name  string
		query string
		args  []any
		want  string
	}{
		{"AddressSuppressions", selectAddressSuppressions, []any{"a@example.com", 1, 1},
			"SEARCH suppressions USING PRIMARY KEY (address=?)"},
		{"Suppressions", selectSuppressions, []any{"a@example.com", "", 1, 1, 0, false, "", 10},
			"SEARCH suppressions USING PRIMARY KEY ((address,stream)>(?,?))"},
		{"SuppressionHistory", selectSuppressionHistory, []any{"a@example.com", 10},
			"SEARCH suppression_audit USING INDEX suppression_audit_address_time (address=?)"},
		{"LatestRemoval", selectLatestRemoval, []any{"a@example.com"},
			"SEARCH suppression_audit USING INDEX suppression_audit_address_time (address=?)"},
	}
	for _, tt := range tests {
		plan := queryPlan(t, s, tt.query, tt.args...)
		if !strings.Contains(plan, tt.want) || strings.Contains(plan, "SCAN") || strings.Contains(plan, "TEMP B-TREE") {
			t.Errorf("%s: plan\n%s\nwant %q, no scan, no sort", tt.name, plan, tt.want)
		}
	}
}

// A removal keeps the row, marked with the removal's time, so the table
// still says what was lifted; a later put clears the mark.
func TestSuppressionRemovedRow(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	ctx := context.Background()
	now := time.Now()
	r := store.Suppression{Address: "a@example.com", Source: store.SourceManual, Since: now.Add(-time.Hour), Actor: "ops"}
	if err := s.PutSuppressions(ctx, []store.Suppression{r}); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	c := store.SuppressionChange{Time: at, Address: r.Address, Action: store.ActionRemove, Source: store.SourceManual, Actor: "ops"}
	if err := s.RemoveSuppression(ctx, store.SuppressionKey{Address: r.Address}, c); err != nil {
		t.Fatal(err)
	}
	removed := func() (n int, removed *int64) {
		t.Helper()
		if err := s.r.QueryRow("SELECT count(*), max(removed) FROM suppressions WHERE address = ?", r.Address).
			Scan(&n, &removed); err != nil {
			t.Fatal(err)
		}
		return n, removed
	}
	if n, got := removed(); n != 1 || got == nil || *got != at.UnixNano() {
		t.Errorf("after the removal: %d rows, removed %v; want 1 row removed at %d", n, got, at.UnixNano())
	}
	if err := s.PutSuppressions(ctx, []store.Suppression{r}); err != nil {
		t.Fatal(err)
	}
	if n, got := removed(); n != 1 || got != nil {
		t.Errorf("after putting it again: %d rows, removed set %v; want 1 row, not removed", n, got != nil)
	}
}

// Times the columns cannot hold are refused, not wrapped: before 1970
// (until's 0 means "never") or past int64 nanoseconds.
func TestSuppressionTimeRange(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	ctx := context.Background()
	ok := store.Suppression{Address: "a@example.com", Source: store.SourceManual, Since: time.Unix(0, 0), Actor: "ops"}
	bad := []store.Suppression{ok, ok, ok}
	bad[0].Since = time.Unix(0, -1)
	bad[1].Until = time.Date(2263, 1, 1, 0, 0, 0, 0, time.UTC)
	bad[2].Since = time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, r := range bad {
		if err := s.PutSuppressions(ctx, []store.Suppression{r}); err == nil {
			t.Errorf("PutSuppressions(since %v, until %v) succeeded", r.Since, r.Until)
		}
	}
	if err := s.PutSuppressions(ctx, []store.Suppression{ok}); err != nil {
		t.Errorf("PutSuppressions at the Unix epoch: %v", err)
	}
	got, err := s.AddressSuppressions(ctx, ok.Address, time.Now())
	if err != nil || len(got) != 1 || !got[0].Since.Equal(ok.Since) || !got[0].Until.IsZero() {
		t.Errorf("AddressSuppressions = %+v, %v; want the one since the epoch, no end", got, err)
	}
}

// benchSuppressions is how many suppressions BenchmarkAddressSuppressions
// loads: half a million addresses, each suppressed globally and on one
// stream.
const benchSuppressions = 1000000

// BenchmarkAddressSuppressions measures the send-time check, one
// address's suppressions, with benchSuppressions rows stored:
//
//	go test -run '^$' -bench AddressSuppressions ./store/sqlite/
//
// The rows are loaded once, in one transaction through a prepared
// statement (about ten seconds); benchmarks run only under -bench, so
// plain go test never loads them.
func BenchmarkAddressSuppressions(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	since := time.Now().Add(-time.Hour).UnixNano()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO suppressions
		(address, stream, source, class, reason, rule, since, until, actor, note, updated)
		VALUES (?, ?, 'policy', 'hard', 'userunknown', 'hard', ?, 0, 'policy', '', ?)`)
	if err != nil {
		b.Fatal(err)
	}
	for i := range benchSuppressions {
		stream := ""
		if i%2 == 1 {
			stream = "news"
		}
		if _, err := stmt.ExecContext(ctx, benchAddress(i/2), stream, since, since); err != nil {
			b.Fatal(err)
		}
	}
	stmt.Close()
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()

	now := time.Now()
	b.Run("hit", func(b *testing.B) {
		i := 0
		for b.Loop() {
			// A stride through the addresses, so no two lookups in a row
			// share a page.
			i = (i + 7919) % (benchSuppressions / 2)
			got, err := s.AddressSuppressions(ctx, benchAddress(i), now)
			if err != nil || len(got) != 2 {
				b.Fatalf("AddressSuppressions(%s) = %d rows, %v; want 2", benchAddress(i), len(got), err)
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i = (i + 7919) % (benchSuppressions / 2)
			got, err := s.AddressSuppressions(ctx, "nobody"+benchAddress(i), now)
			if err != nil || len(got) != 0 {
				b.Fatalf("AddressSuppressions = %d rows, %v; want none", len(got), err)
			}
		}
	})
}

// BenchmarkEachSuppression measures the export of benchSuppressions
// rows, loaded as BenchmarkAddressSuppressions loads them: one SELECT,
// each row handed over as it is read.
//
//	go test -run '^$' -bench EachSuppression ./store/sqlite/
func BenchmarkEachSuppression(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	since := time.Now().Add(-time.Hour).UnixNano()
	if _, err := s.w.ExecContext(ctx, `WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?)
INSERT INTO suppressions (address, stream, source, class, reason, rule, since, until, actor, note, updated)
SELECT 'user' || (i / 2) || '@example' || (i / 2 % 100) || '.com', CASE i % 2 WHEN 1 THEN 'news' ELSE '' END,
	'policy', 'hard', 'userunknown', 'hard', ?, 0, 'policy', '', ? FROM k`, benchSuppressions, since, since); err != nil {
		b.Fatal(err)
	}
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

func benchAddress(i int) string { return fmt.Sprintf("user%d@example%d.com", i, i%100) }
