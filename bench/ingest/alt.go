package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// What the query mode measured after the store's own queries before
// migration 6 (run it without -no-fix to measure them again): the same
// queries with plain IN for GLOBAL IN (a query change only), and on
// layouts a migration could add (new tables, filled here the way a
// migration's backfill would, fed by materialized views or Write after
// it). 18.16 has no data skipping indices (no INDEX clause, no
// allow_experimental_data_skipping_indices setting), so a different
// sorting key is the only way to prune by time in a table sorted by
// recipient.
//
// Migration 6 (store/clickhouse/doc.go "Query plans") took three of them
// into the store: plain IN on a single node, index granularity 1024 on
// events and report_versions, and per-minute counts for Stats, which the
// store keeps exact with recounts (stats_log, stats_minutes) rather than
// the increments of stats_by_minute here. On a migrated database,
// events_g1024 and report_versions_g1024 below copy tables that are at
// 1024 already.

// recipientEventsQuery is store/clickhouse/query.go's selectRecipientEvents
// (commit bc95a21) with its tables and its IN kind as parameters.
func recipientEventsQuery(events, versions, in string) string {
	return strings.NewReplacer("{events}", events, "{versions}", versions, "{in}", in).Replace(`SELECT id,
	t.1, t.2, t.3, t.4, t.5, t.6, t.7, t.8, t.9, t.10,
	t.11, t.12, t.13, t.14, t.15, t.16, t.17, t.18, t.19, t.20,
	t.21, t.22
FROM (
	SELECT id, argMax(tuple(version, report_id, idx, time, source,
		recipient, class, reason, scope, status, reply_code, action, diagnostic,
		remote_mta, reporting_mta, smtp_command, provider, parser, rule, message_id,
		stream, return_path), version) AS t
	FROM {events}
	WHERE recipient = ?
	GROUP BY id
)
WHERE t.2 = '' OR (t.2, t.1) {in} (
	SELECT report_id, max(version) FROM {versions}
	WHERE report_id {in} (SELECT report_id FROM {events} WHERE recipient = ? AND report_id != '')
	GROUP BY report_id
)
ORDER BY t.4 DESC, id
LIMIT ?`)
}

// statsQueries are store/clickhouse/query.go's two Stats statements
// (selectReportsReceived, selectEventsByClass, commit bc95a21) with plain
// IN, grouped by the given columns.
func statsQueries(groupBy string) [2]string {
	return [2]string{
		`SELECT uniqExact(id) FROM reports WHERE received >= toDateTime(?)`,
		`SELECT ` + groupBy + `, count() FROM (
	SELECT ` + dedupColumns(groupBy) + `, argMax(report_id, version) AS rid, max(version) AS v
	FROM events
	WHERE time >= toDateTime(?)
	GROUP BY id
)
WHERE rid = '' OR (rid, v) IN (
	SELECT report_id, max(version) FROM report_versions
	WHERE report_id IN (SELECT report_id FROM events WHERE time >= toDateTime(?) AND report_id != '')
	GROUP BY report_id
)
GROUP BY ` + groupBy,
	}
}

// dedupColumns is each grouping column's value of the id's highest
// version, for "class, reason, provider" or a part of it.
func dedupColumns(groupBy string) string {
	var cols []string
	for _, c := range strings.Split(groupBy, ",") {
		c = strings.TrimSpace(c)
		cols = append(cols, "argMax("+c+", version) AS "+c)
	}
	return strings.Join(cols, ", ")
}

