package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
)

// selectCounter counts the SELECT queries a server runs (its
// SelectQuery event), less its own.
type selectCounter struct {
	s    *Store
	self uint64 // what one read of the counter adds to it
}

func newSelectCounter(t *testing.T, s *Store) *selectCounter {
	c := &selectCounter{s: s}
	a := c.read(t)
	c.self = c.read(t) - a
	if c.self == 0 || c.self > 1 {
		t.Fatalf("a read of SelectQuery adds %d to it, want 1", c.self)
	}
	return c
}

func (c *selectCounter) read(t *testing.T) uint64 {
	t.Helper()
	var n uint64
	if err := c.s.conn.QueryRow(context.Background(),
		"SELECT value FROM system.events WHERE event = 'SelectQuery'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// during returns how many SELECTs the server ran while f ran.
func (c *selectCounter) during(t *testing.T, f func()) uint64 {
	t.Helper()
	before := c.read(t)
	f()
	return c.read(t) - before - c.self
}

// checkPair is two Stores on one database of a server of the test's
// own (so that nothing else queries it), as two processes: checker,
// whose filter runs on a clock the test moves and refreshes when the
// test says, and writer.
type checkPair struct {
	checker, writer *Store
	offset          atomic.Int64 // the checker's clock: the test's start plus offset
	selects         *selectCounter
}

func newCheckPair(t *testing.T, opts Options) *checkPair {
	srv := clickhousetest.NewServer(t)
	dsn := srv.DSN(clickhousetest.NewDatabaseName(t))
	p := &checkPair{checker: openDSN(t, dsn, opts), writer: openDSN(t, dsn, Options{})}
	t.Cleanup(func() {
		p.checker.Close()
		p.writer.Close()
	})
	// The clock stands at the test's start until moved: within the
	// overlap (a minute) of the real times the versions hold.
	start := time.Now()
	p.checker.checks.opts.Now = func() time.Time { return start.Add(time.Duration(p.offset.Load())) }
	p.checker.checks.noRun = true
	p.selects = newSelectCounter(t, p.checker)
	return p
}

// start makes the checker's filter (the first check does) and loads it.
func (p *checkPair) start(t *testing.T) *store.SuppressionFilter {
	t.Helper()
	if _, err := p.checker.CheckSuppressions(context.Background(), "a@example.com", time.Now()); err != nil {
		t.Fatal(err)
	}
	f := p.checker.checks.filter.Load()
	if err := f.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return f
}

// check returns the checker's CheckSuppressions of address, failing
// the test unless it took exactly wantReads SELECTs (-1: one or more).
func (p *checkPair) check(t *testing.T, address string, now time.Time, wantReads int) []store.Suppression {
	t.Helper()
	var got []store.Suppression
	reads := p.selects.during(t, func() {
		var err error
		if got, err = p.checker.CheckSuppressions(context.Background(), address, now); err != nil {
			t.Fatalf("CheckSuppressions(%s): %v", address, err)
		}
	})
	if wantReads >= 0 && reads != uint64(wantReads) || wantReads < 0 && reads == 0 {
		t.Errorf("CheckSuppressions(%s) ran %d SELECTs, want %d (-1: one or more)", address, reads, wantReads)
	}
	return got
}

// same fails the test unless got is what AddressSuppressions answers,
// field for field.
func same(t *testing.T, s *Store, what, address string, now time.Time, got []store.Suppression) {
	t.Helper()
	want, err := s.AddressSuppressions(context.Background(), address, now)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: CheckSuppressions(%s) = %+v\nAddressSuppressions says %+v", what, address, got, want)
	}
}

func manual(address, stream, note string) store.Suppression {
	return store.Suppression{Address: address, Stream: stream, Source: store.SourceManual, Class: event.ClassHard,
		Reason: event.ReasonUserUnknown, Since: time.Now().Add(-time.Minute), Actor: "ops", Note: note}
}

func removeKey(t *testing.T, s *Store, address, stream string) {
	t.Helper()
	rm := store.SuppressionChange{Time: time.Now(), Address: address, Stream: stream, Action: store.ActionRemove,
		Source: store.SourceManual, Actor: "ops"}
	if err := s.RemoveSuppression(context.Background(), store.SuppressionKey{Address: address, Stream: stream}, rm); err != nil {
		t.Fatal(err)
	}
}

// CheckSuppressions answers from memory, without a query, what
// AddressSuppressions answers: at once for a write through its own
// Store; for another Store's (another process's) write once a refresh
// that began after it ran, the check before it still answering the old
// state from memory; from ClickHouse once the filter is stale (its last
// read began more than MaxCheckStaleness ago, or its reads fail). The
// clock is the test's and the refreshes are called by hand, so nothing
// here depends on timing.
func TestCheckSuppressionsFromMemory(t *testing.T) {
	p := newCheckPair(t, Options{})
	ctx := context.Background()
	fillSuppressions(t, p.writer, 2000, uint64(time.Now().Add(-time.Minute).UnixNano())) // user0..user999, two streams each

	// Before the filter has read anything, every check is a query.
	if got := p.check(t, fillAddress(7), time.Now(), -1); len(got) != 2 {
		t.Fatalf("before the first read: CheckSuppressions = %v, want both streams", got)
	}
	f := p.start(t)
	if st := f.Stats(); st.Addresses != 1000 || st.Versions != 2000 {
		t.Errorf("filter after Load: %+v, want the 1000 addresses, 2000 versions", st)
	}
	now := time.Now()
	for i := range 1000 {
		if got := p.check(t, fillAddress(i), now, 0); len(got) != 2 {
			t.Fatalf("CheckSuppressions(%s) = %v, want both streams", fillAddress(i), got)
		}
		if got := p.check(t, "nobody"+fillAddress(i), now, 0); len(got) != 0 {
			t.Fatalf("CheckSuppressions(nobody%s) = %v, want none", fillAddress(i), got)
		}
	}
	same(t, p.checker, "after Load", fillAddress(42), now, p.check(t, fillAddress(42), now, 0))

	put := func(s *Store, rows ...store.Suppression) {
		t.Helper()
		if err := s.PutSuppressions(ctx, rows); err != nil {
			t.Fatal(err)
		}
	}
	// Steps on one address, run through each Store in turn, each on
	// addresses of its own: [0] through the checker, [1] the writer.
	steps := []struct {
		name  string
		addrs [2]string
		write func(s *Store, a string)
		want  int // suppressions in force after it
	}{
		{"put", [2]string{"x@example.com", "y@example.com"}, func(s *Store, a string) {
			put(s, manual(a, "", "550 5.1.1 <"+a+">: no such user"))
		}, 1},
		{"put on another stream", [2]string{"x@example.com", "y@example.com"}, func(s *Store, a string) {
			put(s, manual(a, "news", "second"))
		}, 2},
		{"replace (new reason and end)", [2]string{"x@example.com", "y@example.com"}, func(s *Store, a string) {
			r := manual(a, "news", "replaced")
			r.Reason, r.Until = event.ReasonMailboxFull, time.Now().Add(24*time.Hour)
			put(s, r)
		}, 2},
		{"remove one stream", [2]string{"x@example.com", "y@example.com"}, func(s *Store, a string) {
			removeKey(t, s, a, "")
		}, 1},
		{"put an ended one", [2]string{"x@example.com", "y@example.com"}, func(s *Store, a string) {
			r := manual(a, "billing", "ended")
			r.Since, r.Until = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
			put(s, r)
		}, 1},
		{"put the removed one again", [2]string{"x@example.com", "y@example.com"}, func(s *Store, a string) {
			put(s, manual(a, "", "again"))
		}, 2},
		{"remove both", [2]string{"x@example.com", "y@example.com"}, func(s *Store, a string) {
			removeKey(t, s, a, "")
			removeKey(t, s, a, "news")
		}, 0},
		{"replace a loaded one", [2]string{fillAddress(3), fillAddress(5)}, func(s *Store, a string) {
			put(s, manual(a, "news", "by hand"))
		}, 2},
		{"remove a loaded one", [2]string{fillAddress(4), fillAddress(6)}, func(s *Store, a string) {
			removeKey(t, s, a, "news")
		}, 1},
	}
	for i, through := range []string{"this process", "another process"} {
		w := []*Store{p.checker, p.writer}[i]
		for _, st := range steps {
			addr, what := st.addrs[i], through+": "+st.name
			before := p.check(t, addr, time.Now(), 0)
			st.write(w, addr)
			if w == p.writer {
				// Not seen before a refresh: the answer comes from memory.
				if got := p.check(t, addr, time.Now(), 0); !reflect.DeepEqual(got, before) {
					t.Errorf("%s: seen before a refresh (%+v, was %+v): the filter is not being used", what, got, before)
				}
				p.offset.Add(int64(250 * time.Millisecond))
				if err := f.Refresh(ctx); err != nil {
					t.Fatal(err)
				}
			}
			now := time.Now()
			got := p.check(t, addr, now, 0)
			if len(got) != st.want {
				t.Errorf("%s: CheckSuppressions(%s) = %+v, want %d in force", what, addr, got, st.want)
			}
			same(t, p.checker, what, addr, now, got)
		}
	}

	// Without refreshes the filter goes stale: once its last read began
	// more than MaxCheckStaleness ago every check is a query, and a
	// write it never read shows; a failing read does not make it fresh.
	late := manual("late@example.com", "", "late")
	put(p.writer, late)
	if got := p.check(t, late.Address, time.Now(), 0); len(got) != 0 {
		t.Fatalf("a write seen by a fresh filter that has not read it (%v)", got)
	}
	p.offset.Add(int64(store.MaxCheckStaleness + time.Millisecond))
	failing, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.Refresh(failing); err == nil {
		t.Fatal("a refresh with a canceled context succeeded")
	}
	for _, a := range []string{late.Address, "nobody@example.com", fillAddress(9)} {
		now := time.Now()
		same(t, p.checker, "stale", a, now, p.check(t, a, now, -1))
	}
	if err := f.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	now = time.Now()
	if got := p.check(t, late.Address, now, 0); len(got) != 1 {
		t.Errorf("after the refresh: CheckSuppressions(late) = %v, want it", got)
	}
}

// Until the filter of every version has loaded, the starting filter of
// the addresses answers the addresses never suppressed, and the others
// are read from ClickHouse; then the filter answers every address, and
// the starting one is dropped.
func TestCheckSuppressionsStarting(t *testing.T) {
	p := newCheckPair(t, Options{})
	ctx := context.Background()
	fillSuppressions(t, p.writer, 200, uint64(time.Now().Add(-time.Minute).UnixNano()))
	if _, err := p.checker.CheckSuppressions(ctx, "a@example.com", time.Now()); err != nil {
		t.Fatal(err)
	}
	starting := p.checker.checks.starting.Load()
	if starting == nil {
		t.Fatal("no starting filter")
	}
	if err := starting.Load(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := range 100 {
		same(t, p.checker, "starting, a hit", fillAddress(i), now, p.check(t, fillAddress(i), now, -1))
		if got := p.check(t, "nobody"+fillAddress(i), now, 0); len(got) != 0 {
			t.Fatalf("starting: CheckSuppressions(nobody%s) = %v, want none", fillAddress(i), got)
		}
	}
	if err := p.checker.PutSuppressions(ctx, []store.Suppression{manual("mine@example.com", "", "n")}); err != nil {
		t.Fatal(err)
	}
	same(t, p.checker, "starting, this process's write", "mine@example.com", now, p.check(t, "mine@example.com", time.Now(), -1))

	if err := p.checker.checks.filter.Load().Load(ctx); err != nil {
		t.Fatal(err)
	}
	now = time.Now()
	for _, a := range []string{fillAddress(5), "mine@example.com", "nobody@example.com"} {
		same(t, p.checker, "loaded", a, now, p.check(t, a, now, 0))
	}
	if p.checker.checks.starting.Load() != nil {
		t.Error("the starting filter is kept after the filter has loaded")
	}
}

// With Options.CheckAddressesOnly the filter holds the addresses only:
// an address never suppressed is answered from memory, a suppressed one
// (in force or not) from ClickHouse.
func TestCheckSuppressionsAddressesOnly(t *testing.T) {
	p := newCheckPair(t, Options{CheckAddressesOnly: true})
	fillSuppressions(t, p.writer, 200, uint64(time.Now().Add(-time.Minute).UnixNano()))
	f := p.start(t)
	if st := f.Stats(); st.Addresses != 100 || st.Versions != 0 || st.Bytes > 8*100 {
		t.Errorf("filter after Load: %+v, want 100 addresses in 800 bytes, no versions", st)
	}
	now := time.Now()
	for i := range 100 {
		same(t, p.checker, "hit", fillAddress(i), now, p.check(t, fillAddress(i), now, -1))
		if got := p.check(t, "nobody"+fillAddress(i), now, 0); len(got) != 0 {
			t.Fatalf("CheckSuppressions(nobody%s) = %v, want none", fillAddress(i), got)
		}
	}
	if err := p.checker.PutSuppressions(context.Background(), []store.Suppression{manual("mine@example.com", "", "n")}); err != nil {
		t.Fatal(err)
	}
	same(t, p.checker, "this process's write", "mine@example.com", now, p.check(t, "mine@example.com", time.Now(), -1))
}

// The feed reads a version once: a refresh after a large write reads its
// rows, the next ones only the sums of their seconds, not the rows again,
// although the overlap covers them; a write that lands late with an old
// version is read with the few rows of its second; a merge that drops
// old versions costs a re-read of their seconds, nothing else.
func TestCheckFeedIncremental(t *testing.T) {
	p := newCheckPair(t, Options{})
	ctx := context.Background()
	f := p.start(t)
	feed := p.checker.checks.feed.Load()
	refresh := func() int64 {
		t.Helper()
		before := feed.handed.Load()
		p.offset.Add(int64(250 * time.Millisecond))
		if err := f.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		return feed.handed.Load() - before
	}
	const big = 20000
	written := time.Now()
	fillSuppressions(t, p.writer, big, uint64(written.UnixNano())) // one second's versions
	if n := refresh(); n != big {
		t.Errorf("the refresh after the write read %d versions, want %d", n, big)
	}
	for i := range 3 {
		if n := refresh(); n != 0 {
			t.Errorf("refresh %d after the write read %d versions again, want none", i+2, n)
		}
	}
	if got := p.check(t, fillAddress(77), time.Now(), 0); len(got) != 2 {
		t.Errorf("CheckSuppressions(%s) = %+v, want both streams", fillAddress(77), got)
	}

	// A write stamped 30 s before the last read began (a slow insert, a
	// writer whose clock is behind), landing now.
	slow := manual("slow@example.com", "", "slow")
	slow.Updated = time.Now().Add(-30 * time.Second)
	batch, err := p.writer.conn.PrepareBatch(ctx, insertSuppressions)
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Append(slow.Address, "", uint64(slow.Updated.UnixNano()), uint8(0), "manual", "hard", "userunknown", "",
		slow.Since.UnixNano(), int64(0), "ops", "slow"); err != nil {
		t.Fatal(err)
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	if n := refresh(); n != 1 {
		t.Errorf("the refresh after a late write read %d versions, want its own", n)
	}
	now := time.Now()
	same(t, p.checker, "late write", slow.Address, now, p.check(t, slow.Address, now, 0))

	// A newer version of every 10th key, then a merge that drops the
	// older ones: their second is read again, once.
	if err := p.writer.conn.Exec(ctx, fmt.Sprintf(`INSERT INTO suppressions %s
SELECT address, stream, version + 1000000000, removed, source, class, reason, rule, since, until, actor, 'newer'
FROM suppressions WHERE version = %d AND cityHash64(address) %% 10 = 0`, suppressionsTable.columnList(), written.UnixNano())); err != nil {
		t.Fatal(err)
	}
	newer := refresh()
	if newer == 0 || newer > big/5 {
		t.Errorf("the refresh after newer versions of a tenth of the keys read %d versions", newer)
	}
	if err := p.writer.conn.Exec(ctx, "OPTIMIZE TABLE suppressions FINAL"); err != nil {
		t.Fatal(err)
	}
	if n := refresh(); n != big-newer {
		t.Errorf("the refresh after a merge read %d versions, want the %d left in the older second", n, big-newer)
	}
	if n := refresh(); n != 0 {
		t.Errorf("the next refresh read %d versions, want none", n)
	}
	for i := range big / 2 {
		if i%97 != 0 {
			continue
		}
		now := time.Now()
		same(t, p.checker, "after the merge", fillAddress(i), now, p.check(t, fillAddress(i), now, 0))
	}
	if sums := feed.keptSums(); len(sums) < 2 {
		t.Errorf("sums kept: %v, want the seconds written in", sums)
	}
}

// With its refresh goroutine, the filter brings another process's write
// without help; the wait is generous, the bound is the test above's.
func TestCheckSuppressionsFilterRuns(t *testing.T) {
	dsn := clickhousetest.Start(t)
	checker, writer := openDSN(t, dsn, Options{}), openDSN(t, dsn, Options{})
	defer writer.Close()
	ctx := context.Background()
	if got, err := checker.CheckSuppressions(ctx, "a@example.com", time.Now()); err != nil || len(got) != 0 {
		t.Fatalf("CheckSuppressions on an empty store = %v, %v", got, err)
	}
	f := checker.checks.filter.Load()
	for deadline := time.Now().Add(30 * time.Second); !f.Stats().Loaded; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the filter has not loaded: %+v", f.Stats())
		}
	}
	r := manual("a@example.com", "", "n")
	if err := writer.PutSuppressions(ctx, []store.Suppression{r}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got, err := checker.CheckSuppressions(ctx, r.Address, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("another process's write not seen after 30 s: %+v", f.Stats())
		}
	}
	// Closing the Store ends the refresh goroutine: its next read is
	// refused, and Run returns.
	if err := checker.Close(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); !errors.Is(f.Refresh(ctx), store.ErrClosed); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the filter still reads after Close")
		}
	}
}

