package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/bouncer-mail/bouncer/store"
)

// Defaults for what neither Options nor the DSN sets.
const (
	// DefaultDialTimeout bounds connecting, so a server that is down
	// fails a call quickly instead of at clickhouse-go's 30 s.
	DefaultDialTimeout = 5 * time.Second
	// DefaultReadTimeout bounds each wait for the server while a query
	// runs. The server sends progress packets while it works, so this is
	// how long a silent (wedged, partitioned) server may hang a call
	// whose context has no deadline, not a cap on query time.
	DefaultReadTimeout = 30 * time.Second
	// DefaultMaxOpenConns caps the connection pool.
	DefaultMaxOpenConns = 10
)

// Options tunes a Store. The zero value is ready to use.
type Options struct {
	// DialTimeout, ReadTimeout and MaxOpenConns, when zero, take the
	// DSN's value (dial_timeout, read_timeout, max_open_conns), else the
	// package default.
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	MaxOpenConns int

	// ReportLookback is how far around a batch's received times Write
	// looks for the batch's reports among those stored (report_keys);
	// zero means DefaultReportLookback. A redelivery or a retry of a
	// batch carries the received times it was first written with, so it
	// is always found; the lookback decides how late a resend (a remote
	// MTA sending the same bytes again, having missed our 250) is still
	// recognised. One received later than that is stored, and counted in
	// Stats, again; reads still show one row per id. A Write reads 12
	// bytes a report received within the lookback on either side: at
	// 3,000 reports/s and 10 minutes, 1.8 million keys, 22 MB.
	ReportLookback time.Duration

	// CheckAddressesOnly keeps only the addresses that have a
	// suppression row in CheckSuppressions' memory, 8 bytes each, instead
	// of every key's latest version (about 50 to 150 bytes a suppression,
	// BenchmarkSuppressionFilter): a check of such an address then reads
	// ClickHouse (about 2 ms on 18.16, p99 3 ms) instead of answering from
	// memory. For lists of tens of millions of suppressions.
	CheckAddressesOnly bool
}

// Validate reports whether the options are usable.
func (o Options) Validate() error {
	if o.DialTimeout < 0 {
		return errors.New("clickhouse: Options.DialTimeout is negative")
	}
	if o.ReadTimeout < 0 {
		return errors.New("clickhouse: Options.ReadTimeout is negative")
	}
	if o.MaxOpenConns < 0 {
		return errors.New("clickhouse: Options.MaxOpenConns is negative")
	}
	if o.ReportLookback < 0 {
		return errors.New("clickhouse: Options.ReportLookback is negative")
	}
	return nil
}

// identPattern is what Open accepts as a database name: no quoting games.
var identPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Store is a store.Store on a ClickHouse database. It is safe for
// concurrent use.
type Store struct {
	conn           driver.Conn
	database       string
	reportLookback time.Duration

	// mu guards closed. Every method holds it for reading while it runs,
	// so Close waits for in-flight calls instead of failing them midway.
	gate store.Gate

	checks checkFilter // CheckSuppressions' membership filter (suppressions.go)
	// checkReads bounds the checks read from ClickHouse at once
	// (CheckSuppressions), so they leave connections to the filter's
	// refresh and to ingest.
	checkReads chan struct{}
	// pairs: a Write may run two statements at once (two connections
	// of the pool). Not with a pool of one, where the second would wait
	// for the first and could time out waiting.
	pairs bool
}

var _ store.Store = (*Store)(nil)

