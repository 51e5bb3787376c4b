package store

import (
	"sync"
	"time"

	"github.com/bouncer-mail/bouncer/event"
)

// Gate keeps calls out of a closed engine and lets Close wait for the calls
// in flight. Every method of an engine Enters and, when that succeeded,
// Leaves; Close runs its release function once, after the calls in flight.
// The zero Gate is open.
type Gate struct {
	mu     sync.RWMutex
	closed bool
}

// Enter admits a call, or returns ErrClosed after Close.
func (g *Gate) Enter() error {
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// Leave ends a call that Enter admitted.
func (g *Gate) Leave() { g.mu.RUnlock() }

// Close waits for the calls in flight, marks the gate closed and runs
// release once; a second Close returns nil.
func (g *Gate) Close(release func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	return release()
}

// NewStats returns the Stats of a window beginning at since, with every
// class present at zero, for an engine to add its counts to.
func NewStats(since time.Time) Stats {
	st := Stats{Since: since, EventsByClass: make(map[event.Class]int64, len(event.Classes)), Events: map[StatsKey]int64{}}
	for _, c := range event.Classes {
		st.EventsByClass[c] = 0
	}
	return st
}

// Add counts n events of one group in st.
func (st *Stats) Add(k StatsKey, n int64) {
	st.EventsByClass[k.Class] += n
	st.Events[k] += n
}
