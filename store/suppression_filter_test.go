package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
)

// fakeFeed is a SuppressionFeed over every version written, as a table
// that keeps them all (ClickHouse before a merge).
type fakeFeed struct {
	mu       sync.Mutex
	versions []SuppressionVersion
	ordered  bool        // hand versions in address order, as the ClickHouse feed's full read does
	err      error       // returned by the next reads while set
	sinces   []time.Time // the since of every read
	handed   int         // versions handed over
}

func newFakeFeed() *fakeFeed { return &fakeFeed{} }

func (f *fakeFeed) put(vs ...SuppressionVersion) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.versions = append(f.versions, vs...)
}

// write stores a suppression of address on the global stream, updated at.
func (f *fakeFeed) write(address string, at time.Time) SuppressionVersion {
	v := testVersion(address, "", at)
	f.put(v)
	return v
}

func (f *fakeFeed) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeFeed) SuppressionVersionsSince(ctx context.Context, since time.Time, fn func(SuppressionVersion) error) error {
	f.mu.Lock()
	f.sinces = append(f.sinces, since)
	err := f.err
	var out []SuppressionVersion
	for _, v := range f.versions {
		if !v.Updated.Before(since) {
			out = append(out, v)
		}
	}
	if f.ordered {
		slices.SortStableFunc(out, func(a, b SuppressionVersion) int { return cmp.Compare(a.Address, b.Address) })
	} else {
		rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	}
	f.handed += len(out)
	f.mu.Unlock()
	if err != nil {
		return err
	}
	for _, v := range out {
		if err := fn(v); err != nil {
			return err
		}
	}
	return nil
}

// want is what AddressSuppressions answers over vs: each key's latest
// version, in force at now and not a removal, by stream.
func want(vs []SuppressionVersion, address string, now time.Time) []Suppression {
	latest := map[string]SuppressionVersion{}
	for _, v := range vs {
		if v.Address != address {
			continue
		}
		if l, ok := latest[v.Stream]; !ok || v.Updated.After(l.Updated) {
			latest[v.Stream] = v
		}
	}
	out := []Suppression{}
	for _, v := range latest {
		if !v.Removed && v.InForce(now) {
			out = append(out, v.Suppression)
		}
	}
	slices.SortFunc(out, func(a, b Suppression) int { return cmp.Compare(a.Stream, b.Stream) })
	return out
}

var testStart = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// testVersion is a policy suppression of address on stream, put at at,
// in force from an hour before, its times in UTC as a store returns them.
func testVersion(address, stream string, at time.Time) SuppressionVersion {
	return SuppressionVersion{Suppression: Suppression{
		Address: address, Stream: stream, Source: SourcePolicy, Class: event.ClassHard, Reason: event.ReasonUserUnknown,
		Rule: "hard", Since: at.Add(-time.Hour).UTC(), Actor: "policy", Updated: at.UTC(),
		Note: "550 5.1.1 <" + address + ">: Recipient address rejected",
	}}
}

// removal is the removal of v's key at at.
func removal(v SuppressionVersion, at time.Time) SuppressionVersion {
	v.Removed, v.Updated = true, at.UTC()
	return v
}

// clock is a test clock that moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestFilter(feed SuppressionFeed, opts SuppressionFilterOptions) (*SuppressionFilter, *clock) {
	c := &clock{t: testStart}
	opts.Now = c.now
	return NewSuppressionFilter(feed, opts), c
}

// lookupOK is f.Lookup at the filter's clock, failing when the filter
// does not answer.
func lookupOK(t *testing.T, f *SuppressionFilter, address string, now time.Time) []Suppression {
	t.Helper()
	got, ok := f.Lookup(address, now)
	if !ok {
		t.Fatalf("Lookup(%s) did not answer: %+v", address, f.Stats())
	}
	if got == nil {
		t.Fatalf("Lookup(%s) = nil, want a non-nil slice", address)
	}
	return got
}

