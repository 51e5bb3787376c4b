// Package sqlite is bouncer's embedded store engine: store.Store on one
// SQLite database file (modernc.org/sqlite, pure Go, no cgo).
//
// The database runs in WAL mode with synchronous=FULL, so a Write that
// returned survives a power loss: ingest acknowledges a NATS message only
// after that. Writes go through a single connection (SQLite has one writer
// at a time anyway, and queueing in database/sql is cheaper than spinning
// on SQLITE_BUSY); reads use a separate pool of query-only connections,
// which WAL lets run alongside the writer.
//
// Times are stored as INTEGER UTC Unix nanoseconds.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/bouncer-mail/bouncer/store"
)

// driverName is the name modernc.org/sqlite registers with database/sql.
const driverName = "sqlite"

// Defaults for the zero Options.
const (
	DefaultBusyTimeout = 10 * time.Second
	DefaultReadConns   = 4
	// DefaultWriterCacheBytes is the write connection's page cache.
	// Ingest's inserts land in random places of the id, recipient and
	// return-path indexes: with SQLite's own 2 MiB cache each one read
	// its pages again from the file (BenchmarkBatchAsStoreGrows in
	// ingest, 400,000 reports stored: 655 MiB read and 384 MiB written
	// per 2,000-report batch, 2,412 reports/s; with 64 MiB 181 and 289
	// MiB, 3,232 reports/s). 32 MiB rather than the 64 measured there:
	// the cache costs twice its size in memory (CacheMemory), and 64
	// MiB took the all-in-one past its memory bound at 2,400 reports/s
	// (docs/reliability.md, "One hour of load").
	DefaultWriterCacheBytes = 32 << 20
)

// CacheMemory is the memory a page cache of cacheBytes (cache_size) takes
// once full: about twice cacheBytes. modernc.org/sqlite's allocator
// (modernc.org/memory) hands out power-of-two slots, and a 4 KiB page
// with SQLite's header of a few hundred bytes takes an 8 KiB slot. A
// program filling the cache by a table scan grew its anonymous resident
// memory by 58 MiB with cache_size 32 MiB and by 116 MiB with 64 MiB.
func CacheMemory(cacheBytes int64) int64 { return 2 * cacheBytes }

// Options tunes a Store. The zero value is ready to use.
type Options struct {
	// BusyTimeout is how long a statement waits for a lock another process
	// (or a checkpoint) holds before failing with SQLITE_BUSY.
	BusyTimeout time.Duration
	// ReadConns caps the read pool's open connections.
	ReadConns int
	// WriterCacheBytes is the write connection's page cache (SQLite's
	// cache_size), allocated as it fills, outside the Go heap: a Go
	// memory limit does not count it. It takes CacheMemory of it.
	WriterCacheBytes int64
	// Logger receives what the store does by itself (its checkpoints'
	// failures); nil discards it.
	Logger *slog.Logger
	// Registerer, when set, receives the store's metrics (its
	// checkpoints) until Close.
	Registerer prometheus.Registerer
}

