package reliability

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config sizes a scenario run. ShortConfig is CI's; DefaultConfig the
// runner's.
type Config struct {
	Sessions  int           // parallel SMTP sessions of the load
	Size      int           // bytes per report, about
	Rate      float64       // new reports per second over all sessions; 0: as fast as answered
	Load      time.Duration // load before the fault
	Fault     time.Duration // how long the fault lasts
	After     time.Duration // load after the recovery
	Messages  int           // Postfix scenarios: messages relayed through Postfix
	DrainWait time.Duration // bound on waiting for senders' resends and for ingest
	// RecoverWait is how long the disk-full scenario waits, once space
	// is free again, for bouncer to answer 250 again by itself before it
	// restarts it, as a supervisor would, and says so in the notes.
	RecoverWait time.Duration
	// Attack is the number of connections of the slowloris scenario.
	Attack int
	// DiskSize is the size of the disk-full scenario's tmpfs (mount's
	// size= option): room for what the load stores once the filler is
	// removed.
	DiskSize string
}

// ShortConfig is a few seconds of modest load per scenario, for CI.
func ShortConfig() Config {
	return Config{Sessions: 4, Size: 2000, Rate: 250, Load: 2 * time.Second, Fault: 3 * time.Second, After: 2 * time.Second,
		Messages: 300, DrainWait: 3 * time.Minute, RecoverWait: 10 * time.Second, Attack: 2000, DiskSize: "64m"}
}

// DefaultConfig is the runner's load without -short.
func DefaultConfig() Config {
	return Config{Sessions: 20, Size: 4000, Rate: 500, Load: 15 * time.Second, Fault: 15 * time.Second, After: 15 * time.Second,
		Messages: 1000, DrainWait: 10 * time.Minute, RecoverWait: time.Minute, Attack: 10000, DiskSize: "256m"}
}

// Scenario is one fault scenario.
type Scenario struct {
	Name     string
	Injected string // what it does, for the table
	Run      func(ctx context.Context, e *Env, c Config) (Result, error)
}

// Scenarios are every scenario, in the order "all" runs them.
var Scenarios = []Scenario{
	{"postfix", "none: Postfix relays to a Postfix MX that refuses the recipients (550 5.1.1) and sends its DSNs to bouncer", runPostfix},
	{"postfix-kill9", "kill -9 of the all-in-one bouncer while Postfix delivers its DSNs; restart; Postfix retries", runPostfixKill9},
	{"kill9", "kill -9 of the all-in-one bouncer (embedded NATS, in-process ingest, SQLite) under load; restart on the same data dir", runKill9},
	{"nats-kill9", "kill -9 of an external nats-server under load (bouncer with --nats-url, SQLite); restart on the same store", runNATSKill9},
	{"ingest-kill9", "kill -9 of the separate bouncer-ingest worker (ClickHouse) under load; restart", runIngestKill9},
	{"clickhouse-freeze", "SIGSTOP of clickhouse-server under load, SIGCONT after the fault time", runClickHouseFreeze},
	{"clickhouse-kill9", "kill -9 of clickhouse-server under load, restart on the same directory after the fault time", runClickHouseKill9},
	{"slowloris", "slowloris connections (default 10,000, -attack) from many loopback addresses under load, with the default connection limits", runSlowloris},
	{"disk-full", "the all-in-one's data dir on a tmpfs (64 MiB -short, 256 MiB) filled up under load, then space freed", runDiskFull},
}

// Lookup returns the scenario called name.
func Lookup(name string) (Scenario, bool) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// newRun returns a fresh run id: lower-case hex, part of every recipient.
func newRun() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// prefix is the recipient prefix of a run's reports.
func prefix(run string) string { return "r-" + run + "-" }

// phase remembers the ledger at a moment, to report what a phase added.
type phase struct{ c Counts }

func mark(l *Load) phase { return phase{l.Ledger.Counts()} }

// since describes what the load got between p and now.
func (p phase) since(l *Load, what string) string {
	n := l.Ledger.Counts()
	return fmt.Sprintf("%s: +%d answered 250, +%d 4xx replies, +%d in doubt, +%d failed connections",
		what, n.Acked-p.c.Acked, n.TempReplies-p.c.TempReplies, n.InDoubt-p.c.InDoubt, n.ConnFailed-p.c.ConnFailed)
}

// waitDrained waits until the ingest consumer at natsURL is idle: every
// report handed to ingest, stored and acked.
func waitDrained(ctx context.Context, natsURL string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := Stream(ctx, natsURL)
		if err == nil && st.Idle() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ingest not drained after %s: stream %+v, %v", timeout, st, err)
		}
		sleep(ctx, 500*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// noteStream notes what the reports left in the stream are, if any: once
// the consumer is idle there should be none; when it is not, they tell a
// stall (stored already, or waiting) from a loss.
func noteStream(ctx context.Context, r *Result, natsURL string, v StoreView) {
	st, err := Stream(ctx, natsURL)
	if err != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("reading the stream: %v", err))
		return
	}
	if st.Msgs == 0 {
		return
	}
	ids, err := StreamLeftovers(ctx, natsURL, 100000)
	if err != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("reading the stream's leftovers: %v", err))
		return
	}
	stored := 0
	for _, id := range ids {
		if v.Reports[id] > 0 {
			stored++
		}
	}
	r.Notes = append(r.Notes, fmt.Sprintf("stream after the run: %d reports left in it (%d stored already), %d waiting for ingest, %d delivered and not acked",
		len(ids), stored, st.Pending, st.AckPending))
}

