package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fillDisk writes path until the file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, size := range []int{1 << 20, 4 << 10, 1} {
		buf := make([]byte, size)
		for {
			_, err := f.Write(buf)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// report returns a distinct report of about size bytes and its envelope.
func report(i, size int) (event.Envelope, []byte) {
	raw := []byte(fmt.Sprintf("Subject: report %d\r\n\r\n%s\r\n", i, strings.Repeat("x", size)))
	sum := sha256.Sum256(raw)
	return event.Envelope{ID: hex.EncodeToString(sum[:]), Recipients: []string{"a@example.net"}}, raw
}

// TestHealAfterDiskFull fills the file system under the embedded server's
// store for real (a tmpfs, so it needs root): publishes fail, Check and
// PublishHealth say so, and nothing restarts while the disk stays full.
// Once space is freed, one heal step restarts the server in place, the
// client reconnects by itself, the sender's retry is stored once and
// every report acknowledged before the fault is still there.
func TestHealAfterDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs: the full disk here is a real ENOSPC, not a fake")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=32m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	e, err := StartEmbeddedServer(EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: filepath.Join(mnt, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := nats.Connect(e.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := EnsureStreams(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	health := &PublishHealth{}
	p := &Publisher{JS: js, Timeout: 2 * time.Second, Health: health}
	const before = 5
	for i := range before {
		env, raw := report(i, 1000)
		if err := p.Publish(ctx, env, raw); err != nil {
			t.Fatalf("publish %d before the fault: %v", i, err)
		}
	}
	if err := e.Check(); err != nil {
		t.Fatalf("Check before the fault: %v", err)
	}

	ballast := filepath.Join(mnt, "ballast")
	fillDisk(t, ballast)
	env, raw := report(before, 64<<10) // needs fresh pages of the full tmpfs
	if err := p.Publish(ctx, env, raw); err == nil {
		t.Fatal("a publish on a full disk succeeded")
	}
	if err := health.Err(); err == nil {
		t.Error("PublishHealth.Err is nil after a failed publish")
	}
	if err := e.Check(); !errors.Is(err, ErrStoreFailed) || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("Check on a full disk: %v, want ErrStoreFailed naming the full disk", err)
	}
	cfg := HealConfig{MinFree: 1 << 20}
	log := slog.New(slog.DiscardHandler)
	var hs healState
	if e.healOnce(ctx, cfg, log, &hs) {
		t.Fatal("restarted while the disk is still full")
	}

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	// nats-server keeps the error with the disk free again.
	if err := e.Check(); !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("Check after freeing space, before healing: %v, want ErrStoreFailed", err)
	}
	// The sender retries the report that failed, and its publish is in
	// flight, unanswered, when the server restarts: Publish sends it again
	// (same id) and it is acknowledged; the client reconnects on its own.
	retried := make(chan error, 1)
	go func() {
		p := &Publisher{JS: js, Timeout: time.Minute, AttemptTimeout: 500 * time.Millisecond, Health: health}
		retried <- p.Publish(ctx, env, raw)
	}()
	if !e.healOnce(ctx, cfg, log, &hs) {
		t.Fatal("no restart once the disk has room")
	}
	if err := e.Check(); err != nil {
		t.Fatalf("Check after the restart: %v", err)
	}
	if err := <-retried; err != nil {
		t.Fatalf("the retried report, in flight across the restart: %v", err)
	}
	if err := health.Err(); err != nil {
		t.Errorf("PublishHealth.Err after a successful publish: %v", err)
	}
	st, err := js.Stream(ctx, StreamReports)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != before+1 {
		t.Errorf("stream holds %d reports after healing, want %d (those acknowledged before, and the retried one once)", info.State.Msgs, before+1)
	}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		if _, err := st.GetMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("reading message %d: %v", seq, err)
		}
	}
	if e.Restarts() != 1 {
		t.Errorf("Restarts = %d, want 1", e.Restarts())
	}
}

// TestHealBackoff: restarts that follow each other wait longer and longer,
// up to healBackoffMax; after a quiet healBackoffMax the wait starts over.
func TestHealBackoff(t *testing.T) {
	var st healState
	now := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	if !st.due(now) {
		t.Fatal("the first restart is not due at once")
	}
	waits := []time.Duration{}
	for range 8 {
		st.restarted(now)
		waits = append(waits, st.backoff)
		if st.due(now.Add(st.backoff - time.Second)) {
			t.Fatalf("a restart is due %s after the last, before its wait %s", st.backoff-time.Second, st.backoff)
		}
		now = now.Add(st.backoff)
		if !st.due(now) {
			t.Fatalf("no restart due after the wait %s", st.backoff)
		}
	}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute}
	if fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Errorf("waits %v, want %v", waits, want)
	}
	st.restarted(now.Add(healBackoffMax + time.Second))
	if st.backoff != healBackoffMin {
		t.Errorf("after a quiet %s the wait is %s, want %s", healBackoffMax, st.backoff, healBackoffMin)
	}
}