func TestSuppressionFilter(t *testing.T) {
	ctx := context.Background()
	feed := newFakeFeed()
	f, c := newTestFilter(feed, SuppressionFilterOptions{})
	feed.write("a@example.com", c.now().Add(-time.Hour))
	feed.write("b@example.com", c.now().Add(-time.Minute))
	now := c.now()

	// Before the first read, nothing is known: every check goes to the
	// store.
	for _, a := range []string{"a@example.com", "nobody@example.com"} {
		if got, ok := f.Lookup(a, now); ok {
			t.Errorf("before Load: Lookup(%s) = %v, true; want no answer", a, got)
		}
	}
	if err := f.Load(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"a@example.com", "b@example.com", "nobody@example.com"} {
		if got, w := lookupOK(t, f, a, now), want(feed.versions, a, now); !reflect.DeepEqual(got, w) {
			t.Errorf("after Load: Lookup(%s) = %+v, want %+v", a, got, w)
		}
	}

	// This process's write: at once, before any read.
	mine := testVersion("mine@example.com", "news", c.now())
	f.Put(mine)
	if got := lookupOK(t, f, "mine@example.com", now); !reflect.DeepEqual(got, []Suppression{mine.Suppression}) {
		t.Errorf("Lookup(mine) after Put = %+v, want it", got)
	}

	// Another process's write: not seen until a read that began after
	// it, then seen.
	c.advance(200 * time.Millisecond)
	feed.write("other@example.com", c.now())
	if got := lookupOK(t, f, "other@example.com", now); len(got) != 0 {
		t.Error("another process's write seen before a refresh: the filter is not being used")
	}
	c.advance(100 * time.Millisecond)
	if err := f.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := lookupOK(t, f, "other@example.com", now); len(got) != 1 {
		t.Errorf("after the refresh, Lookup(other) = %+v, want it", got)
	}
	if got := lookupOK(t, f, "mine@example.com", now); len(got) != 1 {
		t.Errorf("after the refresh, Lookup(mine) = %+v, want it", got)
	}

	// Stale: past MaxCheckStaleness since the last successful read
	// began, Lookup answers nothing, so a write it has not read shows.
	c.advance(MaxCheckStaleness)
	lookupOK(t, f, "nobody@example.com", now)
	c.advance(time.Nanosecond)
	feed.write("late@example.com", c.now())
	for _, a := range []string{"late@example.com", "nobody@example.com", "a@example.com"} {
		if _, ok := f.Lookup(a, now); ok {
			t.Errorf("stale filter: Lookup(%s) answered", a)
		}
	}
	// A failing feed keeps it stale.
	feed.fail(errors.New("server down"))
	if err := f.Refresh(ctx); err == nil {
		t.Fatal("Refresh with a failing feed succeeded")
	}
	if st := f.Stats(); st.LastErr == nil {
		t.Error("Stats.LastErr = nil after a failed refresh")
	}
	if _, ok := f.Lookup("nobody@example.com", now); ok {
		t.Error("after a failed refresh: Lookup(nobody) answered")
	}
	feed.fail(nil)
	if err := f.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := lookupOK(t, f, "late@example.com", now); len(got) != 1 {
		t.Errorf("after a successful refresh: Lookup(late) = %+v, want it", got)
	}
	if st := f.Stats(); st.LastErr != nil || !st.Loaded || !st.LastRead.Equal(c.now()) || st.Versions < 5 {
		t.Errorf("Stats = %+v, want loaded, read now, no error, the versions", st)
	}
}

