package main

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver bouncer uses

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse"
	"github.com/bouncer-mail/bouncer/store/sqlite"
)

// The loaded suppressions: key i (0 <= i < n) is address(i), on the
// stream "news" when i%4 == 3 and on every stream otherwise; a soft
// suppression for 30 days when i%10 == 0, a hard one without end
// otherwise; a manual one (actor "ops") when i%50 == 1, the policy's
// otherwise; started sinceMargin and up to 30 days more before the load
// (keySince). Every one is in force, so the
// export holds n rows and a check of address(i) says suppressed. The
// misses, missAddress(j), are addresses of the same form that sort among
// them.
func address(i int) string { return fmt.Sprintf("user%d@example%d.com", i, i%1000) }

// missAddress is an address never suppressed: past the loaded range.
func missAddress(n, j int) string { return address(n + j) }

// sinceMargin is how long before the load the latest loaded suppression
// started. The answers are judged against the wall clock, so a row that
// started at the load's own instant is in force only while bouncer's
// clock is not behind the load's: the reliability clock-jump scenario,
// which steps the host's clock 10 min ahead and back, ran as the 00:19
// run of 2026-11-26 loaded ClickHouse, and 3 hits of keys that started in
// those 10 minutes were rightly answered "not suppressed" (README.md).
// With the margin every row is in force for a bouncer up to an hour
// behind the load's clock, so a wrong answer is bouncer's.
const sinceMargin = time.Hour

// keySince is when key i's suppression started, for a load at now: key
// i started i seconds (modulo 30 days) before the newest one.
func keySince(i int, now time.Time) time.Time {
	return now.Add(-sinceMargin - time.Duration(i%2592000)*time.Second)
}

// The loaders stamp the rows (since, until, and in -load sql the
// version) with now: the tool's clock at the load, plus -load-clock-offset
// (a writer whose clock is off).

// loadSQLite creates bouncer's database at path with the store's own
// Open (schema and migrations), then inserts n suppressions with one
// recursive INSERT ... SELECT in one transaction.
func loadSQLite(path string, n int, now time.Time) error {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		return err
	}
	if err := s.Close(); err != nil {
		return err
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	_, err = db.ExecContext(ctx, `WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?)
INSERT INTO suppressions (address, stream, source, class, reason, rule, since, until, actor, note, updated)
SELECT a, CASE i % 4 WHEN 3 THEN 'news' ELSE '' END,
	CASE i % 50 WHEN 1 THEN 'manual' ELSE 'policy' END,
	CASE i % 10 WHEN 0 THEN 'soft' ELSE 'hard' END,
	CASE i % 10 WHEN 0 THEN 'mailboxfull' ELSE 'userunknown' END,
	CASE WHEN i % 50 = 1 THEN '' WHEN i % 10 = 0 THEN 'soft' ELSE 'hard' END,
	? - (i % 2592000) * 1000000000,
	CASE i % 10 WHEN 0 THEN ? ELSE 0 END,
	CASE i % 50 WHEN 1 THEN 'ops' ELSE 'policy' END,
	'550 5.1.1 <' || a || '>: Recipient address rejected: User unknown in virtual mailbox table',
	?
FROM (SELECT i, 'user' || i || '@example' || (i % 1000) || '.com' AS a FROM k)`,
		n, keySince(0, now).UnixNano(), now.Add(30*24*time.Hour).UnixNano(), now.Add(-time.Minute).UnixNano())
	if err != nil {
		return err
	}
	var got int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM suppressions").Scan(&got); err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("%d suppressions stored, want %d", got, n)
	}
	return nil
}

// loadClickHouse creates the database the DSN names with the store's own
// Open, then inserts n suppressions server-side (INSERT ... SELECT FROM
// numbers()), and a newer version of every 100th key as a second part.
func loadClickHouse(dsn string, n int, now time.Time) error {
	ctx := context.Background()
	s, err := clickhouse.Open(ctx, dsn, clickhouse.Options{})
	if err != nil {
		return err
	}
	if err := s.Close(); err != nil {
		return err
	}
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		return err
	}
	conn, err := ch.Open(opts)
	if err != nil {
		return err
	}
	defer conn.Close()
	const columns = `(address, stream, version, removed, source, class, reason, rule, since, until, actor, note)`
	if err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO suppressions %s
