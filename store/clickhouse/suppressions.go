package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// Suppressions (store.SuppressionStore) on ClickHouse.
//
// suppressions holds one row per version of a key (address, stream): a
// put inserts a version, a removal inserts a copy of the current version
// with removed = 1. version is the version's Updated in Unix
// nanoseconds, so merges keep each key's newest; reads must be right
// before any merge, and take it themselves:
//
//   - The point reads (AddressSuppressions, RemoveSuppression's check)
//     use FINAL with a PREWHERE on the key only: every version of a key
//     has its address, so the filter cannot split them, and FINAL
//     collapses them as it reads the address's one granule per part.
//     PREWHERE, which 18.16 does not move a condition on a key column
//     to by itself, reads the address column first and the other eleven
//     only for a granule that holds the address. Measured on 18.16 with
//     1,000,000 suppressions, two cores (BenchmarkAddressSuppressions):
//     about 2 ms a lookup, against 3 ms for argMax(...) GROUP BY.
//     Whether a version is in force is decided in Go, after the
//     collapse: a condition on removed, since or until would run before
//     FINAL, and an older version would show through a newer removal.
//   - The export (EachSuppression) is the same read for every key: FINAL
//     over the whole table, in key order, the same filters applied in
//     Go. The check before a send (CheckSuppressions) is answered from
//     memory (store.SuppressionFilter: every key's latest version), fed
//     by the versions written since its last read (checkFeed, a scan of
//     the version column and of the rows of the seconds that changed;
//     check_feed.go).
//   - Listings and stats filter on those columns in SQL, so they take
//     each key's newest version with argMax(tuple(...), version) GROUP BY
//     address, stream, as query.go does for events, and filter that.
//
// The small index_granularity (256 rows, not 8192) makes the point
// reads' granule small.
//
// Times are Int64 Unix nanoseconds, not DateTime (whole seconds) or
// DateTime64 (not in 18.16): Updated orders versions to the nanosecond,
// and Since and Until come back exactly as put. class is a String, not
// events' Enum8: a manual suppression has none ("").
//
// There are no transactions. A put inserts its suppression versions
// first and their audit lines second, a removal likewise, so a crash (or
// failure) in between leaves at worst an audit line missing, never a
// suppression missing; a retried put writes the versions again (newer,
// with the same content) and the audit lines once more.
var suppressionsTable = table{
	name: "suppressions",
	columns: []column{
		{"address", "String"},
		{"stream", "String"},
		{"version", "UInt64"},
		{"removed", "UInt8"},
		{"source", "String"},
		{"class", "String"},
		{"reason", "String"},
		{"rule", "String"},
		{"since", "Int64"},
		{"until", "Int64"},
		{"actor", "String"},
		{"note", "String"},
	},
	version: "version",
	orderBy: "(address, stream)",
	// An address's versions on one shard: merges collapse them, and the
	// send-time check asks one shard's one granule.
	shardingKey: "cityHash64(address)",
	settings:    "index_granularity = 256",
}

// suppressionAuditTable is the audit trail, append-only: MergeTree, as
// two lines may share (address, time). Read per address, like
// suppressions, so its granules are small too.
var suppressionAuditTable = table{
	name: "suppression_audit",
	columns: []column{
		{"address", "String"},
		{"time", "Int64"},
		{"stream", "String"},
		{"action", "String"},
		{"source", "String"},
		{"actor", "String"},
		{"note", "String"},
		{"class", "String"},
		{"reason", "String"},
		{"rule", "String"},
	},
	orderBy:     "(address, time)",
	shardingKey: "cityHash64(address)",
	appendOnly:  true,
	settings:    "index_granularity = 256",
}

var (
	insertSuppressions     = "INSERT INTO suppressions " + suppressionsTable.columnList()
	insertSuppressionAudit = "INSERT INTO suppression_audit " + suppressionAuditTable.columnList()
)

// newestSuppressions is each key's newest version among the rows WHERE
// (appended by the caller) selects, as one argMax over a tuple so two
// rows of one version cannot mix: t.1 is version, t.2 removed, t.3
// source, t.4 class, t.5 reason, t.6 rule, t.7 since, t.8 until, t.9
// actor, t.10 note.
const newestSuppressions = `SELECT address, stream,
	argMax(tuple(version, removed, source, class, reason, rule, since, until, actor, note), version) AS t
	FROM suppressions
	WHERE `

// suppressionRow reads newestSuppressions' rows.
const suppressionRow = `SELECT address, stream, t.1, t.2, t.3, t.4, t.5, t.6, t.7, t.8, t.9, t.10`

