package store

import (
	"cmp"
	"context"
	"errors"
	"hash/maphash"
	"slices"
	"strings"
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

// SuppressionVersion is one stored version of a suppression key: the
// suppression as put, its Updated the version, or, when Removed, the
// key's removal at Updated (the other fields then say nothing).
type SuppressionVersion struct {
	Suppression
	Removed bool
}

// SuppressionFeed is what a SuppressionFilter reads.
type SuppressionFeed interface {
	// SuppressionVersionsSince calls fn with every version whose Updated
	// is at or after since, removals too, in no particular order, any of
	// them possibly more than once and older versions of a key among
	// them; a zero since passes every version stored. Except at a zero
	// since, it may leave out versions it passed in an earlier call that
	// returned nil: the filter keeps what it was given. For a filter with
	// AddressesOnly, only Address need be set. fn returning an error
	// stops the read and is returned as it is.
	SuppressionVersionsSince(ctx context.Context, since time.Time, fn func(SuppressionVersion) error) error
}

// SuppressionFilterOptions tunes a SuppressionFilter. The zero value is
// ready to use.
type SuppressionFilterOptions struct {
	// MaxStaleness: the filter answers only while its last successful
	// read of the feed started at most this long ago; past it, Lookup
	// answers nothing until a read succeeds again. 0: MaxCheckStaleness.
	MaxStaleness time.Duration
	// Interval between refreshes in Run. 0: MaxStaleness / 4.
	Interval time.Duration
	// Overlap: a refresh reads the versions updated since the start of
	// the previous read less Overlap. A key's Updated is the writer's
	// clock when the write began, so a write from a host whose clock is
	// behind this one's, or one whose insert took long to land, has an
	// Updated before the previous read started although that read could
	// not see it; Overlap must exceed both. 0: DefaultFilterOverlap.
	Overlap time.Duration
	// AddressesOnly keeps the addresses only, 8 bytes each, not their
	// versions: a membership filter. Lookup then answers only an address
	// it does not hold; a held one is the store's to answer.
	AddressesOnly bool
	// Now is the clock; nil: time.Now. Tests move it.
	Now func() time.Time
}

// SuppressionFilter answers the check before a send from memory. It
// holds, for every address that has a suppression row, the latest
// version of each of its keys (in force, ended or removed), read from a
// SuppressionFeed: every version at the first read, then those written
// since. Lookup answers what AddressSuppressions would: the address's
// suppressions in force at a time, by stream. Versions written through
// this process are recorded with Put once the write has landed, so they
// show when it returns; those written by other processes show once a
// read that started after their write returned has finished. Lookup
// answers only while the last successful read started at most
// MaxStaleness ago, so a suppression written anywhere shows at most
// MaxStaleness after its write returned, also when the feed fails: then
// every check goes to the store. Of two versions of a key the later
// Updated wins, whatever order they come in, so an older put read late
// never undoes a removal or a replacement.
//
// Memory: each address's versions are one record in a byte arena (of
// 1 MiB chunks, filled in turn: arena), found
// through a sorted slice of 64-bit hashes (hash/maphash) and offsets, 16
// bytes an address; a record holds the address and, per key, Updated,
// Since and Until as varints, and the strings, the repeating ones
// (stream, source, class, reason, rule, actor, note, the text of a note
// around the address) as numbers into a table of up to 65,536 strings,
// the others inline. Versions that arrive between rebuilds wait in a map
// of small records (recent) until it holds a sixteenth as many
// addresses as the arena, then the arena is rebuilt, off the lock that
// Lookup takes. BenchmarkSuppressionFilter measures 72 bytes of heap a
// suppression shaped as bench/suppressions loads them (a million
// addresses, notes that quote the address), 114 with a 40-byte note of
// its own each. With AddressesOnly only the hashes are kept, and two
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
	addrOnly                    bool
	hashFunc                    func(string) uint64 // tests; nil: maphash with seed

	readMu sync.Mutex // one read of the feed, and one rebuild, at a time
	dict   *interner  // strings the base's records name; readMu guards it

	running atomic.Bool // Run is reading the feed

	mu       sync.RWMutex
	base     *filterBase            // never modified once published
	recent   map[string]recentEntry // versions newer than base's, by address
	gen      uint64                 // counts changes to recent
	loaded   bool                   // a full read succeeded
	lastRead time.Time              // start of the last successful read
	lastErr  error                  // of the last read, nil when it succeeded
	readDone chan struct{}          // closed, and replaced, when a read ends
}

