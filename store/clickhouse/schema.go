package clickhouse

import (
	"fmt"
	"strings"

	"github.com/bouncer-mail/bouncer/event"
)

// column is one column of a table: its name and ClickHouse type.
//
// typ may end in a DEFAULT clause (columns added by ALTER TABLE ... ADD
// COLUMN, which gives older parts the default).
type column struct {
	name, typ string
}

// table describes one table of the schema, once, for both the single-node
// DDL (migrations) and the cluster DDL (ClusterDDL). Only types, engines
// and clauses that ClickHouse 18.16 and current releases both accept:
// MergeTree family, PARTITION BY / ORDER BY, DateTime, Enum8, String,
// Array(String), unsigned integers.
type table struct {
	name        string
	columns     []column
	version     string // ReplacingMergeTree's version column; "" keeps the last row
	partitionBy string // "" for none
	orderBy     string
	shardingKey string // the Distributed table's, in the cluster variant
	// appendOnly makes the engine MergeTree, which keeps every row,
	// instead of ReplacingMergeTree (an audit log, whose rows may share
	// a sorting key).
	appendOnly bool
	// settings is the SETTINGS clause's content, "" for none.
	settings string
}

// classEnum is the Enum8 of event.Class. Values are never renumbered: a
// new class gets the next number in a new migration (ALTER TABLE events
// MODIFY COLUMN class Enum8(...), a metadata-only change).
var classEnum = []struct {
	class event.Class
	value int8
}{
	{event.ClassHard, 1},
	{event.ClassSoft, 2},
	{event.ClassGreylist, 3},
	{event.ClassComplaint, 4},
	{event.ClassAutoreply, 5},
	{event.ClassDelivered, 6},
	{event.ClassUnknown, 7},
}

func classEnumType() string {
	parts := make([]string, len(classEnum))
	for i, c := range classEnum {
		parts[i] = fmt.Sprintf("'%s' = %d", c.class, c.value)
	}
	return "Enum8(" + strings.Join(parts, ", ") + ")"
}

// reportsTable holds the raw reports. Its id is the hex SHA-256 of raw, so
// two rows with one id hold the same message; ORDER BY id lets Write find
// the ids already stored with an index lookup.
var reportsTable = table{
	name: "reports",
	columns: []column{
		{"id", "String"},
		{"received", "DateTime('UTC')"},
		{"return_path", "String"},
		{"recipients", "Array(String)"},
		{"client_ip", "String"},
		{"helo", "String"},
		{"tls", "String"},
		{"raw", "String"},
		{"parse_error", "String"},
	},
	partitionBy: "toYYYYMM(received)",
	orderBy:     "id",
	shardingKey: "cityHash64(id)",
}

// eventsTable holds the events, one row per id and version. ORDER BY
// starts with the recipient, so a recipient's history is one key range;
// the version column makes merges keep an id's highest version, and reads
// pick it with argMax before any merge happened (see query.go).
var eventsTable = table{
	name: "events",
	columns: []column{
		{"id", "String"},
		{"version", "UInt32"},
		{"report_id", "String"},
		{"idx", "UInt32"},
		{"time", "DateTime('UTC')"},
		{"source", "String"},
		{"recipient", "String"},
		{"class", classEnumType()},
		{"reason", "String"},
		{"scope", "String"},
		{"status", "String"},
		{"reply_code", "UInt16"},
		{"action", "String"},
		{"diagnostic", "String"},
		{"remote_mta", "String"},
		{"reporting_mta", "String"},
		{"smtp_command", "String"},
		{"provider", "String"},
		{"parser", "String"},
		{"rule", "String"},
		{"message_id", "String"},
		{"stream", "String DEFAULT ''"},
		{"return_path", "String DEFAULT ''"},
	},
	version:     "version",
	partitionBy: "toYYYYMM(time)",
	orderBy:     "(recipient, time, id)",
	// Every row of one sorting key on one shard, so merges collapse its
	// versions, and a recipient's history on one shard.
	shardingKey: "cityHash64(recipient)",
	// A recipient's history is one key range in each part, read a
	// granule at a time: 1,024 rows instead of 8,192 (migration 6).
	settings: "index_granularity = 1024",
}

