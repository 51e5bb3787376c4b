package clickhouse

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// createMigrations is schema_migrations' DDL. Not a migration itself: it
// must exist before the version can be read.
const createMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version UInt32,
	applied DateTime('UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY version`

// insertVersion records a schema version. INSERT ... SELECT, not VALUES:
// over the native protocol 18.16 answers an INSERT with inline VALUES by
// waiting for data blocks, so clickhouse-go's Exec of one hangs until its
// context ends.
const insertVersion = "INSERT INTO schema_migrations (version, applied) SELECT toUInt32(?), now()"

// migrate brings the database to the newest version. It is idempotent and
// safe against another process migrating at once: ClickHouse has no DDL
// transactions or locks, but every statement is idempotent, so two
// migrators both run the statements and both record the version, and the
// duplicate version rows collapse.
func migrate(ctx context.Context, conn driver.Conn) error {
	if err := conn.Exec(ctx, createMigrations); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	current, err := schemaVersion(ctx, conn)
	if err != nil {
		return err
	}
	// A database newer than this binary is an error: running old code on
	// a schema it does not know would be guessing.
	if current > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this binary's %d", current, len(migrations))
	}
	if current > 0 && current < len(migrations) {
		// The single-node statements would alter the Distributed tables
		// of a cluster schema (ClusterDDL) and record a version its
		// shards do not have.
		var n uint64
		if err := conn.QueryRow(ctx, `SELECT count() FROM system.tables
			WHERE database = currentDatabase() AND engine = 'Distributed'`).Scan(&n); err != nil {
			return fmt.Errorf("checking for a cluster schema: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("cluster schema at version %d, this binary needs %d: apply the migrations ON CLUSTER by hand (see ClusterDDL)",
				current, len(migrations))
		}
	}
	for v := current + 1; v <= len(migrations); v++ {
		for i, stmt := range migrations[v-1] {
			if err := conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("version %d, statement %d: %w", v, i+1, err)
			}
		}
		// The version row goes in only after every statement succeeded:
		// a failure in between reruns them all next time.
		if err := conn.Exec(ctx, insertVersion, uint32(v)); err != nil {
			return fmt.Errorf("version %d: recording it: %w", v, err)
		}
	}
	return nil
}

// schemaVersion is the highest migration recorded, 0 for none.
func schemaVersion(ctx context.Context, conn driver.Conn) (int, error) {
	var v uint32
	if err := conn.QueryRow(ctx, "SELECT max(version) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return int(v), nil
}