// recentEntry is an address's versions that base lacks or holds older.
type recentEntry struct {
	rec []byte // a record with inline strings; nil with AddressesOnly
	gen uint64 // f.gen when it last changed
}

// filterBase is the bulk of a filter, rebuilt whole, never modified.
type filterBase struct {
	hashes   []uint64 // sorted; two addresses with one hash side by side
	offs     []uint64 // hashes[i]'s record, at arena.at(offs[i]); nil with AddressesOnly
	arena    arena
	dict     []string // what the records' string numbers name
	versions int      // in the records
	dictSize int      // bytes of dict's strings
}

// NewSuppressionFilter returns an empty filter over feed: until Load (or
// Run) has read the feed, Lookup answers nothing.
func NewSuppressionFilter(feed SuppressionFeed, opts SuppressionFilterOptions) *SuppressionFilter {
	f := &SuppressionFilter{
		feed: feed, maxStale: opts.MaxStaleness, interval: opts.Interval, overlap: opts.Overlap,
		now: opts.Now, seed: maphash.MakeSeed(), addrOnly: opts.AddressesOnly, dict: newInterner(),
		base: &filterBase{}, recent: map[string]recentEntry{}, readDone: make(chan struct{}),
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

func (f *SuppressionFilter) hash(address string) uint64 {
	if f.hashFunc != nil {
		return f.hashFunc(address)
	}
	return maphash.String(f.seed, address)
}

// Lookup answers the check of address at now from memory: its
// suppressions in force at now, by stream (global first), non-nil, and
// true; or false when the store must answer: the filter is not fresh
// (its last successful read started more than MaxStaleness ago, or none
// has succeeded), or, with AddressesOnly, it holds the address. address
// is compared as given: pass it normalised as stored.
func (f *SuppressionFilter) Lookup(address string, now time.Time) ([]Suppression, bool) {
	rows, ok, _ := f.lookup(address, f.hash(address), now, f.now())
	return rows, ok
}

// WaitLookup is Lookup for a check that would rather wait a little than
// query: when the filter is not fresh but Run is reading the feed and
// its last read did not fail, it waits, at most maxWait and while ctx
// lasts, for a read that began at most MaxStaleness before the call to
// end, and answers from it. Without it, a filter that goes stale
// because the store is slow (or has not loaded yet, at start) would send
// every check to that slow store at once, and keep it slow.
func (f *SuppressionFilter) WaitLookup(ctx context.Context, address string, now time.Time, maxWait time.Duration) ([]Suppression, bool) {
	h, at := f.hash(address), f.now()
	rows, ok, fresh := f.lookup(address, h, now, at)
	if fresh || !f.running.Load() || maxWait <= 0 || (f.addrOnly && f.holds(address, h)) {
		return rows, ok // held, addresses only: a newer read cannot answer it, so the store it is
	}
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	for {
		// The read to wait for is taken before freshness is looked at
		// again: a read that ends in between makes the filter fresh, one
		// that ends after closes done. (Taken after, a read ending in
		// between was missed, and the wait lasted all of maxWait.)
		f.mu.RLock()
		failed, done := f.lastErr != nil, f.readDone
		f.mu.RUnlock()
		if rows, ok, fresh = f.lookup(address, h, now, at); fresh {
			return rows, ok
		}
		if failed {
			return nil, false
		}
		select {
		case <-done:
		case <-timer.C:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
	}
}

// lookup answers Lookup for address of hash h, the filter's clock at
// at, and says whether the filter was fresh then (else ok is false).
func (f *SuppressionFilter) lookup(address string, h uint64, now, at time.Time) (rows []Suppression, ok, fresh bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if !f.loaded || at.Sub(f.lastRead) > f.maxStale {
		return nil, false, false
	}
	rec, inBase := f.base.find(h, address)
	e, inRecent := f.recent[address]
	if f.addrOnly {
		if inBase || inRecent {
			return nil, false, true
		}
		return []Suppression{}, true, true
	}
	out := []Suppression{}
	for _, v := range mergeVersions(parseRecord(rec, f.base.dict), parseRecord(e.rec, nil)) {
		if s, removed := v.decode(address); !removed && s.InForce(now) {
			out = append(out, s)
		}
	}
	return out, true, true
}

// holds reports whether the filter holds address, fresh or not.
func (f *SuppressionFilter) holds(address string, h uint64) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, inBase := f.base.find(h, address)
	_, inRecent := f.recent[address]
	return inBase || inRecent
}

// Put records versions written through this process, once written, so
// that Lookup answers with them from now on, fresh or not.
func (f *SuppressionFilter) Put(versions ...SuppressionVersion) {
	f.apply(versions)
	if f.needsRebuild() && f.readMu.TryLock() { // else the read holding it rebuilds
		f.rebuild()
		f.readMu.Unlock()
	}
}

// apply records versions in recent, where they are newer than what the
// filter holds.
func (f *SuppressionFilter) apply(versions []SuppressionVersion) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range versions {
		h := f.hash(v.Address)
		rec, inBase := f.base.find(h, v.Address)
		e, inRecent := f.recent[v.Address]
		if f.addrOnly {
			if !inBase && !inRecent {
				f.gen++
				f.recent[v.Address] = recentEntry{gen: f.gen}
			}
			continue
		}
		at := v.Updated.UnixNano()
		if bv, ok := findStream(parseRecord(rec, f.base.dict), v.Stream); ok && bv.updated >= at {
			continue
		}
		vs := parseRecord(e.rec, nil)
		i, found := slices.BinarySearchFunc(vs, v.Stream, func(r recVersion, s string) int { return strings.Compare(r.stream, s) })
		if found && vs[i].updated >= at {
			continue
		}
		nv := recVersion{stream: v.Stream, updated: at, body: appendVersion(nil, nil, v)}
		if found {
			vs[i] = nv
		} else {
			vs = slices.Insert(vs, i, nv)
		}
		f.gen++
		f.recent[v.Address] = recentEntry{rec: appendRecord(nil, v.Address, vs), gen: f.gen}
	}
}

// needsRebuild reports whether recent has grown enough to be folded into
// base: a sixteenth of base's addresses, 4,096 at least.
func (f *SuppressionFilter) needsRebuild() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.recent) > max(4096, len(f.base.hashes)/16)
}

