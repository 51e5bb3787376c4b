package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Embedded is an embedded NATS server (StartEmbedded) that can be started
// again in place: same address, same store directory.
//
// That is how it recovers from a full disk. On ENOSPC nats-server's file
// store keeps the write error for good ("Critical write error"): every
// later publish to the stream goes unanswered, also once space is free
// again, until the server is restarted. A restart recovers the stream from
// disk; with SyncAlways every acknowledged message is there.
type Embedded struct {
	cfg EmbeddedConfig // Listen fixed to the first start's address
	url string         // the first start's client URL

	mu       sync.Mutex
	srv      *server.Server // nil while a restart failed
	restarts int
}

// StartEmbeddedServer starts the server as StartEmbedded does.
func StartEmbeddedServer(cfg EmbeddedConfig) (*Embedded, error) {
	s, err := StartEmbedded(cfg)
	if err != nil {
		return nil, err
	}
	// A restart must come back where clients reconnect to, also when the
	// first start picked a free port.
	if a, ok := s.Addr().(*net.TCPAddr); ok {
		host, _, _ := net.SplitHostPort(cfg.Listen)
		if host == "" {
			host = a.IP.String()
		}
		cfg.Listen = net.JoinHostPort(host, strconv.Itoa(a.Port))
	}
	return &Embedded{cfg: cfg, url: s.ClientURL(), srv: s}, nil
}

// Server returns the running server, nil while a restart failed.
func (e *Embedded) Server() *server.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.srv
}

// ClientURL is the URL clients connect to; it does not change on restart.
func (e *Embedded) ClientURL() string {
	return e.url
}

// Restarts returns how many times Heal restarted the server.
func (e *Embedded) Restarts() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.restarts
}

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.mu.Lock()
	s := e.srv
	e.srv = nil
	e.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// ErrStoreFailed is wrapped by Check's error when JetStream cannot write
// (a stream keeps a write error, or nats-server disabled JetStream): what
// Heal restarts the server for.
var ErrStoreFailed = errors.New("JetStream store failed")

// Check returns nil when the server runs and JetStream can store into
// every stream; otherwise why not, in nats-server's words (for example
// "JetStream stream '$G > BOUNCER_REPORTS' write error: write ...: no space
// left on device").
func (e *Embedded) Check() error {
	s := e.Server()
	if s == nil {
		return fmt.Errorf("broker: embedded NATS is not running: %w", ErrStoreFailed)
	}
	if !s.JetStreamEnabled() {
		return fmt.Errorf("broker: embedded NATS: JetStream is disabled: %w", ErrStoreFailed)
	}
	h := s.Healthz(&server.HealthzOptions{})
	if h.Error == "" && h.StatusCode < 300 {
		return nil
	}
	if strings.Contains(h.Error, "write error") {
		return fmt.Errorf("broker: embedded NATS: %s: %w", h.Error, ErrStoreFailed)
	}
	return fmt.Errorf("broker: embedded NATS: %s", h.Error)
}

// HealConfig configures Heal.
type HealConfig struct {
	// Interval between checks; DefaultHealInterval when zero.
	Interval time.Duration
	// MinFree is the free space the store's file system needs before a
	// restart is tried (a restart on a still-full disk fails the same way
	// at the first write); DefaultHealMinFree when zero.
	MinFree int64
	Logger  *slog.Logger
}

// Defaults of HealConfig.
const (
	DefaultHealInterval = 2 * time.Second
	// DefaultHealMinFree leaves room for a few of the largest reports.
	DefaultHealMinFree = 4 * ReportsMaxMsgSize
)

// Heal checks the server every Interval until ctx ends, and restarts it
// in place when its store failed (Check's ErrStoreFailed) and the file
// system holds MinFree bytes again. Clients reconnect by themselves
// (nats.go reconnects; the listener answers 451 meanwhile).
func (e *Embedded) Heal(ctx context.Context, cfg HealConfig) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultHealInterval
	}
	if cfg.MinFree <= 0 {
		cfg.MinFree = DefaultHealMinFree
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	var st healState
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e.healOnce(ctx, cfg, log, &st)
	}
}

// Bounds of the wait between restarts: a store that fails again right
// after a restart (it was not the disk: permissions, a broken file) must
// not restart the server every Interval.
const (
	healBackoffMin = 10 * time.Second
	healBackoffMax = 5 * time.Minute
)

// healState is what Heal remembers between checks.
type healState struct {
	waiting     bool      // logged that the restart waits for space
	lastRestart time.Time // zero: none yet
	backoff     time.Duration
}

// due reports whether a restart may be tried at now.
func (st *healState) due(now time.Time) bool {
	return st.lastRestart.IsZero() || now.Sub(st.lastRestart) >= st.backoff
}

// restarted notes a restart tried at now: the wait before the next one
// doubles while restarts follow each other, and starts again from
// healBackoffMin after a quiet healBackoffMax.
func (st *healState) restarted(now time.Time) {
	if st.lastRestart.IsZero() || now.Sub(st.lastRestart) > healBackoffMax {
		st.backoff = healBackoffMin
	} else {
		st.backoff = min(2*st.backoff, healBackoffMax)
	}
	st.lastRestart = now
}

// healOnce is one check of Heal: it restarts the server when its store
// failed, the disk has room and no restart was tried too recently, and
// reports whether it did.
func (e *Embedded) healOnce(ctx context.Context, cfg HealConfig, log *slog.Logger, st *healState) bool {
	err := e.Check()
	if !errors.Is(err, ErrStoreFailed) {
		st.waiting = false
		return false
	}
	free, ferr := freeBytes(e.cfg.StoreDir)
	if ferr == nil && free < cfg.MinFree {
		if !st.waiting {
			log.Warn("nats: JetStream cannot store; restarting the embedded server once the disk has room",
				"err", err, "free_bytes", free, "need_bytes", cfg.MinFree, "store_dir", e.cfg.StoreDir)
			st.waiting = true
		}
		return false
	}
	st.waiting = false
	now := time.Now()
	if !st.due(now) {
		return false
	}
	st.restarted(now)
	log.Warn("nats: JetStream cannot store; restarting the embedded server", "err", err, "free_bytes", free)
	if rerr := e.restart(ctx); rerr != nil {
		log.Error("nats: restarting the embedded server failed; trying again", "err", rerr, "in", st.backoff)
		return false
	}
	log.Info("nats: embedded server restarted", "check", errString(e.Check()), "next_restart_after", st.backoff)
	return true
}

// restart stops the server, if it runs, and starts it again. On failure
// no server runs until the next restart.
func (e *Embedded) restart(ctx context.Context) error {
	e.Shutdown()
	s, err := StartEmbedded(e.cfg)
	if err != nil {
		return err
	}
	e.mu.Lock()
	if ctx.Err() != nil {
		e.mu.Unlock()
		s.Shutdown()
		return ctx.Err()
	}
	e.srv = s
	e.restarts++
	e.mu.Unlock()
	return nil
}

func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