// reportVersionsTable records, per report, the versions its event sets
// were written with: readers take a report's events of its highest
// version only (see query.go). ORDER BY starts with report_id, so a
// report's rows are found with an index lookup, which the events table
// (sorted by recipient) cannot; merges keep the highest version per
// (report_id, time). Write inserts a report's rows after its events, so
// they are the commit mark of a new set: until they are in, readers keep
// showing the old set.
//
// time (migration 6) is a time of the set's events, one row per
// distinct time: Write looks up the times of a report's earlier sets to
// recount the minutes they lie in (stats_minutes).
var reportVersionsTable = table{
	name: "report_versions",
	columns: []column{
		{"report_id", "String"},
		{"version", "UInt32"},
		{"time", "DateTime('UTC')"},
	},
	version:     "version",
	orderBy:     "(report_id, time)",
	shardingKey: "cityHash64(report_id)",
	settings:    "index_granularity = 1024",
}

// reportKeysTable is what Write looks a batch's report ids up in: a
// 64-bit key per id (cityHash64 of the id, which the Go side computes
// with the same function, reportKey) at the time it was received, sorted
// by that time. The reports table is sorted by id, and ids are SHA-256s:
// a batch's ids fall in every granule of every part, so looking them up
// there read about the whole id column each Write, more as the table
// grew (docs/reliability.md, session 17). Here a lookup reads the keys
// received within Options.ReportLookback of the batch, 12 bytes a key,
// however much is stored (migration 8). A key found is only a candidate:
// Write confirms it in reports.
var reportKeysTable = table{
	name: "report_keys",
	columns: []column{
		{"received", "DateTime('UTC')"},
		{"key", "UInt64"},
	},
	partitionBy: "toYYYYMM(received)",
	orderBy:     "(received, key)",
	shardingKey: "key",
}

// statsKindEnum is stats_log's kind: an event version, a set's commit
// mark, a report received.
const statsKindEnum = "Enum8('event' = 1, 'set' = 2, 'report' = 3)"

// statsLogTable is what Stats counts, narrow and sorted by time: one row
// per event (id, version) written, per report set committed (kind 'set',
// at each time of the set's events and of the report's earlier sets) and
// per report received (kind 'report'). Append-only: rows are never
// collapsed, so the number of distinct keys in a minute only grows as
// rows arrive, which is what orders the recounts of stats_minutes (gen).
// Sharded by minute in a cluster: a minute's rows meet on one shard, so
// one recount reads them from one snapshot.
var statsLogTable = table{
	name: "stats_log",
	columns: []column{
		{"time", "DateTime('UTC')"},
		{"kind", statsKindEnum},
		{"report_id", "String"},
		{"id", "String"},
		{"version", "UInt32"},
		{"class", classEnumType()},
		{"reason", "String"},
		{"provider", "String"},
	},
	partitionBy: "toYYYYMM(time)",
	orderBy:     "(time, report_id, id)",
	shardingKey: "intDiv(toUInt32(time), 60)",
	appendOnly:  true,
	// A recount reads a minute, a few hundred rows at 10 million events
	// a month: granules of 1,024 rows instead of 8,192 per part.
	settings: "index_granularity = 1024",
}

// statsSecondsTable holds exact per-second counts: one recount of a
// second (gen: the number of distinct stats_log keys it saw) is a row per
// (class, reason, provider) counted plus a total row (total = 1) with the
// second's reports. Reads take, per second, the rows of its highest gen
// only; merges keep each key's highest gen. Sharded by minute like
// stats_log, so a minute's seconds meet on one shard.
var statsSecondsTable = table{
	name: "stats_seconds",
	columns: []column{
		{"second", "DateTime('UTC')"},
		{"gen", "UInt64"},
		{"total", "UInt8"},
		{"class", classEnumType()},
		{"reason", "String"},
		{"provider", "String"},
		{"events", "UInt64"},
		{"reports", "UInt64"},
	},
	version:     "gen",
	partitionBy: "toYYYYMM(second)",
	orderBy:     "(second, total, class, reason, provider)",
	shardingKey: "intDiv(toUInt32(second), 60)",
}