// readEnded records the end of a read: its start when it succeeded, its
// error otherwise, and wakes WaitLookup. f.mu is held.
func (f *SuppressionFilter) readEnded(start time.Time, err error) {
	if err == nil {
		f.lastRead = start
	}
	f.lastErr = err
	close(f.readDone)
	f.readDone = make(chan struct{})
}

func (f *SuppressionFilter) failed(err error) {
	f.mu.Lock()
	f.readEnded(time.Time{}, err)
	f.mu.Unlock()
}

// Load reads every version from the feed and replaces the filter's
// contents with them, keeping what Put recorded that they do not
// supersede.
func (f *SuppressionFilter) Load(ctx context.Context) error {
	f.readMu.Lock()
	defer f.readMu.Unlock()
	return f.load(ctx)
}

func (f *SuppressionFilter) load(ctx context.Context) error {
	start := f.now()
	lb := loadBuilder{f: f, dict: newInterner()}
	if err := f.feed.SuppressionVersionsSince(ctx, time.Time{}, lb.add); err != nil {
		f.failed(err)
		return err
	}
	base := lb.finish()
	f.dict = lb.dict
	f.mu.Lock()
	defer f.mu.Unlock()
	for a, e := range f.recent { // keep what the read may have missed
		rec, inBase := base.find(f.hash(a), a)
		if f.addrOnly {
			if inBase {
				delete(f.recent, a)
			}
			continue
		}
		held := parseRecord(rec, base.dict)
		vs := slices.DeleteFunc(parseRecord(e.rec, nil), func(v recVersion) bool {
			bv, ok := findStream(held, v.stream)
			return ok && bv.updated >= v.updated
		})
		if len(vs) == 0 {
			delete(f.recent, a)
		} else {
			f.recent[a] = recentEntry{rec: appendRecord(nil, a, vs), gen: e.gen}
		}
	}
	f.base, f.loaded = base, true
	f.readEnded(start, nil)
	return nil
}