// timeTables are the time-sorted companions a migration could add for
// windowed counts: narrow copies of events and reports sorted by time,
// and report_sets, the set versions of report_versions with the report's
// time, so the version check reads the window only. Each is filled from
// the base tables here; in production materialized views (events_by_time,
// reports_by_time) and Write (report_sets, which the events cannot feed
// without losing report_versions' role as the commit mark of a set) would
// keep them current.
var timeTables = []struct{ name, ddl, fill string }{
	{"events_by_time", `CREATE TABLE IF NOT EXISTS events_by_time (
	time DateTime('UTC'), id String, version UInt32, report_id String,
	class Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	reason String, scope String, provider String
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(time)
ORDER BY (time, id)`,
		`INSERT INTO events_by_time SELECT time, id, version, report_id, class, reason, scope, provider FROM events`},
	{"reports_by_time", `CREATE TABLE IF NOT EXISTS reports_by_time (received DateTime('UTC'), id String)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received)
ORDER BY (received, id)`,
		`INSERT INTO reports_by_time SELECT received, id FROM reports`},
	{"report_sets", `CREATE TABLE IF NOT EXISTS report_sets (time DateTime('UTC'), report_id String, version UInt32)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(time)
ORDER BY (time, report_id)`,
		`INSERT INTO report_sets SELECT any(e.time), v.report_id, v.version
FROM report_versions AS v ANY INNER JOIN (SELECT report_id, min(time) AS time FROM events WHERE report_id != '' GROUP BY report_id) AS e USING report_id
GROUP BY v.report_id, v.version`},
	// Per-minute counts, exact at the time they are computed (each id
	// once, in its highest committed set). A materialized view cannot
	// keep them exact: a reclassified set would add its events without
	// taking the old set's away. So whoever writes events (ingest after a
	// batch, reclassify after a report) would recompute the minutes it
	// touched; this measures what reading such rollups costs.
	{"stats_by_minute", `CREATE TABLE IF NOT EXISTS stats_by_minute (
	minute DateTime('UTC'), provider String,
	class Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	reason String,
	events UInt64
)
ENGINE = SummingMergeTree(events)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, provider, class, reason)`,
		`INSERT INTO stats_by_minute SELECT toStartOfMinute(t), provider, class, reason, count() FROM (
	SELECT argMax(class, version) AS class, argMax(provider, version) AS provider, argMax(reason, version) AS reason,
		any(time) AS t, argMax(report_id, version) AS rid, max(version) AS v
	FROM events GROUP BY id
)
WHERE rid = '' OR (rid, v) IN (SELECT report_id, max(version) FROM report_versions GROUP BY report_id)
GROUP BY toStartOfMinute(t), provider, class, reason`},
	{"reports_by_minute", `CREATE TABLE IF NOT EXISTS reports_by_minute (minute DateTime('UTC'), reports UInt64)
ENGINE = SummingMergeTree(reports)
PARTITION BY toYYYYMM(minute)
ORDER BY minute`,
		`INSERT INTO reports_by_minute SELECT toStartOfMinute(received), uniqExact(id) FROM reports GROUP BY toStartOfMinute(received)`},
	// The recipient tables again at a finer index granularity: a point
	// lookup reads one granule per part, 8,192 rows by default.
	{"events_g1024", `CREATE TABLE IF NOT EXISTS events_g1024 AS events
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(time)
ORDER BY (recipient, time, id)
SETTINGS index_granularity = 1024`,
		`INSERT INTO events_g1024 SELECT * FROM events`},
	{"report_versions_g1024", `CREATE TABLE IF NOT EXISTS report_versions_g1024 AS report_versions
ENGINE = ReplacingMergeTree(version)
ORDER BY report_id
SETTINGS index_granularity = 1024`,
		`INSERT INTO report_versions_g1024 SELECT * FROM report_versions`},
}

// statsByTime is a windowed count on the time-sorted tables: events of
// the window deduplicated per id (argMax by version), kept when sync or
// in their report's highest set, the sets read from the window too (a
// report's events carry its received time, so its sets lie in the same
// window).
func statsByTime(groupBy string) [2]string {
	return [2]string{
		`SELECT uniqExact(id) FROM reports_by_time WHERE received >= toDateTime(?)`,
		`SELECT ` + groupBy + `, count() FROM (
	SELECT ` + dedupColumns(groupBy) + `, argMax(report_id, version) AS rid, max(version) AS v
	FROM events_by_time
	WHERE time >= toDateTime(?)
	GROUP BY id
)
WHERE rid = '' OR (rid, v) IN (
	SELECT report_id, max(version) FROM report_sets WHERE time >= toDateTime(?) GROUP BY report_id
)
GROUP BY ` + groupBy,
	}
}

