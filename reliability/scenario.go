package reliability

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/bouncer-mail/bouncer/broker"
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
	// FaultEvery is how much of soak-faults' load comes between two
	// faults; 0 is a quarter of Load.
	FaultEvery time.Duration
	// DiskSize is the size of the disk-full scenario's tmpfs (mount's
	// size= option): room for what the load stores once the filler is
	// removed.
	DiskSize string
	// Pipelining has the load's senders send MAIL, RCPT and DATA in one
	// write (RFC 2920), as the MTAs that send bounces do.
	Pipelining bool
}

// ShortConfig is a few seconds of modest load per scenario, for CI.
func ShortConfig() Config {
	return Config{Sessions: 4, Size: 2000, Rate: 250, Load: 2 * time.Second, Fault: 3 * time.Second, After: 2 * time.Second,
		Messages: 300, DrainWait: 90 * time.Second, RecoverWait: 10 * time.Second, Attack: 2000, DiskSize: "64m"}
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
	{"split-faults", "the three split-topology faults in a row on one topology: kill -9 of the worker, SIGSTOP of ClickHouse, kill -9 of ClickHouse (CI's form of the three)", runSplitFaults},
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

// stallAfter is how long waitDrained watches a consumer that makes no
// progress while stalled() says why, before it gives up early.
const stallAfter = 20 * time.Second

// waitDrained waits until the ingest consumer at natsURL is idle: every
// report handed to ingest, stored and acked. It gives up after timeout, or
// after stallAfter without progress when stalled (may be nil) reports a
// known cause.
func waitDrained(ctx context.Context, natsURL string, timeout time.Duration, stalled func() bool) error {
	deadline := time.Now().Add(timeout)
	var last StreamState
	progressed := time.Now()
	for {
		st, err := Stream(ctx, natsURL)
		if err == nil && st.Idle() {
			return nil
		}
		// Progress is acks: they move the ack floor and, once ingest
		// trims, drop messages. Deliveries alone are not: a
		// livelocked ingest keeps fetching.
		if err == nil && (st.AckFloor > last.AckFloor || st.Msgs < last.Msgs || last == (StreamState{})) {
			last, progressed = st, time.Now()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ingest not drained after %s: stream %+v, %v", timeout, st, err)
		}
		if stalled != nil && time.Since(progressed) > stallAfter && stalled() {
			return fmt.Errorf("ingest stalled: no progress for %s: stream %+v", stallAfter, st)
		}
		sleep(ctx, 500*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// streamIDs reads the ids of the reports left in the stream and notes
// them, when there are any. Read before the store: ingest acks a report only
// after the store committed it, so one gone from the stream is in the store
// read after, and one in neither is lost.
func streamIDs(ctx context.Context, r *Result, natsURL string) map[string]bool {
	st, err := Stream(ctx, natsURL)
	if err != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("reading the stream: %v", err))
		return nil
	}
	if st.Msgs == 0 {
		return nil
	}
	ids, err := StreamLeftovers(ctx, natsURL, int(st.Msgs)*broker.MaxBundleReports+1000)
	if err != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("reading the stream's leftovers: %v", err))
		return nil
	}
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	r.Notes = append(r.Notes, fmt.Sprintf("stream after the run: %d reports left in it, %d of them waiting for ingest, %d delivered and not acked",
		len(ids), st.Pending, st.AckPending))
	return set
}

// check waits for ingest to drain JetStream, then compares the load's
// record with the stream and the store that read returns. It returns the
// drain's error: a stall is reported, and still told apart from a loss.
//
// Once drained, the API's reports_received (b's /v1/stats) must count the
// reports the store holds: the harness's database is fresh.
func check(ctx context.Context, c Config, r *Result, b *Bouncer, natsURL string, load *Load, read func(context.Context) (StoreView, error), stalled func() bool) error {
	drainErr := waitDrained(ctx, natsURL, c.DrainWait, stalled)
	if drainErr == nil {
		r.Notes = append(r.Notes, trimmed(ctx, natsURL))
	}
	inStream := streamIDs(ctx, r, natsURL)
	v, err := read(ctx)
	if err != nil {
		return errors.Join(drainErr, err)
	}
	if drainErr == nil {
		got, err := b.ReportsReceived(ctx)
		switch {
		case err != nil:
			r.Notes = append(r.Notes, fmt.Sprintf("GET /v1/stats: %v", err))
		case got != int64(len(v.Reports)):
			drainErr = fmt.Errorf("the API's reports_received is %d, the store holds %d reports", got, len(v.Reports))
		}
	}
	r.compare(load.Ledger.Acked(), load.Ledger.All(), v, inStream)
	if len(inStream) > 0 {
		stored := 0
		for id := range inStream {
			if v.Reports[id] > 0 {
				stored++
			}
		}
		r.Notes = append(r.Notes, fmt.Sprintf("of the reports left in the stream, %d are stored already (written, but the ack did not land or the stream did not drop them)", stored))
	}
	return drainErr
}

// trimWait bounds the wait for ingest to trim what it acked, once drained:
// it trims at least every second while busy and once idle.
const trimWait = 10 * time.Second