// Of a key's versions the latest wins, however they arrive: in a full
// read (in address order or not), a refresh, or Put, and in whatever
// order; a removal is never undone by an older put, and an ended or
// future suppression is held but not in force.
func TestSuppressionFilterVersions(t *testing.T) {
	// All within the overlap before the clock, so a refresh reads them.
	at := testStart
	put := testVersion("x@example.com", "", at.Add(-50*time.Second))
	replaced := put
	replaced.Updated, replaced.Reason, replaced.Until = at.Add(-40*time.Second), event.ReasonMailboxFull, at.Add(time.Hour)
	removed := removal(replaced, at.Add(-30*time.Second))
	again := testVersion("x@example.com", "", at.Add(-20*time.Second))
	again.Note = "hand-added, no address in it"
	news := testVersion("x@example.com", "news", at.Add(-55*time.Second))
	ended := testVersion("x@example.com", "billing", at.Add(-55*time.Second))
	ended.Since, ended.Until = at.Add(-48*time.Hour), at.Add(-24*time.Hour)
	future := testVersion("x@example.com", "zz", at.Add(-55*time.Second))
	future.Since = at.Add(time.Hour)

	for _, tt := range []struct {
		name     string
		versions []SuppressionVersion
	}{
		{"put", []SuppressionVersion{put}},
		{"replaced", []SuppressionVersion{put, replaced}},
		{"removed", []SuppressionVersion{put, replaced, removed}},
		{"put again after the removal", []SuppressionVersion{put, replaced, removed, again}},
		{"several streams, one removed", []SuppressionVersion{news, put, removed, ended, future}},
		{"only removals", []SuppressionVersion{removed, removal(news, at)}},
	} {
		for _, path := range []string{"load in order", "load shuffled", "refresh", "put", "put in reverse", "half put, half read"} {
			t.Run(tt.name+"/"+path, func(t *testing.T) {
				feed := newFakeFeed()
				feed.ordered = path == "load in order"
				f, c := newTestFilter(feed, SuppressionFilterOptions{})
				vs := slices.Clone(tt.versions)
				switch path {
				case "load in order", "load shuffled":
					feed.put(vs...)
					if err := f.Load(context.Background()); err != nil {
						t.Fatal(err)
					}
				case "refresh":
					if err := f.Load(context.Background()); err != nil {
						t.Fatal(err)
					}
					feed.put(vs...)
					c.advance(time.Millisecond)
					if err := f.Refresh(context.Background()); err != nil {
						t.Fatal(err)
					}
				case "put", "put in reverse":
					if path == "put in reverse" {
						slices.Reverse(vs)
					}
					if err := f.Load(context.Background()); err != nil {
						t.Fatal(err)
					}
					for _, v := range vs {
						f.Put(v)
					}
				case "half put, half read":
					feed.put(vs[len(vs)/2:]...)
					if err := f.Load(context.Background()); err != nil {
						t.Fatal(err)
					}
					f.Put(vs[:len(vs)/2]...)
				}
				for _, now := range []time.Time{at, at.Add(-30 * time.Hour), at.Add(2 * time.Hour)} {
					if got, w := lookupOK(t, f, "x@example.com", now), want(tt.versions, "x@example.com", now); !reflect.DeepEqual(got, w) {
						t.Errorf("Lookup at %v = %+v\nwant %+v", now.Sub(at), got, w)
					}
				}
			})
		}
	}
}

