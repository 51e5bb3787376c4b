package clickhouse

import (
	"context"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
	"github.com/bouncer-mail/bouncer/store/storetest"
)

// The statements' shape, without a server.
func TestClusterDDLStatements(t *testing.T) {
	stmts := ClusterDDL("prod", "bouncer")
	byTable := map[string]string{}
	createTable := regexp.MustCompile("^CREATE TABLE IF NOT EXISTS `bouncer`\\.`([a-z_]+)` ON CLUSTER `prod` ")
	for i, stmt := range stmts[:len(stmts)-1] {
		if i == 0 {
			if stmt != "CREATE DATABASE IF NOT EXISTS `bouncer` ON CLUSTER `prod`" {
				t.Errorf("statement 1 = %q, want the database", stmt)
			}
			continue
		}
		m := createTable.FindStringSubmatch(stmt)
		if m == nil {
			t.Errorf("statement %d is not a CREATE TABLE ON CLUSTER of the database:\n%s", i+1, stmt)
			continue
		}
		byTable[m[1]] = stmt
	}
	for _, tbl := range append([]table{migrationsTable}, schema...) {
		local, dist := byTable[tbl.name+LocalSuffix], byTable[tbl.name]
		if tbl.name == migrationsTable.name {
			local, dist = dist, ""
		}
		if local == "" {
			t.Errorf("no local table for %s", tbl.name)
			continue
		}
		if got := parseColumns(t, local); !reflect.DeepEqual(got, tbl.columns) {
			t.Errorf("%s: local table columns\n got %v\nwant %v", tbl.name, got, tbl.columns)
		}
		path := "/clickhouse/tables/{shard}/bouncer/" + tbl.name + LocalSuffix
		if tbl.name == migrationsTable.name {
			path = "/clickhouse/tables/all/bouncer/" + tbl.name // one replica set spanning every shard
		}
		engine := fmt.Sprintf("ENGINE = Replicated%s('%s', '{replica}'", tbl.engineFamily(), path)
		if tbl.version != "" {
			engine += ", " + tbl.version
		}
		engine += ")" + tbl.mergeTreeClauses()
		if !strings.HasSuffix(local, engine) {
			t.Errorf("%s: local table\n%s\nwant it to end with\n%s", tbl.name, local, engine)
		}
		if tbl.name == migrationsTable.name {
			continue
		}
		if got := parseColumns(t, dist); !reflect.DeepEqual(got, tbl.columns) {
			t.Errorf("%s: distributed table columns\n got %v\nwant %v", tbl.name, got, tbl.columns)
		}
		want := fmt.Sprintf("ENGINE = Distributed('prod', 'bouncer', '%s', %s)", tbl.name+LocalSuffix, tbl.shardingKey)
		if !strings.HasSuffix(dist, want) {
			t.Errorf("%s: distributed table\n%s\nwant it to end with\n%s", tbl.name, dist, want)
		}
	}
	if len(byTable) != 1+2*len(schema) {
		t.Errorf("%d tables created, want %d: %v", len(byTable), 1+2*len(schema), stmts)
	}
	last := stmts[len(stmts)-1]
	if want := fmt.Sprintf("INSERT INTO `bouncer`.`schema_migrations` (version, applied) SELECT %d, now()", len(migrations)); last != want {
		t.Errorf("last statement = %q, want %q", last, want)
	}
}

// parseColumns reads the column list back out of a CREATE TABLE.
func parseColumns(t *testing.T, stmt string) []column {
	t.Helper()
	start, end := strings.Index(stmt, "(\n"), strings.Index(stmt, "\n)")
	if start < 0 || end < start {
		t.Fatalf("no column list in\n%s", stmt)
	}
	var cols []column
	for _, line := range strings.Split(stmt[start+2:end], "\n") {
		name, typ, ok := strings.Cut(strings.TrimSuffix(strings.TrimSpace(line), ","), " ")
		if !ok {
			t.Fatalf("column line %q", line)
		}
		cols = append(cols, column{name, typ})
	}
	return cols
}

