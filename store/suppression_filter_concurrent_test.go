package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSuppressionFilterConcurrent: lookups of loaded and absent addresses
// stay right while refreshes hand everything over again in random order
// and local writes (newer versions of loaded keys, new keys) force
// rebuilds. Written while looking for three wrong answers of one
// bench/suppressions run on ClickHouse (bench/suppressions/README.md);
// 5.5 M lookups in 20 s found none.
func TestSuppressionFilterConcurrent(t *testing.T) {
	const n = 20_000
	now := time.Now()
	feed := newFakeFeed()
	for i := range n {
		v := benchVersion(i, now.Add(-time.Hour))
		v.Updated = now.Add(-time.Hour)
		feed.put(v)
	}
	f := NewSuppressionFilter(feed, SuppressionFilterOptions{Overlap: 2 * time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := f.Load(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var puts atomic.Int64
	stop := make(chan struct{})
	wg.Add(2)
	go func() { // refreshes that re-deliver everything (overlap 2 h), in random order
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := f.Refresh(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() { // local writes, newer versions of loaded keys and new keys
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			k := puts.Add(1)
			i := rand.IntN(n)
			v := benchVersion(i, now.Add(-time.Hour))
			v.Updated = time.Now()
			v.Note = fmt.Sprintf("put %d", k)
			f.Put(v)
			nv := benchVersion(n+int(k), now.Add(-time.Hour))
			nv.Updated = time.Now()
			f.Put(nv)
			if k%7 == 0 {
				feed.put(nv)
			}
		}
	}()
	bad := 0
	deadline := time.Now().Add(2 * time.Second)
	checks := 0
	for time.Now().Before(deadline) {
		i := rand.IntN(n)
		a := fmt.Sprintf("user%d@example%d.com", i, i%1000)
		rows, ok := f.Lookup(a, time.Now())
		checks++
		if !ok {
			continue // a refresh is late: the store would answer
		}
		if len(rows) != 1 {
			bad++
			if bad < 10 {
				t.Errorf("%s: %d rows %+v", a, len(rows), rows)
			}
		}
		m := fmt.Sprintf("user%d@example%d.com", 10_000_000+i, i%1000)
		if rows, ok := f.Lookup(m, time.Now()); ok && len(rows) != 0 {
			bad++
			t.Errorf("miss %s: %+v", m, rows)
		}
	}
	close(stop)
	wg.Wait()
	if checks < 1000 || puts.Load() < 1000 {
		t.Errorf("%d lookups and %d puts: too few to mean anything", checks, puts.Load())
	}
	t.Logf("%d lookups, %d puts, %d wrong", checks, puts.Load(), bad)
}