// inForceAt keeps the newest versions in force at the instant bound
// twice after it: not removed, started, not ended.
const inForceAt = `t.2 = 0 AND t.7 <= ? AND (t.8 = 0 OR t.8 > ?)`

// pointColumns reads the versions of the keys PREWHERE (appended by the
// caller, on key columns only: see above) selects, collapsed by FINAL:
// the columns scanSuppressions reads.
const pointColumns = `SELECT address, stream, version, removed, source, class, reason, rule, since, until, actor, note
	FROM suppressions FINAL
	PREWHERE `

// selectAddressSuppressions is every stream's newest version of one
// address, in force or not: AddressSuppressions filters them.
const selectAddressSuppressions = pointColumns + `address = ? ORDER BY stream`

// selectSuppressionKey is one key's newest version, in force or not.
const selectSuppressionKey = pointColumns + `address = ? AND stream = ?`

// pointReadSettings go with the reads of one address. The read is one
// granule per part, so the time goes to opening and decompressing each
// column's block: the uncompressed cache keeps hot blocks decompressed,
// and one thread is all a granule needs. Measured on 18.16 with
// 1,000,000 suppressions, two cores, for the argMax form of the read:
// about 3 ms with them against 4.5 ms without, where SELECT 1 takes about
// 1 ms.
var pointReadSettings = ch.Settings{"use_uncompressed_cache": 1, "max_threads": 1}

// Listing pages. 18.16 cannot read a table in key order (current
// releases can, optimize_read_in_order), so grouping every key after the
// cursor and keeping the first Limit would aggregate the rest of the
// table for each page: 1.3 to 3.6 s a page with 1,000,000 keys, hours
// for an export. A page is therefore found in two steps:
//
//  1. selectWindowEnd: the key of the window-th row after the cursor, old
//     versions counted too: only the key columns of the rest are read
//     and a partial sort keeps window rows;
//  2. selectSuppressionsWindow: each key's newest version in (cursor,
//     window end], a range of the primary index, filtered and in key
//     order.
//
// When the filters leave fewer than Limit rows in the window, the next
// window starts at its end, twice as wide. A key's versions all share the
// key, so a window holds whole keys. Measured on 18.16 with 1,000,000
// keys, two cores (BenchmarkSuppressionsPage), a page of 1,000 takes
// about 40 to 80 ms at the start, 30 to 40 ms in the middle, 12 ms at
// the end (one page of the plain grouping: 1.3 to 3.6 s). Step
// 1 still reads the key columns of every row after the cursor, so an
// export of N keys reads about N²/(2·Limit) key pairs.
//
// Both steps spell the cursor out rather than as (address, stream) >
// (?, ?), so that 18.16's index analysis sees the range on address. The
// first %s is the stream condition, the second selectSuppressionsWindow's
// window end (atOrBeforeEnd, or none for the last window).
const (
	afterCursor     = `address >= ? AND (address > ? OR stream > ?)`
	atOrBeforeEnd   = ` AND address <= ? AND (address < ? OR stream <= ?)`
	selectWindowEnd = `SELECT address, stream FROM suppressions
WHERE ` + afterCursor + `%s
ORDER BY address, stream
LIMIT 1 OFFSET ?`
	selectSuppressionsWindow = suppressionRow + ` FROM (
	` + newestSuppressions + afterCursor + `%s%s
	GROUP BY address, stream
)
WHERE ` + inForceAt + ` AND t.7 >= ?
ORDER BY address, stream
LIMIT ?`
)

// Window sizes in rows, as multiples of the page's Limit: the first
// window, and the widest.
const (
	firstWindow  = 2
	widestWindow = 16
)

// selectEachSuppression is every key's newest version, in force or not
// (EachSuppression filters them as AddressSuppressions does), in key
// order: FINAL merges the parts' sorted streams, which 18.16 does in
// order anyway, so the ORDER BY costs it a sort of the result (about
// 1 s of the export of 1,000,000 keys, on the server); current releases
// read in order for it (optimize_read_in_order). %s is a PREWHERE on the
// key columns (the cursor, the stream), or nothing.
const selectEachSuppression = `SELECT address, stream, version, removed, source, class, reason, rule, since, until, actor, note
	FROM suppressions FINAL%s
	ORDER BY address, stream`

// eachSettings go with selectEachSuppression: blocks of 8,192 rows (not
// 65,536) keep the rows clickhouse-go holds decoded, a block being read
// and those buffered, at a few megabytes.
var eachSettings = ch.Settings{"max_block_size": 8192}

// selectAddressesSince reads every version written at or after a time.
// version is not in the sorting key, so it reads the version column of
// the whole table (8 bytes a version: 1,000,000 keys in a few
// milliseconds) and the address of the versions it keeps.
const selectAddressesSince = `SELECT address FROM suppressions WHERE version >= ?`

