package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/storetest"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "bouncer.db"), Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

var t0 = time.Date(2025, 11, 25, 14, 38, 1, 123456789, time.UTC)

// Reports are not read back through store.Store yet (reclassification
// will), so check their row directly.
func TestReportRow(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	r := store.Report{
		Envelope: event.Envelope{
			ID: "abc", ReturnPath: "b@bounces.example.com", Recipients: []string{"x@b.example", "y@b.example"},
			ClientIP: "2001:db8::1", Helo: "mx.example.net", Received: t0.In(time.FixedZone("X", 3600)), TLS: "TLS1.2",
		},
		Raw:        []byte{0, 1, 2, 0xff},
		ParseError: "truncated",
	}
	empty := store.Report{Envelope: event.Envelope{ID: "empty", Received: t0}}
	if err := s.Write(context.Background(), []store.Report{r, empty}, nil); err != nil {
		t.Fatal(err)
	}

	read := func(id string) store.Report {
		var (
			got   store.Report
			rcpts string
			recv  int64
		)
		err := s.r.QueryRow(`SELECT id, received, return_path, recipients, client_ip, helo, tls, raw, parse_error
			FROM reports WHERE id = ?`, id).
			Scan(&got.ID, &recv, &got.ReturnPath, &rcpts, &got.ClientIP, &got.Helo, &got.TLS, &got.Raw, &got.ParseError)
		if err != nil {
			t.Fatalf("reading report %s: %v", id, err)
		}
		if err := json.Unmarshal([]byte(rcpts), &got.Recipients); err != nil {
			t.Fatalf("recipients %q: %v", rcpts, err)
		}
		got.Received = fromUnixNano(recv)
		return got
	}

	want := r
	want.Received = t0
	if got := read("abc"); !reflect.DeepEqual(got, want) {
		t.Errorf("report row\n got %+v\nwant %+v", got, want)
	}
	got := read("empty")
	var rawType string
	if err := s.r.QueryRow("SELECT typeof(raw) FROM reports WHERE id = 'empty'").Scan(&rawType); err != nil {
		t.Fatal(err)
	}
	if got.Recipients == nil || len(got.Recipients) != 0 || len(got.Raw) != 0 || rawType != "blob" {
		t.Errorf("empty report row: recipients %#v, raw %#v of type %s; want an empty array and blob",
			got.Recipients, got.Raw, rawType)
	}
}

// SQLite keeps full nanoseconds; the conformance suite only asks for
// seconds.
func TestNanoseconds(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	e := store.Event{ID: "e", ReportID: "r", Time: t0, Version: 1,
		Event: event.Event{Recipient: "a@example.com", Class: event.ClassHard}}
	if err := s.Write(context.Background(), nil, []store.Event{e}); err != nil {
		t.Fatal(err)
	}
	got, err := s.RecipientEvents(context.Background(), "a@example.com", 1)
	if err != nil || len(got) != 1 {
		t.Fatalf("RecipientEvents = %v, %v", got, err)
	}
	if !got[0].Time.Equal(t0) {
		t.Errorf("Time = %v, want %v", got[0].Time, t0)
	}
	st, err := s.Stats(context.Background(), t0.Add(time.Nanosecond))
	if err != nil {
		t.Fatal(err)
	}
	if st.EventsByClass[event.ClassHard] != 0 {
		t.Errorf("Stats one nanosecond after the event counted it")
	}
}

