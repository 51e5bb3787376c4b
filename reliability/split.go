package reliability

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/bouncer-mail/bouncer/ingest"
)

// split is the scale-out topology: ClickHouse, a bouncer (listener and
// embedded NATS; in the fault scenarios its in-process ingest also writes
// ClickHouse, as the compose file runs it; soak-clickhouse's is a listener
// only) and a separate bouncer-ingest worker on the same durable consumer.
type split struct {
	ch *ClickHouse
	db string
	b  *Bouncer
	w  *IngestWorker
}

func (e *Env) startSplit(name string, bouncerArgs ...string) (*split, error) {
	s := &split{db: "reliability_" + strings.ReplaceAll(name, "-", "_")}
	var err error
	if s.ch, err = e.StartClickHouse(); err != nil {
		return nil, err
	}
	if s.b, s.w, err = e.startBouncerAndWorker(name, s.ch.DSN(s.db), bouncerArgs...); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// stop stops the worker and the bouncer gracefully and reports whether
// they stopped in time.
func (s *split) stop() error {
	var errs []string
	if s.w != nil {
		if err := s.w.Stop(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if s.b != nil {
		if err := s.b.Stop(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("stopping: %s", strings.Join(errs, "; "))
	}
	return nil
}

func (s *split) close() {
	if s.w != nil {
		s.w.Kill()
	}
	if s.b != nil {
		s.b.Kill()
	}
	if s.ch != nil {
		s.ch.Close()
	}
}

// runSplit runs a fault of the split topology under load and checks
// ClickHouse.
func runSplit(ctx context.Context, e *Env, c Config, r Result, faults func(s *split, r *Result) []fault) (Result, error) {
	s, err := e.startSplit(r.Scenario)
	if err != nil {
		return r, err
	}
	defer s.close()
	run := newRun()
	load := c.startLoad(s.b.SMTPAddr, run)
	if err := drive(ctx, e, c, &r, load, faults(s, &r)...); err != nil {
		return r, err
	}
	e.logf("%s: waiting for ingest to drain JetStream (a killed consumer's batch comes back after AckWait)", r.Scenario)
	// Not drained: still compare, to tell a stall from a loss.
	livelock := func() (n int, span time.Duration) {
		n1, first1, last1 := signatureLines(s.b.LogPath)
		n2, first2, last2 := signatureLines(s.w.LogPath)
		first, last := first1, last1
		if first.IsZero() || !first2.IsZero() && first2.Before(first) {
			first = first2
		}
		if last2.After(last) {
			last = last2
		}
		return n1 + n2, last.Sub(first)
	}
	drainErr := check(ctx, c, &r, s.b, s.b.NATSURL, load, func(ctx context.Context) (StoreView, error) {
		return s.ch.Read(ctx, s.db, prefix(run))
	}, func() bool {
		// Acks timing out again a full AckWait after the first ones:
		// the same batches came back and failed again.
		_, span := livelock()
		return span >= ackWait
	})
	wn, _ := s.w.Metric(ctx, "bouncer_reports_processed_total")
	we, _ := s.w.Metric(ctx, "bouncer_ingest_write_errors_total")
	bn, _ := s.b.Metric(ctx, "bouncer_reports_processed_total")
	be, _ := s.b.Metric(ctx, "bouncer_ingest_write_errors_total")
	r.Notes = append(r.Notes, fmt.Sprintf("reports written (write errors) since the last start: worker %v (%v), bouncer's in-process ingest %v (%v)", wn, we, bn, be))
	if drainErr != nil {
		if n, _ := livelock(); n > 0 {
			r.Stall = fmt.Sprintf("ingest livelock: %d acks failed with %q after their batch was written; "+
				"the batch comes back after AckWait and is written again (docs/reliability.md, finding 1)", n, "context deadline exceeded")
			r.Notes = append(r.Notes, r.Stall)
		}
	}
	return r, errors.Join(drainErr, s.stop())
}

func runIngestKill9(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "ingest-kill9", Injected: "kill -9 of the bouncer-ingest worker under load, restart"}
	return runSplit(ctx, e, c, r, func(s *split, r *Result) []fault { return []fault{s.killWorker(ctx, r)} })
}

func runClickHouseFreeze(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "clickhouse-freeze", Injected: "SIGSTOP of clickhouse-server under load, SIGCONT after the fault time"}
	return runSplit(ctx, e, c, r, func(s *split, r *Result) []fault { return []fault{s.freezeClickHouse()} })
}

func runClickHouseKill9(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "clickhouse-kill9", Injected: "kill -9 of clickhouse-server under load, restart on the same directory"}
	return runSplit(ctx, e, c, r, func(s *split, r *Result) []fault { return []fault{s.killClickHouse()} })
}

// runSplitFaults is the three above on one topology, one after the other:
// one start and one drain instead of three, which keeps CI short.
func runSplitFaults(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "split-faults", Injected: "kill -9 of the bouncer-ingest worker, then SIGSTOP of clickhouse-server, then kill -9 of clickhouse-server, under one load"}
	return runSplit(ctx, e, c, r, func(s *split, r *Result) []fault {
		return []fault{s.killWorker(ctx, r), s.freezeClickHouse(), s.killClickHouse()}
	})
}

func (s *split) killWorker(ctx context.Context, r *Result) fault {
	return fault{"kill -9 of the worker",
		func() error {
			if st, err := Stream(ctx, s.b.NATSURL); err == nil {
				r.Notes = append(r.Notes, fmt.Sprintf("at the worker's kill: %d reports delivered to ingest and not acked", st.AckPending))
			}
			return s.w.Kill()
		},
		s.w.Start}
}

func (s *split) freezeClickHouse() fault {
	return fault{"SIGSTOP of ClickHouse", s.ch.Freeze, s.ch.Thaw}
}

func (s *split) killClickHouse() fault {
	return fault{"kill -9 of ClickHouse", s.ch.Kill, s.ch.Start}
}

// ackTimeoutSignature is the log line of an ack that ran out of the
// batch's WriteTimeout: the mark of the ingest livelock of
// docs/reliability.md, finding 1.
const ackTimeoutSignature = `msg="ack failed; the message will be redelivered" component=ingest error="context deadline exceeded"`

// ackWait is ingest.AckWait: how long JetStream waits for an ack before
// it redelivers.
const ackWait = ingest.AckWait

// signatureLines counts the lines of a log holding ackTimeoutSignature and
// returns the times of the first and the last.
func signatureLines(path string) (n int, first, last time.Time) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, first, last
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, ackTimeoutSignature) {
			continue
		}
		n++
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		if first.IsZero() {
			first = t
		}
		last = t
	}
	return n, first, last
}