// Validate reports whether the options are usable.
func (o Options) Validate() error {
	if o.BusyTimeout < 0 {
		return errors.New("sqlite: Options.BusyTimeout is negative")
	}
	if o.ReadConns < 0 {
		return errors.New("sqlite: Options.ReadConns is negative")
	}
	if o.WriterCacheBytes < 0 {
		return errors.New("sqlite: Options.WriterCacheBytes is negative")
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.BusyTimeout == 0 {
		o.BusyTimeout = DefaultBusyTimeout
	}
	if o.ReadConns == 0 {
		o.ReadConns = DefaultReadConns
	}
	if o.WriterCacheBytes == 0 {
		o.WriterCacheBytes = DefaultWriterCacheBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Store is a store.Store on a SQLite file. It is safe for concurrent use.
type Store struct {
	w    *sql.DB // the single write connection
	r    *sql.DB // the read pool, query_only
	ckpt *checkpointer

	reg     prometheus.Registerer
	metrics []prometheus.Collector // registered with reg, until Close

	// mu guards closed. Every method holds it for reading while it runs,
	// so Close waits for in-flight calls instead of failing them midway.
	gate store.Gate

	addressStmt atomic.Pointer[sql.Stmt] // see suppressions.go
}

var _ store.Store = (*Store)(nil)

// Open opens (creating it if absent) the database at path, a file name,
// and applies the migrations it lacks. ":memory:" is not supported: the
// read pool needs a file to share.
func Open(ctx context.Context, path string, opts Options) (_ *Store, err error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("sqlite: path %q: want a plain file name", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}

	// The pools opened so far are closed again, the writer last, when a
	// later step fails; once the Store holds them, Close does it.
	var opened []*sql.DB
	defer func() {
		if err != nil {
			for _, db := range slices.Backward(opened) {
				db.Close()
			}
		}
	}()
	open := func(role role) (*sql.DB, error) {
		db, err := sql.Open(driverName, dsn(abs, opts, role))
		if err != nil {
			return nil, fmt.Errorf("sqlite: opening %s: %w", abs, err)
		}
		opened = append(opened, db)
		return db, nil
	}

	w, err := open(roleWriter)
	if err != nil {
		return nil, err
	}
	oneConn(w)
	if err = checkWriter(ctx, w); err != nil {
		return nil, fmt.Errorf("sqlite: opening %s: %w", abs, err)
	}
	if err = migrate(ctx, w); err != nil {
		return nil, fmt.Errorf("sqlite: migrating %s: %w", abs, err)
	}

	// The read pool opens after the writer switched the file to WAL, so
	// it never needs to write the journal mode itself.
	r, err := open(roleReader)
	if err != nil {
		return nil, err
	}
	r.SetMaxOpenConns(opts.ReadConns)
	r.SetMaxIdleConns(opts.ReadConns)
	if err = r.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: opening %s: %w", abs, err)
	}
	c, err := open(roleCheckpointer)
	if err != nil {
		return nil, err
	}
	oneConn(c)
	if err = c.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: opening %s: %w", abs, err)
	}

	s := &Store{w: w, r: r, ckpt: startCheckpointer(c, opts.Logger), reg: opts.Registerer}
	opened = nil
	if s.reg != nil {
		for _, m := range s.ckpt.collectors() {
			if err := s.reg.Register(m); err != nil {
				s.Close()
				return nil, fmt.Errorf("sqlite: metrics: %w (one open Store per Registerer)", err)
			}
			s.metrics = append(s.metrics, m)
		}
	}
	return s, nil
}

// oneConn makes db a single connection, kept open for good.
func oneConn(db *sql.DB) {
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
}

// dsn builds a file: URI for the driver. Every connection gets the
// pragmas, as they are per connection (journal_mode is per file, but
// asking again is harmless). The writer begins its transactions
// IMMEDIATE, so a write never fails halfway to upgrade its lock.
func dsn(abs string, opts Options, role role) string {
	q := url.Values{}
	q.Set("_busy_timeout", strconv.FormatInt(opts.BusyTimeout.Milliseconds(), 10))
	q.Set("_foreign_keys", "1")
	// FULL on the checkpointer too: it fsyncs the database file after
	// copying frames into it, before the WAL may be reset over them.
	q.Set("_synchronous", "FULL")
	switch role {
	case roleReader:
		q.Set("_query_only", "1")
	case roleCheckpointer:
		// It only checkpoints: no journal mode to set, no cache to fill
		// (a checkpoint copies frames without SQLite's page cache).
	case roleWriter:
		q.Set("_journal_mode", "WAL")
		q.Set("_txlock", "immediate")
		// 4 KiB pages for a new file (an existing one keeps its own;
		// stores made between 9a959bf and this have 16 KiB). Ingest's
		// inserts land in random places of the id, recipient and
		// outcome indexes, so on a store of some size each dirties
		// a page of its own, written to the WAL and again at the
		// checkpoint: the smaller the page, the fewer bytes.
		// BenchmarkBatchAsStoreGrows (ingest) with 1,600,000 reports
		// stored: 16 KiB pages and SQLite's 2 MiB cache 2,118 reports/s,
		// 798 MiB read and 448 MiB written per 2,000-report batch; 4 KiB
		// and 64 MiB 2,984 reports/s, 187 and 145 MiB; at 400,000, 16
		// KiB and 64 MiB wrote 289 MiB a batch, 4 KiB 125. On a fresh
		// store 16 KiB was faster (bench/ingest, 20,000 reports: 10,092-
		// 10,717 reports/s against 6,998-8,746): a raw report fits its
		// row's page there instead of taking an overflow page, but a
		// store does not stay fresh.
		q.Add("_pragma", "page_size(4096)")
		// A negative cache_size is KiB rather than pages.
		q.Add("_pragma", fmt.Sprintf("cache_size(%d)", -max(opts.WriterCacheBytes>>10, 1)))
		// The checkpointer copies the WAL; the writer only as a
		// backstop (checkpoint.go).
		q.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", writerAutoCheckpoint))
	}
	// The path goes through url.URL so '?', '#' and '%' in it are escaped;
	// SQLite decodes %HH in a file: URI.
	return "file:" + (&url.URL{Path: abs}).EscapedPath() + "?" + q.Encode()
}

// role is what a connection of the Store is for.
type role int

const (
	roleWriter role = iota
	roleReader
	roleCheckpointer
)

// checkWriter makes sure the pragmas that durability depends on took
// effect: a file system without shared memory support silently keeps the
// rollback journal, for example.
func checkWriter(ctx context.Context, w *sql.DB) error {
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal_mode is %q, want wal", mode)
	}
	var sync int
	if err := w.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return err
	}
	if sync != syncFull {
		return fmt.Errorf("synchronous is %d, want %d (FULL)", sync, syncFull)
	}
	return nil
}

// syncFull is PRAGMA synchronous's value for FULL.
const syncFull = 2

// Ping reports whether the write connection answers, within ctx.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	var n int
	if err := s.w.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// IngestBatchSize is the batch ingest writes this store with
// (ingest.BatchSizer): 8,000 reports, not ingest's 500. A batch costs a
// few fixed transactions and reads (the write, the re-fold's reads, its
// outcomes and suppressions), so bigger batches are cheaper per report:
// bench/ingest gave 6,019-6,070 reports/s at 500 and 8,117-8,270 at
// 2,000 (session 5); with bundled reports and batches that count
// reports, 7,054-8,132 at 2,000 and 9,949-10,569 at 8,000 (bench/README.md,
// session 10). A batch is only that big when ingest is behind; the store
// is local, so it is written in a few seconds at most.
func (s *Store) IngestBatchSize() int { return 8000 }

// Close waits for running calls, then stops the checkpointer and closes
// the connections. Later calls return store.ErrClosed; closing again
// returns nil.
func (s *Store) Close() error {
	return s.gate.Close(func() error {
		for _, m := range s.metrics {
			s.reg.Unregister(m)
		}
		s.ckpt.stop()
		// The writer closes last: as the last connection it checkpoints
		// what is left and removes the WAL.
		return errors.Join(s.ckpt.db.Close(), s.r.Close(), s.w.Close())
	})
}
