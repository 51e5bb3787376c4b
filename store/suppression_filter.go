package store

import (
	"context"
	"errors"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// MaxCheckStaleness bounds how late CheckSuppressions may show a
// suppression written through another Store (another process): at most
// this long after that write returned.
const MaxCheckStaleness = time.Second

// DefaultFilterOverlap is how far before the start of its previous read
// a SuppressionFilter's refresh reads again (SuppressionFilterOptions).
const DefaultFilterOverlap = time.Minute

// SuppressionFeed is what a SuppressionFilter reads: every
// SuppressionStore is one.
type SuppressionFeed interface {
	SuppressionAddressesSince(ctx context.Context, since time.Time, fn func(address string) error) error
}

// SuppressionFilterOptions tunes a SuppressionFilter. The zero value is
// ready to use.
type SuppressionFilterOptions struct {
	// MaxStaleness: the filter answers only while its last successful
	// read of the feed started at most this long ago; past it, Absent
	// says false until a read succeeds again. 0: MaxCheckStaleness.
	MaxStaleness time.Duration
	// Interval between refreshes in Run. 0: MaxStaleness / 4.
	Interval time.Duration
	// Overlap: a refresh reads the keys updated since the start of the
	// previous read less Overlap. A key's Updated is the writer's clock
	// when the write began, so a write from a host whose clock is behind
	// this one's, or one whose insert took long to land, has an Updated
	// before the previous read started although that read could not see
	// it; Overlap must exceed both. 0: DefaultFilterOverlap.
	Overlap time.Duration
	// Now is the clock; nil: time.Now. Tests move it.
	Now func() time.Time
}

// SuppressionFilter is a membership filter of the addresses that have a
// suppression row (in force, ended or removed: those only cost a store
// read), for the check before a send: when Absent says an address has
// none, no store read is needed to answer "not suppressed".
//
// It holds 64-bit hashes (hash/maphash), 8 bytes an address in a sorted
// slice plus a map of those added since the last merge, read from a
// SuppressionFeed: every address at the first read, then the addresses of
// the keys written since. Addresses written through this process are
// added with Add before the write, so they show at once; those written
// by other processes show once a read that started after their write
// returned has finished. Absent answers only while the last successful
// read started at most MaxStaleness ago, so a suppression written
// anywhere shows at most MaxStaleness after its write returned, also
// when the feed fails: then every check goes to the store. Two
// addresses with one hash (about one chance in 2^64 / n for an address
// never suppressed) cost a store read, never a wrong answer.
//
// A SuppressionFilter is safe for concurrent use; Run (or Load and
// Refresh, which it calls) reads the feed, one read at a time.
type SuppressionFilter struct {
	feed                        SuppressionFeed
	maxStale, interval, overlap time.Duration
	now                         func() time.Time
	seed                        maphash.Seed

	readMu sync.Mutex // one read of the feed at a time

	running atomic.Bool // Run is reading the feed

	mu       sync.RWMutex
	sorted   []uint64            // sorted, unique; never modified once published
	recent   map[uint64]struct{} // added since sorted was built
	loaded   bool                // a full read succeeded
	lastRead time.Time           // start of the last successful read
	lastErr  error               // of the last read, nil when it succeeded
	readDone chan struct{}       // closed, and replaced, when a read ends
}

// NewSuppressionFilter returns an empty filter over feed: until Load (or
// Run) has read the feed, Absent says false for every address.
func NewSuppressionFilter(feed SuppressionFeed, opts SuppressionFilterOptions) *SuppressionFilter {
	f := &SuppressionFilter{
		feed: feed, maxStale: opts.MaxStaleness, interval: opts.Interval, overlap: opts.Overlap,
		now: opts.Now, seed: maphash.MakeSeed(), recent: map[uint64]struct{}{}, readDone: make(chan struct{}),
	}
	if f.maxStale <= 0 {
		f.maxStale = MaxCheckStaleness
	}
	if f.interval <= 0 {
		f.interval = f.maxStale / 4
	}
	if f.overlap <= 0 {
		f.overlap = DefaultFilterOverlap
	}
	if f.now == nil {
		f.now = time.Now
	}
	return f
}

func (f *SuppressionFilter) hash(address string) uint64 { return maphash.String(f.seed, address) }

// Absent reports whether address surely has no suppression row: the
// filter is fresh (its last successful read started at most
// MaxStaleness ago) and does not hold it. False means "ask the store".
// address is compared as given: pass it normalised as stored.
func (f *SuppressionFilter) Absent(address string) bool {
	absent, _ := f.lookup(f.hash(address), f.now())
	return absent
}

// WaitAbsent is Absent for a check that would rather wait a little than
// query: when the filter is not fresh but Run is reading the feed and
// its last read did not fail, it waits, at most maxWait and while ctx
// lasts, for a read that began at most MaxStaleness before the call to
// end, and answers from it. Without it, a filter that goes stale
// because the store is slow (or has not loaded yet, at start) would send
// every check to that slow store at once, and keep it slow.
func (f *SuppressionFilter) WaitAbsent(ctx context.Context, address string, maxWait time.Duration) bool {
	h, at := f.hash(address), f.now()
	absent, fresh := f.lookup(h, at)
	if fresh || !f.running.Load() || maxWait <= 0 || f.holds(h) {
		return absent // held: a newer read cannot make it absent, so the store it is
	}
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	for {
		f.mu.RLock()
		failed, done := f.lastErr != nil, f.readDone
		f.mu.RUnlock()
		if failed {
			return false
		}
		select {
		case <-done:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
		if absent, fresh = f.lookup(h, at); fresh {
			return absent
		}
	}
}

// lookup answers whether hash h is absent, and whether the filter was
// fresh at at (else absent is false).
func (f *SuppressionFilter) lookup(h uint64, at time.Time) (absent, fresh bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if !f.loaded || at.Sub(f.lastRead) > f.maxStale {
		return false, false
	}
	_, inRecent := f.recent[h]
	return !inRecent && !contains(f.sorted, h), true
}

// holds reports whether the filter holds hash h, fresh or not.
func (f *SuppressionFilter) holds(h uint64) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, inRecent := f.recent[h]
	return inRecent || contains(f.sorted, h)
}

// readEnded records the end of a read: its start when it succeeded, its
// error otherwise, and wakes WaitAbsent. f.mu is held.
func (f *SuppressionFilter) readEnded(start time.Time, err error) {
	if err == nil {
		f.lastRead = start
	}
	f.lastErr = err
	close(f.readDone)
	f.readDone = make(chan struct{})
}

// Add records addresses about to be written through this process, so
// Absent says false for them from now on. Call it before the write: a
// failed write leaves a harmless extra entry.
func (f *SuppressionFilter) Add(addresses ...string) {
	hs := make([]uint64, len(addresses))
	for i, a := range addresses {
		hs[i] = f.hash(a)
	}
	f.mu.Lock()
	for _, h := range hs {
		f.recent[h] = struct{}{}
	}
	f.mu.Unlock()
}

// Load reads every address from the feed and replaces the filter's
// contents with them (keeping what Add recorded meanwhile).
func (f *SuppressionFilter) Load(ctx context.Context) error {
	f.readMu.Lock()
	defer f.readMu.Unlock()
	return f.load(ctx)
}

func (f *SuppressionFilter) load(ctx context.Context) error {
	start := f.now()
	var hs []uint64
	err := f.feed.SuppressionAddressesSince(ctx, time.Time{}, func(a string) error {
		hs = append(hs, f.hash(a))
		return nil
	})
	if err != nil {
		f.failed(err)
		return err
	}
	slices.Sort(hs)
	hs = slices.Compact(hs)
	if cap(hs) > len(hs)+len(hs)/8 {
		hs = append(make([]uint64, 0, len(hs)), hs...) // release the slack of append's doubling
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	recent := make(map[uint64]struct{}, len(f.recent))
	for h := range f.recent {
		if !contains(hs, h) {
			recent[h] = struct{}{}
		}
	}
	f.sorted, f.recent, f.loaded = hs, recent, true
	f.readEnded(start, nil)
	return nil
}

// Refresh adds the addresses of the keys written since the previous
// successful read began, less the overlap; before the first successful
// Load it loads.
func (f *SuppressionFilter) Refresh(ctx context.Context) error {
	f.readMu.Lock()
	defer f.readMu.Unlock()
	f.mu.RLock()
	loaded, since, base, nRecent := f.loaded, f.lastRead.Add(-f.overlap), f.sorted, len(f.recent)
	f.mu.RUnlock()
	if !loaded {
		return f.load(ctx)
	}
	start := f.now()
	var hs []uint64
	err := f.feed.SuppressionAddressesSince(ctx, since, func(a string) error {
		if h := f.hash(a); !contains(base, h) {
			hs = append(hs, h)
		}
		return nil
	})
	if err != nil {
		f.failed(err)
		return err
	}
	// base is still f.sorted: only load and merge replace it, under readMu.
	if nRecent+len(hs) > max(4096, len(base)/16) {
		f.merge(base, hs)
	} else if len(hs) > 0 {
		f.mu.Lock()
		for _, h := range hs {
			f.recent[h] = struct{}{}
		}
		f.mu.Unlock()
	}
	f.mu.Lock()
	f.readEnded(start, nil)
	f.mu.Unlock()
	return nil
}

func contains(sorted []uint64, h uint64) bool {
	_, found := slices.BinarySearch(sorted, h)
	return found
}

func (f *SuppressionFilter) failed(err error) {
	f.mu.Lock()
	f.readEnded(time.Time{}, err)
	f.mu.Unlock()
}

// merge replaces the sorted hashes base (f.sorted) with base, recent and
// extra merged, built outside the lock so that Absent is not held up:
// the copy of a million hashes takes milliseconds, a big import's
// refresh can bring as many. Called with readMu held.
func (f *SuppressionFilter) merge(base, extra []uint64) {
	f.mu.RLock()
	add := make([]uint64, 0, len(f.recent)+len(extra))
	for h := range f.recent {
		add = append(add, h)
	}
	f.mu.RUnlock()
	add = append(add, extra...)
	slices.Sort(add)
	add = slices.Compact(add)
	merged := make([]uint64, 0, len(base)+len(add))
	i, j := 0, 0
	for i < len(base) || j < len(add) {
		switch {
		case j == len(add) || (i < len(base) && base[i] < add[j]):
			merged = append(merged, base[i])
			i++
		case i == len(base) || add[j] < base[i]:
			merged = append(merged, add[j])
			j++
		default: // in both
			merged = append(merged, base[i])
			i++
			j++
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	recent := map[uint64]struct{}{}
	for h := range f.recent { // what Add recorded during the merge stays
		if !contains(add, h) {
			recent[h] = struct{}{}
		}
	}
	f.sorted, f.recent = merged, recent
}

// Run loads the filter, then refreshes it every Interval, until ctx ends
// or the feed answers ErrClosed (its store was closed), and returns why
// it stopped. A failed read is tried again at the next tick; meanwhile
// the filter goes stale and Absent says false, so checks go to the store.
func (f *SuppressionFilter) Run(ctx context.Context) error {
	f.running.Store(true)
	defer f.running.Store(false)
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		if err := f.Refresh(ctx); errors.Is(err, ErrClosed) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// SuppressionFilterStats describe a filter's state.
type SuppressionFilterStats struct {
	Addresses int       // hashes held (an address re-added since the last merge may count twice)
	Bytes     int       // memory held by them, estimated: 8 per sorted hash, 16 per recent one
	Loaded    bool      // a full read succeeded
	LastRead  time.Time // start of the last successful read
	LastErr   error     // of the last read, nil when it succeeded
}

// Stats returns the filter's size and freshness.
func (f *SuppressionFilter) Stats() SuppressionFilterStats {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return SuppressionFilterStats{
		Addresses: len(f.sorted) + len(f.recent), Bytes: 8*cap(f.sorted) + 16*len(f.recent),
		Loaded: f.loaded, LastRead: f.lastRead, LastErr: f.lastErr,
	}
}
