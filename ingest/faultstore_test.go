package ingest

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/sqlite"
)

// faultStore is the real SQLite engine with a switch that makes Write and
// Ping fail: the fault "store down" that a healthy local SQLite file
// cannot produce on demand (ClickHouse outages are tested for real in
// cmd/ingest). It also records what each successful Write carried, so a
// test can count how often ingest wrote a report; reads go to SQLite.
type faultStore struct {
	store.Store
	mu      sync.Mutex
	reports map[string]store.Report // the first committed row of each id, as the engine keeps it
	events  map[string]store.Event
	written map[string]int // successful writes that carried each report id
	failing error          // Write and Ping return it while set
	failed  int            // Write calls that failed

	inWrite, mostInWrite atomic.Int32 // Write calls under way, and the most at once
	sizes                []int        // the reports of each successful Write
}

func newFaultStore(t *testing.T) *faultStore {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "bouncer.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &faultStore{Store: st, reports: map[string]store.Report{}, events: map[string]store.Event{}, written: map[string]int{}}
}

func (f *faultStore) Write(ctx context.Context, reports []store.Report, events []store.Event) error {
	n := f.inWrite.Add(1)
	defer f.inWrite.Add(-1)
	for m := f.mostInWrite.Load(); n > m && !f.mostInWrite.CompareAndSwap(m, n); m = f.mostInWrite.Load() {
	}
	// A moment inside before the lock, so that calls made at once overlap
	// here and are counted.
	time.Sleep(time.Millisecond)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing != nil {
		f.failed++
		return f.failing
	}
	if err := f.Store.Write(ctx, reports, events); err != nil {
		return err
	}
	f.sizes = append(f.sizes, len(reports))
	for _, r := range reports {
		f.written[r.ID]++
		if _, ok := f.reports[r.ID]; !ok {
			f.reports[r.ID] = r
		}
	}
	for _, e := range events {
		if _, ok := f.events[e.ID]; !ok {
			f.events[e.ID] = e
		}
	}
	return nil
}

func (f *faultStore) Ping(ctx context.Context) error {
	f.mu.Lock()
	failing := f.failing
	f.mu.Unlock()
	if failing != nil {
		return failing
	}
	return f.Store.Ping(ctx)
}

func (f *faultStore) setFailing(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing = err
}

// snapshot returns the reports and events committed so far, and the
// failed writes.
func (f *faultStore) snapshot() (map[string]store.Report, map[string]store.Event, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return copyMap(f.reports), copyMap(f.events), f.failed
}

// writes returns how many successful writes carried report id.
func (f *faultStore) writes(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written[id]
}

func copyMap[V any](m map[string]V) map[string]V {
	c := make(map[string]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