// replicated matches the Replicated engine's ZooKeeper arguments; its
// group 1 is the engine it replicates.
var replicated = regexp.MustCompile(`Replicated((?:Replacing)?MergeTree)\('[^']*', '\{replica\}'(?:, )?`)

// createClusterDatabase runs ClusterDDL on a server without ZooKeeper, the
// way the tests can: ON CLUSTER removed (it needs ZooKeeper's DDL queue);
// each Replicated table first as generated, which must get as far as
// "no ZooKeeper" (so it parsed and its macros expanded), then as the
// plain ReplacingMergeTree (or MergeTree) it replicates. The Distributed
// tables are real.
func createClusterDatabase(t testing.TB, conn driver.Conn, database string) {
	t.Helper()
	ctx := context.Background()
	on := " ON CLUSTER `" + clickhousetest.ClusterName + "`"
	for i, stmt := range ClusterDDL(clickhousetest.ClusterName, database) {
		if strings.HasPrefix(stmt, "CREATE ") {
			if !strings.Contains(stmt, on) {
				t.Fatalf("statement %d lacks %q:\n%s", i+1, on, stmt)
			}
			stmt = strings.Replace(stmt, on, "", 1)
		}
		if replicated.MatchString(stmt) {
			err := conn.Exec(ctx, stmt)
			if err == nil || !strings.Contains(err.Error(), "ZooKeeper") {
				t.Fatalf("statement %d, as generated: %v; want the server to want ZooKeeper:\n%s", i+1, err, stmt)
			}
			stmt = replicated.ReplaceAllString(stmt, "${1}(")
		}
		if err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("statement %d: %v\n%s", i+1, err, stmt)
		}
	}
}

// The cluster schema has the single-node schema's tables: same columns,
// partitioning, sorting and engine (but replicated) for the local tables,
// same columns for the Distributed ones.
func TestClusterDDLMatchesSchema(t *testing.T) {
	srv := clickhousetest.NewServerOptions(t, clickhousetest.Options{Cluster: true})
	single := openDSN(t, srv.DSN("single"), Options{})
	defer single.Close()
	createClusterDatabase(t, single.conn, "clustered")

	got := describeTable(t, single, "clustered", migrationsTable.name)
	want := describeTable(t, single, "single", migrationsTable.name)
	got.engine = strings.TrimSuffix(got.engine, "()") // ReplacingMergeTree() from the rewrite
	if !reflect.DeepEqual(got, want) {
		t.Errorf("schema_migrations\ncluster %+v\n single %+v", got, want)
	}
	for _, tbl := range schema {
		want := describeTable(t, single, "single", tbl.name)
		got := describeTable(t, single, "clustered", tbl.name+LocalSuffix)
		got.engine = strings.TrimSuffix(got.engine, "()")
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s%s\ncluster %+v\n single %+v", tbl.name, LocalSuffix, got, want)
		}
		dist := describeTable(t, single, "clustered", tbl.name)
		if !reflect.DeepEqual(dist.columns, want.columns) {
			t.Errorf("%s (Distributed) columns\ncluster %v\n single %v", tbl.name, dist.columns, want.columns)
		}
		if !strings.HasPrefix(dist.engine, "Distributed(") {
			t.Errorf("%s engine = %s, want Distributed", tbl.name, dist.engine)
		}
	}
}

