package clickhouse

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
	"github.com/bouncer-mail/bouncer/store/storetest"
)

// One server for the package's tests, a fresh database per Start; the
// tests that stop or reconfigure a server start their own.
func TestMain(m *testing.M) { os.Exit(clickhousetest.Main(m)) }

func openDSN(t testing.TB, dsn string, opts Options) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, dsn, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dsn, err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openDSN(t, clickhousetest.Start(t), Options{}) })
}

var t0 = time.Date(2025, 11, 25, 14, 38, 1, 0, time.UTC)

func testEvent(reportID string, index int, recipient string, class event.Class, at time.Time) store.Event {
	return store.Event{
		ID: store.EventID(reportID, index), ReportID: reportID, Index: index, Version: 1, Time: at, Source: "ndr",
		Event: event.Event{Recipient: recipient, Class: class, Reason: event.ReasonUserUnknown,
			Scope: event.ScopeRecipient, Status: "5.1.1", ReplyCode: 550},
	}
}

// Reports are not read back through store.Store yet (reclassification
// will), so check their row directly.
func TestReportRow(t *testing.T) {
	s := openDSN(t, clickhousetest.Start(t), Options{})
	defer s.Close()
	r := store.Report{
		Envelope: event.Envelope{
			ID: "abc", ReturnPath: "b@bounces.example.com", Recipients: []string{"x@b.example", "y@b.example"},
			ClientIP: "2001:db8::1", Helo: "mx.example.net", Received: t0.In(time.FixedZone("X", 3600)), TLS: "TLS1.2",
		},
		Raw:        []byte{0, 1, 2, 0xff, '\'', '\\'},
		ParseError: "truncated",
	}
	empty := store.Report{Envelope: event.Envelope{ID: "empty", Received: t0}}
	ctx := context.Background()
	if err := s.Write(ctx, []store.Report{r, empty}, nil); err != nil {
		t.Fatal(err)
	}
	read := func(id string) store.Report {
		var got store.Report
		var raw string
		err := s.conn.QueryRow(ctx, `SELECT id, received, return_path, recipients, client_ip, helo, tls, raw, parse_error
			FROM reports WHERE id = ?`, id).
			Scan(&got.ID, &got.Received, &got.ReturnPath, &got.Recipients, &got.ClientIP, &got.Helo, &got.TLS, &raw, &got.ParseError)
		if err != nil {
			t.Fatalf("reading report %s: %v", id, err)
		}
		got.Raw = []byte(raw)
		return got
	}
	want := r
	want.Received = t0
	got := read("abc")
	if got.Received.Location() != time.UTC {
		t.Errorf("received location = %v, want UTC", got.Received.Location())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("report row\n got %+v\nwant %+v", got, want)
	}
	if got := read("empty"); got.Recipients == nil || len(got.Recipients) != 0 || len(got.Raw) != 0 {
		t.Errorf("empty report row: recipients %#v, raw %#v; want empty", got.Recipients, got.Raw)
	}
}

// Rows ClickHouse's columns cannot hold are refused like the invalid rows
// of the conformance suite: the whole batch, nothing sent.
func TestWriteRangeChecks(t *testing.T) {
	s := openDSN(t, clickhousetest.Start(t), Options{})
	defer s.Close()
	ok := testEvent("r1", 0, "a@example.com", event.ClassHard, t0)
	tests := []struct {
		name string
		mod  func(e *store.Event)
	}{
		{"before 1970", func(e *store.Event) { e.Time = time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC) }},
		{"after 2106", func(e *store.Event) { e.Time = time.Unix(1<<32, 0) }},
		{"negative index", func(e *store.Event) { e.Index = -1 }},
		{"index beyond UInt32", func(e *store.Event) { e.Index = 1 << 32 }},
		{"negative reply code", func(e *store.Event) { e.ReplyCode = -1 }},
		{"reply code beyond UInt16", func(e *store.Event) { e.ReplyCode = 65536 }},
	}
	for _, tt := range tests {
		bad := ok
		tt.mod(&bad)
		if err := s.Write(context.Background(), nil, []store.Event{ok, bad}); err == nil {
			t.Errorf("%s: Write succeeded, want an error", tt.name)
		}
	}
	if got, err := s.RecipientEvents(context.Background(), "a@example.com", 10); err != nil || len(got) != 0 {
		t.Errorf("after refused writes, RecipientEvents = %d events, %v; want none", len(got), err)
	}
	// DateTime's last second is storable.
	last := ok
	last.Time = maxTime
	if err := s.Write(context.Background(), nil, []store.Event{last}); err != nil {
		t.Errorf("Write at %v: %v", maxTime, err)
	}
}