// statsByMinute reads the rollups: whole minutes from the window's
// start (an exact count would add the partial first minute from
// events_by_time).
func statsByMinute(groupBy string) [2]string {
	return [2]string{
		`SELECT sum(reports) FROM reports_by_minute WHERE minute >= toStartOfMinute(toDateTime(?))`,
		`SELECT ` + groupBy + `, sum(events) FROM stats_by_minute
WHERE minute >= toStartOfMinute(toDateTime(?))
GROUP BY ` + groupBy,
	}
}

func alternatives(ctx context.Context, c config, conn driver.Conn, pick func() string, since func(time.Duration) time.Time) error {
	fmt.Println("\nalternatives, measured the same way: the queries with IN for GLOBAL IN, and on companion tables a migration could add")
	for _, t := range timeTables {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", t.name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			continue // -reuse
		}
		start := time.Now()
		if err := conn.Exec(ctx, t.ddl); err != nil {
			return fmt.Errorf("creating %s: %w", t.name, err)
		}
		if err := conn.Exec(ctx, t.fill); err != nil {
			return fmt.Errorf("filling %s: %w", t.name, err)
		}
		fmt.Printf("filled %s in %.1f s\n", t.name, time.Since(start).Seconds())
	}
	if err := waitMerges(ctx, conn, 15*time.Minute); err != nil {
		return err
	}
	fmt.Println("companion tables (DDL in bench/ingest/alt.go):")
	for _, t := range timeTables {
		var parts, rows, bytes uint64
		if err := conn.QueryRow(ctx, `SELECT count(), sum(rows), sum(bytes) FROM system.parts
WHERE active AND database = currentDatabase() AND table = ?`, t.name).Scan(&parts, &rows, &bytes); err != nil {
			return err
		}
		fmt.Printf("  %-22s %d rows, %d parts, %.0f MB\n", t.name, rows, parts, float64(bytes)/1e6)
	}

	recipient := func(events, versions, in string) func(context.Context, int) error {
		q := recipientEventsQuery(events, versions, in)
		return func(ctx context.Context, _ int) error {
			r := pick()
			return drain(ctx, conn, q, r, r, uint64(100))
		}
	}
	stats := func(qs [2]string, window time.Duration) func(context.Context, int) error {
		return func(ctx context.Context, _ int) error {
			from := uint32(since(window).Unix())
			var n uint64
			if err := conn.QueryRow(ctx, qs[0], from).Scan(&n); err != nil {
				return err
			}
			args := make([]any, strings.Count(qs[1], "?"))
			for i := range args {
				args[i] = from
			}
			return drain(ctx, conn, qs[1], args...)
		}
	}
	const grouping = "class, reason, provider" // Stats'
	alts := []timedQuery{
		{name: "recipient history, IN", run: recipient("events", "report_versions", "IN")},
		{name: "recipient history, IN, granularity 1024", run: recipient("events_g1024", "report_versions_g1024", "IN")},
		{name: "Stats 24h, IN", run: stats(statsQueries(grouping), 24*time.Hour)},
		{name: "Stats 1h, time-sorted tables", run: stats(statsByTime(grouping), time.Hour)},
		{name: "Stats 24h, time-sorted tables", run: stats(statsByTime(grouping), 24*time.Hour)},
		{name: "Stats 30d, time-sorted tables", iterations: 3, run: stats(statsByTime(grouping), 30*24*time.Hour)},
		{name: "Stats 24h, per-minute rollups", run: stats(statsByMinute(grouping), 24*time.Hour)},
		{name: "Stats 30d, per-minute rollups", run: stats(statsByMinute(grouping), 30*24*time.Hour)},
	}
	for r := range c.rounds {
		fmt.Printf("\nround %d: alternatives\n", r+1)
		if err := runQueries(ctx, c, conn, alts); err != nil {
			return err
		}
	}
	return nil
}