// startLoad starts the load of a scenario on addr.
func (c Config) startLoad(addr, run string) *Load {
	return StartLoad(LoadConfig{Addr: addr, Sessions: c.Sessions, Size: c.Size, Run: run, Rate: c.Rate})
}

// drive runs the shape every fault scenario shares on a started load:
// c.Load of load, fault(), c.Fault, recover(), c.After of load, then the
// senders' resends until every message is answered 250 or 5xx. It fills
// r.Counts and notes what each phase got.
func drive(ctx context.Context, e *Env, c Config, r *Result, load *Load, fault, recover func() error) error {
	defer load.Finish(ctx, 0) // an early return stops the senders
	sleep(ctx, c.Load)
	p := mark(load)
	e.logf("%s: injecting after %d answered 250", r.Scenario, p.c.Acked)
	if err := fault(); err != nil {
		return fmt.Errorf("injecting the fault: %w", err)
	}
	r.Notes = append(r.Notes, fmt.Sprintf("before the fault (%s): %d answered 250, %d 4xx replies", c.Load, p.c.Acked, p.c.TempReplies))
	sleep(ctx, c.Fault)
	r.Notes = append(r.Notes, p.since(load, fmt.Sprintf("during the fault (%s)", c.Fault)))
	p = mark(load)
	if err := recover(); err != nil {
		return fmt.Errorf("recovering: %w", err)
	}
	r.Notes = append(r.Notes, p.since(load, "while recovering"))
	p = mark(load)
	sleep(ctx, c.After)
	r.Notes = append(r.Notes, p.since(load, fmt.Sprintf("after the recovery (%s)", c.After)))
	e.logf("%s: load stopped; waiting for the senders' resends", r.Scenario)
	err := load.Finish(ctx, c.DrainWait)
	r.Counts = load.Ledger.Counts()
	if rej := load.Ledger.Rejections(3); len(rej) > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("5xx replies: %s", strings.Join(rej, " | ")))
	}
	return err
}

func runKill9(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "kill9", Injected: "kill -9 of the all-in-one bouncer under load, restart on the same data dir"}
	dir, err := e.subdir("kill9")
	if err != nil {
		return r, err
	}
	b, err := e.NewBouncer("kill9-bouncer", dir, BouncerOptions{})
	if err != nil {
		return r, err
	}
	if err := b.Start(); err != nil {
		return r, err
	}
	defer b.Stop()
	run := newRun()
	load := c.startLoad(b.SMTPAddr, run)
	if err := drive(ctx, e, c, &r, load, b.Kill, b.Start); err != nil {
		return r, err
	}
	// Not drained: still compare, to tell a stall from a loss.
	drainErr := waitDrained(ctx, b.NATSURL, c.DrainWait)
	v, err := ReadSQLite(ctx, b.DataDir, prefix(run))
	if err != nil {
		return r, err
	}
	r.compare(load.Ledger.Acked(), load.Ledger.All(), v)
	noteStream(ctx, &r, b.NATSURL, v)
	if got, err := b.ReportsReceived(ctx); err == nil && got != int64(len(v.Reports)) {
		r.Notes = append(r.Notes, fmt.Sprintf("API reports_received %d, reports table %d", got, len(v.Reports)))
	}
	return r, errors.Join(drainErr, b.Stop())
}

func runNATSKill9(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "nats-kill9", Injected: "kill -9 of an external nats-server (JetStream, sync always) under load, restart on the same store"}
	ns, err := e.StartNATS("nats")
	if err != nil {
		return r, err
	}
	defer ns.Close()
	dir, err := e.subdir("nats-kill9")
	if err != nil {
		return r, err
	}
	b, err := e.NewBouncer("nats-kill9-bouncer", dir, BouncerOptions{NATSURL: ns.URL})
	if err != nil {
		return r, err
	}
	if err := b.Start(); err != nil {
		return r, err
	}
	defer b.Kill()
	run := newRun()
	load := c.startLoad(b.SMTPAddr, run)
	if err := drive(ctx, e, c, &r, load, ns.Kill, ns.Start); err != nil {
		return r, err
	}
	drainErr := waitDrained(ctx, ns.URL, c.DrainWait)
	v, err := ReadSQLite(ctx, b.DataDir, prefix(run))
	if err != nil {
		return r, err
	}
	r.compare(load.Ledger.Acked(), load.Ledger.All(), v)
	noteStream(ctx, &r, ns.URL, v)
	return r, errors.Join(drainErr, b.Stop())
}