// statsMinutesTable holds exact per-minute counts, each the sum of the
// minute's seconds (stats_seconds) as one read of them saw them: a row
// per (class, reason, provider) plus a total row (total = 1) with the
// minute's reports, stamped with gen, 2 × the sum of the seconds' gens +
// 1 (odd, so that it is above the gen of a recount of the minute made
// from stats_log by migration 6, which counted the same keys). Reads
// take, per minute, the rows of its highest gen only; merges keep each
// key's highest gen. Sharded by minute like stats_log.
var statsMinutesTable = table{
	name: "stats_minutes",
	columns: []column{
		{"minute", "DateTime('UTC')"},
		{"gen", "UInt64"},
		{"total", "UInt8"},
		{"class", classEnumType()},
		{"reason", "String"},
		{"provider", "String"},
		{"events", "UInt64"},
		{"reports", "UInt64"},
	},
	version:     "gen",
	partitionBy: "toYYYYMM(minute)",
	orderBy:     "(minute, total, class, reason, provider)",
	shardingKey: "intDiv(toUInt32(minute), 60)",
}

// outcomesTable holds the stored outcomes (docs/outcomes.md), one row
// per fold written; merges keep each key's highest version
// (store.OutcomeVersion), and reads pick it with argMax before any merge
// (see outcomes.go). ORDER BY starts with the recipient, so a recipient's
// outcomes are one key range; a key belongs to one recipient, so sharding
// by recipient keeps a key's rows on one shard.
var outcomesTable = table{
	name: "outcomes",
	columns: []column{
		{"key", "String"},
		{"version", "UInt64"},
		{"stream", "String"},
		{"message_id", "String"},
		{"recipient", "String"},
		{"state", "String"},
		{"class", classEnumType()},
		{"reason", "String"},
		{"scope", "String"},
		{"provider", "String"},
		{"final", "UInt8"},
		{"first", "DateTime('UTC')"},
		{"last", "DateTime('UTC')"},
		{"observations", "UInt32"},
	},
	version:     "version",
	orderBy:     "(recipient, key)",
	shardingKey: "cityHash64(recipient)",
}

// migrationsTable records the schema versions applied. Several rows for
// one version (two processes migrating at once) are harmless: readers
// take max(version).
var migrationsTable = table{
	name: "schema_migrations",
	columns: []column{
		{"version", "UInt32"},
		{"applied", "DateTime('UTC')"},
	},
	orderBy: "version",
}

// schema is the current schema: what the migrations, applied in order,
// produce. ClusterDDL creates it in one go, Write takes its INSERT column
// lists from it.
var schema = []table{reportsTable, eventsTable, reportVersionsTable, outcomesTable,
	suppressionsTable, suppressionAuditTable, statsLogTable, statsSecondsTable, statsMinutesTable,
	reportKeysTable}

