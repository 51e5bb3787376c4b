package clickhouse

import (
	"context"
	"fmt"
	"regexp"

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
	var distributed uint64
	if err := conn.QueryRow(ctx, `SELECT count() FROM system.tables
		WHERE database = currentDatabase() AND engine = 'Distributed'`).Scan(&distributed); err != nil {
		return fmt.Errorf("checking for a cluster schema: %w", err)
	}
	distributedConns.Store(conn, distributed > 0) // for Store.sql
	// A database newer than this binary is an error: running old code on
	// a schema it does not know would be guessing.
	if current > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this binary's %d", current, len(migrations))
	}
	if current > 0 && current < len(migrations) {
		// The single-node statements would alter the Distributed tables
		// of a cluster schema (ClusterDDL) and record a version its
		// shards do not have.
		if distributed > 0 {
			return fmt.Errorf("cluster schema at version %d, this binary needs %d: apply the migrations ON CLUSTER by hand (see ClusterDDL)",
				current, len(migrations))
		}
	}
	if current == len(migrations) {
		return nil
	}
	release, err := acquireMigrationLock(ctx, conn)
	if err != nil {
		return err
	}
	defer release()
	// Another process may have migrated while this one waited.
	if current, err = schemaVersion(ctx, conn); err != nil {
		return err
	}
	for v := current + 1; v <= len(migrations); v++ {
		for i, stmt := range migrations[v-1] {
			if err := applyStatement(ctx, conn, stmt); err != nil {
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

// applyStatement runs one migration statement, idempotently: an ADD
// COLUMN whose column exists (added by a run that stopped before its
// version row, or by another process migrating at the same time) is
// skipped, or its failure ignored.
func applyStatement(ctx context.Context, conn driver.Conn, stmt string) error {
	switch stmt {
	case recountStatsStatement:
		return recountAll(ctx, conn)
	case recountSecondsStatement:
		return recountAllSeconds(ctx, conn)
	}
	if target, ok := renamesTable(stmt); ok {
		return applyRename(ctx, conn, stmt, target)
	}
	table, col, ok := addsColumn(stmt)
	if !ok {
		return conn.Exec(ctx, stmt)
	}
	if exists, err := columnExists(ctx, conn, table, col); err != nil || exists {
		return err
	}
	err := conn.Exec(ctx, stmt)
	if err == nil {
		return nil
	}
	// Another migrator may have added it between the check and the ALTER.
	if exists, cerr := columnExists(ctx, conn, table, col); cerr == nil && exists {
		return nil
	}
	return err
}

// addColumnRE matches the start of a migration's ALTER TABLE ... ADD
// COLUMN, the statement 18.16 has no IF NOT EXISTS for.
var addColumnRE = regexp.MustCompile(`^ALTER TABLE (\w+) ADD COLUMN (\w+) `)

// addsColumn returns the table and column a migration statement adds,
// ok false when it is not an ADD COLUMN.
func addsColumn(stmt string) (table, column string, ok bool) {
	m := addColumnRE.FindStringSubmatch(stmt)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

// columnExists reports whether the current database's table has column.
func columnExists(ctx context.Context, conn driver.Conn, table, column string) (bool, error) {
	var n uint64
	if err := conn.QueryRow(ctx, `SELECT count() FROM system.columns
		WHERE database = currentDatabase() AND table = ? AND name = ?`, table, column).Scan(&n); err != nil {
		return false, fmt.Errorf("checking for column %s.%s: %w", table, column, err)
	}
	return n > 0, nil
}

// renameRE matches the start of a migration's RENAME TABLE, which 18.16
// has no IF NOT EXISTS for either.
var renameRE = regexp.MustCompile(`^RENAME TABLE \w+ TO (\w+)`)

// renamesTable returns the first new name a migration statement gives,
// ok false when it is not a RENAME TABLE.
func renamesTable(stmt string) (target string, ok bool) {
	m := renameRE.FindStringSubmatch(stmt)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// applyRename runs a migration's RENAME TABLE unless its first target
// exists: the rename was done by an earlier run that stopped before the
// version row (or by another migrator at the same time), and the
// statements after it finish the job.
func applyRename(ctx context.Context, conn driver.Conn, stmt, target string) error {
	if exists, err := tableExists(ctx, conn, target); err != nil || exists {
		return err
	}
	err := conn.Exec(ctx, stmt)
	if err == nil {
		return nil
	}
	if exists, terr := tableExists(ctx, conn, target); terr == nil && exists {
		return nil
	}
	return err
}

// tableExists reports whether the current database has the table.
func tableExists(ctx context.Context, conn driver.Conn, table string) (bool, error) {
	var n uint64
	if err := conn.QueryRow(ctx, `SELECT count() FROM system.tables
		WHERE database = currentDatabase() AND name = ?`, table).Scan(&n); err != nil {
		return false, fmt.Errorf("checking for table %s: %w", table, err)
	}
	return n > 0, nil
}
