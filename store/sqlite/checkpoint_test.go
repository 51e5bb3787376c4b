package sqlite

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// TestCheckpointer: the writer's commits leave the WAL to the
// checkpointer (they no longer copy it into the database at SQLite's
// default 1,000 pages), and the checkpointer copies it while the store is
// open; what was written is there after a reopen.
func TestCheckpointer(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/bouncer.db"
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// Without the checkpointer, five writes of about 1,000 pages each
	// stay in the WAL: with SQLite's default each commit past 1,000
	// pages would have copied them, and the next write would have
	// started the WAL again from its start.
	s.ckpt.stop()
	raw := make([]byte, 4000)
	seq := 0
	write := func(n int) {
		t.Helper()
		reports := make([]store.Report, n)
		for i := range reports {
			sum := sha256.Sum256(fmt.Appendf(nil, "report %d", seq))
			seq++
			reports[i] = store.Report{Envelope: event.Envelope{ID: hex.EncodeToString(sum[:]), Received: t0}, Raw: raw}
		}
		if err := s.Write(ctx, reports, nil); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		write(1000)
	}
	st, err := s.ckpt.once(ctx) // PASSIVE: it copies, it does not reset
	if err != nil {
		t.Fatal(err)
	}
	if st.frames < 5*1000 {
		t.Fatalf("WAL has %d frames after five writes of 1,000 reports of 4 KB, want at least 5,000: the writer checkpointed", st.frames)
	}
	if st.copied != st.frames {
		t.Fatalf("a checkpoint with no reader copied %d of %d frames", st.copied, st.frames)
	}

	// With it, writes are copied without anyone asking.
	s.ckpt = startCheckpointer(s.ckpt.db)
	write(1000)
	deadline := time.Now().Add(10 * time.Second)
	for s.ckpt.copied.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the checkpointer copied nothing in 10 s (%d errors)", s.ckpt.errs.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.ckpt.errs.Load(); n != 0 {
		t.Errorf("the checkpointer failed %d times: %v", n, *s.ckpt.last.Load())
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); !os.IsNotExist(err) {
		t.Errorf("WAL left after Close: %v", err)
	}
	s, err = Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var n int
	if err := s.r.QueryRow("SELECT count(*) FROM reports").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != seq {
		t.Errorf("%d reports after reopening, want %d", n, seq)
	}
}
