package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeFeed is a SuppressionFeed over a map of address → Updated.
type fakeFeed struct {
	mu      sync.Mutex
	updated map[string]time.Time
	err     error       // returned by the next reads while set
	sinces  []time.Time // the since of every read
}

func newFakeFeed() *fakeFeed { return &fakeFeed{updated: map[string]time.Time{}} }

func (f *fakeFeed) write(address string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updated[address] = at
}

func (f *fakeFeed) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeFeed) SuppressionAddressesSince(ctx context.Context, since time.Time, fn func(string) error) error {
	f.mu.Lock()
	f.sinces = append(f.sinces, since)
	err := f.err
	var out []string
	for a, at := range f.updated {
		if !at.Before(since) {
			out = append(out, a)
		}
	}
	f.mu.Unlock()
	if err != nil {
		return err
	}
	for _, a := range out {
		if err := fn(a); err != nil {
			return err
		}
	}
	return nil
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

func newTestFilter(feed SuppressionFeed) (*SuppressionFilter, *clock) {
	c := &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	return NewSuppressionFilter(feed, SuppressionFilterOptions{Now: c.now}), c
}

func TestSuppressionFilter(t *testing.T) {
	ctx := context.Background()
	feed := newFakeFeed()
	f, c := newTestFilter(feed)
	feed.write("a@example.com", c.now().Add(-time.Hour))
	feed.write("b@example.com", c.now().Add(-time.Minute))

	// Before the first read, nothing is known: every check goes to the
	// store.
	for _, a := range []string{"a@example.com", "nobody@example.com"} {
		if f.Absent(a) {
			t.Errorf("before Load: Absent(%s) = true, want false", a)
		}
	}
	if err := f.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if f.Absent("a@example.com") || f.Absent("b@example.com") {
		t.Error("after Load: Absent says a stored address is absent")
	}
	if !f.Absent("nobody@example.com") {
		t.Error("after Load: Absent(nobody) = false, want true")
	}

	// This process's write: at once, before any read.
	f.Add("mine@example.com")
	if f.Absent("mine@example.com") {
		t.Error("Absent(mine) after Add = true, want false")
	}

	// Another process's write: not seen until a read that began after
	// it, then seen.
	c.advance(200 * time.Millisecond)
	feed.write("other@example.com", c.now())
	if !f.Absent("other@example.com") {
		t.Error("another process's write seen before a refresh: the filter is not being used")
	}
	c.advance(100 * time.Millisecond)
	if err := f.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if f.Absent("other@example.com") {
		t.Error("after the refresh, Absent(other) = true, want false")
	}
	if f.Absent("mine@example.com") {
		t.Error("after the refresh, Absent(mine) = true, want false")
	}

	// Stale: past MaxCheckStaleness since the last successful read
	// began, Absent answers nothing, so a write it has not read shows.
	c.advance(MaxCheckStaleness)
	if !f.Absent("nobody@example.com") {
		t.Error("Absent(nobody) exactly MaxCheckStaleness after the read = false, want true")
	}
	c.advance(time.Nanosecond)
	feed.write("late@example.com", c.now())
	if f.Absent("late@example.com") || f.Absent("nobody@example.com") {
		t.Error("stale filter: Absent = true, want false for every address")
	}
	// A failing feed keeps it stale.
	feed.fail(errors.New("server down"))
	if err := f.Refresh(ctx); err == nil {
		t.Fatal("Refresh with a failing feed succeeded")
	}
	if st := f.Stats(); st.LastErr == nil {
		t.Error("Stats.LastErr = nil after a failed refresh")
	}
	if f.Absent("nobody@example.com") {
		t.Error("after a failed refresh: Absent(nobody) = true, want false")
	}
	feed.fail(nil)
	if err := f.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if !f.Absent("nobody@example.com") || f.Absent("late@example.com") {
		t.Error("after a successful refresh: want nobody absent and late present")
	}
	if st := f.Stats(); st.LastErr != nil || !st.Loaded || !st.LastRead.Equal(c.now()) {
		t.Errorf("Stats = %+v, want loaded, read now, no error", st)
	}
}

// A refresh reads from the previous read's start less the overlap, so a
// write whose Updated is older than that read (a slow insert, a writer
// whose clock is behind) is still found.
func TestSuppressionFilterOverlap(t *testing.T) {
	ctx := context.Background()
	feed := newFakeFeed()
	f, c := newTestFilter(feed)
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
	if f.Absent("slow@example.com") {
		t.Error("a write stamped within the overlap before the last read was missed")
	}
	if got, want := feed.sinces[len(feed.sinces)-1], read1.Add(250*time.Millisecond-DefaultFilterOverlap); !got.Equal(want) {
		t.Errorf("refresh read since %v, want the previous read's start less the overlap, %v", got, want)
	}
	if !feed.sinces[0].IsZero() {
		t.Errorf("Load read since %v, want zero (everything)", feed.sinces[0])
	}
}

// Refreshes that bring many addresses merge them into the sorted slice;
// nothing is lost, by the merge or by Adds while it runs.
func TestSuppressionFilterMerge(t *testing.T) {
	ctx := context.Background()
	feed := newFakeFeed()
	f, c := newTestFilter(feed)
	for i := range 1000 {
		feed.write(fmt.Sprintf("base%d@example.com", i), c.now().Add(-time.Hour))
	}
	if err := f.Load(ctx); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var adds atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a process writing while the refreshes merge
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			n := adds.Add(1)
			f.Add(fmt.Sprintf("local%d@example.com", n))
			f.Absent("nobody@example.com")
		}
	}()
	for round := range 5 {
		c.advance(250 * time.Millisecond)
		for i := range 3000 {
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
	if want := 1000 + 5*3000; st.Addresses < want {
		t.Errorf("Stats.Addresses = %d, want at least %d", st.Addresses, want)
	}
	if len(f.sorted) < 1000+4*3000 {
		t.Errorf("sorted holds %d hashes: the refreshes were not merged", len(f.sorted))
	}
	for i := range 1000 {
		if a := fmt.Sprintf("base%d@example.com", i); f.Absent(a) {
			t.Fatalf("%s lost", a)
		}
	}
	for round := range 5 {
		for i := range 3000 {
			if a := fmt.Sprintf("r%d-%d@example.com", round, i); f.Absent(a) {
				t.Fatalf("%s lost", a)
			}
		}
	}
	for n := int64(1); n <= adds.Load(); n++ {
		if a := fmt.Sprintf("local%d@example.com", n); f.Absent(a) {
			t.Fatalf("%s, added during the merges, lost", a)
		}
	}
	if !f.Absent("nobody@example.com") {
		t.Error("Absent(nobody) = false after the merges")
	}
}

// Load replaces what the filter holds but keeps what Add recorded.
func TestSuppressionFilterLoadKeepsAdds(t *testing.T) {
	ctx := context.Background()
	feed := newFakeFeed()
	f, c := newTestFilter(feed)
	f.Add("early@example.com")
	feed.write("stored@example.com", c.now())
	if err := f.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if f.Absent("early@example.com") || f.Absent("stored@example.com") {
		t.Error("after Load: an added or stored address is absent")
	}
}

// WaitAbsent waits for a read that makes a stale (or unloaded) filter
// fresh, when Run is reading; otherwise it answers as Absent does.
func TestSuppressionFilterWaitAbsent(t *testing.T) {
	ctx := context.Background()
	feed := newFakeFeed()
	feed.write("a@example.com", time.Now())
	f, c := newTestFilter(feed)

	// Not running: no wait, the stale answer.
	if f.WaitAbsent(ctx, "nobody@example.com", time.Hour) {
		t.Error("WaitAbsent before any read, Run not running = true")
	}
	f.running.Store(true) // as Run does

	// Before the first read: waits for it.
	got := make(chan bool)
	go func() { got <- f.WaitAbsent(ctx, "nobody@example.com", time.Hour) }()
	if err := f.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if !<-got {
		t.Error("WaitAbsent(nobody) waiting for the first read = false, want true")
	}
	go func() { got <- f.WaitAbsent(ctx, "a@example.com", time.Hour) }()
	if <-got {
		t.Error("WaitAbsent(a) = true for a stored address")
	}
	// Stale, and holding the address: no read can make it absent, so no
	// wait (an hour would fail the test).
	c.advance(2 * MaxCheckStaleness)
	if f.WaitAbsent(ctx, "a@example.com", time.Hour) {
		t.Error("WaitAbsent(a) on a stale filter = true for a stored address")
	}

	// Stale: waits for a refresh that began after the call.
	c.advance(2 * MaxCheckStaleness)
	go func() { got <- f.WaitAbsent(ctx, "nobody@example.com", time.Hour) }()
	if err := f.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if !<-got {
		t.Error("WaitAbsent(nobody) waiting for a refresh = false, want true")
	}

	// Stale with no read coming: gives up after maxWait, or with ctx.
	c.advance(2 * MaxCheckStaleness)
	if f.WaitAbsent(ctx, "nobody@example.com", 10*time.Millisecond) {
		t.Error("WaitAbsent with no read coming = true, want false after maxWait")
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if f.WaitAbsent(canceled, "nobody@example.com", time.Hour) {
		t.Error("WaitAbsent with a canceled context = true")
	}
	// A failing read: no wait at all after it.
	feed.fail(errors.New("server down"))
	go func() { got <- f.WaitAbsent(ctx, "nobody@example.com", time.Hour) }()
	if err := f.Refresh(ctx); err == nil {
		t.Fatal("Refresh with a failing feed succeeded")
	}
	if <-got {
		t.Error("WaitAbsent through a failed read = true, want false")
	}
	if f.WaitAbsent(ctx, "nobody@example.com", time.Hour) {
		t.Error("WaitAbsent after a failed read = true, want false at once")
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

// BenchmarkSuppressionFilter measures a filter of a million addresses:
// its memory (bytes per address, from the heap and from Stats) and the
// cost of Absent:
//
//	go test -run '^$' -bench SuppressionFilter ./store/
func BenchmarkSuppressionFilter(b *testing.B) {
	const n = 1_000_000
	feed := newFakeFeed()
	now := time.Now()
	for i := range n {
		feed.updated[fmt.Sprintf("user%d@example%d.com", i, i%1000)] = now
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// A clock that stands still: the benchmark outlasts MaxStaleness.
	f := NewSuppressionFilter(feed, SuppressionFilterOptions{Now: func() time.Time { return now }})
	if err := f.Load(context.Background()); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	misses := make([]string, 4096)
	for i := range misses {
		misses[i] = fmt.Sprintf("user%d@example%d.com", n+i, i%1000)
	}
	i := 0
	for b.Loop() {
		if !f.Absent(misses[i%len(misses)]) {
			b.Fatal("a miss is not absent")
		}
		i++
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/address")
	b.ReportMetric(float64(f.Stats().Bytes)/n, "B/address")
}