// addressesSinceSettings: one thread, as for the check filter's feed
// (checkFeed): a read on both of two cores would stall the checks.
var addressesSinceSettings = ch.Settings{"max_threads": 1}

// selectSuppressionStats counts the keys whose newest version is in
// force (t.2 removed, t.5 since, t.6 until), by source, class and stream.
const selectSuppressionStats = `SELECT t.3 AS src, t.4 AS cls, stream, count() FROM (
	SELECT address, stream, argMax(tuple(version, removed, source, class, since, until), version) AS t
	FROM suppressions
	GROUP BY address, stream
)
WHERE t.2 = 0 AND t.5 <= ? AND (t.6 = 0 OR t.6 > ?)
GROUP BY src, cls, stream`

// selectSuppressionHistory: audit lines of one time (rare: a put's
// versions of one key differ by a nanosecond at least) come in a fixed
// but arbitrary order.
const selectSuppressionHistory = `SELECT time, address, stream, action, source, actor, note, class, reason, rule
	FROM suppression_audit
	WHERE address = ?
	ORDER BY time DESC, stream DESC, action DESC
	LIMIT ?`

const selectLatestRemoval = `SELECT max(time), count() FROM suppression_audit
	WHERE address = ? AND action = '` + store.ActionRemove + `'`

// The range of suppression times: Int64 Unix nanoseconds from the epoch
// (until's 0 means "never", so no time may be 0 or before it).
var (
	suppressionMinTime = time.Unix(0, 0).UTC()
	suppressionMaxTime = time.Unix(0, math.MaxInt64).UTC()
)

func checkSuppressionTime(t time.Time) error {
	if t.Before(suppressionMinTime) || t.After(suppressionMaxTime) {
		return fmt.Errorf("%s outside %s to %s", t.UTC().Format(time.RFC3339Nano),
			suppressionMinTime.Format(time.RFC3339), suppressionMaxTime.Format(time.RFC3339))
	}
	return nil
}