func migrationRows(t *testing.T, s *Store) map[int]int64 {
	t.Helper()
	rows, err := s.r.Query("SELECT version, applied_at FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	m := map[int]int64{}
	for rows.Next() {
		var v int
		var at int64
		if err := rows.Scan(&v, &at); err != nil {
			t.Fatal(err)
		}
		m[v] = at
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub dir?#%", "bouncer.db")
	if _, err := Open(ctx, path, Options{}); err == nil {
		t.Fatal("Open in a missing directory succeeded")
	}
	path = filepath.Join(t.TempDir(), "odd name?#%.db")
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	applied := migrationRows(t, s)
	if len(applied) != len(migrations) {
		t.Fatalf("schema_migrations = %v, want versions 1..%d", applied, len(migrations))
	}
	e := store.Event{ID: "e", ReportID: "r", Time: t0, Version: 1,
		Event: event.Event{Recipient: "a@example.com", Class: event.ClassHard}}
	r := store.Report{Envelope: event.Envelope{ID: "r", Received: t0}}
	if err := s.Write(ctx, []store.Report{r}, []store.Event{e}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for range 2 {
		s, err = Open(ctx, path, Options{})
		if err != nil {
			t.Fatalf("reopening: %v", err)
		}
		if got := migrationRows(t, s); !reflect.DeepEqual(got, applied) {
			t.Errorf("after reopening, schema_migrations = %v, want %v unchanged", got, applied)
		}
		st, err := s.Stats(ctx, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if st.ReportsReceived != 1 || st.EventsByClass[event.ClassHard] != 1 {
			t.Errorf("after reopening, stats = %+v, want the report and its event", st)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Two stores on one file at once (two processes, say): both migrate
// safely and see each other's writes.
func TestTwoStoresOneFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bouncer.db")
	a, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	e := store.Event{ID: "e", ReportID: "r", Time: t0, Version: 1,
		Event: event.Event{Recipient: "a@example.com", Class: event.ClassSoft}}
	if err := a.Write(ctx, nil, []store.Event{e}); err != nil {
		t.Fatal(err)
	}
	if err := b.Write(ctx, nil, []store.Event{e}); err != nil {
		t.Fatal(err)
	}
	got, err := b.RecipientEvents(ctx, "a@example.com", 10)
	if err != nil || len(got) != 1 {
		t.Errorf("RecipientEvents from the second store = %v, %v; want the one event", got, err)
	}
}

func TestNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bouncer.db")
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.Exec("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)", len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(ctx, path, Options{}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open on a newer schema = %v, want an error saying so", err)
	}
}

// The durability promise rests on these pragmas.
func TestPragmas(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	tests := []struct {
		db     string
		pragma string
		want   string
	}{
		{"w", "journal_mode", "wal"},
		{"w", "synchronous", "2"},
		{"w", "foreign_keys", "1"},
		{"w", "busy_timeout", "10000"},
		{"w", "page_size", "4096"},    // a new file's
		{"w", "cache_size", "-32768"}, // DefaultWriterCacheBytes, in KiB
		{"r", "cache_size", "-2000"},  // SQLite's own: readers are many
		{"r", "journal_mode", "wal"},
		{"r", "query_only", "1"},
		{"r", "foreign_keys", "1"},
		{"w", "wal_autocheckpoint", "16384"}, // the checkpointer copies the WAL
		{"c", "synchronous", "2"},
		{"c", "journal_mode", "wal"},
	}
	for _, tt := range tests {
		db := map[string]*sql.DB{"w": s.w, "r": s.r, "c": s.ckpt.db}[tt.db]
		var got string
		if err := db.QueryRow("PRAGMA " + tt.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tt.pragma, err)
		}
		if got != tt.want {
			t.Errorf("%s: PRAGMA %s = %q, want %q", tt.db, tt.pragma, got, tt.want)
		}
	}
	if s.w.Stats().MaxOpenConnections != 1 {
		t.Errorf("write pool allows %d connections, want 1", s.w.Stats().MaxOpenConnections)
	}
	if _, err := s.r.Exec("DELETE FROM events"); err == nil {
		t.Error("the read pool accepted a write")
	}
}

// TestOpenKeepsPageSize: a file made with 16 KiB pages (bouncer's new
// files from 9a959bf to 4 KiB pages again) opens, migrates and takes
// writes with its pages as they are: page_size changes an empty file
// only.
func TestOpenKeepsPageSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	old, err := sql.Open(driverName, "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec("PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; CREATE TABLE before_bouncer (a)"); err != nil {
		t.Fatal(err)
	}
	old.Close()
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if err := s.Write(context.Background(), []store.Report{{Envelope: event.Envelope{ID: "r1", Received: time.Now()}, Raw: make([]byte, 20000)}}, nil); err != nil {
		t.Fatalf("Write: %v", err)
	}
	var size int
	if err := s.w.QueryRow("PRAGMA page_size").Scan(&size); err != nil || size != 16384 {
		t.Errorf("page_size = %d (%v), want 16384 as the file was made", size, err)
	}
}

// The queries must use the indexes, or a busy store slows to a crawl.
func TestQueryPlans(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	tests := []struct {
		query string
		args  []any
		want  string
	}{
		{selectRecipientEvents, []any{"a@example.com", 10}, "events_recipient_time"},
		{"SELECT count(*) FROM reports WHERE received >= ?", []any{0}, "reports_received_id"},
		{"SELECT e.class, count(*) FROM events e WHERE e.time >= ? AND " + newest + " GROUP BY e.class", []any{0}, "events_time"},
	}
	for _, tt := range tests {
		rows, err := s.r.Query("EXPLAIN QUERY PLAN "+tt.query, tt.args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		text := strings.Join(plan, "\n")
		if !strings.Contains(text, tt.want) || strings.Contains(text, "SCAN e\n") {
			t.Errorf("plan for %.40q...:\n%s\nwant it to use %s", tt.query, text, tt.want)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	for _, path := range []string{"", ":memory:", "file:x.db"} {
		if s, err := Open(ctx, path, Options{}); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", path)
		}
	}
	if _, err := Open(ctx, filepath.Join(t.TempDir(), "x.db"), Options{ReadConns: -1}); err == nil {
		t.Error("Open with ReadConns -1 succeeded")
	}
	if _, err := Open(ctx, filepath.Join(t.TempDir(), "x.db"), Options{WriterCacheBytes: -1}); err == nil {
		t.Error("Open with WriterCacheBytes -1 succeeded")
	}
}

// TestWriterCache: Options.WriterCacheBytes is the writer's cache_size.
func TestWriterCache(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "c.db"), Options{WriterCacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var kib int
	if err := s.w.QueryRow("PRAGMA cache_size").Scan(&kib); err != nil || kib != -8192 {
		t.Errorf("writer cache_size = %d (%v), want -8192 (8 MiB in KiB)", kib, err)
	}
}

// openAtVersion opens a new database at path migrated up to version
// only, as a binary of that schema made it.
func openAtVersion(t *testing.T, path string, version int) *Store {
	t.Helper()
	saved := migrations
	migrations = migrations[:version]
	defer func() { migrations = saved }()
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// openUpgraded opens the database at path with every migration, as the
// binary of this checkout would after an upgrade.
func openUpgraded(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatalf("Open after the upgrade: %v", err)
	}
	return s
}

// A database at version 1 with events in it gains the correlation
// columns, its events reading back with empty ones.
func TestUpgradeFromVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bouncer.db")
	s := openAtVersion(t, path, 1)
	// Write's INSERT names the new columns, so write the version 1 row by
	// hand.
	if _, err := s.w.Exec(`INSERT INTO events (id, version, report_id, idx, time, source,
		recipient, class, reason, scope, status, reply_code, action, diagnostic,
		remote_mta, reporting_mta, smtp_command, provider, parser, rule, message_id)
		VALUES ('e1', 1, 'r1', 0, ?, 'ndr', 'a@example.com', 'hard', 'userunknown', 'recipient',
		'5.1.1', 550, 'failed', '', '', '', '', 'gmail', 'rfc3464', '', '<m@example.com>')`, unixNano(t0)); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openUpgraded(t, path)
	defer s.Close()
	got, err := s.RecipientEvents(ctx, "a@example.com", 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("RecipientEvents = %v, %v; want the one event", got, err)
	}
	if got[0].Stream != "" || got[0].ReturnPath != "" || got[0].MessageID != "<m@example.com>" {
		t.Errorf("upgraded event: stream %q, return path %q, message id %q; want \"\", \"\", <m@example.com>",
			got[0].Stream, got[0].ReturnPath, got[0].MessageID)
	}
	// Migration 6 counted the event into Stats' rollup.
	since := t0.Add(-time.Hour)
	if st, err := s.Stats(ctx, since); err != nil || st.EventsByClass[event.ClassHard] != 1 ||
		st.Events[store.StatsKey{Class: event.ClassHard, Reason: event.ReasonUserUnknown, Provider: "gmail"}] != 1 {
		t.Errorf("Stats after the upgrade = %+v, %v; want the one hard event", st, err)
	}
	var rollup int64
	if err := s.r.QueryRow("SELECT sum(events) FROM stats_minutes").Scan(&rollup); err != nil || rollup != 1 {
		t.Errorf("stats_minutes after the upgrade sums to %d, %v; want 1", rollup, err)
	}
}

// A database at version 6 with outcomes in it (keyed by key alone, with
// its rowid table and two indexes) moves them to the table keyed by
// (recipient, key): they read back as they were, a higher version
// replaces one and a lower one does not, and the indexes no statement
// used are gone.
func TestUpgradeToVersion7(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bouncer.db")
	s := openAtVersion(t, path, 6)
	outcome := func(key, rcpt string, observations int, last time.Time, class event.Class) store.Outcome {
		return store.Outcome{Key: key, Stream: "news", MessageID: "<" + key + "@example.com>", Recipient: rcpt,
			State: "bounced", Class: class, Reason: event.ReasonUserUnknown, Scope: event.ScopeRecipient,
			Provider: "gmail", Final: true, First: last.Add(-time.Minute), Last: last,
			Observations: observations, Version: store.OutcomeVersion(observations, last)}
	}
	a1 := outcome("k1", "a@example.com", 1, t0, event.ClassHard)
	a2 := outcome("k2", "a@example.com", 2, t0.Add(time.Hour), event.ClassSoft)
	b1 := outcome("k3", "b@example.com", 1, t0, event.ClassHard)
	// Version 6's WriteOutcomes, by hand: the statement names the new
	// conflict target.
	for _, o := range []store.Outcome{a1, a2, b1} {
		if _, err := s.w.Exec(`INSERT INTO outcomes (key, version, stream, message_id, recipient, state, class,
			reason, scope, provider, final, first, last, observations) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)`,
			o.Key, int64(o.Version), o.Stream, o.MessageID, o.Recipient, o.State, string(o.Class), string(o.Reason),
			string(o.Scope), o.Provider, unixNano(o.First), unixNano(o.Last), o.Observations); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	s = openUpgraded(t, path)
	defer s.Close()
	check := func(when, rcpt string, want ...store.Outcome) {
		t.Helper()
		got, err := s.RecipientOutcomes(ctx, rcpt)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: RecipientOutcomes(%s) =\n%+v, %v\nwant\n%+v", when, rcpt, got, err, want)
		}
	}
	check("upgraded", "a@example.com", a2, a1)
	check("upgraded", "b@example.com", b1)

	newer := outcome("k1", "a@example.com", 3, t0.Add(2*time.Hour), event.ClassComplaint)
	older := outcome("k3", "b@example.com", 0, t0.Add(-time.Hour), event.ClassDelivered)
	if err := s.WriteOutcomes(ctx, []store.Outcome{newer, older}); err != nil {
		t.Fatal(err)
	}
	check("rewritten", "a@example.com", newer, a2)
	check("rewritten", "b@example.com", b1)

	for _, name := range []string{"events_return_path", "reports_received", "outcomes_recipient"} {
		var n int
		if err := s.r.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = ?`, name).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s: %d in sqlite_master (%v), want dropped", name, n, err)
		}
	}
	var ddl string
	if err := s.r.QueryRow(`SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'outcomes'`).Scan(&ddl); err != nil ||
		!strings.Contains(ddl, "PRIMARY KEY (recipient, key)") || !strings.Contains(ddl, "WITHOUT ROWID") {
		t.Errorf("outcomes: %q, %v; want keyed by (recipient, key), WITHOUT ROWID", ddl, err)
	}
}