// The store works through the cluster schema's Distributed tables, with
// prefer_localhost_replica=0 so the one shard is queried over the network
// as a remote one would be (external tables, IN subqueries, argMax merged
// at the initiator, synchronous distributed inserts). Open finds the
// version ClusterDDL recorded and migrates nothing.
func TestConformanceDistributed(t *testing.T) {
	srv := clickhousetest.NewServerOptions(t, clickhousetest.Options{Cluster: true})
	admin := openDSN(t, srv.DSN("admin"), Options{})
	defer admin.Close()
	storetest.Run(t, func(t *testing.T) store.Store {
		db := clickhousetest.NewDatabaseName(t)
		createClusterDatabase(t, admin.conn, db)
		s := openDSN(t, srv.DSN(db)+"&prefer_localhost_replica=0", Options{})
		var (
			versions uint32
			rows     uint64
		)
		if err := s.conn.QueryRow(context.Background(),
			"SELECT max(version), count() FROM schema_migrations").Scan(&versions, &rows); err != nil {
			t.Fatal(err)
		}
		if int(versions) != len(migrations) || rows != 1 {
			t.Errorf("after Open on the cluster schema: version %d in %d rows, want %d in 1", versions, rows, len(migrations))
		}
		return s
	})
}

// withExtraMigration pretends the binary has one migration more, for the
// test's duration.
func withExtraMigration(t *testing.T, stmts ...string) {
	saved := migrations
	migrations = append(migrations[:len(migrations):len(migrations)], stmts)
	t.Cleanup(func() { migrations = saved })
}

// Open upgrades a single-node database, but refuses to run single-node
// statements against a cluster schema's Distributed tables.
func TestOpenUpgrade(t *testing.T) {
	srv := clickhousetest.NewServerOptions(t, clickhousetest.Options{Cluster: true})
	single := openDSN(t, srv.DSN("single"), Options{})
	defer single.Close()
	createClusterDatabase(t, single.conn, "clustered")

	// The migration a new class would bring: extending the Enum8 is a
	// metadata-only ALTER on 18.16 as on current releases.
	withExtraMigration(t, `ALTER TABLE events MODIFY COLUMN class Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3,
		'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7, 'newclass' = 8)`)

	upgraded := openDSN(t, srv.DSN("single"), Options{})
	defer upgraded.Close()
	v, err := schemaVersion(context.Background(), upgraded.conn)
	if err != nil || v != len(migrations) {
		t.Errorf("after the upgrade: schema version %d, %v; want %d", v, err, len(migrations))
	}
	if got, err := upgraded.RecipientEvents(context.Background(), "a@example.com", 1); err != nil || len(got) != 0 {
		t.Errorf("after the upgrade: RecipientEvents = %v, %v", got, err)
	}

	s, err := Open(context.Background(), srv.DSN("clustered"), Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open migrated a cluster schema")
	}
	if !strings.Contains(err.Error(), "ON CLUSTER") {
		t.Errorf("Open of an old cluster schema: %v; want it to say what to do", err)
	}
}

// A recount reads a minute of stats_log from one snapshot only when all
// of the minute's rows are on one shard (doc.go "Query plans"), and a
// minute's recounts collapse in merges only on one shard: both tables
// shard by minute, and not all minutes to one shard.
func TestClusterShardsByMinute(t *testing.T) {
	s := openDSN(t, clickhousetest.Start(t), Options{})
	defer s.Close()
	tests := []struct {
		tbl    table
		column string
	}{
		{statsLogTable, "time"},
		{statsMinutesTable, "minute"},
	}
	for _, tt := range tests {
		for _, c := range []struct {
			name string
			from int // seconds after a minute's start
			n    int // seconds
			want uint64
		}{{"one minute", 0, 60, 1}, {"two minutes", 30, 60, 2}, {"an hour", 0, 3600, 60}} {
			var got uint64
			q := fmt.Sprintf("SELECT uniqExact(%s) FROM (SELECT toDateTime(1764081480 + %d + number) AS %s FROM numbers(%d))",
				tt.tbl.shardingKey, c.from, tt.column, c.n)
			if err := s.conn.QueryRow(context.Background(), q).Scan(&got); err != nil {
				t.Fatalf("%s: %v", tt.tbl.name, err)
			}
			if got != c.want {
				t.Errorf("%s, %s: %d sharding key values, want %d", tt.tbl.name, c.name, got, c.want)
			}
		}
	}
}