// refreshBatch is how many versions a refresh records under one lock.
const refreshBatch = 256

// Refresh reads the versions written since the previous successful read
// began, less the overlap; before the first successful Load it loads.
func (f *SuppressionFilter) Refresh(ctx context.Context) error {
	f.readMu.Lock()
	defer f.readMu.Unlock()
	f.mu.RLock()
	loaded, since := f.loaded, f.lastRead.Add(-f.overlap)
	f.mu.RUnlock()
	if !loaded {
		return f.load(ctx)
	}
	start := f.now()
	batch := make([]SuppressionVersion, 0, refreshBatch)
	record := func() {
		f.apply(batch)
		batch = batch[:0]
		if f.needsRebuild() {
			f.rebuild()
		}
	}
	err := f.feed.SuppressionVersionsSince(ctx, since, func(v SuppressionVersion) error {
		if batch = append(batch, v); len(batch) == refreshBatch {
			record()
		}
		return nil
	})
	record() // true versions, read before any failure: keeping them is harmless
	if err != nil {
		f.failed(err)
		return err
	}
	f.mu.Lock()
	f.readEnded(start, nil)
	f.mu.Unlock()
	return nil
}

// rebuild folds recent into a new base, built outside the lock so that
// Lookup is not held up: the copy of a million records takes tens of
// milliseconds. What Put records meanwhile stays in recent. Called with
// readMu held.
func (f *SuppressionFilter) rebuild() {
	f.mu.RLock()
	base, gen := f.base, f.gen
	ds := make([]delta, 0, len(f.recent))
	for a, e := range f.recent {
		ds = append(ds, delta{hash: f.hash(a), address: a, rec: e.rec})
	}
	f.mu.RUnlock()
	slices.SortFunc(ds, func(a, b delta) int { return cmp.Compare(a.hash, b.hash) })
	nb := f.build(base, ds)
	f.mu.Lock()
	defer f.mu.Unlock()
	for a, e := range f.recent {
		if e.gen <= gen {
			delete(f.recent, a)
		}
	}
	f.base = nb
}

// delta is an address of recent, for a rebuild.
type delta struct {
	hash    uint64
	address string
	rec     []byte
}

// build returns base with the deltas, sorted by hash, folded in.
func (f *SuppressionFilter) build(base *filterBase, ds []delta) *filterBase {
	if f.addrOnly {
		hs := make([]uint64, len(ds))
		for i, d := range ds {
			hs[i] = d.hash
		}
		return &filterBase{hashes: mergeSorted(base.hashes, hs)}
	}
	nb := &filterBase{
		hashes: make([]uint64, 0, len(base.hashes)+len(ds)),
		offs:   make([]uint64, 0, len(base.hashes)+len(ds)),
	}
	add := func(h uint64, rec []byte, versions int) {
		nb.hashes, nb.offs = append(nb.hashes, h), append(nb.offs, nb.arena.add(rec))
		nb.versions += versions
	}
	i, j := 0, 0
	for i < len(base.hashes) || j < len(ds) {
		if j == len(ds) || (i < len(base.hashes) && base.hashes[i] < ds[j].hash) {
			rec := base.record(i)
			add(base.hashes[i], rec, recordVersions(rec))
			i++
			continue
		}
		// ds[j]'s address, and whatever base holds of it.
		d := ds[j]
		j++
		held, _ := base.find(d.hash, d.address)
		vs := f.reintern(parseRecord(d.rec, nil), d.address)
		vs = mergeVersions(parseRecord(held, base.dict), vs)
		add(d.hash, appendRecord(nil, d.address, vs), len(vs))
		// base's records of that hash that are other addresses'.
		for ; i < len(base.hashes) && base.hashes[i] == d.hash; i++ {
			if rec := base.record(i); !recordIs(rec, d.address) && !deltaHas(ds[j:], d.hash, recordAddress(rec)) {
				add(d.hash, rec, recordVersions(rec))
			}
		}
	}
	nb.dict, nb.dictSize = f.dict.strs, f.dict.size
	return nb
}

// deltaHas reports whether ds (sorted by hash, from some delta of hash h
// on) holds address.
func deltaHas(ds []delta, h uint64, address []byte) bool {
	for _, d := range ds {
		if d.hash != h {
			return false
		}
		if d.address == string(address) {
			return true
		}
	}
	return false
}

