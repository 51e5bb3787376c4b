package clickhouse

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
)

// Processes that open one empty database at once (ingest workers of a
// first start) migrate it once, one after the other: every Open succeeds,
// each version is recorded once, no table of a rebuild and no lock is
// left behind.
func TestMigrateConcurrently(t *testing.T) {
	dsn := clickhousetest.Start(t)
	const n = 4
	var (
		wg     sync.WaitGroup
		stores [n]*Store
		errs   [n]error
	)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			stores[i], errs[i] = Open(ctx, dsn, Options{})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d of %d at once: %v", i+1, n, err)
		}
		defer stores[i].Close()
	}
	s := stores[0]
	defs := tableDefs(t, s, s.database)
	if want := fmt.Sprintf("%d versions in %d rows", len(migrations), len(migrations)); defs["schema_migrations rows"] != want {
		t.Errorf("schema_migrations holds %s, want %s", defs["schema_migrations rows"], want)
	}
	for name := range defs {
		if strings.HasSuffix(name, "_v5") || strings.HasSuffix(name, "_g1024") || name == lockTableName {
			t.Errorf("table %s left behind", name)
		}
	}
	for _, name := range []string{"events", "report_versions", "stats_minutes"} {
		if !strings.Contains(defs[name], "index_granularity") && name != "stats_minutes" {
			t.Errorf("%s: %q, want the rebuilt table", name, defs[name])
		}
		if defs[name] == "" {
			t.Errorf("no table %s", name)
		}
	}
}

// A lock with a recent heartbeat is waited for; one whose holder stopped
// beating (a crash) is taken over.
func TestMigrationLock(t *testing.T) {
	dsn := clickhousetest.Start(t)
	admin := openDSN(t, dsn, Options{})
	defer admin.Close()
	ctx := context.Background()
	if err := admin.conn.Exec(ctx, "INSERT INTO schema_migrations (version, applied) SELECT toUInt32(?), now()", uint32(len(migrations)+0)); err != nil {
		t.Fatal(err)
	}
	// Pretend the last migration is pending again, held by another
	// process that is alive.
	if err := admin.conn.Exec(ctx, "ALTER TABLE schema_migrations DELETE WHERE version = ?", uint32(len(migrations))); err != nil {
		t.Fatal(err)
	}
	waitMutation(t, admin)
	if err := admin.conn.Exec(ctx, createLock); err != nil {
		t.Fatal(err)
	}
	if err := admin.conn.Exec(ctx, insertBeat, "other/1"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := Open(wctx, dsn, Options{}); err == nil || !strings.Contains(err.Error(), "another process's migration") {
		t.Fatalf("Open while a live process holds the lock = %v, want it to wait and give up with the context", err)
	}

	// The holder's heartbeat is two minutes old: a crash. Open takes over.
	if err := admin.conn.Exec(ctx, "DROP TABLE "+lockTableName); err != nil {
		t.Fatal(err)
	}
	if err := admin.conn.Exec(ctx, createLock); err != nil {
		t.Fatal(err)
	}
	if err := admin.conn.Exec(ctx, "INSERT INTO "+lockTableName+" (holder, beat) SELECT 'crashed/1', now() - 120"); err != nil {
		t.Fatal(err)
	}
	s := openDSN(t, dsn, Options{})
	defer s.Close()
	if v, err := schemaVersion(ctx, s.conn); err != nil || v != len(migrations) {
		t.Errorf("after taking over a stale lock: version %d, %v; want %d", v, err, len(migrations))
	}
	if ok, err := tableExists(ctx, s.conn, lockTableName); err != nil || ok {
		t.Errorf("the lock is still there after the migration (%v)", err)
	}
}

// waitMutation waits until the database's mutations are done (18.16
// runs ALTER ... DELETE in the background).
func waitMutation(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var n uint64
		if err := s.conn.QueryRow(context.Background(), `SELECT count() FROM system.mutations
			WHERE database = currentDatabase() AND is_done = 0`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("mutation not done in 30 s")
}
