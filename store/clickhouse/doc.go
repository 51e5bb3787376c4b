// Package clickhouse is bouncer's production store engine: store.Store on
// a ClickHouse database, over clickhouse-go v2's native protocol.
//
// The SQL runs on Debian's clickhouse-server 18.16 (what the development
// machines have) and on current releases: MergeTree-family engines with
// PARTITION BY and ORDER BY, ReplacingMergeTree(version), DateTime('UTC'),
// Enum8, String, Array(String) and unsigned integers; no LowCardinality,
// TTL, Map, JSON or DateTime64. Every INSERT lists its columns, which
// clickhouse-go's batches need on 18.16. Only the native protocol is
// accepted: 18.16's HTTP interface rejects clickhouse-go's
// client_protocol_version setting.
//
// # Schema
//
// Open creates the database if absent and applies the migrations it
// lacks (schema.go), recording each version in schema_migrations. The
// statements are idempotent, as ClickHouse has no DDL transactions: an
// interrupted migration is safe to run again. Processes opening one
// database at once migrate one after the other: the first to create the
// schema_migrations_lock table migrates (writing a heartbeat into it every
// 5 s) and drops it, the others wait and find the schema current; a lock
// whose heartbeat stopped 60 s ago (a crash) is taken over
// (migrate_lock.go).
//
//   - reports: ReplacingMergeTree, PARTITION BY toYYYYMM(received),
//     ORDER BY id. One row per raw report; id is the hex SHA-256 of raw.
//   - events: ReplacingMergeTree(version), PARTITION BY toYYYYMM(time),
//     ORDER BY (recipient, time, id), index_granularity 1024. One row per
//     event id and classification version; a recipient's history is one
//     key range, and merges keep an id's highest version.
//   - report_versions: ReplacingMergeTree(version), ORDER BY (report_id,
//     time), index_granularity 1024. The commit marks of report sets, a
//     row per set and time of its events.
//   - stats_log: MergeTree, PARTITION BY toYYYYMM(time), ORDER BY (time,
//     report_id, id), index_granularity 1024. Append-only and narrow: what Stats counts (event
//     versions with class, reason, provider; set marks; reports).
//   - stats_seconds: ReplacingMergeTree(gen), PARTITION BY
//     toYYYYMM(second), ORDER BY (second, total, class, reason,
//     provider). Exact per-second counts, recounted from stats_log.
//   - stats_minutes: ReplacingMergeTree(gen), PARTITION BY
//     toYYYYMM(minute), ORDER BY (minute, total, class, reason,
//     provider). Exact per-minute counts, summed from stats_seconds.
//   - suppressions: ReplacingMergeTree(version), ORDER BY (address,
//     stream), index_granularity 256. One row per version of a
//     suppression, version its Updated in nanoseconds; a removal is a
//     version with removed = 1 (suppressions.go).
//   - suppression_audit: MergeTree, ORDER BY (address, time),
//     index_granularity 256. The append-only audit trail.
//
// Times are DateTime('UTC'): whole seconds from 1970 to 2106, as the
// store.Store contract allows. Write refuses times outside that range,
// and indexes and reply codes that do not fit UInt32 and UInt16. The
// suppression tables keep Int64 Unix nanoseconds instead (1970 to 2262),
// as their versions order to the nanosecond.
//
// # How the contract maps onto ClickHouse
//
// Idempotency and "first write wins": Write first looks up which of the
// batch's report ids, and which event (id, version) pairs, are stored,
// and inserts only the others, as one batch per table (PrepareBatch).
// Merges are eventual, so reads never rely on them: they take each
// event id's highest version with argMax(tuple(...), version) GROUP BY
// id, and Stats' recounts deduplicate ids and report ids per second
// (see "Query plans"). A row written twice (a retry racing another
// writer) is therefore never read or counted twice. argMax rather than
// FINAL: on 18.16 it is 3 to 6 times faster for a recipient's history
// (query.go has the figures, BenchmarkReadStrategies measures them).
//
// Atomicity: a Write validates every row before it sends anything, so an
// invalid row fails the whole batch with nothing stored. There is no
// transaction across the two tables or across a batch's month
// partitions: a Write that failed midway (server gone) may have stored
// part of the batch, and retrying it stores the rest without
// duplicating anything. Ingest acknowledges a message only after Write
// returned nil, so a partial write is always retried.
//
// A report id is looked up by its 64-bit key in report_keys, which is
// sorted by received time, within Options.ReportLookback (10 minutes
// unless set) of the batch's received times (migration 8): a
// redelivery or a retry carries its first received time and is always
// found, a resend (the same bytes received again) within the lookback.
// The lookup reads the keys of that time range, 12 bytes a report,
// however large the store; looking ids up in reports (sorted by id,
// which is a SHA-256) read the whole id column of every partition, and
// the events and report_versions lookups read most of those tables, at
// each Write (docs/reliability.md, session 17). A key found is confirmed
// in reports. A report whose key is not found is fresh: Write inserts
// the keys before any row, so nothing of a fresh report is stored, and
// its events and sets are not looked up. Other events (id, version)
// are looked up within the batch's time range, widened to the first
// received time of the batch's reports that were stored already: an
// event's time is its report's received time, so a report received
// again later keeps its first events too.
//
// Versioned event sets: a report's events are a set, and a read takes
// only those of the report's highest version. The events table is sorted
// by recipient, so a report's versions cannot be found there without a
// scan; report_versions (report_id, version), sorted by report_id, holds
// them, and Write inserts a set's row after the set's events, so the row
// is the set's commit mark. Reads keep an event when its report_id is ""
// (sync events) or (report_id, its version) is the report's max(version)
// in report_versions, found by index lookups for the report ids of the
// rows read. Correct before any merge and on 18.16; it costs one more
// index lookup per read, not a scan. A later set that moves an event to
// another recipient thus also removes it from the first recipient's
// history.
//
// # Query plans (migration 6)
//
// The goal: at 10 million events, a recipient's history and the counts of
// the last 24 hours by provider, class and reason answer in under 100 ms
// on 18.16 (bench/README.md, section 3, has the measurements). 18.16 has
// no EXPLAIN, no data skipping indices and no projections, and cannot
// change a table's index granularity in place, so the plans rest on
// sorting keys, granularity and tables of their own.
//
// Recipient history (RecipientEvents): events is sorted by (recipient,
// time, id), so the history is one key range per part; at index
// granularity 1024 (8192 before migration 6) a lookup reads about one
// 1,024-row granule per part instead of 8,192 rows of every column. The
// set check reads report_versions by its sorting key (report_id, ...),
// also at granularity 1024, for the few report ids of the history. It
// must be plain IN on a single node: 18.16 turns a GLOBAL IN subquery
// into a temporary table, and IN with a table is no index condition, so
// GLOBAL IN read all of report_versions (8 million rows) per history. A
// cluster needs GLOBAL IN (report_versions is sharded by report, events
// by recipient), so the queries are written with GLOBAL IN and
// Store.sql makes them IN when the database has no Distributed tables
// (recorded at Open). distributed_product_mode = 'global' cannot do it:
// 18.16 applies it neither from a SETTINGS clause to nested subqueries
// nor can clickhouse-go send a string setting to 18.16.
//
// Stats: counting each event id once in the class of its highest version
// (argMax ... GROUP BY id) over a day's events, with the set check, took
// 1.4 s at 10 million events, and 0.5 to 1.3 s even on time-sorted
// copies of the tables; the cost is the deduplication, not the reading.
// So Stats reads counts made ahead: stats_minutes holds, per minute,
// the exact counts by (class, reason, provider) and the reports
// received, and a window is the sum of its whole minutes (1,440 minutes
// for 24 hours, each a few dozen rows) plus the seconds of its partial
// first minute from stats_seconds. A materialized view cannot keep such
// counts: a reclassified set must take the old set's events away, and a
// row written twice must count once. Instead every Write appends its
// events, set marks and reports to stats_log, then recounts each second
// it touched, from stats_log alone, in one INSERT ... SELECT into
// stats_seconds: per second and id the highest version (max over the
// whole row, so equal versions pick the same row whatever the read
// order), kept when it is a sync event or its report's highest set mark
// in that second. A set's marks are written at the times of its events
// and of the report's earlier sets (looked up in report_versions), so a
// new set in another second still retires the old set's events. The
// recount is stamped with gen, the number of distinct stats_log rows it
// read. stats_log is append-only and one recount reads it once, from one
// snapshot of its parts; snapshots of a growing table are nested, so the
// recount with the higher gen saw every row the other did, and two with
// one gen saw the same rows and wrote the same counts. The Write then
// sums each minute it touched from its seconds into stats_minutes, in
// one INSERT ... SELECT that reads stats_seconds once: each second's
// rows of its highest gen, stamped with 2 × the sum of those gens + 1.
// The same nesting holds (a later sum saw every second at a gen at least
// as high); the + 1 puts every sum above a recount of the minute made
// straight from stats_log by migration 6, whose gen counts the same
// keys. Readers take each second's or minute's rows of its highest gen,
// in one pass (GROUP BY the unit, the rows as a groupUniqArray filtered
// by max(gen)), so an older recount that lands later changes nothing,
// and the same recount stored twice counts once.
//
// Why two levels: recounting whole minutes read every stats_log row of
// them on every Write; at 1,000 reports/s a minute holds 180,000 rows,
// and by the end of each minute a batch's recount took up to 1.3 s
// (migration 7). A second holds a batch's rows, and a minute's sum reads
// at most 60 seconds of a few dozen rows.
//
// What is exact, and the bounds:
//
//   - Once every Write that touched a minute has returned nil, the
//     minute's count is what the rows say, whatever ran concurrently
//     (two workers writing the same batch, a reclassification racing
//     ingest): each Write recounts after its own rows are in and sums
//     after its recounts, and the recount and sum that started last saw
//     them all. While Writes are in flight, a minute shows the counts of
//     some consistent snapshot of stats_seconds, never a mix.
//     TestStatsRollupExact checks these against the pre-migration-6
//     query on one node and a cluster.
//   - A Write that failed after its rows and before its recount leaves
//     its seconds and minutes short until it is retried (ingest retries
//     before it acknowledges; the retry appends the stored rows to
//     stats_log again) or Store.RecountStats runs. Writers older than
//     migration 7 (a rolling upgrade) do not recount seconds, so a
//     minute summed later misses their rows: stop them before migrating,
//     or run RecountStats after.
//   - The second is the unit of deduplication: an event id whose
//     versions lie in two seconds is counted in each. Report events are
//     not affected (a set's marks retire its report's older versions in
//     every second they lie in), but a sync event rewritten under another
//     time is, and so is a report id stored under received times in two
//     seconds (concurrent first Writes with different received times, or
//     a resend after Options.ReportLookback), which the pre-6 query
//     counted once per window.
//   - A set's marks reach the seconds of the report's earlier sets as
//     stored when its Write looked them up. Two Writes of different sets
//     of one report at once, whose events lie in different seconds, may
//     miss each other's seconds: the lower set's events then stay counted
//     in their second until a later Write of that report. Sets of one
//     report share a time in practice (ingest and reclassify both use the
//     report's received time), so no second differs.
//
// Costs: a Write recounts the seconds of its batch (one scan of those
// seconds of stats_log, plus one index lookup in report_versions) and
// sums their minutes (one scan of those minutes of stats_seconds); the
// tables add, per event version, one stats_log row and per second and
// minute a few dozen rows. Long windows read more minutes (30 days:
// 43,200 minutes); an hour-grain table would cut that 60-fold, not done.
//
// Migration 6 rebuilds events and report_versions (create at
// granularity 1024, RENAME the old table away and the new one in, copy,
// drop the old; writers meanwhile write to the new table), and fills
// stats_log and stats_minutes from the rows stored (RecountStats), the
// recount an hour of stats_log at a time (one GROUP BY over all of it
// needed more than the server's 9.3 GiB per query at 10 million events).
// Open blocks while it runs: on a large database that is a copy of the
// events and report_versions tables and of stats_log's rows, plus one
// recount per hour of data. Migration 7 creates stats_seconds and fills
// it from stats_log, an hour at a time, summing each hour's minutes
// again from its seconds: one more recount per hour of data.
//
// # The check before a send
//
// CheckSuppressions (GET /v1/suppressions/{address}, made before each
// send) does not query: a point read of one address costs about 2 ms
// on 18.16 (p99 3 ms), SELECT 1 alone 0.7 ms. The first check of a
// Store starts a store.SuppressionFilter that holds the latest version
// of every key (address, stream) of the suppressions table, in force,
// ended or removed, in a compact arena (about 72 bytes a suppression
// with repeating notes, BenchmarkSuppressionFilter in store), and
// answers what AddressSuppressions would, field for field. It is fed by
// checkFeed (check_feed.go): every version at the first read (the whole
// table), then four times a second the versions
// written since the previous read less a minute of overlap. The
// overlap is read incrementally: per second of version, the count and
// a hash sum of the rows (cityHash64 of address, stream and version)
// are compared with those of the rows already handed over, and only the
// seconds that differ are read again; so a large write is read once,
// not on every refresh for a minute. PutSuppressions and
// RemoveSuppression hand the versions they wrote to the filter once the
// insert returned, so a process's own writes show at once; another
// process's show after at most store.MaxCheckStaleness (1 s), and while
// the filter has not read successfully for that long every check reads
// ClickHouse (bounded, see CheckSuppressions). The first read takes
// about 2.5 s of CPU at a million suppressions; until it has finished a
// filter of the addresses alone (0.2 s) answers the addresses never
// suppressed, the others are read. Options.CheckAddressesOnly
// keeps only the addresses (8 bytes each, a membership filter) for very
// large lists: checks of a suppressed address then read ClickHouse.
//
// # Cluster
//
// ClusterDDL returns the same schema for a ClickHouse cluster: per table
// a ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/<db>/<table>_local',
// '{replica}'[, version]) local table on every node and a Distributed
// table of the plain name over them (reports sharded by id, events by
// recipient, so the rows of one sorting key meet on one shard and merges
// collapse them), plus a schema_migrations table replicated to every node
// and the row that records the version. stats_log, stats_seconds and
// stats_minutes are sharded by minute (intDiv(toUInt32(time), 60)), so
// one recount or sum reads a minute from one shard's snapshot. Run the statements once, in
// order, on one node: joined by ";" they are a file for
// clickhouse-client --multiquery (ExampleClusterDDL prints them). Then
// point Open at any node with the same database name: it finds the
// schema current and migrates nothing, and reads and writes go through
// the Distributed tables. Writes set insert_distributed_sync=1, so a
// Write returns only after the shards stored the rows; quorum writes
// across replicas are a DSN setting away (...?insert_quorum=2).
//
// Open never migrates a cluster: its statements are single-node ones. A
// database whose tables are Distributed and older than the binary is an
// error at Open; a new migration needs its ON CLUSTER counterpart run by
// hand, and ClusterDDL updated for new clusters
// (TestClusterDDLMatchesSchema compares it with the migrations).
//
// A Stats window over hundreds of millions of events groups as many ids
// in memory; max_bytes_before_external_group_by in the DSN lets such a
// query spill to disk instead of failing.
package clickhouse