// A window that starts within a second holds none of that second: stored
// times are whole seconds.
func TestStatsSubsecondSince(t *testing.T) {
	s := openDSN(t, clickhousetest.Start(t), Options{})
	defer s.Close()
	if err := s.Write(context.Background(), nil, []store.Event{testEvent("r1", 0, "a@example.com", event.ClassSoft, t0)}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		since time.Time
		want  int64
	}{
		{t0, 1},
		{t0.Add(-time.Nanosecond), 1},
		{t0.Add(time.Nanosecond), 0},
		{time.Unix(1<<40, 0), 0},
	} {
		st, err := s.Stats(context.Background(), tt.since)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.EventsByClass[event.ClassSoft]; got != tt.want {
			t.Errorf("Stats(%v) soft = %d, want %d", tt.since, got, tt.want)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	ctx := context.Background()
	for _, dsn := range []string{
		"http://127.0.0.1:8123/bouncer",
		"clickhouse://127.0.0.1:9000",
		"clickhouse://127.0.0.1:9000/",
		"clickhouse://127.0.0.1:9000/bad-name",
		"clickhouse://127.0.0.1:9000/x`y",
		"::not a url",
	} {
		if s, err := Open(ctx, dsn, Options{}); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", dsn)
		}
	}
	if _, err := Open(ctx, "clickhouse://127.0.0.1:9000/db", Options{ReadTimeout: -1}); err == nil {
		t.Error("Open with a negative ReadTimeout succeeded")
	}
}

// Stopping the server fails calls promptly instead of hanging them, a
// frozen server fails them at the context's deadline or ReadTimeout, and
// after a restart the same Store works again with its data intact.
func TestServerOutage(t *testing.T) {
	srv := clickhousetest.NewServer(t)
	const readTimeout = 2 * time.Second
	s := openDSN(t, srv.DSN("outage"), Options{DialTimeout: time.Second, ReadTimeout: readTimeout})
	defer s.Close()

	n := 0
	batch := func() []store.Event {
		n++
		return []store.Event{testEvent(fmt.Sprintf("r%d", n), 0, "a@example.com", event.ClassHard, t0.Add(time.Duration(n)*time.Second))}
	}
	// timed runs f with a deadline and reports how long it took.
	timed := func(timeout time.Duration, f func(ctx context.Context) error) (time.Duration, error) {
		ctx := context.Background()
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		start := time.Now()
		err := f(ctx)
		return time.Since(start), err
	}
	write := func(ctx context.Context) error { return s.Write(ctx, nil, batch()) }
	wantEvents := func(step string, want int) {
		t.Helper()
		got, err := s.RecipientEvents(context.Background(), "a@example.com", 100)
		if err != nil {
			t.Fatalf("%s: RecipientEvents: %v", step, err)
		}
		if len(got) != want {
			t.Errorf("%s: %d events stored, want %d", step, len(got), want)
		}
	}

	if _, err := timed(10*time.Second, write); err != nil {
		t.Fatalf("Write before the outage: %v", err)
	}

	// Killed: connection refused, at once.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		f    func(ctx context.Context) error
	}{{"Write", write}, {"Ping", s.Ping}, {"Write again", write}} {
		took, err := timed(10*time.Second, c.f)
		if err == nil {
			t.Errorf("%s with the server stopped succeeded", c.name)
		}
		if took > 5*time.Second {
			t.Errorf("%s with the server stopped took %v", c.name, took)
		}
		t.Logf("%s, server stopped: %v after %v", c.name, err, took)
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := timed(10*time.Second, write); err != nil {
		t.Fatalf("Write after the restart: %v", err)
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping after the restart: %v", err)
	}
	wantEvents("after the restart", 2)

	// Frozen: connected but silent. The context's deadline, or without
	// one ReadTimeout, ends the wait.
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		timeout time.Duration
		f       func(ctx context.Context) error
		limit   time.Duration
	}{
		// First, while the pool holds the connection the last Write
		// used: ReadTimeout bounds the wait on an open connection, the
		// dial timeout the handshake of a new one.
		{"Ping, no deadline", 0, s.Ping, readTimeout + 4*time.Second},
		{"Write, 1s deadline", time.Second, write, 4 * time.Second},
		{"Ping, 1s deadline", time.Second, s.Ping, 4 * time.Second},
		{"Write, no deadline", 0, write, readTimeout + 4*time.Second},
	} {
		took, err := timed(c.timeout, c.f)
		if err == nil {
			t.Errorf("%s with the server frozen succeeded", c.name)
		}
		if took > c.limit {
			t.Errorf("%s with the server frozen took %v, want at most %v", c.name, took, c.limit)
		}
		t.Logf("%s, server frozen: %v after %v", c.name, err, took)
	}
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	if _, err := timed(10*time.Second, write); err != nil {
		t.Fatalf("Write after the thaw: %v", err)
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping after the thaw: %v", err)
	}
	// The writes that failed may or may not have landed (a frozen server
	// can have taken the rows before it stopped answering); the ones that
	// succeeded must all be there.
	got, err := s.RecipientEvents(context.Background(), "a@example.com", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < 3 {
		t.Errorf("after the thaw: %d events stored, want at least the 3 acknowledged", len(got))
	}
}

// tableDefs is what the server says a database's tables are.
func tableDefs(t *testing.T, s *Store, database string) map[string]string {
	t.Helper()
	ctx := context.Background()
	rows, err := s.conn.Query(ctx, `SELECT name, engine_full, create_table_query FROM system.tables
		WHERE database = ? ORDER BY name`, database)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, engine, create string
		if err := rows.Scan(&name, &engine, &create); err != nil {
			t.Fatal(err)
		}
		out[name] = create
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var versions, rowsN uint64
	if err := s.conn.QueryRow(ctx, "SELECT uniqExact(version), count() FROM schema_migrations FINAL").Scan(&versions, &rowsN); err != nil {
		t.Fatal(err)
	}
	out["schema_migrations rows"] = fmt.Sprintf("%d versions in %d rows", versions, rowsN)
	return out
}

// Applying the DDL again, through Open or statement by statement, changes
// nothing: the migrations are safe to re-run after a crash between a
// statement and its version row.
func TestMigrateTwice(t *testing.T) {
	dsn := clickhousetest.Start(t)
	s := openDSN(t, dsn, Options{})
	defer s.Close()
	before := tableDefs(t, s, s.database)
	if want := fmt.Sprintf("%d versions in %d rows", len(migrations), len(migrations)); before["schema_migrations rows"] != want {
		t.Errorf("after Open: schema_migrations holds %s, want %s", before["schema_migrations rows"], want)
	}
	for _, name := range []string{"reports", "events", "schema_migrations"} {
		if before[name] == "" {
			t.Errorf("after Open: no table %s", name)
		}
	}
	if err := s.Write(context.Background(), nil, []store.Event{testEvent("r1", 0, "a@example.com", event.ClassHard, t0)}); err != nil {
		t.Fatal(err)
	}

	s2 := openDSN(t, dsn, Options{})
	defer s2.Close()
	ctx := context.Background()
	for v, stmts := range migrations {
		for i, stmt := range stmts {
			if err := applyStatement(ctx, s.conn, stmt); err != nil {
				t.Errorf("migration %d statement %d again: %v", v+1, i+1, err)
			}
		}
	}
	if err := migrate(ctx, s.conn); err != nil {
		t.Errorf("migrate again: %v", err)
	}
	if after := tableDefs(t, s, s.database); !reflect.DeepEqual(after, before) {
		t.Errorf("DDL applied twice changed the schema\nbefore %v\n after %v", before, after)
	}
	if got, err := s2.RecipientEvents(ctx, "a@example.com", 10); err != nil || len(got) != 1 {
		t.Errorf("after migrating again, RecipientEvents = %d events, %v; want the 1 written", len(got), err)
	}
}

// A database migrated by a newer binary is refused, not guessed at.
func TestMigrateNewerDatabase(t *testing.T) {
	dsn := clickhousetest.Start(t)
	s := openDSN(t, dsn, Options{})
	ctx := context.Background()
	if err := s.conn.Exec(ctx, insertVersion, uint32(len(migrations)+1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := Open(ctx, dsn, Options{}); err == nil || !strings.Contains(err.Error(), "newer") {
		if s != nil {
			s.Close()
		}
		t.Errorf("Open of a newer database: %v, want an error saying so", err)
	}
}

// The current schema (what ClusterDDL and the INSERT column lists use) is
// what the migrations produce.
func TestSchemaMatchesMigrations(t *testing.T) {
	s := openDSN(t, clickhousetest.Start(t), Options{})
	defer s.Close()
	for _, tbl := range append([]table{migrationsTable}, schema...) {
		got := describeTable(t, s, s.database, tbl.name)
		want := tableShape{columns: tbl.columns, partitionKey: tbl.partitionBy,
			sortingKey: strings.Trim(tbl.orderBy, "()"), engine: tbl.engine()}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("table %s on the server\n got %+v\nwant %+v", tbl.name, got, want)
		}
	}
}

type tableShape struct {
	columns                  []column
	partitionKey, sortingKey string
	engine                   string // engine_full up to PARTITION BY or ORDER BY
}

func describeTable(t *testing.T, s *Store, database, name string) tableShape {
	t.Helper()
	ctx := context.Background()
	var sh tableShape
	var engineFull string
	if err := s.conn.QueryRow(ctx, `SELECT engine_full, partition_key, sorting_key FROM system.tables
		WHERE database = ? AND name = ?`, database, name).Scan(&engineFull, &sh.partitionKey, &sh.sortingKey); err != nil {
		t.Fatalf("table %s.%s: %v", database, name, err)
	}
	sh.engine = engineFull
	for _, clause := range []string{" PARTITION BY ", " ORDER BY ", " SETTINGS "} {
		if i := strings.Index(sh.engine, clause); i >= 0 {
			sh.engine = sh.engine[:i]
		}
	}
	rows, err := s.conn.Query(ctx, `SELECT name, type, default_kind, default_expression FROM system.columns
		WHERE database = ? AND table = ?`, database, name)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			c          column
			kind, expr string
		)
		if err := rows.Scan(&c.name, &c.typ, &kind, &expr); err != nil {
			t.Fatal(err)
		}
		if kind != "" {
			c.typ += " " + kind + " " + expr
		}
		sh.columns = append(sh.columns, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return sh
}

// The Enum8 of class holds exactly event.Classes, so a new class cannot
// slip past validate into a failing INSERT.
func TestClassEnum(t *testing.T) {
	var got []event.Class
	values := map[int8]bool{}
	for _, c := range classEnum {
		got = append(got, c.class)
		if values[c.value] {
			t.Errorf("enum value %d used twice", c.value)
		}
		values[c.value] = true
	}
	if !reflect.DeepEqual(got, event.Classes) {
		t.Errorf("classEnum = %v, want event.Classes %v (add a migration that extends the Enum8)", got, event.Classes)
	}
}

// A server killed while a big Write is on the wire fails that Write (it
// does not hang), and the Write retried after the restart stores the
// batch exactly once, whatever part of it had landed.
func TestKilledMidWrite(t *testing.T) {
	srv := clickhousetest.NewServer(t)
	s := openDSN(t, srv.DSN("killed"), Options{DialTimeout: time.Second, ReadTimeout: 5 * time.Second})
	defer s.Close()

	const reportsN, perReport = 1000, 40
	var reports []store.Report
	var events []store.Event
	for i := range reportsN {
		id := fmt.Sprintf("report-%05d", i)
		// Two months, so the events INSERT makes two parts.
		at := t0.Add(time.Duration(i) * time.Hour)
		reports = append(reports, store.Report{Envelope: event.Envelope{ID: id, Received: at},
			Raw: []byte(strings.Repeat("x", 2048))})
		for j := range perReport {
			e := testEvent(id, j, fmt.Sprintf("u%d@example.com", j), event.Classes[j%len(event.Classes)], at)
			e.Diagnostic = strings.Repeat("d", 200)
			events = append(events, e)
		}
	}

	// Time the same Write into another database, to kill the server
	// during the inserts, after the lookups.
	warm := openDSN(t, srv.DSN("warmup"), Options{})
	start := time.Now()
	if err := warm.Write(context.Background(), reports, events); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	warm.Close()

	done := make(chan error, 1)
	start = time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- s.Write(ctx, reports, events)
	}()
	time.Sleep(took * 6 / 10)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Logf("the Write finished in %v, before the kill: nothing was interrupted", time.Since(start))
		} else {
			t.Logf("Write interrupted after %v (a whole one takes %v): %v", time.Since(start), took, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Write still running 15s after the server was killed")
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Write(ctx, reports, events); err != nil {
		t.Fatalf("retried Write after the restart: %v", err)
	}
	st, err := s.Stats(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, n := range st.EventsByClass {
		total += n
	}
	if st.ReportsReceived != reportsN || total != reportsN*perReport {
		t.Errorf("after the retry: %d reports, %d events; want %d and %d", st.ReportsReceived, total, reportsN, reportsN*perReport)
	}
	if got, err := s.RecipientEvents(ctx, "u7@example.com", 10000); err != nil || len(got) != reportsN {
		t.Errorf("after the retry: RecipientEvents(u7) = %d events, %v; want %d", len(got), err, reportsN)
	}
}

// A report received again later (the remote MTA retried after it missed
// our 250, past JetStream's duplicate window) comes back with the same
// id and, from ingest, events with the same ids but the new received
// time. Within ReportLookback the first write wins for both, as in
// store/sqlite: the events' lookup widens to the stored report's first
// received time. With the default lookback (10 minutes) and a gap of 40
// days, the resend is stored again.
func TestReportReceivedAgain(t *testing.T) {
	first := t0
	again := t0.Add(40 * 24 * time.Hour) // next month's partition
	ctx := context.Background()
	write := func(s *Store, at time.Time, diag string) error {
		r := store.Report{Envelope: event.Envelope{ID: "same-bytes", Received: at}, Raw: []byte("raw")}
		e := testEvent("same-bytes", 0, "a@example.com", event.ClassHard, at)
		e.Diagnostic = diag
		return s.Write(ctx, []store.Report{r}, []store.Event{e})
	}

	s := openDSN(t, clickhousetest.Start(t), Options{ReportLookback: 60 * 24 * time.Hour})
	defer s.Close()
	if err := write(s, first, "first"); err != nil {
		t.Fatal(err)
	}
	if err := write(s, again, "again"); err != nil {
		t.Fatal(err)
	}
	got, err := s.RecipientEvents(ctx, "a@example.com", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].Time.Equal(first) || got[0].Diagnostic != "first" {
		t.Errorf("RecipientEvents after the resend = %+v, want the first write only", got)
	}
	st, err := s.Stats(ctx, first.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if st.ReportsReceived != 0 || st.EventsByClass[event.ClassHard] != 0 {
		t.Errorf("Stats after the first write's time: %d reports, %d hard events; want none", st.ReportsReceived, st.EventsByClass[event.ClassHard])
	}

	bounded := openDSN(t, clickhousetest.Start(t), Options{})
	defer bounded.Close()
	if err := write(bounded, first, "first"); err != nil {
		t.Fatal(err)
	}
	if err := write(bounded, again, "again"); err != nil {
		t.Fatal(err)
	}
	if st, err := bounded.Stats(ctx, first.Add(time.Hour)); err != nil || st.ReportsReceived != 1 {
		t.Errorf("with the default ReportLookback, Stats after the first write's time = %+v, %v; want the resend counted", st, err)
	}
}

// oracleStats is Stats as the store computed it before migration 6
// (commit bc95a21, with IN): straight from events, reports and
// report_versions, each id deduplicated with argMax. The rollup must
// agree with it.
func oracleStats(t *testing.T, s *Store, since time.Time) store.Stats {
	t.Helper()
	ctx := context.Background()
	st := store.NewStats(since)
	from := clampSeconds(since)
	var reports uint64
	if err := s.conn.QueryRow(ctx, `SELECT uniqExact(id) FROM reports WHERE received >= toDateTime(?)`, from).Scan(&reports); err != nil {
		t.Fatal(err)
	}
	st.ReportsReceived = int64(reports)
	rows, err := s.conn.Query(ctx, `SELECT class, reason, provider, count() FROM (
	SELECT argMax(class, version) AS class, argMax(reason, version) AS reason, argMax(provider, version) AS provider,
		argMax(report_id, version) AS rid, max(version) AS v
	FROM events
	WHERE time >= toDateTime(?)
	GROUP BY id
)
WHERE rid = '' OR (rid, v) IN (SELECT report_id, max(version) FROM report_versions GROUP BY report_id)
GROUP BY class, reason, provider`, from)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			class, reason, provider string
			n                       uint64
		)
		if err := rows.Scan(&class, &reason, &provider, &n); err != nil {
			t.Fatal(err)
		}
		st.Add(store.StatsKey{Class: event.Class(class), Reason: event.Reason(reason), Provider: provider}, int64(n))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return st
}

// checkStatsOracle compares Stats with oracleStats over windows that
// start before, inside and between the minutes written.
func checkStatsOracle(t *testing.T, s *Store, wantEvents int64) {
	t.Helper()
	for _, since := range []time.Time{{}, t0.Add(-time.Hour), t0.Truncate(time.Minute), t0.Add(20 * time.Second),
		t0.Add(61 * time.Second), t0.Add(3 * time.Minute), t0.Add(5*time.Minute + 10*time.Second)} {
		got, err := s.Stats(context.Background(), since)
		if err != nil {
			t.Fatalf("Stats(%v): %v", since, err)
		}
		want := oracleStats(t, s, since)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Stats(%v)\n got %d reports, %v\nwant %d reports, %v", since, got.ReportsReceived, got.Events,
				want.ReportsReceived, want.Events)
		}
	}
	var total int64
	st, err := s.Stats(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.EventsByClass {
		total += n
	}
	if total != wantEvents {
		t.Errorf("Stats(all) counts %d events, want %d", total, wantEvents)
	}
}

// statsBatch is n reports (ids prefix0..) of one event each at t0 + at,
// version v and class c, plus n sync events.
func statsBatch(prefix string, n int, at time.Duration, v uint32, c event.Class) ([]store.Report, []store.Event) {
	var (
		reports []store.Report
		events  []store.Event
	)
	for i := range n {
		id := fmt.Sprintf("%s%d", prefix, i)
		reports = append(reports, store.Report{Envelope: event.Envelope{ID: id, Received: t0.Add(at)}})
		e := testEvent(id, 0, fmt.Sprintf("%s%d@example.com", prefix, i), c, t0.Add(at))
		e.Version, e.Provider = v, "gmail"
		events = append(events, e)
		sync := testEvent("", i, fmt.Sprintf("%s%d@example.com", prefix, i), event.ClassDelivered, t0.Add(at))
		sync.ID, sync.Source, sync.Reason, sync.Provider = "sync-"+id, "sync", event.ReasonDelivered, "yahoo"
		events = append(events, sync)
	}
	return reports, events
}

// Stats' rollup (stats_minutes, recounted by every Write) stays what the
// rows say after reclassifications, repeated and concurrent writes of the
// same rows, concurrent writes into one minute, and a Write that stopped
// before its rollup step and was retried; on a single node and through a
// cluster schema's Distributed tables.
func TestStatsRollupExact(t *testing.T) {
	ctx := context.Background()
	write := func(reports []store.Report, events []store.Event) func(*Store) error {
		return func(s *Store) error { return s.Write(ctx, reports, events) }
	}
	concurrently := func(fns ...func(*Store) error) func(*Store) error {
		return func(s *Store) error {
			errs := make(chan error, len(fns))
			for _, fn := range fns {
				go func() { errs <- fn(s) }()
			}
			var first error
			for range fns {
				if err := <-errs; err != nil && first == nil {
					first = err
				}
			}
			return first
		}
	}
	// A Write that stopped after the events and sets, before stats_log.
	rowsOnly := func(reports []store.Report, events []store.Event) func(*Store) error {
		return func(s *Store) error {
			if err := s.insertReports(ctx, reports); err != nil {
				return err
			}
			if err := s.insertEvents(ctx, events); err != nil {
				return err
			}
			return s.insertVersions(ctx, setVersions(events))
		}
	}
	reclass := func(prefix string, n int, at time.Duration, v uint32, c event.Class) func(*Store) error {
		_, events := statsBatch(prefix, n, at, v, c)
		var sets []store.Event
		for _, e := range events {
			if e.ReportID != "" {
				sets = append(sets, e)
			}
		}
		return write(nil, sets)
	}
	// One report of n events at version v.
	set := func(n int, v uint32, c event.Class) func(*Store) error {
		var events []store.Event
		for i := range n {
			e := testEvent("m", i, fmt.Sprintf("m%d@example.com", i), c, t0)
			e.Version = v
			events = append(events, e)
		}
		return write([]store.Report{{Envelope: event.Envelope{ID: "m", Received: t0}}}, events)
	}
	r1, e1 := statsBatch("a", 20, 0, 1, event.ClassHard)
	r2, e2 := statsBatch("b", 20, 10*time.Second, 1, event.ClassSoft)
	r3, e3 := statsBatch("c", 20, 65*time.Second, 1, event.ClassGreylist)
	tests := []struct {
		name   string
		steps  []func(*Store) error
		events int64 // counted in all
	}{
		{"written once", []func(*Store) error{write(r1, e1)}, 40},
		{"written twice", []func(*Store) error{write(r1, e1), write(r1, e1)}, 40},
		{"same batch by four writers at once", []func(*Store) error{
			concurrently(write(r1, e1), write(r1, e1), write(r1, e1), write(r1, e1))}, 40},
		{"three batches into two minutes at once", []func(*Store) error{
			concurrently(write(r1, e1), write(r2, e2), write(r3, e3), write(r1, e1))}, 120},
		{"reclassified", []func(*Store) error{write(r1, e1), reclass("a", 20, 0, 2, event.ClassSoft)}, 40},
		{"some reports reclassified", []func(*Store) error{write(r1, e1), reclass("a", 5, 0, 2, event.ClassSoft)}, 40},
		{"reclassified to fewer events", []func(*Store) error{set(3, 1, event.ClassHard), set(1, 2, event.ClassSoft)}, 1},
		{"reclassified to more events", []func(*Store) error{set(1, 1, event.ClassHard), set(4, 2, event.ClassSoft)}, 4},
		{"reclassified into another minute", []func(*Store) error{
			write(r1, e1), reclass("a", 20, 5*time.Minute+30*time.Second, 2, event.ClassComplaint)}, 40},
		{"reclassified while others write the minute", []func(*Store) error{write(r1, e1),
			concurrently(reclass("a", 20, 0, 2, event.ClassSoft), write(r2, e2), reclass("a", 10, 0, 3, event.ClassUnknown), write(r2, e2))}, 80},
		{"reclassified twice at once", []func(*Store) error{write(r1, e1),
			concurrently(reclass("a", 20, 0, 2, event.ClassSoft), reclass("a", 20, 0, 2, event.ClassSoft))}, 40},
		{"stopped before the rollup, then retried", []func(*Store) error{rowsOnly(r1, e1), write(r1, e1)}, 40},
		{"at DateTime's last second", []func(*Store) error{func(s *Store) error {
			e := testEvent("last", 0, "last@example.com", event.ClassHard, maxTime)
			return s.Write(ctx, []store.Report{{Envelope: event.Envelope{ID: "last", Received: maxTime}}}, []store.Event{e})
		}}, 1},
		{"old version written after the new", []func(*Store) error{
			reclass("a", 20, 0, 2, event.ClassSoft), write(r1, e1)}, 40},
	}
	outer := t
	setups := []struct {
		name string
		open func(t *testing.T) *Store
	}{
		{"single node", func(t *testing.T) *Store { return openDSN(t, clickhousetest.Start(t), Options{}) }},
		{"cluster", func() func(t *testing.T) *Store {
			var (
				srv   *clickhousetest.Server
				admin *Store
			)
			return func(t *testing.T) *Store {
				if srv == nil { // one server for the whole test
					srv = clickhousetest.NewServerOptions(outer, clickhousetest.Options{Cluster: true})
					admin = openDSN(outer, srv.DSN("admin"), Options{})
					outer.Cleanup(func() { admin.Close() })
				}
				db := clickhousetest.NewDatabaseName(t)
				createClusterDatabase(t, admin.conn, db)
				return openDSN(t, srv.DSN(db)+"&prefer_localhost_replica=0", Options{})
			}
		}()},
	}
	for _, setup := range setups {
		for _, tt := range tests {
			t.Run(setup.name+"/"+tt.name, func(t *testing.T) {
				s := setup.open(t)
				defer s.Close()
				for i, step := range tt.steps {
					if err := step(s); err != nil {
						t.Fatalf("step %d: %v", i+1, err)
					}
				}
				checkStatsOracle(t, s, tt.events)
			})
		}
	}
}

// A database at schema version 5 with rows in it migrates to 6, also
// when an earlier run of migration 6 stopped after any of its
// statements: histories and Stats read what they read before, the
// rebuilt tables have granularity 1024, no temporary table is left.
func TestMigrateFromVersion5(t *testing.T) {
	ctx := context.Background()
	v6 := migrations[5]
	for _, stopAfter := range []int{0, 1, 2, 3, 4, 7, 9, 12, len(v6) - 1} {
		t.Run(fmt.Sprintf("stopped after statement %d", stopAfter), func(t *testing.T) {
			dsn := clickhousetest.Start(t)
			conn := openVersion5(t, dsn)
			defer conn.Close()
			// Version 5's rows, as its Write stored them: a report
			// reclassified to a smaller set, a second report, a sync event.
			for _, q := range []string{
				`INSERT INTO reports (id, received, return_path, recipients, client_ip, helo, tls, raw, parse_error)
SELECT concat('r', toString(number)), toDateTime(1764081481 + number * 30), '', [], '', '', '', 'raw', '' FROM numbers(2)`,
				`INSERT INTO events (id, version, report_id, idx, time, source, recipient, class, reason, scope, status,
	reply_code, action, diagnostic, remote_mta, reporting_mta, smtp_command, provider, parser, rule, message_id, stream, return_path)
SELECT concat('e', toString(number)), 1, if(number < 3, 'r0', if(number < 4, 'r1', '')), number, toDateTime(if(number < 3, 1764081481, 1764081511)),
	'ndr', concat('u', toString(number % 2), '@example.com'), 'hard', 'userunknown', 'recipient', '5.1.1', 550, 'failed',
	'', '', '', '', 'gmail', '', '', '', '', '' FROM numbers(5)`,
				`INSERT INTO events (id, version, report_id, idx, time, source, recipient, class, reason, scope, status,
	reply_code, action, diagnostic, remote_mta, reporting_mta, smtp_command, provider, parser, rule, message_id, stream, return_path)
SELECT 'e0', 2, 'r0', 0, toDateTime(1764081481), 'ndr', 'u0@example.com', 'soft', 'mailboxfull', 'recipient', '4.2.2', 452, 'delayed',
	'', '', '', '', 'gmail', '', '', '', '', ''`,
				`INSERT INTO report_versions (report_id, version) SELECT 'r0', 1`,
				`INSERT INTO report_versions (report_id, version) SELECT 'r1', 1`,
				`INSERT INTO report_versions (report_id, version) SELECT 'r0', 2`,
			} {
				if err := conn.Exec(ctx, q); err != nil {
					t.Fatalf("%v\n%s", err, q)
				}
			}
			for i := 0; i <= stopAfter && i < len(v6); i++ {
				if err := applyStatement(ctx, conn, v6[i]); err != nil {
					t.Fatalf("statement %d: %v", i+1, err)
				}
			}

			s := openDSN(t, dsn, Options{})
			defer s.Close()
			if v, err := schemaVersion(ctx, s.conn); err != nil || v != len(migrations) {
				t.Fatalf("schema version %d, %v; want %d", v, err, len(migrations))
			}
			for _, tc := range []struct {
				address string
				ids     []string
			}{{"u0@example.com", []string{"e0", "e4"}}, {"u1@example.com", []string{"e3"}}} {
				got, err := s.RecipientEvents(ctx, tc.address, 10)
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, e := range got {
					ids = append(ids, e.ID)
				}
				slices.Sort(ids)
				if !reflect.DeepEqual(ids, tc.ids) {
					t.Errorf("RecipientEvents(%s) = %v, want %v", tc.address, ids, tc.ids)
				}
			}
			checkStatsOracle(t, s, 3) // e0 v2, e3, e4
			// A Write into the migrated minute sums it from its seconds
			// (migration 7), which must hold the ones stored before.
			late := testEvent("r9", 0, "u9@example.com", event.ClassSoft, t0.Add(5*time.Second))
			if err := s.Write(ctx, []store.Report{{Envelope: event.Envelope{ID: "r9", Received: late.Time}}}, []store.Event{late}); err != nil {
				t.Fatal(err)
			}
			checkStatsOracle(t, s, 4)
			defs := tableDefs(t, s, s.database)
			for name, def := range defs {
				if strings.HasSuffix(name, "_g1024") || strings.HasSuffix(name, "_v5") {
					t.Errorf("table %s left behind", name)
				}
				if (name == "events" || name == "report_versions") && !strings.Contains(def, "index_granularity = 1024") {
					t.Errorf("%s after the migration: %s", name, def)
				}
			}
		})
	}
}

// openVersion5 creates the DSN's database at schema version 5 and
// returns a connection to it.
func openVersion5(t testing.TB, dsn string) driver.Conn {
	t.Helper()
	return openVersion(t, dsn, 5)
}

// openVersion creates the DSN's database at schema version v and
// returns a connection to it.
func openVersion(t testing.TB, dsn string, v int) driver.Conn {
	t.Helper()
	ctx := context.Background()
	co, err := ch.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if err := createDatabase(ctx, *co, co.Auth.Database); err != nil {
		t.Fatal(err)
	}
	co.ReadTimeout = 30 * time.Minute
	conn, err := ch.Open(co)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, createMigrations); err != nil {
		t.Fatal(err)
	}
	for v, stmts := range migrations[:v] {
		for _, stmt := range stmts {
			if err := applyStatement(ctx, conn, stmt); err != nil {
				t.Fatal(err)
			}
		}
		if err := conn.Exec(ctx, insertVersion, uint32(v+1)); err != nil {
			t.Fatal(err)
		}
	}
	return conn
}
