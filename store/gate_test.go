package store

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
)

func TestGate(t *testing.T) {
	var g Gate
	if err := g.Enter(); err != nil {
		t.Fatalf("Enter on an open gate: %v", err)
	}
	var released atomic.Int32
	closed := make(chan error)
	go func() { closed <- g.Close(func() error { released.Add(1); return errors.New("release failed") }) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a call was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	g.Leave()
	if err := <-closed; err == nil || err.Error() != "release failed" {
		t.Errorf("Close = %v, want the release error", err)
	}
	if err := g.Enter(); !errors.Is(err, ErrClosed) {
		t.Errorf("Enter after Close = %v, want ErrClosed", err)
	}
	if err := g.Close(func() error { released.Add(1); return nil }); err != nil || released.Load() != 1 {
		t.Errorf("second Close = %v, released %d times; want nil and once", err, released.Load())
	}
}

func TestNewStats(t *testing.T) {
	since := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	st := NewStats(since)
	if !st.Since.Equal(since) || len(st.EventsByClass) != len(event.Classes) {
		t.Fatalf("NewStats = %+v", st)
	}
	for _, c := range event.Classes {
		if n, ok := st.EventsByClass[c]; !ok || n != 0 {
			t.Errorf("class %s: %d, %v; want present at 0", c, n, ok)
		}
	}
}