// Random writes, removals and replacements over a few hundred addresses
// (some hashing alike), arriving through every path in any order, and
// rebuilt often: every answer is what the store would give.
func TestSuppressionFilterRandom(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts SuppressionFilterOptions
		hash func(string) uint64
	}{
		{"rows", SuppressionFilterOptions{}, nil},
		{"rows, colliding hashes", SuppressionFilterOptions{}, func(a string) uint64 { return uint64(a[1]) }},
		{"addresses only", SuppressionFilterOptions{AddressesOnly: true}, nil},
		{"addresses only, colliding hashes", SuppressionFilterOptions{AddressesOnly: true}, func(a string) uint64 { return uint64(a[1]) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			ctx := context.Background()
			feed := newFakeFeed()
			feed.ordered = true
			f, c := newTestFilter(feed, tt.opts)
			if tt.hash != nil {
				f.hashFunc = tt.hash
			}
			all := map[string][]SuppressionVersion{} // every version by address, also those Put only
			streams := []string{"", "news", "billing"}
			address := func() string { return fmt.Sprintf("u%d@example.com", rng.IntN(300)) }
			seq := 0
			write := func() SuppressionVersion {
				// Updated within the overlap before the clock, as a
				// slow or skewed writer's can be; no two alike.
				seq++
				at := c.now().Add(-time.Duration(rng.IntN(50))*time.Second + time.Duration(seq))
				v := testVersion(address(), streams[rng.IntN(3)], at)
				switch rng.IntN(6) {
				case 0:
					v = removal(v, v.Updated)
				case 1:
					v.Until = v.Since.Add(time.Duration(rng.IntN(3)) * time.Hour)
				case 2:
					v.Note = "manual"
				}
				all[v.Address] = append(all[v.Address], v)
				return v
			}
			for range 500 {
				feed.put(write())
			}
			if err := f.Load(ctx); err != nil {
				t.Fatal(err)
			}
			check := func(round int) {
				t.Helper()
				now := c.now()
				for i := range 310 {
					a := fmt.Sprintf("u%d@example.com", i)
					got, ok := f.Lookup(a, now)
					w := want(all[a], a, now)
					if tt.opts.AddressesOnly {
						held := len(all[a]) > 0
						if ok && (held || len(got) != 0) {
							t.Fatalf("round %d: Lookup(%s) = %+v, true; want no answer for an address held", round, a, got)
						}
						if !ok && !held && tt.hash == nil {
							t.Fatalf("round %d: Lookup(%s) did not answer for an address never written", round, a)
						}
						continue
					}
					if !ok || !reflect.DeepEqual(got, w) {
						for _, v := range all[a] {
							t.Logf("version %s %v removed %v", v.Stream, v.Updated, v.Removed)
						}
						rec, in := f.base.find(f.hash(a), a)
						for _, v := range parseRecord(rec, f.base.dict) {
							t.Logf("base (%v): %s %v", in, v.stream, time.Unix(0, v.updated).UTC())
						}
						for _, v := range parseRecord(f.recent[a].rec, nil) {
							t.Logf("recent: %s %v", v.stream, time.Unix(0, v.updated).UTC())
						}
						t.Fatalf("round %d: Lookup(%s) = %+v, %v\nwant %+v", round, a, got, ok, w)
					}
				}
			}
			check(0)
			rebuilds := 0
			for round := 1; round <= 40; round++ {
				var pending []SuppressionVersion
				for range rng.IntN(400) {
					v := write()
					switch rng.IntN(3) {
					case 0:
						feed.put(v) // this process: stored, then recorded
						f.Put(v)
					case 1:
						feed.put(v) // another process
					case 2:
						f.Put(v) // this process, the store slow to show it
						pending = append(pending, v)
					}
				}
				before := f.base
				c.advance(250 * time.Millisecond)
				switch {
				case round%10 == 0:
					feed.ordered = !feed.ordered
					if err := f.Load(ctx); err != nil {
						t.Fatal(err)
					}
				case round%7 == 0: // a rebuild of what was Put, then a refresh
					f.readMu.Lock()
					f.rebuild()
					f.readMu.Unlock()
					fallthrough
				default:
					if err := f.Refresh(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if f.base != before {
					rebuilds++
				}
				check(round)
				feed.put(pending...)
			}
			if rebuilds < 9 {
				t.Errorf("%d rebuilds, want the test to exercise them", rebuilds)
			}
		})
	}
}

// A refresh reads from the previous read's start less the overlap, so a
// write whose Updated is older than that read (a slow insert, a writer
// whose clock is behind) is still found.
func TestSuppressionFilterOverlap(t *testing.T) {
	ctx := context.Background()
	feed := newFakeFeed()
	f, c := newTestFilter(feed, SuppressionFilterOptions{})
	if err := f.Load(ctx); err != nil {
		t.Fatal(err)
	}
	read1 := c.now()
	c.advance(250 * time.Millisecond)
	if err := f.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// Landed now, stamped 30 s before the last read began.
	feed.write("slow@example.com", read1.Add(-30*time.Second))
	c.advance(250 * time.Millisecond)
	if err := f.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := lookupOK(t, f, "slow@example.com", c.now()); len(got) != 1 {
		t.Errorf("a write stamped within the overlap before the last read was missed: %+v", got)
	}
	if got, want := feed.sinces[len(feed.sinces)-1], read1.Add(250*time.Millisecond-DefaultFilterOverlap); !got.Equal(want) {
		t.Errorf("refresh read since %v, want the previous read's start less the overlap, %v", got, want)
	}
	if !feed.sinces[0].IsZero() {
		t.Errorf("Load read since %v, want zero (everything)", feed.sinces[0])
	}
}

// Refreshes that bring many addresses are folded into the arena; nothing
// is lost, by the rebuilds or by Puts while they run, and a Put never
// waits for a lookup, nor a lookup for a rebuild.
func TestSuppressionFilterRebuild(t *testing.T) {
	ctx := context.Background()
	feed := newFakeFeed()
	f, c := newTestFilter(feed, SuppressionFilterOptions{})
	for i := range 1000 {
		feed.write(fmt.Sprintf("base%d@example.com", i), c.now().Add(-time.Hour))
	}
	if err := f.Load(ctx); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var puts atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a process writing while the refreshes rebuild
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			n := puts.Add(1)
			if n > 20000 { // a store takes its time to write: no faster than that
				puts.Add(-1)
				return
			}
			f.Put(testVersion(fmt.Sprintf("local%d@example.com", n), "", testStart))
			f.Lookup("nobody@example.com", testStart)
		}
	}()
	for round := range 5 {
		c.advance(250 * time.Millisecond)
		for i := range 5000 {
			feed.write(fmt.Sprintf("r%d-%d@example.com", round, i), c.now())
		}
		c.advance(time.Millisecond)
		if err := f.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	st := f.Stats()
	if want := 1000 + 5*5000; st.Addresses < want {
		t.Errorf("Stats.Addresses = %d, want at least %d", st.Addresses, want)
	}
	if len(f.base.hashes) < 1000+4*5000 {
		t.Errorf("the arena holds %d addresses: the refreshes were not folded in", len(f.base.hashes))
	}
	now := c.now()
	for i := range 1000 {
		if a := fmt.Sprintf("base%d@example.com", i); len(lookupOK(t, f, a, now)) != 1 {
			t.Fatalf("%s lost", a)
		}
	}
	for round := range 5 {
		for i := range 5000 {
			if a := fmt.Sprintf("r%d-%d@example.com", round, i); len(lookupOK(t, f, a, now)) != 1 {
				t.Fatalf("%s lost", a)
			}
		}
	}
	for n := int64(1); n <= puts.Load(); n++ {
		if a := fmt.Sprintf("local%d@example.com", n); len(lookupOK(t, f, a, now)) != 1 {
			t.Fatalf("%s, put during the rebuilds, lost", a)
		}
	}
	if got := lookupOK(t, f, "nobody@example.com", now); len(got) != 0 {
		t.Errorf("Lookup(nobody) = %+v after the rebuilds", got)
	}
}

