package ingest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/bouncer-mail/bouncer/store"
)

// memStore is an in-memory store.Store, here and only here: the SQLite
// engine is written concurrently, and a fake lets a test produce the
// fault "store down" by making Write fail for a while. Like every engine
// it keeps the first row of an id and ignores later ones.
type memStore struct {
	mu      sync.Mutex
	reports map[string]store.Report
	events  map[string]store.Event
	// outcomes are the stored outcomes by key.
	outcomes map[string]store.Outcome
	written  map[string]int // successful writes that carried each report id
	calls    int            // Write calls, failed ones too
	failing  error          // Write returns it while set
	failed   int            // Write calls that failed
}

func newMemStore() *memStore {
	return &memStore{reports: map[string]store.Report{}, events: map[string]store.Event{}, written: map[string]int{}}
}

func (m *memStore) Write(ctx context.Context, reports []store.Report, events []store.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if m.failing != nil {
		m.failed++
		return m.failing
	}
	for _, r := range reports {
		m.written[r.ID]++
		if _, ok := m.reports[r.ID]; !ok {
			m.reports[r.ID] = r
		}
	}
	for _, e := range events {
		if _, ok := m.events[e.ID]; !ok {
			m.events[e.ID] = e
		}
	}
	return nil
}

func (m *memStore) RecipientEvents(ctx context.Context, address string, limit int) ([]store.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var evs []store.Event
	for _, e := range m.events {
		if e.Recipient == address {
			evs = append(evs, e)
		}
	}
	slices.SortFunc(evs, func(a, b store.Event) int { return b.Time.Compare(a.Time) })
	if len(evs) > limit {
		evs = evs[:limit]
	}
	return evs, nil
}

func (m *memStore) Stats(ctx context.Context, since time.Time) (store.Stats, error) {
	return store.Stats{}, errors.New("memStore: Stats not implemented")
}

func (m *memStore) Reports(ctx context.Context, since time.Time, after string, limit int) ([]store.Report, error) {
	return nil, errors.New("memStore: Reports not implemented")
}

func (m *memStore) Ping(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failing
}

func (m *memStore) Close() error { return nil }

func (m *memStore) setFailing(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failing = err
}

// snapshot returns the stored reports and events, and the failed writes.
func (m *memStore) snapshot() (map[string]store.Report, map[string]store.Event, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps(m.reports), maps(m.events), m.failed
}

func maps[V any](m map[string]V) map[string]V {
	c := make(map[string]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// WriteOutcomes keeps, per key, the outcome of the highest version.
func (m *memStore) WriteOutcomes(ctx context.Context, outcomes []store.Outcome) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failing != nil {
		return m.failing
	}
	if m.outcomes == nil {
		m.outcomes = map[string]store.Outcome{}
	}
	for _, o := range outcomes {
		if old, ok := m.outcomes[o.Key]; !ok || o.Version > old.Version {
			m.outcomes[o.Key] = o
		}
	}
	return nil
}

func (m *memStore) RecipientOutcomes(ctx context.Context, address string) ([]store.Outcome, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []store.Outcome{}
	for _, o := range m.outcomes {
		if o.Recipient == address {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b store.Outcome) int { return b.Last.Compare(a.Last) })
	return out, nil
}