// clampNano is a time bound as Unix nanoseconds, clamped to the range
// instead of wrapping around.
func clampNano(t time.Time) int64 {
	switch {
	case t.Before(suppressionMinTime):
		return 0
	case t.After(suppressionMaxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

type suppressionKey struct{ address, stream string }

// PutSuppressions inserts a new version of each row's key, then the
// rows' audit lines; see store.SuppressionStore and suppressionsTable for
// what a failure in between leaves. Each version is the write's time in
// nanoseconds, or one after the key's stored (or previous in the batch)
// version when that is later.
func (s *Store) PutSuppressions(ctx context.Context, rows []store.Suppression) error {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	if len(rows) == 0 {
		return nil
	}
	if err := store.ValidateSuppressions(rows); err != nil {
		return fmt.Errorf("clickhouse: put suppressions: %w", err)
	}
	for _, r := range rows {
		if err := checkSuppressionTime(r.Since); err != nil {
			return fmt.Errorf("clickhouse: put suppressions: %s: since: %w", r.Address, err)
		}
		if !r.Until.IsZero() {
			if err := checkSuppressionTime(r.Until); err != nil {
				return fmt.Errorf("clickhouse: put suppressions: %s: until: %w", r.Address, err)
			}
		}
	}
	versions, err := s.storedVersions(ctx, rows)
	if err != nil {
		return fmt.Errorf("clickhouse: put suppressions: %w", err)
	}
	now := uint64(time.Now().UnixNano())
	updated := make([]uint64, len(rows))
	for i, r := range rows {
		k := suppressionKey{r.Address, r.Stream}
		v := max(now, versions[k]+1)
		versions[k], updated[i] = v, v
	}

	b, err := s.conn.PrepareBatch(ch.Context(ctx, ch.WithSettings(insertSettings)), insertSuppressions)
	if err != nil {
		return fmt.Errorf("clickhouse: put suppressions: %w", err)
	}
	defer b.Abort() // a no-op after Send
	for i, r := range rows {
		if err := b.Append(r.Address, r.Stream, updated[i], uint8(0), r.Source, string(r.Class), string(r.Reason),
			r.Rule, r.Since.UnixNano(), untilNano(r.Until), r.Actor, r.Note); err != nil {
			return fmt.Errorf("clickhouse: put suppressions: %s/%s: %w", r.Address, r.Stream, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("clickhouse: put suppressions: %w", err)
	}
	// Stored: the check filter learns the versions, so that
	// CheckSuppressions answers with them once this call returns. (One
	// whose insert failed after it landed comes through the filter's
	// feed, as another process's does.)
	if s.checks.filter.Load() != nil {
		versions := make([]store.SuppressionVersion, len(rows))
		for i, r := range rows {
			r.Updated = time.Unix(0, int64(updated[i])).UTC()
			versions[i] = store.SuppressionVersion{Suppression: r}
		}
		s.checks.put(versions...)
	}

	// The suppressions are in; from here a failure loses audit lines only.
	audit := make([]store.SuppressionChange, len(rows))
	for i, r := range rows {
		audit[i] = store.SuppressionChange{Time: time.Unix(0, int64(updated[i])), Address: r.Address, Stream: r.Stream,
			Action: store.ActionAdd, Source: r.Source, Actor: r.Actor, Note: r.Note,
			Class: r.Class, Reason: r.Reason, Rule: r.Rule}
	}
	if err := s.insertAudit(ctx, audit); err != nil {
		return fmt.Errorf("clickhouse: put suppressions: stored, but not their audit lines: %w", err)
	}
	return nil
}

// storedVersions returns the newest stored version of each key of rows
// that has one, looked up by the sorting key through an external table
// (an IN list of a large import would exceed max_query_size).
func (s *Store) storedVersions(ctx context.Context, rows []store.Suppression) (map[suppressionKey]uint64, error) {
	tbl, err := ext.NewTable(batchTable, ext.Column("address", "String"), ext.Column("stream", "String"))
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		if err := tbl.Append(r.Address, r.Stream); err != nil {
			return nil, err
		}
	}
	res, err := s.conn.Query(ch.Context(ctx, ch.WithExternalTable(tbl)),
		`SELECT address, stream, max(version) FROM suppressions
		WHERE (address, stream) IN (SELECT address, stream FROM `+batchTable+`)
		GROUP BY address, stream`)
	if err != nil {
		return nil, fmt.Errorf("looking up stored versions: %w", err)
	}
	defer res.Close()
	versions := make(map[suppressionKey]uint64, len(rows))
	for res.Next() {
		var (
			k suppressionKey
			v uint64
		)
		if err := res.Scan(&k.address, &k.stream, &v); err != nil {
			return nil, fmt.Errorf("looking up stored versions: %w", err)
		}
		versions[k] = v
	}
	if err := res.Err(); err != nil {
		return nil, fmt.Errorf("looking up stored versions: %w", err)
	}
	return versions, nil
}

func (s *Store) insertAudit(ctx context.Context, changes []store.SuppressionChange) error {
	b, err := s.conn.PrepareBatch(ch.Context(ctx, ch.WithSettings(insertSettings)), insertSuppressionAudit)
	if err != nil {
		return err
	}
	defer b.Abort() // a no-op after Send
	for _, c := range changes {
		if err := b.Append(c.Address, c.Time.UnixNano(), c.Stream, c.Action, c.Source, c.Actor, c.Note,
			string(c.Class), string(c.Reason), c.Rule); err != nil {
			return fmt.Errorf("%s/%s: %w", c.Address, c.Stream, err)
		}
	}
	return b.Send()
}

// RemoveSuppression inserts a removed version of key's suppression when
// one is in force at change.Time, then change as an audit line; see
// store.SuppressionStore.
//
// Without transactions the check and the insert are two steps: a put of
// the same key between them is undone by the removal when the removal's
// version is the later one, and survives it otherwise. Either outcome is
// one the two callers could have had in some order.
func (s *Store) RemoveSuppression(ctx context.Context, key store.SuppressionKey, change store.SuppressionChange) error {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	if err := store.ValidateChange(key, change); err != nil {
		return fmt.Errorf("clickhouse: remove suppression: %w", err)
	}
	if err := checkSuppressionTime(change.Time); err != nil {
		return fmt.Errorf("clickhouse: remove suppression: %s: time: %w", key.Address, err)
	}
	rows, err := s.conn.Query(ch.Context(ctx, ch.WithSettings(pointReadSettings)), selectSuppressionKey,
		key.Address, key.Stream)
	if err != nil {
		return fmt.Errorf("clickhouse: remove suppression: %w", err)
	}
	current, err := scanSuppressions(rows)
	if err != nil {
		return fmt.Errorf("clickhouse: remove suppression: %w", err)
	}
	if len(current) == 0 || current[0].removed || !current[0].InForce(change.Time) {
		return fmt.Errorf("clickhouse: remove suppression %s/%s: %w", key.Address, key.Stream, store.ErrNotFound)
	}
	r := current[0]
	version := max(uint64(time.Now().UnixNano()), r.version+1)

	b, err := s.conn.PrepareBatch(ch.Context(ctx, ch.WithSettings(insertSettings)), insertSuppressions)
	if err != nil {
		return fmt.Errorf("clickhouse: remove suppression: %w", err)
	}
	defer b.Abort() // a no-op after Send
	if err := b.Append(r.Address, r.Stream, version, uint8(1), r.Source, string(r.Class), string(r.Reason),
		r.Rule, r.Since.UnixNano(), untilNano(r.Until), r.Actor, r.Note); err != nil {
		return fmt.Errorf("clickhouse: remove suppression: %w", err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("clickhouse: remove suppression: %w", err)
	}
	if s.checks.filter.Load() != nil { // as in PutSuppressions
		r.Updated = time.Unix(0, int64(version)).UTC()
		s.checks.put(store.SuppressionVersion{Suppression: r.Suppression, Removed: true})
	}
	change.Action = store.ActionRemove
	if err := s.insertAudit(ctx, []store.SuppressionChange{change}); err != nil {
		return fmt.Errorf("clickhouse: remove suppression: removed, but not its audit line: %w", err)
	}
	return nil
}

// AddressSuppressions returns address's suppressions in force at now, by
// stream; see store.SuppressionStore. A key-prefix read: one granule per
// part.
func (s *Store) AddressSuppressions(ctx context.Context, address string, now time.Time) ([]store.Suppression, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if now.IsZero() {
		return nil, fmt.Errorf("clickhouse: address suppressions: now: %w", store.ErrZeroTime)
	}
	rows, err := s.conn.Query(ch.Context(ctx, ch.WithSettings(pointReadSettings)), selectAddressSuppressions,
		normalizeAddress(address))
	if err != nil {
		return nil, fmt.Errorf("clickhouse: address suppressions: %w", err)
	}
	stored, err := scanSuppressions(rows)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: address suppressions: %w", err)
	}
	out := []store.Suppression{}
	for _, r := range stored {
		if !r.removed && r.InForce(now) {
			out = append(out, r.Suppression)
		}
	}
	return out, nil
}

// checkFilter is the in-memory answer to CheckSuppressions
// (store.SuppressionFilter over a checkFeed). It is started by the first
// CheckSuppressions, so a process that never checks (ingest) never
// reads it, and stops when the Store is closed (its feed answers
// store.ErrClosed), within one refresh interval.
//
// Its first read, every version of every key, takes a while: 2.4 s of
// CPU for 1,000,000 suppressions, against 0.17 s for their addresses
// alone. Until it has loaded, a second filter of the addresses only
// (starting) answers the addresses never suppressed, as the checks
// would otherwise all go to ClickHouse meanwhile; it is dropped, and its
// refreshes stopped, at the first check after the filter has loaded.
// Options.CheckAddressesOnly makes the filter itself one of the
// addresses only, and there is no second one.
type checkFilter struct {
	once     sync.Once
	filter   atomic.Pointer[store.SuppressionFilter]
	feed     atomic.Pointer[checkFeed]
	starting atomic.Pointer[store.SuppressionFilter] // nil once filter has loaded
	stop     context.CancelFunc                      // ends starting's refreshes
	reads    atomic.Int64                            // checks answered by a read of ClickHouse, for tests
	// Open and tests set these before the first CheckSuppressions.
	opts  store.SuppressionFilterOptions
	noRun bool // no refresh goroutines: the test calls Load and Refresh
}

// begin makes the filters and starts their refreshes.
func (c *checkFilter) begin(s *Store) {
	feed := newCheckFeed(s, c.opts)
	f := store.NewSuppressionFilter(feed, c.opts)
	c.feed.Store(feed)
	c.filter.Store(f)
	if !c.noRun {
		go f.Run(context.Background())
	}
	if c.opts.AddressesOnly {
		return
	}
	opts := c.opts
	opts.AddressesOnly = true
	starting := store.NewSuppressionFilter(newCheckFeed(s, opts), opts)
	ctx, cancel := context.WithCancel(context.Background())
	c.starting.Store(starting)
	c.stop = cancel
	if !c.noRun {
		go starting.Run(ctx)
	}
}

// lookup is SuppressionFilter.WaitLookup of the filter, or of the
// starting one until the filter has loaded.
func (c *checkFilter) lookup(ctx context.Context, address string, now time.Time) ([]store.Suppression, bool) {
	f := c.filter.Load()
	if starting := c.starting.Load(); starting != nil {
		if !f.Loaded() {
			return starting.WaitLookup(ctx, address, now, store.MaxCheckStaleness)
		}
		if c.starting.CompareAndSwap(starting, nil) {
			c.stop()
		}
	}
	return f.WaitLookup(ctx, address, now, store.MaxCheckStaleness)
}

// put hands versions this Store wrote to the filters.
func (c *checkFilter) put(versions ...store.SuppressionVersion) {
	if f := c.filter.Load(); f != nil {
		f.Put(versions...)
	}
	if starting := c.starting.Load(); starting != nil {
		starting.Put(versions...)
	}
}

// CheckSuppressions answers the check before a send; see
// store.SuppressionStore. While the filter is fresh it answers from
// memory, what AddressSuppressions would answer, without a query: with
// ClickHouse 18.16 even a lookup that finds nothing costs about 1 ms of
// the server (SELECT 1 does), one that finds a suppression about 2 ms
// (p99 3 ms), and at 1,000 checks a second a core. It reads ClickHouse
// (AddressSuppressions) while the filter is not fresh, after waiting up
// to store.MaxCheckStaleness for a read that makes it fresh
// (SuppressionFilter.WaitLookup): at start, before the first read, and
// while the server is too slow to read every 250 ms, the checks would
// otherwise all go to the server at once and keep it slow. With
// Options.CheckAddressesOnly it also reads ClickHouse for every address
// that has a suppression row, in force or not (or shares a hash with
// one).
func (s *Store) CheckSuppressions(ctx context.Context, address string, now time.Time) ([]store.Suppression, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	s.checks.once.Do(func() { s.checks.begin(s) })
	s.gate.Leave()
	if !now.IsZero() && ctx.Err() == nil {
		if rows, ok := s.checks.lookup(ctx, normalizeAddress(address), now); ok {
			if err := s.gate.Enter(); err != nil { // closed while waiting
				return nil, err
			}
			s.gate.Leave()
			return rows, nil
		}
	}
	// A read of ClickHouse: the filter is stale (or, with addresses only
	// or while starting, holds the address). A stale filter under a load
	// of checks sends every check here; queued without a bound they took
	// every connection, so the filter's refresh could not run and stay
	// stale, and waited out the pool's timeout (bench/suppressions: 8,032
	// of 60,000 checks timed out after 10 s, RSS 62 to 324 MiB). Beyond
	// checkReads reads at once, a check waits checkQueueWait and is then
	// refused with store.ErrBusy.
	select {
	case s.checkReads <- struct{}{}:
		defer func() { <-s.checkReads }()
	case <-ctx.Done():
		return nil, fmt.Errorf("clickhouse: check suppressions: %w", ctx.Err())
	case <-time.After(checkQueueWait):
		return nil, fmt.Errorf("clickhouse: check suppressions: %d reads in progress: %w", cap(s.checkReads), store.ErrBusy)
	}
	s.checks.reads.Add(1)
	return s.AddressSuppressions(ctx, address, now)
}

// checkQueueWait is how long a check waits for a read slot before
// ErrBusy: well above a read's time here (p99 about 3 ms), far below
// a client's patience.
const checkQueueWait = 250 * time.Millisecond

// checkReadSlots is how many checks may read ClickHouse at once with a
// pool of maxOpen connections: all but three, kept for the filter's
// refresh and for ingest, whose Write runs two statements at once
// (Store.pair) beside the re-fold of the batch before; one at least.
func checkReadSlots(maxOpen int) int {
	return max(1, maxOpen-3)
}

// Suppressions lists one page of the suppressions in force, in key
// order, a window of keys at a time; see store.SuppressionStore and
// selectSuppressionsWindow.
func (s *Store) Suppressions(ctx context.Context, q store.SuppressionQuery) ([]store.Suppression, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("clickhouse: suppressions: %w", err)
	}
	streamCond, streamArgs := "", []any(nil)
	if !q.AllStreams {
		// stream is the key's second column: filtering before the
		// grouping is right, every version of a key has its stream.
		streamCond, streamArgs = " AND stream IN (?, '')", []any{q.Stream}
	}
	at := clampNano(q.Now)
	out := []store.Suppression{}
	after, window := q.After, firstWindow*q.Limit
	for {
		end, bounded, err := s.windowEnd(ctx, after, streamCond, streamArgs, window)
		if err != nil {
			return nil, fmt.Errorf("clickhouse: suppressions: %w", err)
		}
		endCond, args := "", []any{after.Address, after.Address, after.Stream}
		args = append(args, streamArgs...)
		if bounded {
			endCond = atOrBeforeEnd
			args = append(args, end.Address, end.Address, end.Stream)
		}
		args = append(args, at, at, clampNano(q.Since), uint64(q.Limit-len(out)))
		rows, err := s.conn.Query(ctx, fmt.Sprintf(selectSuppressionsWindow, streamCond, endCond), args...)
		if err != nil {
			return nil, fmt.Errorf("clickhouse: suppressions: %w", err)
		}
		page, err := scanPublic(rows)
		if err != nil {
			return nil, fmt.Errorf("clickhouse: suppressions: %w", err)
		}
		out = append(out, page...)
		if len(out) >= q.Limit || !bounded {
			return out, nil
		}
		after, window = end, min(2*window, widestWindow*q.Limit)
	}
}

// errEnough stops EachSuppression's read at q.Limit rows.
var errEnough = errors.New("clickhouse: each suppression: limit reached")

// EachSuppression hands fn every suppression in force that q selects, in
// key order, from one query whose rows are consumed as clickhouse-go
// receives them; see store.SuppressionStore and selectEachSuppression.
// The server holds the sort, bouncer a few blocks.
func (s *Store) EachSuppression(ctx context.Context, q store.SuppressionQuery, fn func(store.Suppression) error) error {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	if err := q.ValidateEach(); err != nil {
		return fmt.Errorf("clickhouse: each suppression: %w", err)
	}
	var conds []string
	var args []any
	if !q.After.IsZero() {
		conds = append(conds, afterCursor)
		args = append(args, q.After.Address, q.After.Address, q.After.Stream)
	}
	if !q.AllStreams {
		conds = append(conds, "stream IN (?, '')")
		args = append(args, q.Stream)
	}
	prewhere := ""
	if len(conds) > 0 {
		prewhere = "\n\tPREWHERE " + strings.Join(conds, " AND ")
	}
	// Cancelling ends the query at the server when fn or the limit stops
	// the read early, instead of draining the rest of it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rows, err := s.conn.Query(ch.Context(ctx, ch.WithSettings(eachSettings)), fmt.Sprintf(selectEachSuppression, prewhere), args...)
	if err != nil {
		return fmt.Errorf("clickhouse: each suppression: %w", err)
	}
	defer rows.Close()
	sent := 0
	err = func() error {
		for rows.Next() {
			r, err := scanSuppression(rows)
			if err != nil {
				return fmt.Errorf("clickhouse: each suppression: %w", err)
			}
			if r.removed || !r.InForce(q.Now) || r.Since.Before(q.Since) {
				continue
			}
			if err := fn(r.Suppression); err != nil {
				return err
			}
			if sent++; sent == q.Limit {
				return errEnough
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("clickhouse: each suppression: %w", err)
		}
		return nil
	}()
	if err != nil {
		cancel()
		if err == errEnough {
			return nil
		}
	}
	return err
}

// SuppressionAddressesSince hands fn the address of every version
// written at or after since; see store.SuppressionStore and
// selectAddressesSince. An address comes once per version.
func (s *Store) SuppressionAddressesSince(ctx context.Context, since time.Time, fn func(address string) error) error {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rows, err := s.conn.Query(ch.Context(ctx, ch.WithSettings(addressesSinceSettings)), selectAddressesSince, uint64(clampNano(since)))
	if err != nil {
		return fmt.Errorf("clickhouse: suppression addresses: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return fmt.Errorf("clickhouse: suppression addresses: %w", err)
		}
		if err := fn(a); err != nil {
			cancel()
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("clickhouse: suppression addresses: %w", err)
	}
	return nil
}

// windowEnd returns the key of the window-th row after the cursor
// (selectWindowEnd); bounded is false when fewer rows follow it.
func (s *Store) windowEnd(ctx context.Context, after store.SuppressionKey, streamCond string, streamArgs []any,
	window int) (end store.SuppressionKey, bounded bool, err error) {
	args := append([]any{after.Address, after.Address, after.Stream}, streamArgs...)
	args = append(args, uint64(window-1))
	rows, err := s.conn.Query(ctx, fmt.Sprintf(selectWindowEnd, streamCond), args...)
	if err != nil {
		return end, false, fmt.Errorf("finding the window: %w", err)
	}
	defer rows.Close()
	if rows.Next() {
		if err := rows.Scan(&end.Address, &end.Stream); err != nil {
			return end, false, fmt.Errorf("finding the window: %w", err)
		}
		bounded = true
	}
	if err := rows.Err(); err != nil {
		return end, false, fmt.Errorf("finding the window: %w", err)
	}
	return end, bounded, nil
}

// SuppressionHistory returns address's audit trail, newest first; see
// store.SuppressionStore.
func (s *Store) SuppressionHistory(ctx context.Context, address string, limit int) ([]store.SuppressionChange, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if limit < 1 {
		return nil, fmt.Errorf("clickhouse: suppression history: limit %d, want at least 1", limit)
	}
	rows, err := s.conn.Query(ctx, selectSuppressionHistory, normalizeAddress(address), uint64(limit))
	if err != nil {
		return nil, fmt.Errorf("clickhouse: suppression history: %w", err)
	}
	defer rows.Close()
	out := []store.SuppressionChange{}
	for rows.Next() {
		var (
			c             store.SuppressionChange
			at            int64
			class, reason string
		)
		if err := rows.Scan(&at, &c.Address, &c.Stream, &c.Action, &c.Source, &c.Actor, &c.Note,
			&class, &reason, &c.Rule); err != nil {
			return nil, fmt.Errorf("clickhouse: suppression history: %w", err)
		}
		c.Time = time.Unix(0, at).UTC()
		c.Class, c.Reason = event.Class(class), event.Reason(reason)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse: suppression history: %w", err)
	}
	return out, nil
}

// LatestRemoval returns the time of address's latest removal; see
// store.SuppressionStore.
func (s *Store) LatestRemoval(ctx context.Context, address string) (time.Time, error) {
	if err := s.gate.Enter(); err != nil {
		return time.Time{}, err
	}
	defer s.gate.Leave()
	var (
		at int64
		n  uint64
	)
	if err := s.conn.QueryRow(ctx, selectLatestRemoval, normalizeAddress(address)).Scan(&at, &n); err != nil {
		return time.Time{}, fmt.Errorf("clickhouse: latest removal: %w", err)
	}
	if n == 0 {
		return time.Time{}, nil
	}
	return time.Unix(0, at).UTC(), nil
}

// SuppressionStats counts the suppressions in force at now; see
// store.SuppressionStore. It groups every key, a scan of the table:
// about 1.3 to 2.4 s with 1,000,000 keys on 18.16, two cores
// (BenchmarkSuppressionStats).
func (s *Store) SuppressionStats(ctx context.Context, now time.Time) (store.SuppressionStats, error) {
	if err := s.gate.Enter(); err != nil {
		return store.SuppressionStats{}, err
	}
	defer s.gate.Leave()
	if now.IsZero() {
		return store.SuppressionStats{}, fmt.Errorf("clickhouse: suppression stats: now: %w", store.ErrZeroTime)
	}
	at := clampNano(now)
	rows, err := s.conn.Query(ctx, selectSuppressionStats, at, at)
	if err != nil {
		return store.SuppressionStats{}, fmt.Errorf("clickhouse: suppression stats: %w", err)
	}
	defer rows.Close()
	st := store.NewSuppressionStats()
	for rows.Next() {
		var (
			source, class, stream string
			n                     uint64
		)
		if err := rows.Scan(&source, &class, &stream, &n); err != nil {
			return store.SuppressionStats{}, fmt.Errorf("clickhouse: suppression stats: %w", err)
		}
		st.Total += int64(n)
		st.BySource[source] += int64(n)
		st.ByClass[event.Class(class)] += int64(n)
		st.ByStream[stream] += int64(n)
	}
	if err := rows.Err(); err != nil {
		return store.SuppressionStats{}, fmt.Errorf("clickhouse: suppression stats: %w", err)
	}
	return st, nil
}

// storedSuppression is a suppression as read, with its version's
// removed flag and version number.
type storedSuppression struct {
	store.Suppression
	removed bool
	version uint64
}

// scanSuppressions reads suppressionRow rows and closes them.
func scanSuppressions(rows driver.Rows) ([]storedSuppression, error) {
	defer rows.Close()
	var out []storedSuppression
	for rows.Next() {
		r, err := scanSuppression(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// scanSuppression reads the current row of suppressionRow rows.
func scanSuppression(rows driver.Rows) (storedSuppression, error) {
	var (
		r             storedSuppression
		removed       uint8
		class, reason string
		since, until  int64
	)
	if err := rows.Scan(&r.Address, &r.Stream, &r.version, &removed, &r.Source, &class, &reason,
		&r.Rule, &since, &until, &r.Actor, &r.Note); err != nil {
		return r, err
	}
	r.removed = removed != 0
	r.Class, r.Reason = event.Class(class), event.Reason(reason)
	r.Since = time.Unix(0, since).UTC()
	if until != 0 {
		r.Until = time.Unix(0, until).UTC()
	}
	r.Updated = time.Unix(0, int64(r.version)).UTC()
	return r, nil
}

// scanPublic reads suppressionRow rows as store.Suppressions, non-nil.
func scanPublic(rows driver.Rows) ([]store.Suppression, error) {
	stored, err := scanSuppressions(rows)
	if err != nil {
		return nil, err
	}
	out := make([]store.Suppression, len(stored))
	for i, r := range stored {
		out[i] = r.Suppression
	}
	return out, nil
}

// untilNano is Until as stored: 0 for never.
func untilNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