// Load replaces what the filter holds but keeps what Put recorded that
// it did not read (a write the read could not see yet), not what it
// read newer.
func TestSuppressionFilterLoadKeepsPuts(t *testing.T) {
	ctx := context.Background()
	feed := newFakeFeed()
	f, c := newTestFilter(feed, SuppressionFilterOptions{})
	early := testVersion("early@example.com", "", c.now())
	f.Put(early)
	stored := feed.write("stored@example.com", c.now())
	f.Put(removal(stored, c.now().Add(-time.Second))) // older than the stored version
	if err := f.Load(ctx); err != nil {
		t.Fatal(err)
	}
	now := c.now()
	if got := lookupOK(t, f, "early@example.com", now); len(got) != 1 {
		t.Errorf("after Load: Lookup(early) = %+v, want what Put recorded", got)
	}
	if got := lookupOK(t, f, "stored@example.com", now); len(got) != 1 {
		t.Errorf("after Load: Lookup(stored) = %+v, want the stored version, newer than the Put one", got)
	}
	if _, ok := f.recent["stored@example.com"]; ok {
		t.Error("after Load: the Put version older than the read one is still kept")
	}
}

// WaitLookup waits for a read that makes a stale (or unloaded) filter
// fresh, when Run is reading; otherwise it answers as Lookup does.
func TestSuppressionFilterWaitLookup(t *testing.T) {
	for _, addrOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("AddressesOnly=%v", addrOnly), func(t *testing.T) {
			ctx := context.Background()
			feed := newFakeFeed()
			feed.write("a@example.com", testStart)
			f, c := newTestFilter(feed, SuppressionFilterOptions{AddressesOnly: addrOnly})
			now := testStart
			wait := func(address string, maxWait time.Duration) bool {
				_, ok := f.WaitLookup(ctx, address, now, maxWait)
				return ok
			}

			// Not running: no wait, no answer.
			if wait("nobody@example.com", time.Hour) {
				t.Error("WaitLookup before any read, Run not running, answered")
			}
			f.running.Store(true) // as Run does

			// Before the first read: waits for it.
			got := make(chan bool)
			go func() { got <- wait("nobody@example.com", time.Hour) }()
			if err := f.Load(ctx); err != nil {
				t.Fatal(err)
			}
			if !<-got {
				t.Error("WaitLookup(nobody) waiting for the first read did not answer")
			}
			if rows, ok := f.WaitLookup(ctx, "a@example.com", now, time.Hour); ok != !addrOnly || (ok && len(rows) != 1) {
				t.Errorf("WaitLookup(a) = %+v, %v; want its row from memory, or no answer with AddressesOnly", rows, ok)
			}
			if addrOnly {
				// Stale, and holding the address: no read can answer
				// it, so no wait (an hour would fail the test).
				c.advance(2 * MaxCheckStaleness)
				if wait("a@example.com", time.Hour) {
					t.Error("WaitLookup(a) on a stale filter answered for a held address")
				}
			}

			// Stale: waits for a refresh that began after the call.
			c.advance(2 * MaxCheckStaleness)
			go func() { got <- wait("a@example.com", time.Hour) }()
			go func() { got <- wait("nobody@example.com", time.Hour) }()
			time.Sleep(10 * time.Millisecond)
			if err := f.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			answered := 0
			for range 2 {
				if <-got {
					answered++
				}
			}
			if want := map[bool]int{false: 2, true: 1}[addrOnly]; answered != want {
				t.Errorf("WaitLookup waiting for a refresh: %d of 2 answered, want %d", answered, want)
			}

			// Stale with no read coming: gives up after maxWait, or with ctx.
			c.advance(2 * MaxCheckStaleness)
			if wait("nobody@example.com", 10*time.Millisecond) {
				t.Error("WaitLookup with no read coming answered, want none after maxWait")
			}
			canceled, cancel := context.WithCancel(ctx)
			cancel()
			if _, ok := f.WaitLookup(canceled, "nobody@example.com", now, time.Hour); ok {
				t.Error("WaitLookup with a canceled context answered")
			}
			// A failing read: no wait at all after it.
			feed.fail(errors.New("server down"))
			go func() { got <- wait("nobody@example.com", time.Hour) }()
			time.Sleep(10 * time.Millisecond)
			if err := f.Refresh(ctx); err == nil {
				t.Fatal("Refresh with a failing feed succeeded")
			}
			if <-got {
				t.Error("WaitLookup through a failed read answered")
			}
			if wait("nobody@example.com", time.Hour) {
				t.Error("WaitLookup after a failed read answered")
			}
		})
	}
}