// trimmed waits until the drained reports stream is empty, ingest having
// trimmed what it acked, and says how long that took, or how many acked
// reports stayed in the stream (docs/reliability.md, finding 3).
func trimmed(ctx context.Context, natsURL string) string {
	start := time.Now()
	var st StreamState
	var err error
	for time.Since(start) < trimWait && ctx.Err() == nil {
		if st, err = Stream(ctx, natsURL); err == nil && st.Msgs == 0 {
			return fmt.Sprintf("reports stream empty %.1f s after the drain (ingest trimmed what it acked)", time.Since(start).Seconds())
		}
		sleep(ctx, 200*time.Millisecond)
	}
	if err != nil {
		return fmt.Sprintf("reports stream not read after the drain: %v", err)
	}
	return fmt.Sprintf("**%d acked reports still in the reports stream %s after the drain** (not trimmed)", st.Msgs, trimWait)
}

// startLoad starts the load of a scenario on addr.
func (c Config) startLoad(addr, run string) *Load {
	return StartLoad(LoadConfig{Addr: addr, Sessions: c.Sessions, Size: c.Size, Run: run, Rate: c.Rate, Pipelining: c.Pipelining})
}

// fault is one injected fault: inject starts it, recover ends it.
type fault struct {
	name            string
	inject, recover func() error
}

// drive runs the shape every fault scenario shares on a started load:
// c.Load of load, then for each fault: inject, c.Fault, recover, c.After of
// load; then the senders' resends until every message is answered 250 or
// 5xx. It fills r.Counts and notes what each phase got.
func drive(ctx context.Context, e *Env, c Config, r *Result, load *Load, faults ...fault) error {
	defer load.Finish(ctx, 0) // an early return stops the senders
	sleep(ctx, c.Load)
	for i, f := range faults {
		p := mark(load)
		name := "the fault"
		if len(faults) > 1 {
			name = f.name
		}
		if i == 0 {
			r.Notes = append(r.Notes, fmt.Sprintf("before %s (%s): %d answered 250, %d 4xx replies", name, c.Load, p.c.Acked, p.c.TempReplies))
		}
		e.logf("%s: injecting %s after %d answered 250", r.Scenario, name, p.c.Acked)
		if err := f.inject(); err != nil {
			return fmt.Errorf("injecting %s: %w", name, err)
		}
		sleep(ctx, c.Fault)
		r.Notes = append(r.Notes, p.since(load, fmt.Sprintf("during %s (%s)", name, c.Fault)))
		p = mark(load)
		if err := f.recover(); err != nil {
			return fmt.Errorf("recovering from %s: %w", name, err)
		}
		r.Notes = append(r.Notes, p.since(load, "while recovering"))
		p = mark(load)
		sleep(ctx, c.After)
		r.Notes = append(r.Notes, p.since(load, fmt.Sprintf("after the recovery (%s)", c.After)))
	}
	e.logf("%s: load stopped; waiting for the senders' resends", r.Scenario)
	err := load.Finish(ctx, c.DrainWait)
	r.Counts = load.Ledger.Counts()
	noteRejections(r, load)
	return err
}

// noteRejections notes the first few 5xx replies the load got, if any.
func noteRejections(r *Result, load *Load) {
	if rej := load.Ledger.Rejections(3); len(rej) > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("5xx replies: %s", strings.Join(rej, " | ")))
	}
}

func runKill9(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "kill9", Injected: "kill -9 of the all-in-one bouncer under load, restart on the same data dir"}
	b, err := e.startBouncer("kill9", BouncerOptions{})
	if err != nil {
		return r, err
	}
	defer b.Stop()
	run := newRun()
	load := c.startLoad(b.SMTPAddr, run)
	if err := drive(ctx, e, c, &r, load, fault{"kill -9 of bouncer", b.Kill, b.Start}); err != nil {
		return r, err
	}
	// Not drained: still compare, to tell a stall from a loss.
	drainErr := check(ctx, c, &r, b, b.NATSURL, load, sqliteReader(b.DataDir, run), nil)
	return r, errors.Join(drainErr, b.Stop())
}

func runNATSKill9(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "nats-kill9", Injected: "kill -9 of an external nats-server (JetStream, sync always) under load, restart on the same store"}
	ns, err := e.StartNATS("nats")
	if err != nil {
		return r, err
	}
	defer ns.Close()
	b, err := e.startBouncer("nats-kill9", BouncerOptions{NATSURL: ns.URL})
	if err != nil {
		return r, err
	}
	defer b.Kill()
	run := newRun()
	load := c.startLoad(b.SMTPAddr, run)
	if err := drive(ctx, e, c, &r, load, fault{"kill -9 of nats-server", ns.Kill, ns.Start}); err != nil {
		return r, err
	}
	drainErr := check(ctx, c, &r, b, ns.URL, load, sqliteReader(b.DataDir, run), nil)
	return r, errors.Join(drainErr, b.Stop())
}

// sqliteReader reads a run from the SQLite store under dataDir.
func sqliteReader(dataDir, run string) func(context.Context) (StoreView, error) {
	return func(ctx context.Context) (StoreView, error) { return ReadSQLite(ctx, dataDir, prefix(run)) }
}