// migrations are the schema's versions, in order: migrations[i] brings the
// database to version i+1. They are append-only: a released migration is
// never edited, a change is a new one, and changes schema (the current
// tables) with it; TestSchemaMatchesMigrations compares the two.
//
// ClickHouse has no transactional DDL: a crash between a statement and
// the version row runs the statement again at the next Open, so every
// statement must be idempotent (IF NOT EXISTS, or a MODIFY that sets what
// it set before). 18.16 has no ADD COLUMN IF NOT EXISTS: migrate skips an
// "ALTER TABLE t ADD COLUMN c ..." whose column exists (see addsColumn).
var migrations = [][]string{
	// 1: raw reports and their events.
	{`CREATE TABLE IF NOT EXISTS reports (
	id          String,          -- hex SHA-256 of raw
	received    DateTime('UTC'),
	return_path String,
	recipients  Array(String),   -- RCPT TO: the bounce addresses
	client_ip   String,
	helo        String,
	tls         String,
	raw         String,
	parse_error String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received)
ORDER BY id`,
		`CREATE TABLE IF NOT EXISTS events (
	id            String,
	version       UInt32,
	report_id     String,
	idx           UInt32,
	time          DateTime('UTC'),
	source        String,
	recipient     String,          -- lower-cased
	class         Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	reason        String,
	scope         String,
	status        String,
	reply_code    UInt16,
	action        String,
	diagnostic    String,
	remote_mta    String,
	reporting_mta String,
	smtp_command  String,
	provider      String,
	parser        String,
	rule          String,
	message_id    String
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(time)
ORDER BY (recipient, time, id)`},
	// 2: the correlation keys of docs/outcomes.md, as in store/sqlite.
	// ADD COLUMN is metadata only: parts written before read the
	// default.
	//
	// Outcomes came with migration 4, suppressions with migration 5.
	{
		`ALTER TABLE events ADD COLUMN stream String DEFAULT ''`,
		`ALTER TABLE events ADD COLUMN return_path String DEFAULT ''`,
	},
	// 3: versioned event sets (store.Store.Write): the versions of each
	// report's sets, filled from the events already stored. Running the
	// INSERT twice is harmless: readers take max(version).
	{
		`CREATE TABLE IF NOT EXISTS report_versions (
	report_id String,
	version UInt32
)
ENGINE = ReplacingMergeTree(version)
ORDER BY report_id`,
		`INSERT INTO report_versions (report_id, version)
SELECT report_id, max(version) FROM events WHERE report_id != '' GROUP BY report_id`,
	},
	// 4: stored outcomes (docs/outcomes.md "Storing and counting"), as
	// in store/sqlite; see outcomesTable.
	{
		`CREATE TABLE IF NOT EXISTS outcomes (
	key          String,
	version      UInt64,          -- store.OutcomeVersion
	stream       String,
	message_id   String,
	recipient    String,          -- lower-cased
	state        String,
	class        Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	reason       String,
	scope        String,
	provider     String,
	final        UInt8,
	first        DateTime('UTC'),
	last         DateTime('UTC'),
	observations UInt32
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (recipient, key)`,
	},
	// 5: suppressions (store.SuppressionStore), as in store/sqlite; see
	// suppressionsTable and suppressionAuditTable.
	{
		`CREATE TABLE IF NOT EXISTS suppressions (
	address String,          -- lower-cased
	stream  String,          -- '' is the global scope
	version UInt64,          -- Updated: UTC Unix nanoseconds
	removed UInt8,           -- 1: this version lifts the suppression
	source  String,
	class   String,          -- '' for none
	reason  String,
	rule    String,
	since   Int64,           -- UTC Unix nanoseconds
	until   Int64,           -- UTC Unix nanoseconds, 0: never
	actor   String,
	note    String
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (address, stream)
SETTINGS index_granularity = 256`,
		`CREATE TABLE IF NOT EXISTS suppression_audit (
	address String,
	time    Int64,           -- UTC Unix nanoseconds
	stream  String,
	action  String,
	source  String,
	actor   String,
	note    String,
	class   String,
	reason  String,
	rule    String
)
ENGINE = MergeTree
ORDER BY (address, time)
SETTINGS index_granularity = 256`,
	},
	// 6: query plans for 10 million events (doc.go "Query plans",
	// bench/README.md): events and report_versions rebuilt at index
	// granularity 1024, report_versions with the times of each set, and
	// Stats' per-minute counts (stats_log, stats_minutes) filled from the
	// rows stored.
	//
	// 18.16 cannot change a table's index granularity, so a table is
	// rebuilt: created under a temporary name, swapped in by RENAME, and
	// filled from the old table, which is then dropped. Writers that run
	// meanwhile write to the new table (the name resolves per statement),
	// so nothing written during the copy is lost; duplicates from a
	// rerun collapse (every read takes one row per key). migrate skips a
	// RENAME whose first target exists (see renamesTable): after a crash
	// between the RENAME and the DROP the rerun copies from the kept old
	// table again.
	{
		`CREATE TABLE IF NOT EXISTS events_g1024 (
	id            String,
	version       UInt32,
	report_id     String,
	idx           UInt32,
	time          DateTime('UTC'),
	source        String,
	recipient     String,
	class         Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	reason        String,
	scope         String,
	status        String,
	reply_code    UInt16,
	action        String,
	diagnostic    String,
	remote_mta    String,
	reporting_mta String,
	smtp_command  String,
	provider      String,
	parser        String,
	rule          String,
	message_id    String,
	stream        String DEFAULT '',
	return_path   String DEFAULT ''
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(time)
ORDER BY (recipient, time, id)
SETTINGS index_granularity = 1024`,
		`RENAME TABLE events TO events_v5, events_g1024 TO events`,
		`INSERT INTO events (id, version, report_id, idx, time, source, recipient, class, reason, scope, status,
	reply_code, action, diagnostic, remote_mta, reporting_mta, smtp_command, provider, parser, rule, message_id,
	stream, return_path)
SELECT id, version, report_id, idx, time, source, recipient, class, reason, scope, status,
	reply_code, action, diagnostic, remote_mta, reporting_mta, smtp_command, provider, parser, rule, message_id,
	stream, return_path
FROM events_v5`,
		`DROP TABLE IF EXISTS events_v5`,
		`DROP TABLE IF EXISTS events_g1024`,
		`CREATE TABLE IF NOT EXISTS report_versions_g1024 (
	report_id String,
	version   UInt32,
	time      DateTime('UTC')   -- a time of the set's events
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (report_id, time)
SETTINGS index_granularity = 1024`,
		`RENAME TABLE report_versions TO report_versions_v5, report_versions_g1024 TO report_versions`,
		// Each report's highest set, at every time its events have.
		`INSERT INTO report_versions (report_id, version, time)
SELECT report_id, version, time
FROM (SELECT report_id, max(version) AS version FROM report_versions_v5 GROUP BY report_id)
ALL LEFT JOIN (SELECT report_id, time FROM events WHERE report_id != '' GROUP BY report_id, time)
USING report_id`,
		`DROP TABLE IF EXISTS report_versions_v5`,
		`DROP TABLE IF EXISTS report_versions_g1024`,
		`CREATE TABLE IF NOT EXISTS stats_log (
	time      DateTime('UTC'),
	kind      Enum8('event' = 1, 'set' = 2, 'report' = 3),
	report_id String,
	id        String,           -- '' for a set or a report
	version   UInt32,           -- the event's or the set's; 0 for a report
	class     Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	reason    String,
	provider  String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (time, report_id, id)
SETTINGS index_granularity = 1024`,
		`CREATE TABLE IF NOT EXISTS stats_minutes (
	minute   DateTime('UTC'),
	gen      UInt64,            -- distinct stats_log keys the recount saw
	total    UInt8,             -- 1: the minute's total row (reports)
	class    Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	reason   String,
	provider String,
	events   UInt64,
	reports  UInt64
)
ENGINE = ReplacingMergeTree(gen)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, total, class, reason, provider)`,
		backfillStatsLogEvents,
		backfillStatsLogSets,
		backfillStatsLogReports,
		recountStatsStatement,
	},
	// 7: Stats' rollup recounted per second (stats_seconds), the minutes
	// summed from their seconds (doc.go "Query plans"): a Write's recount
	// of whole minutes read every stats_log row of them, so at 1,000
	// reports/s each batch read up to a minute of rows (180,000), and the
	// recounts took up to 1.3 s per batch by the end of each minute. The
	// seconds are filled from stats_log, and every minute summed from
	// them again.
	{
		`CREATE TABLE IF NOT EXISTS stats_seconds (
	second   DateTime('UTC'),
	gen      UInt64,            -- distinct stats_log keys the recount saw
	total    UInt8,             -- 1: the second's total row (reports)
	class    Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	reason   String,
	provider String,
	events   UInt64,
	reports  UInt64
)
ENGINE = ReplacingMergeTree(gen)
PARTITION BY toYYYYMM(second)
ORDER BY (second, total, class, reason, provider)`,
		recountSecondsStatement,
	},
	// 8: report_keys, the lookup of Write's report ids by time
	// (reportKeysTable), filled from every report stored. A rerun's
	// second copy of a row collapses, and lookups group by key anyway.
	// Writers older than migration 8 do not write keys: a report they
	// store meanwhile is not found by a newer writer's lookup, so a
	// redelivery of it is stored again (reads take one row per id). Stop
	// them before migrating.
	{
		`CREATE TABLE IF NOT EXISTS report_keys (
	received DateTime('UTC'),
	key      UInt64             -- cityHash64(id)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received)
ORDER BY (received, key)`,
		`INSERT INTO report_keys (received, key) SELECT received, cityHash64(id) FROM reports`,
	},
}