SELECT a, if(number %% 4 = 3, 'news', ''), toUInt64(%d), toUInt8(0),
	if(number %% 50 = 1, 'manual', 'policy'),
	if(number %% 10 = 0, 'soft', 'hard'),
	if(number %% 10 = 0, 'mailboxfull', 'userunknown'),
	multiIf(number %% 50 = 1, '', number %% 10 = 0, 'soft', 'hard'),
	toInt64(%d) - toInt64(number %% 2592000) * 1000000000,
	if(number %% 10 = 0, toInt64(%d), toInt64(0)),
	if(number %% 50 = 1, 'ops', 'policy'),
	concat('550 5.1.1 <', a, '>: Recipient address rejected: User unknown in virtual mailbox table')
FROM (SELECT number, concat('user', toString(number), '@example', toString(number %% 1000), '.com') AS a FROM numbers(%d))`,
		columns, now.Add(-time.Minute).UnixNano(), keySince(0, now).UnixNano(), now.Add(30*24*time.Hour).UnixNano(), n)); err != nil {
		return err
	}
	if err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO suppressions %s
SELECT address, stream, version + 1, removed, source, class, reason, rule, since, until, actor, concat(note, ' (newer)')
FROM suppressions WHERE cityHash64(address) %% 100 = 0`, columns)); err != nil {
		return err
	}
	var keys uint64
	if err := conn.QueryRow(ctx, "SELECT uniqExact(address, stream) FROM suppressions").Scan(&keys); err != nil {
		return err
	}
	if keys != uint64(n) {
		return fmt.Errorf("%d suppression keys stored, want %d", keys, n)
	}
	return nil
}

// loadBatch is the rows a store-path load puts in one PutSuppressions,
// as the import API does with its batches.
const loadBatch = 50_000

// suppressionRow is key i's suppression as the loaders describe it.
func suppressionRow(i int, now time.Time) store.Suppression {
	a := address(i)
	s := store.Suppression{
		Address: a, Source: store.SourcePolicy, Class: event.ClassHard, Reason: event.ReasonUserUnknown,
		Rule: "hard", Since: keySince(i, now), Actor: "policy",
		Note: "550 5.1.1 <" + a + ">: Recipient address rejected: User unknown in virtual mailbox table",
	}
	if i%4 == 3 {
		s.Stream = "news"
	}
	if i%10 == 0 {
		s.Class, s.Reason, s.Rule = event.ClassSoft, event.ReasonMailboxFull, "soft"
		s.Until = now.Add(30 * 24 * time.Hour)
	}
	if i%50 == 1 {
		s.Source, s.Rule, s.Actor = store.SourceManual, "", "ops"
	}
	return s
}

// loadStore puts n suppressions through the store's own write path,
// store.Store.PutSuppressions, loadBatch rows a call (validation,
// versions, the audit trail: what POST /v1/suppressions:import does
// with a CSV), then puts every 100th key again, a newer version of it,
// as a table that has seen updates holds. It runs before bouncer starts,
// in this process: the HTTP import would add CSV parsing and the
// transfer, not the write the checks and the export read.
func loadStore(engine, path, dsn string, n int, now time.Time) error {
	ctx := context.Background()
	var (
		s   store.SuppressionStore
		err error
	)
	if engine == "clickhouse" {
		var c *clickhouse.Store
		c, err = clickhouse.Open(ctx, dsn, clickhouse.Options{})
		s = c
		if err == nil {
			defer c.Close()
		}
	} else {
		var q *sqlite.Store
		q, err = sqlite.Open(ctx, path, sqlite.Options{})
		s = q
		if err == nil {
			defer q.Close()
		}
	}
	if err != nil {
		return err
	}
	put := func(keys []int) error {
		batch := make([]store.Suppression, 0, loadBatch)
		for _, i := range keys {
			batch = append(batch, suppressionRow(i, now))
			if len(batch) == loadBatch {
				if err := s.PutSuppressions(ctx, batch); err != nil {
					return err
				}
				batch = batch[:0]
			}
		}
		return s.PutSuppressions(ctx, batch)
	}
	keys := make([]int, 0, loadBatch)
	for lo := 0; lo < n; lo += loadBatch {
		keys = keys[:0]
		for i := lo; i < min(n, lo+loadBatch); i++ {
			keys = append(keys, i)
		}
		if err := put(keys); err != nil {
			return err
		}
	}
	keys = keys[:0]
	for i := 0; i < n; i += 100 {
		keys = append(keys, i)
	}
	if err := put(keys); err != nil {
		return err
	}
	st, err := s.SuppressionStats(ctx, time.Now())
	if err != nil {
		return err
	}
	if st.Total != int64(n) {
		return fmt.Errorf("%d suppressions in force after the load, want %d", st.Total, n)
	}
	return nil
}