// Open connects to the database the DSN names
// (clickhouse://host:9000/database?dial_timeout=5s&...), creating it if
// absent, and applies the migrations it lacks. Only the native protocol
// works with ClickHouse 18.16 (its HTTP interface rejects a setting
// clickhouse-go's HTTP mode sends), so http:// and https:// DSNs are
// refused. DSN parameters clickhouse-go does not know are sent as query
// settings, e.g. insert_quorum=2 or max_bytes_before_external_group_by.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	co, err := ch.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	if co.Protocol != ch.Native {
		return nil, errors.New("clickhouse: DSN: want the native protocol, clickhouse://host:9000/database")
	}
	db := co.Auth.Database
	if db == "" {
		return nil, errors.New("clickhouse: DSN names no database, want clickhouse://host:9000/database")
	}
	if !identPattern.MatchString(db) {
		return nil, fmt.Errorf("clickhouse: database name %q: want letters, digits and _", db)
	}
	if opts.DialTimeout != 0 {
		co.DialTimeout = opts.DialTimeout
	} else if co.DialTimeout == 0 {
		co.DialTimeout = DefaultDialTimeout
	}
	if opts.ReadTimeout != 0 {
		co.ReadTimeout = opts.ReadTimeout
	} else if co.ReadTimeout == 0 {
		co.ReadTimeout = DefaultReadTimeout
	}
	if opts.MaxOpenConns != 0 {
		co.MaxOpenConns = opts.MaxOpenConns
	} else if co.MaxOpenConns == 0 {
		co.MaxOpenConns = DefaultMaxOpenConns
	}
	if co.MaxIdleConns == 0 || co.MaxIdleConns > co.MaxOpenConns {
		co.MaxIdleConns = co.MaxOpenConns
	}

	if err := createDatabase(ctx, *co, db); err != nil {
		return nil, fmt.Errorf("clickhouse: creating database %s: %w", db, err)
	}
	conn, err := ch.Open(co)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	if err := migrate(ctx, conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse: migrating %s: %w", db, err)
	}
	lookback := opts.ReportLookback
	if lookback == 0 {
		lookback = DefaultReportLookback
	}
	s := &Store{conn: conn, database: db, reportLookback: lookback,
		checkReads: make(chan struct{}, checkReadSlots(co.MaxOpenConns)), pairs: co.MaxOpenConns > 1}
	s.checks.opts.AddressesOnly = opts.CheckAddressesOnly
	return s, nil
}

// createDatabase creates db over a connection to the server's default
// database: a connection to a database that does not exist yet fails.
func createDatabase(ctx context.Context, co ch.Options, db string) error {
	co.Auth.Database = ""
	co.MaxOpenConns, co.MaxIdleConns = 1, 1
	conn, err := ch.Open(&co)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(db))
}

// Ping reports whether the server answers and the schema is readable,
// within ctx.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	var v uint32
	if err := s.conn.QueryRow(ctx, "SELECT max(version) FROM schema_migrations").Scan(&v); err != nil {
		return fmt.Errorf("clickhouse: ping: %w", err)
	}
	return nil
}

// IngestBatchSize is the batch ingest writes this store with
// (ingest.BatchSizer): 8,000 reports, not ingest's 500. Most of a batch's
// cost is the server's per statement (the inserts into each table, the
// re-fold's reads, the recount of the Stats rollup's minutes), so bigger
// batches cost less per report: bench/ingest gave 3,714-4,225 reports/s
// at 500, 6,415-6,612 at 2,000, 8,697-8,835 at 4,000 and 9,447-9,721 at
// 8,000 (bench/README.md, session 6); with bundled reports and batches
// that count reports, 6,768-6,782 at 4,000 and 9,068-9,314 at 8,000
// (session 10). A batch of 8,000 reports of 4 KB is 32 MB of raw
// reports. A link too slow for a batch that big within the write timeout
// makes ingest halve its batches until they fit (ingest's batch limit).
func (s *Store) IngestBatchSize() int { return 8000 }

// Close waits for running calls, then closes the connection pool. Later
// calls return store.ErrClosed; closing again returns nil.
func (s *Store) Close() error {
	return s.gate.Close(func() error {
		if err := s.conn.Close(); err != nil {
			return fmt.Errorf("clickhouse: close: %w", err)
		}
		return nil
	})
}