// Migration 6's backfill of the Stats rollup, which RecountStats runs
// again: stats_log's rows for every event, set and report stored, then
// every minute recounted (recountStatsStatement). stats_log only grows, and a row it holds twice
// counts once, so running them again is harmless.
const (
	backfillStatsLogEvents = `INSERT INTO stats_log (time, kind, report_id, id, version, class, reason, provider)
SELECT time, 'event', report_id, id, version, class, reason, provider FROM events`
	backfillStatsLogSets = `INSERT INTO stats_log (time, kind, report_id, id, version, class, reason, provider)
SELECT time, 'set', report_id, '', version, 'unknown', '', '' FROM report_versions`
	backfillStatsLogReports = `INSERT INTO stats_log (time, kind, report_id, id, version, class, reason, provider)
SELECT min(received), 'report', id, '', 0, 'unknown', '', '' FROM reports GROUP BY id`
	// recountStatsStatement is not SQL: applyStatement runs recountAll
	// for it, which recounts stats_log hour by hour (one GROUP BY over
	// all of it needs more than 9 GiB at 10 million events).
	recountStatsStatement = "-- bouncer: recount every hour of stats_log into stats_minutes (Store.RecountStats)"
	// recountSecondsStatement is migration 7's: applyStatement runs
	// recountAllSeconds for it, which recounts stats_log's seconds hour
	// by hour and sums each hour's minutes from them. RecountStats runs
	// it too.
	recountSecondsStatement = "-- bouncer: recount every hour of stats_log into stats_seconds, and its minutes from them (Store.RecountStats)"
)