// BenchmarkCheckSuppressions measures the check before a send over
// benchSuppressions rows (benchSuppressionStore) once the filter has
// loaded: a hit and a miss, both answered from memory, and, with
// Options.CheckAddressesOnly, a hit read from ClickHouse. It reports
// the filter's memory per suppression, estimated (Stats) and as the
// heap grew with the load:
//
//	go test -run '^$' -bench CheckSuppressions ./store/clickhouse/
func BenchmarkCheckSuppressions(b *testing.B) {
	s := benchSuppressionStore(b)
	defer s.Close()
	ctx := context.Background()
	now := time.Now()
	for _, mode := range []string{"rows", "addresses only"} {
		s.checks = checkFilter{}
		s.checks.opts.AddressesOnly = mode == "addresses only"
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		began := time.Now()
		if _, err := s.CheckSuppressions(ctx, "a@example.com", now); err != nil {
			b.Fatal(err)
		}
		f := s.checks.filter.Load()
		for !f.Stats().Loaded {
			time.Sleep(10 * time.Millisecond)
		}
		loaded := time.Since(began)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.Run(mode+"/hit", func(b *testing.B) {
			i := 0
			for b.Loop() {
				i = (i + 7919) % (benchSuppressions / 2)
				got, err := s.CheckSuppressions(ctx, fillAddress(i), now)
				if err != nil || len(got) != 2 {
					b.Fatalf("CheckSuppressions(%s) = %d rows, %v; want 2", fillAddress(i), len(got), err)
				}
			}
			st := f.Stats()
			b.ReportMetric(float64(st.Bytes)/benchSuppressions, "filter-B/suppression")
			b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/benchSuppressions, "heap-B/suppression")
			b.ReportMetric(loaded.Seconds(), "load-s")
		})
		b.Run(mode+"/miss", func(b *testing.B) {
			i := 0
			for b.Loop() {
				i = (i + 7919) % (benchSuppressions / 2)
				// Addresses that sort among the stored ones.
				got, err := s.CheckSuppressions(ctx, fillAddress(benchSuppressions/2+i), now)
				if err != nil || len(got) != 0 {
					b.Fatalf("CheckSuppressions = %d rows, %v; want none", len(got), err)
				}
			}
		})
	}
}

func TestBucketRanges(t *testing.T) {
	const s = bucketNanos
	for _, tt := range []struct {
		buckets []uint64
		cond    string
		args    []any
	}{
		{[]uint64{5}, "(version >= ? AND version < ?)", []any{5 * s, 6 * s}},
		{[]uint64{7, 5, 6}, "(version >= ? AND version < ?)", []any{5 * s, 8 * s}},
		{[]uint64{9, 5, 6}, "(version >= ? AND version < ?) OR (version >= ? AND version < ?)", []any{5 * s, 7 * s, 9 * s, 10 * s}},
		{[]uint64{1, 3, 5}, "(version >= ? AND version < ?) OR (version >= ? AND version < ?) OR (version >= ? AND version < ?)",
			[]any{1 * s, 2 * s, 3 * s, 4 * s, 5 * s, 6 * s}},
	} {
		cond, args := bucketRanges(slices.Clone(tt.buckets))
		if cond != tt.cond || !reflect.DeepEqual(args, tt.args) {
			t.Errorf("bucketRanges(%v) = %q, %v; want %q, %v", tt.buckets, cond, args, tt.cond, tt.args)
		}
	}
}
