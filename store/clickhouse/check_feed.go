package clickhouse

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/bouncer-mail/bouncer/store"
)

// checkFeed is the store.SuppressionFeed of CheckSuppressions' filter:
// the versions of the suppressions table written since a time.
//
// A refresh reads from the previous read's start less the filter's
// overlap (a minute), four times a second, so every version written in
// the last minute would be read about 240 times: after an import of a
// million suppressions, a million rows a read. Versions do not change
// once written, so it reads them incrementally instead. It keeps, per
// second of version (a bucket), the count and the sum of
// cityHash64(address, stream, version) of the rows it handed over, as
// the server counted them; a read first asks the server for those sums
// over the buckets from since on (selectVersionSums: one scan of the
// version column, and the key columns of the rows in the window, no
// rows sent), then reads the rows of the buckets whose sums differ from
// those kept (a row that landed since, or a merge that dropped an older
// version of a key) or are not kept, and keeps the new sums once every
// row was handed over. A bucket whose sums are unchanged holds the rows
// it held when they were kept, all handed over before (the filter keeps
// what it is given); an insert that a merge in the same bucket exactly
// cancels would need two rows with one 64-bit hash sum. Rows that land
// between the two queries are read or not; the sums kept are those of
// the first query, so the next read finds the bucket changed if they
// were not.
//
// A full read (a zero since) hands over every version and keeps the sums
// of the buckets of the last horizon (twice the overlap), taken before
// the rows are read. It is not sorted: on one thread the server streams
// each part in key order, so an address's versions come one after
// another but for the few in other parts (1,000,000 versions in two
// parts came in 504,921 runs of one address for 500,000 addresses),
// which is what the filter's build wants, and nothing waits on a sort.
type checkFeed struct {
	s             *Store
	addressesOnly bool          // read the address column only
	horizon       time.Duration // how far back a full read keeps sums
	now           func() time.Time

	mu   sync.Mutex            // one read at a time (the filter reads one at a time anyway)
	sums map[uint64]versionSum // by bucket: version / bucketNanos

	handed atomic.Int64 // versions handed over, for tests
}

// bucketNanos is a bucket's width: a second of versions.
const bucketNanos = uint64(time.Second)

// versionSum is what the server says of a bucket's rows.
type versionSum struct{ rows, hashes uint64 }

func newCheckFeed(s *Store, opts store.SuppressionFilterOptions) *checkFeed {
	overlap := opts.Overlap
	if overlap <= 0 {
		overlap = store.DefaultFilterOverlap
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &checkFeed{s: s, addressesOnly: opts.AddressesOnly, horizon: 2 * overlap, now: now}
}

// selectVersionSums sums each bucket's rows from a version on.
const selectVersionSums = `SELECT intDiv(version, 1000000000) AS bucket, count(), sum(cityHash64(address, stream, version))
	FROM suppressions
	PREWHERE version >= ?
	GROUP BY bucket`

// feedColumns are the columns of the versions read, scanSuppression's.
const feedColumns = `SELECT address, stream, version, removed, source, class, reason, rule, since, until, actor, note
	FROM suppressions`

// feedSettings: one thread, as for the address filter before: the read
// runs four times a second, and on two cores a read on both would stall
// the checks it serves. Blocks as for the export, so the rows
// clickhouse-go holds decoded stay few.
var feedSettings = ch.Settings{"max_threads": 1, "max_block_size": 8192}

// SuppressionVersionsSince hands fn the versions written at or after
// since that it did not hand over before; see checkFeed.
func (f *checkFeed) SuppressionVersionsSince(ctx context.Context, since time.Time, fn func(store.SuppressionVersion) error) error {
	if err := f.s.gate.Enter(); err != nil {
		return err
	}
	defer f.s.gate.Leave()
	f.mu.Lock()
	defer f.mu.Unlock()
	if since.IsZero() {
		from := uint64(clampNano(f.now().Add(-f.horizon))) / bucketNanos
		sums, err := f.versionSums(ctx, from)
		if err != nil {
			return err
		}
		if err := f.read(ctx, "", nil, fn); err != nil {
			return err
		}
		f.sums = sums
		return nil
	}
	from := uint64(clampNano(since)) / bucketNanos
	sums, err := f.versionSums(ctx, from)
	if err != nil {
		return err
	}
	var changed []uint64
	for b, sum := range sums {
		if kept, ok := f.sums[b]; !ok || kept != sum {
			changed = append(changed, b)
		}
	}
	if len(changed) > 0 {
		cond, args := bucketRanges(changed)
		if err := f.read(ctx, "\n\tPREWHERE "+cond, args, fn); err != nil {
			return err
		}
	}
	f.sums = sums
	return nil
}

// bucketRanges returns the condition that selects the rows of buckets,
// as ranges of version, and its arguments.
func bucketRanges(buckets []uint64) (string, []any) {
	slices.Sort(buckets)
	var conds []string
	var args []any
	for i := 0; i < len(buckets); {
		j := i + 1
		for j < len(buckets) && buckets[j] == buckets[j-1]+1 {
			j++
		}
		conds = append(conds, "(version >= ? AND version < ?)")
		args = append(args, buckets[i]*bucketNanos, (buckets[j-1]+1)*bucketNanos)
		i = j
	}
	return strings.Join(conds, " OR "), args
}

// versionSums returns the sums of the buckets from from on.
func (f *checkFeed) versionSums(ctx context.Context, from uint64) (map[uint64]versionSum, error) {
	rows, err := f.s.conn.Query(ch.Context(ctx, ch.WithSettings(feedSettings)), selectVersionSums, from*bucketNanos)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: suppression versions: %w", err)
	}
	defer rows.Close()
	sums := map[uint64]versionSum{}
	for rows.Next() {
		var (
			b   uint64
			sum versionSum
		)
		if err := rows.Scan(&b, &sum.rows, &sum.hashes); err != nil {
			return nil, fmt.Errorf("clickhouse: suppression versions: %w", err)
		}
		sums[b] = sum
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse: suppression versions: %w", err)
	}
	return sums, nil
}

// read hands fn the versions feedColumns and tail (a PREWHERE, an ORDER
// BY) select; with addressesOnly, the addresses only.
func (f *checkFeed) read(ctx context.Context, tail string, args []any, fn func(store.SuppressionVersion) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the query at the server when fn stops it
	q := feedColumns + tail
	if f.addressesOnly {
		q = `SELECT address FROM suppressions` + tail
	}
	rows, err := f.s.conn.Query(ch.Context(ctx, ch.WithSettings(feedSettings)), q, args...)
	if err != nil {
		return fmt.Errorf("clickhouse: suppression versions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var v store.SuppressionVersion
		if f.addressesOnly {
			if err := rows.Scan(&v.Address); err != nil {
				return fmt.Errorf("clickhouse: suppression versions: %w", err)
			}
		} else {
			r, err := scanSuppression(rows)
			if err != nil {
				return fmt.Errorf("clickhouse: suppression versions: %w", err)
			}
			v = store.SuppressionVersion{Suppression: r.Suppression, Removed: r.removed}
		}
		f.handed.Add(1)
		if err := fn(v); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("clickhouse: suppression versions: %w", err)
	}
	return nil
}

// keptSums returns a copy of the sums kept, for tests.
func (f *checkFeed) keptSums() map[uint64]versionSum {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.sums)
}