// reintern re-encodes versions with inline strings against f.dict.
func (f *SuppressionFilter) reintern(vs []recVersion, address string) []recVersion {
	for i, v := range vs {
		s, removed := v.decode(address)
		vs[i].body = appendVersion(nil, f.dict, SuppressionVersion{Suppression: s, Removed: removed})
	}
	return vs
}

// Run loads the filter, then refreshes it every Interval, until ctx ends
// or the feed answers ErrClosed (its store was closed), and returns why
// it stopped. A failed read is tried again at the next tick; meanwhile
// the filter goes stale and Lookup answers nothing, so checks go to the
// store.
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

// Loaded reports whether a full read has succeeded.
func (f *SuppressionFilter) Loaded() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.loaded
}

// SuppressionFilterStats describe a filter's state.
type SuppressionFilterStats struct {
	// Addresses held; one with versions both in the arena and among
	// those recorded since its last rebuild counts twice.
	Addresses int
	// Versions held, the latest of each key, removals too (the arena's
	// and those recorded since, again some twice); 0 with AddressesOnly.
	Versions int
	// Bytes of memory held by them, estimated: the arena, 16 bytes an
	// address to find it (8 with AddressesOnly), the string table, and
	// about 80 bytes an address recorded since the rebuild plus its record.
	Bytes    int
	Loaded   bool      // a full read succeeded
	LastRead time.Time // start of the last successful read
	LastErr  error     // of the last read, nil when it succeeded
}

// Stats returns the filter's size and freshness.
func (f *SuppressionFilter) Stats() SuppressionFilterStats {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b := f.base
	st := SuppressionFilterStats{
		Addresses: len(b.hashes) + len(f.recent), Versions: b.versions,
		Bytes:  8*cap(b.hashes) + 8*cap(b.offs) + b.arena.size() + b.dictSize + 64*len(b.dict),
		Loaded: f.loaded, LastRead: f.lastRead, LastErr: f.lastErr,
	}
	for a, e := range f.recent {
		st.Versions += recordVersions(e.rec)
		st.Bytes += 80 + len(a) + len(e.rec)
	}
	return st
}

// loadBuilder builds a base from a full read. An address whose versions
// come one after another (a feed in address order) gets one record at
// once; one that comes again later gets another, and finish merges them.
type loadBuilder struct {
	f       *SuppressionFilter
	dict    *interner
	hashes  []uint64 // with AddressesOnly
	ents    []loadEntry
	arena   arena
	cur     string       // the address being gathered
	vs      []recVersion // its versions, one per stream
	scratch []byte       // their encodings
	rec     []byte       // its record
	started bool
}

type loadEntry struct{ hash, off uint64 }

func (lb *loadBuilder) add(v SuppressionVersion) error {
	if !lb.started || v.Address != lb.cur {
		lb.flush()
		lb.cur, lb.started = v.Address, true
	}
	if lb.f.addrOnly {
		return nil
	}
	at := v.Updated.UnixNano()
	i, found := slices.BinarySearchFunc(lb.vs, v.Stream, func(r recVersion, s string) int { return strings.Compare(r.stream, s) })
	if found && lb.vs[i].updated >= at {
		return nil
	}
	// Appending to scratch leaves the bytes earlier bodies hold alone.
	start := len(lb.scratch)
	lb.scratch = appendVersion(lb.scratch, lb.dict, v)
	nv := recVersion{stream: v.Stream, updated: at, body: lb.scratch[start:]}
	if found {
		lb.vs[i] = nv
	} else {
		lb.vs = slices.Insert(lb.vs, i, nv)
	}
	return nil
}

func (lb *loadBuilder) flush() {
	if !lb.started {
		return
	}
	h := lb.f.hash(lb.cur)
	if lb.f.addrOnly {
		lb.hashes = append(lb.hashes, h)
		return
	}
	lb.rec = appendRecord(lb.rec[:0], lb.cur, lb.vs)
	lb.ents = append(lb.ents, loadEntry{h, lb.arena.add(lb.rec)})
	lb.vs, lb.scratch = lb.vs[:0], lb.scratch[:0]
}