// Run reads until its feed is closed.
func TestSuppressionFilterRunStops(t *testing.T) {
	feed := newFakeFeed()
	feed.write("a@example.com", time.Now())
	f := NewSuppressionFilter(feed, SuppressionFilterOptions{Interval: time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background()) }()
	for !f.Stats().Loaded {
		time.Sleep(time.Millisecond)
	}
	feed.fail(fmt.Errorf("closed: %w", ErrClosed))
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("Run = %v, want ErrClosed", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- NewSuppressionFilter(newFakeFeed(), SuppressionFilterOptions{}).Run(ctx) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel = %v, want context.Canceled", err)
	}
}

// The records' encoding gives back every field as put, times to the
// nanosecond, strings from the table or inline, a note around its
// address or not.
func TestSuppressionFilterEncoding(t *testing.T) {
	in := newInterner()
	for len(in.strs) < maxInterned { // a full table: strings inline from here
		in.appendStr(nil, fmt.Sprint(len(in.strs)))
	}
	base := testVersion("a@example.com", "news", testStart.Add(123456789))
	for _, tt := range []struct {
		name string
		edit func(*SuppressionVersion)
	}{
		{"policy", func(*SuppressionVersion) {}},
		{"until", func(v *SuppressionVersion) { v.Until = v.Since.Add(time.Hour + 1) }},
		{"note without the address", func(v *SuppressionVersion) { v.Note = "no" }},
		{"note is the address", func(v *SuppressionVersion) { v.Note = v.Address }},
		{"empty note, manual", func(v *SuppressionVersion) {
			v.Note, v.Source, v.Class, v.Reason, v.Rule = "", SourceManual, "", "", ""
		}},
		{"before 1970", func(v *SuppressionVersion) { v.Since = time.Date(1960, 1, 1, 0, 0, 0, 1, time.UTC) }},
	} {
		v := base
		tt.edit(&v)
		for _, dict := range []*interner{nil, newInterner(), in} {
			rec := appendRecord(nil, v.Address, []recVersion{{stream: v.Stream, body: appendVersion(nil, dict, v)}})
			var strs []string
			if dict != nil {
				strs = dict.strs
			}
			vs := parseRecord(rec, strs)
			if len(vs) != 1 || recordLen(rec) != len(rec) || !recordIs(rec, v.Address) || recordVersions(rec) != 1 {
				t.Fatalf("%s: record %x parses as %+v", tt.name, rec, vs)
			}
			got, removed := vs[0].decode(v.Address)
			if removed || !reflect.DeepEqual(got, v.Suppression) || vs[0].updated != v.Updated.UnixNano() {
				t.Errorf("%s: decoded %+v\nwant %+v", tt.name, got, v.Suppression)
			}
		}
	}
}

