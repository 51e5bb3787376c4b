package sqlite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
	s.ckpt = startCheckpointer(s.ckpt.db, s.ckpt.log)
	write(1000)
	waitFor(t, "the checkpointer to copy", func() bool { return s.ckpt.copied.Load() > 0 })
	if n := s.ckpt.errs.Load(); n != 0 {
		t.Errorf("the checkpointer failed %d times", n)
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

// TestCheckpointerMetrics: a Store opened with a Registerer counts its
// checkpoints there, counts and logs a failing one (once, not each retry),
// and gives the names back at Close so the next Store can take them.
//
// The failure is the checkpointer's connection pool closed under it: a
// checkpoint of a working file does not fail on demand, and what is
// tested is what the loop does with an error, whatever it is.
func TestCheckpointerMetrics(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/bouncer.db"
	reg := prometheus.NewRegistry()
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	s, err := Open(ctx, path, Options{Registerer: reg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(ctx, path, Options{Registerer: reg}); err == nil {
		t.Fatal("a second Store registered the same metrics")
	}
	counter := func(name string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		t.Fatalf("no metric %s", name)
		return 0
	}

	if err := s.Write(ctx, []store.Report{{Envelope: event.Envelope{ID: "a", Received: t0}, Raw: make([]byte, 100000)}}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a checkpoint counted", func() bool { return counter("bouncer_sqlite_checkpoints_total") > 0 })
	if n := counter("bouncer_sqlite_checkpoint_errors_total"); n != 0 {
		t.Fatalf("%v checkpoint errors on a working store", n)
	}

	s.ckpt.db.Close()
	waitFor(t, "two failures counted", func() bool { return counter("bouncer_sqlite_checkpoint_errors_total") >= 2 })
	if n := strings.Count(logged.String(), "WAL checkpoint failed"); n != 1 {
		t.Errorf("failures logged %d times, want once:\n%s", n, logged.String())
	}
	// Writes go on: the writer's own checkpoint is the backstop.
	if err := s.Write(ctx, []store.Report{{Envelope: event.Envelope{ID: "b", Received: t0}}}, nil); err != nil {
		t.Fatalf("writing with the checkpointer failing: %v", err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, path, Options{Registerer: reg})
	if err != nil {
		t.Fatalf("reopening with the same Registerer after Close: %v", err)
	}
	s2.Close()
}

// waitFor polls ok until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