func (lb *loadBuilder) finish() *filterBase {
	lb.flush()
	if lb.f.addrOnly {
		slices.Sort(lb.hashes)
		return &filterBase{hashes: slices.Clip(slices.Compact(lb.hashes))}
	}
	slices.SortFunc(lb.ents, func(a, b loadEntry) int { return cmp.Compare(a.hash, b.hash) })
	// An address that came in pieces: merge its records into one; the
	// pieces stay in the arena, unused (few: a full read of ClickHouse
	// brings an address's versions together but for those in other parts).
	live := 0
	for i := range lb.ents {
		e := lb.ents[i]
		if e.off == deadRecord {
			continue
		}
		addr := recordAddress(lb.arena.at(e.off))
		var vs []recVersion
		for j := i + 1; j < len(lb.ents) && lb.ents[j].hash == e.hash; j++ {
			if o := lb.ents[j].off; o != deadRecord && string(recordAddress(lb.arena.at(o))) == string(addr) {
				if vs == nil {
					vs = parseRecord(lb.arena.at(e.off), lb.dict.strs)
				}
				vs = mergeVersions(vs, parseRecord(lb.arena.at(o), lb.dict.strs))
				lb.ents[j].off = deadRecord
			}
		}
		if vs != nil {
			lb.rec = appendRecord(lb.rec[:0], string(addr), vs)
			lb.ents[i].off = lb.arena.add(lb.rec)
		}
		lb.ents[live] = lb.ents[i]
		live++
	}
	nb := &filterBase{hashes: make([]uint64, live), offs: make([]uint64, live), arena: lb.arena,
		dict: lb.dict.strs, dictSize: lb.dict.size}
	for i, e := range lb.ents[:live] {
		nb.hashes[i], nb.offs[i] = e.hash, e.off
		nb.versions += recordVersions(lb.arena.at(e.off))
	}
	return nb
}

const deadRecord = ^uint64(0)

// find returns the record of address, of hash h, and whether b holds it
// (with AddressesOnly: holds h; the record is then nil).
func (b *filterBase) find(h uint64, address string) ([]byte, bool) {
	i, _ := slices.BinarySearch(b.hashes, h)
	for ; i < len(b.hashes) && b.hashes[i] == h; i++ {
		if b.offs == nil {
			return nil, true
		}
		if rec := b.arena.at(b.offs[i]); recordIs(rec, address) {
			return rec, true
		}
	}
	return nil, false
}

// record returns the i-th record, cut to its length.
func (b *filterBase) record(i int) []byte {
	rec := b.arena.at(b.offs[i])
	return rec[:recordLen(rec)]
}

// arenaChunk is the size of an arena's chunks: one for a larger record.
const arenaChunk = 1 << 20

// arena holds records in chunks that are filled, never grown, so that
// building one of a hundred megabytes neither copies it as it grows nor
// leaves the copies' garbage, and nothing points into it for the
// garbage collector to follow. An offset is chunk<<32 | offset in it.
type arena struct{ chunks [][]byte }

// add copies rec in and returns its offset.
func (a *arena) add(rec []byte) uint64 {
	n := len(a.chunks)
	if n == 0 || cap(a.chunks[n-1])-len(a.chunks[n-1]) < len(rec) {
		a.chunks = append(a.chunks, make([]byte, 0, max(arenaChunk, len(rec))))
		n++
	}
	c := a.chunks[n-1]
	a.chunks[n-1] = append(c, rec...) // within its capacity: earlier records stay put
	return uint64(n-1)<<32 | uint64(len(c))
}

// at returns the bytes from offset off to its chunk's end.
func (a *arena) at(off uint64) []byte { return a.chunks[off>>32][off&(1<<32-1):] }

// size returns the bytes the chunks hold.
func (a *arena) size() int {
	n := 0
	for _, c := range a.chunks {
		n += cap(c)
	}
	return n
}

// mergeSorted merges two sorted slices into a new one without
// duplicates.
func mergeSorted(a, b []uint64) []uint64 {
	slices.Sort(b)
	out := make([]uint64, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i] < b[j]):
			out = append(out, a[i])
			i++
		case i == len(a) || b[j] < a[i]:
			out = append(out, b[j])
			j++
		default: // in both
			out = append(out, a[i])
			i++
			j++
		}
	}
	return slices.Compact(out)
}
