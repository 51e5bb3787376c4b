package clickhouse

import (
	"fmt"
	"strings"
)

// LocalSuffix names a cluster's per-shard tables: events_local under the
// Distributed table events.
const LocalSuffix = "_local"

// ClusterDDL returns the statements that create bouncer's schema on a
// ClickHouse cluster, in order, to be run once on any one node (they are
// ON CLUSTER, and idempotent):
//
//   - the database on every node;
//   - schema_migrations, replicated to every node of the cluster (one
//     ZooKeeper path for all shards), so Open on any node sees the
//     version;
//   - per table, <table>_local, a ReplicatedReplacingMergeTree (or
//     ReplicatedMergeTree for an append-only table) with the single-node
//     table's columns, version column, PARTITION BY, ORDER BY and
//     SETTINGS, replicated within each shard at
//     /clickhouse/tables/{shard}/<database>/<table>_local;
//   - per table, <table>, a Distributed table over the local ones with
//     the same columns, which is what Store reads and writes;
//   - the INSERT that records the schema version, so Open finds nothing
//     to migrate.
//
// The servers need the {shard} and {replica} macros and ZooKeeper (or
// ClickHouse Keeper) configured; {replica} must be unique across the
// whole cluster, as schema_migrations' replicas span every shard. The
// names are quoted, not checked: pass plain identifiers.
func ClusterDDL(cluster, database string) []string {
	db := quoteIdent(database)
	on := " ON CLUSTER " + quoteIdent(cluster)
	stmts := []string{"CREATE DATABASE IF NOT EXISTS " + db + on}

	stmts = append(stmts, "CREATE TABLE IF NOT EXISTS "+db+"."+quoteIdent(migrationsTable.name)+on+" "+
		migrationsTable.columnDefs()+
		"\nENGINE = "+replicatedEngine(migrationsTable,
		fmt.Sprintf("/clickhouse/tables/all/%s/%s", database, migrationsTable.name))+
		migrationsTable.mergeTreeClauses())

	for _, t := range schema {
		local := t.name + LocalSuffix
		stmts = append(stmts, "CREATE TABLE IF NOT EXISTS "+db+"."+quoteIdent(local)+on+" "+t.columnDefs()+
			"\nENGINE = "+replicatedEngine(t, fmt.Sprintf("/clickhouse/tables/{shard}/%s/%s", database, local))+
			t.mergeTreeClauses())
	}
	for _, t := range schema {
		stmts = append(stmts, "CREATE TABLE IF NOT EXISTS "+db+"."+quoteIdent(t.name)+on+" "+t.columnDefs()+
			"\nENGINE = Distributed("+quoteString(cluster)+", "+quoteString(database)+", "+
			quoteString(t.name+LocalSuffix)+", "+t.shardingKey+")")
	}
	stmts = append(stmts, fmt.Sprintf("INSERT INTO %s.%s (version, applied) SELECT %d, now()",
		db, quoteIdent(migrationsTable.name), len(migrations)))
	return stmts
}

// replicatedEngine is t's engine, replicated at the ZooKeeper path.
func replicatedEngine(t table, path string) string {
	args := []string{quoteString(path), "'{replica}'"}
	if t.version != "" {
		args = append(args, t.version)
	}
	return "Replicated" + t.engineFamily() + "(" + strings.Join(args, ", ") + ")"
}

// quoteString is a ClickHouse string literal.
func quoteString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