// quoteIdent quotes a ClickHouse identifier, so reserved words and odd
// characters stay one name.
func quoteIdent(s string) string {
	return "`" + strings.NewReplacer(`\`, `\\`, "`", "\\`").Replace(s) + "`"
}

// columnList is the table's columns as "(a, b, c)", for INSERT.
func (t table) columnList() string {
	names := make([]string, len(t.columns))
	for i, c := range t.columns {
		names[i] = c.name
	}
	return "(" + strings.Join(names, ", ") + ")"
}

func (t table) columnDefs() string {
	defs := make([]string, len(t.columns))
	for i, c := range t.columns {
		defs[i] = "\t" + c.name + " " + c.typ
	}
	return "(\n" + strings.Join(defs, ",\n") + "\n)"
}

// mergeTreeClauses is what follows the engine: PARTITION BY, ORDER BY
// and SETTINGS.
func (t table) mergeTreeClauses() string {
	var b strings.Builder
	if t.partitionBy != "" {
		b.WriteString("\nPARTITION BY " + t.partitionBy)
	}
	b.WriteString("\nORDER BY " + t.orderBy)
	if t.settings != "" {
		b.WriteString("\nSETTINGS " + t.settings)
	}
	return b.String()
}

// engineFamily is the single-node engine's name: ReplacingMergeTree, or
// MergeTree for an append-only table.
func (t table) engineFamily() string {
	if t.appendOnly {
		return "MergeTree"
	}
	return "ReplacingMergeTree"
}

// engine is the single-node engine.
func (t table) engine() string {
	if t.version != "" {
		return t.engineFamily() + "(" + t.version + ")"
	}
	return t.engineFamily()
}