// benchVersion is key i as bench/suppressions loads it: an address of
// its own, a quarter on stream news, a tenth soft with an end, every
// 50th manual, the note a rejection that quotes the address.
func benchVersion(i int, now time.Time) SuppressionVersion {
	a := fmt.Sprintf("user%d@example%d.com", i, i%1000)
	v := SuppressionVersion{Suppression: Suppression{
		Address: a, Source: SourcePolicy, Class: event.ClassHard, Reason: event.ReasonUserUnknown,
		Rule: "hard", Since: now.Add(-time.Duration(i%2592000) * time.Second), Actor: "policy", Updated: now.Add(time.Duration(i)),
		Note: "550 5.1.1 <" + a + ">: Recipient address rejected: User unknown in virtual mailbox table",
	}}
	if i%4 == 3 {
		v.Stream = "news"
	}
	if i%10 == 0 {
		v.Class, v.Reason, v.Rule = event.ClassSoft, event.ReasonMailboxFull, "soft"
		v.Until = now.Add(30 * 24 * time.Hour)
	}
	if i%50 == 1 {
		v.Source, v.Rule, v.Actor = SourceManual, "", "ops"
	}
	return v
}

// sampledFeed hands over its versions as they are, in order, and
// samples the live heap every 100,000 (after a collection), keeping the
// highest.
type sampledFeed struct {
	versions []SuppressionVersion
	peak     uint64
}

func (f *sampledFeed) SuppressionVersionsSince(ctx context.Context, since time.Time, fn func(SuppressionVersion) error) error {
	for i, v := range f.versions {
		if i%100_000 == 0 {
			f.sample()
		}
		if err := fn(v); err != nil {
			return err
		}
	}
	f.sample()
	return nil
}

func (f *sampledFeed) sample() {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	f.peak = max(f.peak, m.HeapAlloc)
}

// BenchmarkSuppressionFilter measures a filter of a million
// suppressions shaped as bench/suppressions loads them (and, for
// "unique notes", each with a note of 40 bytes that repeats nowhere):
// its memory (heap bytes per suppression once loaded, the live heap's
// peak while it loaded, and Stats' estimate) and the cost of a Lookup
// that finds one:
//
//	go test -run '^$' -bench SuppressionFilter -benchtime 200000x ./store/
func BenchmarkSuppressionFilter(b *testing.B) {
	const n = 1_000_000
	now := time.Now()
	for _, bb := range []struct {
		name string
		opts SuppressionFilterOptions
		edit func(i int, v *SuppressionVersion)
	}{
		{"rows", SuppressionFilterOptions{}, nil},
		{"rows, unique notes", SuppressionFilterOptions{}, func(i int, v *SuppressionVersion) {
			v.Note = fmt.Sprintf("ticket %08d: asked to stop, by phone", i)
		}},
		{"addresses only", SuppressionFilterOptions{AddressesOnly: true}, nil},
	} {
		b.Run(bb.name, func(b *testing.B) {
			feed := &sampledFeed{versions: make([]SuppressionVersion, n)}
			for i := range n {
				feed.versions[i] = benchVersion(i, now)
				if bb.edit != nil {
					bb.edit(i, &feed.versions[i])
				}
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			// A clock that stands still: the benchmark outlasts MaxStaleness.
			bb.opts.Now = func() time.Time { return now }
			f := NewSuppressionFilter(feed, bb.opts)
			if err := f.Load(context.Background()); err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			i := 0
			for b.Loop() {
				i = (i + 7919) % n
				got, ok := f.Lookup(feed.versions[i].Address, now)
				if !ok && !bb.opts.AddressesOnly || ok && len(got) != 1 {
					b.Fatalf("Lookup(%s) = %+v, %v", feed.versions[i].Address, got, ok)
				}
			}
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/suppression")
			b.ReportMetric(float64(feed.peak-before.HeapAlloc)/n, "load-peak-B/suppression")
			b.ReportMetric(float64(f.Stats().Bytes)/n, "B/suppression")
			runtime.KeepAlive(feed)
		})
	}
}
