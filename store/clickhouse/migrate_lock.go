package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Migrations are serialised between processes by a lock table: ClickHouse
// has no transactions or advisory locks, but CREATE TABLE without IF NOT
// EXISTS succeeds for one caller only. Several ingest workers started at
// once on an empty database (a scaled-out deployment's first start) would
// otherwise run the same migration side by side, and migration 6's table
// rebuilds (create, RENAME, copy, DROP) do not survive that: one process
// dropped the old table another was still copying from.
//
// The holder writes a heartbeat row every lockBeat; a lock whose newest
// heartbeat is older than lockStale is a crashed holder's, and is taken
// over. A migration that takes longer than lockStale is fine: the
// heartbeat goes on while it runs.
const (
	lockTableName = "schema_migrations_lock"
	lockBeat      = 5 * time.Second
	lockStale     = 60 * time.Second
	lockPoll      = 500 * time.Millisecond
)

const createLock = `CREATE TABLE ` + lockTableName + ` (
	holder String,
	beat   DateTime('UTC')
)
ENGINE = MergeTree
ORDER BY beat`

const insertBeat = "INSERT INTO " + lockTableName + " (holder, beat) SELECT ?, now()"

// ClickHouse's error codes TABLE_ALREADY_EXISTS, UNKNOWN_TABLE and
// TABLE_IS_DROPPED.
const (
	errCodeTableExists  = 57
	errCodeUnknownTable = 60
	// errCodeTableIsDropped is what a read gets while another process's
	// DROP of the table is under way (seen on 18.16 in CI: Open 1 of 4
	// at once, TestMigrateConcurrently).
	errCodeTableIsDropped = 218
)

// acquireMigrationLock waits until this process holds the migration lock
// and returns its release. ctx bounds the wait.
func acquireMigrationLock(ctx context.Context, conn driver.Conn) (release func(), err error) {
	holder := lockHolder()
	for {
		err := conn.Exec(ctx, createLock)
		if err == nil {
			return startHeartbeat(conn, holder), nil
		}
		var ex *ch.Exception
		if !errors.As(err, &ex) || (ex.Code != errCodeTableExists && ex.Code != errCodeTableIsDropped) {
			return nil, fmt.Errorf("taking the migration lock: %w", err)
		}
		stale, err := lockIsStale(ctx, conn)
		if err != nil {
			return nil, err
		}
		if stale {
			// A crashed holder's: take it over. Two processes that found
			// it stale at once both drop it, and one creates it again.
			if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+lockTableName); err != nil {
				return nil, fmt.Errorf("dropping a stale migration lock: %w", err)
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for another process's migration: %w", ctx.Err())
		case <-time.After(lockPoll):
		}
	}
}

// lockIsStale reports whether the lock's newest heartbeat is older than
// lockStale. A lock with no heartbeat yet (its holder between the CREATE
// and the first INSERT, or dead there) is judged by the table's age.
func lockIsStale(ctx context.Context, conn driver.Conn) (bool, error) {
	var (
		beats uint64
		age   int64
	)
	err := conn.QueryRow(ctx, `SELECT count(), toInt64(toUInt32(now())) - toInt64(toUInt32(max(beat)))
		FROM `+lockTableName).Scan(&beats, &age)
	if err == nil && beats == 0 {
		err = conn.QueryRow(ctx, `SELECT toInt64(toUInt32(now())) - toInt64(toUInt32(max(metadata_modification_time)))
			FROM system.tables WHERE database = currentDatabase() AND name = ?`, lockTableName).Scan(&age)
	}
	if err != nil {
		var ex *ch.Exception
		if errors.As(err, &ex) && (ex.Code == errCodeUnknownTable || ex.Code == errCodeTableIsDropped) {
			return false, nil // released meanwhile, or being released
		}
		return false, fmt.Errorf("reading the migration lock: %w", err)
	}
	return time.Duration(age)*time.Second > lockStale, nil
}

// startHeartbeat writes the holder's heartbeat now and every lockBeat
// until the returned release, which drops the lock.
func startHeartbeat(conn driver.Conn, holder string) func() {
	ctx, cancel := context.WithCancel(context.Background())
	beat := func() { _ = conn.Exec(ctx, insertBeat, holder) } // a missed beat only ages the lock
	beat()
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(lockBeat)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				beat()
			}
		}
	}()
	return func() {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		_ = conn.Exec(dctx, "DROP TABLE IF EXISTS "+lockTableName) // left behind, it goes stale
	}
}

func lockHolder() string {
	host, _ := os.Hostname()
	return host + "/" + strconv.Itoa(os.Getpid())
}
