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
// interrupted or concurrent migration is safe to run again.
//
//   - reports: ReplacingMergeTree, PARTITION BY toYYYYMM(received),
//     ORDER BY id. One row per raw report; id is the hex SHA-256 of raw.
//   - events: ReplacingMergeTree(version), PARTITION BY toYYYYMM(time),
//     ORDER BY (recipient, time, id). One row per event id and
//     classification version; a recipient's history is one key range,
//     and merges keep an id's highest version.
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
// id, and count reports with uniqExact(id). A row written twice (a retry
// racing another writer) is therefore never read or counted twice.
// argMax rather than FINAL: on 18.16 it is 3 to 6 times faster for a
// recipient's history and the default Stats window, and it is only on
// month-long windows that FINAL is faster (query.go has the figures,
// BenchmarkReadStrategies measures them).
//
// Atomicity: a Write validates every row before it sends anything, so an
// invalid row fails the whole batch with nothing stored. There is no
// transaction across the two tables or across a batch's month
// partitions: a Write that failed midway (server gone) may have stored
// part of the batch, and retrying it stores the rest without
// duplicating anything. Ingest acknowledges a message only after Write
// returned nil, so a partial write is always retried.
//
// A report id is looked up in every partition, as a report resent days
// later keeps its id; that lookup reads the reports' id column once per
// Write, which Options.ReportLookback can bound for large tables. An
// event (id, version) is looked up within the batch's time range, widened
// to the first received time of the batch's reports that were stored
// already: an event's time is its report's received time, so a report
// received again later keeps its first events too.
//
// Versioned event sets: a report's events are a set, and a read takes
// only those of the report's highest version. The events table is sorted
// by recipient, so a report's versions cannot be found there without a
// scan; report_versions (report_id, version), sorted by report_id, holds
// them, and Write inserts a set's row after the set's events, so the row
// is the set's commit mark. Reads keep an event when its report_id is ""
// (sync events) or (report_id, its version) is the report's max(version)
// in report_versions, found by index lookups for the report ids of the
// rows read (GLOBAL IN, so the same SQL works on the Distributed tables).
// Correct before any merge and on 18.16; it costs one more index lookup
// per read, not a scan. A later set that moves an event to another
// recipient thus also removes it from the first recipient's history.
//
// # Cluster
//
// ClusterDDL returns the same schema for a ClickHouse cluster: per table
// a ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/<db>/<table>_local',
// '{replica}'[, version]) local table on every node and a Distributed
// table of the plain name over them (reports sharded by id, events by
// recipient, so the rows of one sorting key meet on one shard and merges
// collapse them), plus a schema_migrations table replicated to every node
// and the row that records the version. Run the statements once, in
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
