package reliability

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// The scenario is registered only when opted in, so that "-scenario all"
// neither steps the host's clock nor fails for want of the opt-in.
func init() {
	if os.Getenv(clockJumpEnv) != "1" {
		return
	}
	Scenarios = append(Scenarios, Scenario{"clock-jump",
		"the host's wall clock stepped 10 min forward, then back, then 10 min back, then forward, under load on the all-in-one (opt-in: " + clockJumpEnv + "=1)",
		runClockJump})
}

// clockJumpEnv opts in to the clock-jump scenario: it steps the clock of
// the whole host, which every other program on it sees.
const clockJumpEnv = "BOUNCER_TEST_CLOCK_JUMP"

// clockStep is how far the scenario steps the clock: above JetStream's
// dedup window of reports (broker.ReportsDuplicates, 2 min since it was
// 15), so a step forward empties it and the store's dedup is what keeps
// a resend once; far above AckWait (30 s).
const clockStep = 10 * time.Minute

// Why the host clock and not a process's: a Linux time namespace (unshare
// --time) offsets CLOCK_MONOTONIC and CLOCK_BOOTTIME only, not
// CLOCK_REALTIME (checked here: `unshare --time --fork --monotonic 86400
// date` prints the host's date), and Go programs read the clock through
// the vDSO, not libc, so LD_PRELOAD fakers (libfaketime) do not reach
// them. What bouncer reads from the wall clock, and so what the steps
// test:
//
//   - nats-server (embedded here) times a delivered message's AckWait
//     from its wall-clock delivery time (consumer.checkPending compares
//     time.Now().UnixNano() with the stored timestamp): a step forward
//     past AckWait makes every report ingest holds look expired, and
//     JetStream delivers it again while the first delivery is being
//     written; a step back holds redelivery back by the step.
//   - JetStream's dedup of resends (Nats-Msg-Id, 15 min window) purges
//     ids by wall-clock age (stream.purgeMsgIds): a step forward shortens
//     the window by the step.
//   - The listener stamps each report's received time and ingest each
//     event's time with the wall clock; the API's windows (/v1/stats)
//     read them against it.
//   - VERP day stamps and the suppression filter's staleness read it too;
//     the load uses unsigned return paths, so the steps test the VERP day
//     stamp only at unit level (verp's tests move Signer.Now).
//
// The scenario restores the clock from the monotonic clock: the true time
// is the wall time read at the start plus the monotonic time elapsed since.
// A harness killed with SIGKILL during a step leaves the host clock off by
// the step.

// hostClock steps CLOCK_REALTIME relative to the true time.
type hostClock struct {
	mu    sync.Mutex
	start time.Time // time.Now() at the start: wall and monotonic readings
	off   time.Duration
}

func newHostClock() *hostClock { return &hostClock{start: time.Now()} }

// truth is the true wall time now: the start's wall reading plus the
// monotonic time elapsed, which no step changes.
func (c *hostClock) truth() time.Time { return c.start.Round(0).Add(time.Since(c.start)) }

// set steps the host clock to the true time plus off.
func (c *hostClock) set(off time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	tv := syscall.NsecToTimeval(c.truth().Add(off).UnixNano())
	if err := syscall.Settimeofday(&tv); err != nil {
		return fmt.Errorf("settimeofday: %w", err)
	}
	c.off = off
	return nil
}

// restore steps the host clock back to the true time, and reports how far
// the clock then is from it.
func (c *hostClock) restore() (time.Duration, error) {
	err := c.set(0)
	return time.Now().Round(0).Sub(c.truth()), err
}

// step is a fault stepping the clock by off and back.
func (c *hostClock) step(name string, off time.Duration) fault {
	return fault{name, func() error { return c.set(off) }, func() error { return c.set(0) }}
}

// runClockJump: the all-in-one (listener, embedded NATS, in-process
// ingest, SQLite) under load, the host clock stepped 10 min forward and
// back, then 10 min back and forward. Every report answered 250 must be
// stored once; the embedded JetStream's redeliveries after the forward
// step must be deduplicated by the store.
func runClockJump(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "clock-jump", Injected: fmt.Sprintf("host wall clock stepped +%s and back, then -%s and back, under load on the all-in-one (SQLite)", clockStep, clockStep)}
	if os.Getenv(clockJumpEnv) != "1" {
		return r, fmt.Errorf("%w: clock-jump steps the clock of the whole host; set %s=1 to run it", ErrNeedsRoot, clockJumpEnv)
	}
	clock := newHostClock()
	// The real attempt: a step to the true time, which changes nothing.
	if err := clock.set(0); err != nil {
		if errors.Is(err, syscall.EPERM) {
			return r, fmt.Errorf("%w: stepping the host clock (CAP_SYS_TIME): %v", ErrNeedsRoot, err)
		}
		return r, err
	}
	defer clock.restore() // each fault restores it; this is for an early return
	b, err := e.startBouncer("clock-jump", BouncerOptions{})
	if err != nil {
		return r, err
	}
	defer b.Kill()
	run := newRun()
	load := c.startLoad(b.SMTPAddr, run)
	if err := drive(ctx, e, c, &r, load,
		clock.step(fmt.Sprintf("the clock +%s", clockStep), clockStep),
		clock.step(fmt.Sprintf("the clock -%s", clockStep), -clockStep)); err != nil {
		return r, err
	}
	drift, err := clock.restore()
	r.Notes = append(r.Notes, fmt.Sprintf("host clock back at the true time (%v off by the monotonic clock)", drift.Round(time.Millisecond)))
	if err != nil {
		return r, err
	}
	drainErr := check(ctx, c, &r, b, b.NATSURL, load, sqliteReader(b.DataDir, run), nil)
	written, _ := b.Metric(ctx, "bouncer_reports_processed_total")
	r.Notes = append(r.Notes, fmt.Sprintf("bouncer wrote reports %v times for %d reports answered 250 (a report JetStream redelivered after the forward step is written again, and stored once)", written, r.Acked))
	return r, errors.Join(drainErr, b.Stop())
}
