package reliability

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// split is the scale-out topology: ClickHouse, a bouncer (listener and
// embedded NATS; its in-process ingest also writes ClickHouse, there being
// no listener-only mode) and a separate bouncer-ingest worker on the same
// durable consumer.
type split struct {
	ch *ClickHouse
	db string
	b  *Bouncer
	w  *IngestWorker
}

func (e *Env) startSplit(name string) (*split, error) {
	s := &split{db: "reliability_" + strings.ReplaceAll(name, "-", "_")}
	var err error
	if s.ch, err = e.StartClickHouse(); err != nil {
		return nil, err
	}
	dir, err := e.subdir(name)
	if err != nil {
		s.close()
		return nil, err
	}
	// The bouncer first: it creates the database and the streams.
	if s.b, err = e.NewBouncer(name+"-bouncer", dir, BouncerOptions{ClickHouseDSN: s.ch.DSN(s.db)}); err != nil {
		s.close()
		return nil, err
	}
	if err = s.b.Start(); err != nil {
		s.close()
		return nil, err
	}
	if s.w, err = e.NewIngestWorker(name+"-ingest", s.b.NATSURL, s.ch.DSN(s.db)); err != nil {
		s.close()
		return nil, err
	}
	if err = s.w.Start(); err != nil {
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
func runSplit(ctx context.Context, e *Env, c Config, r Result, fault func(s *split, r *Result) (inject, recover func() error)) (Result, error) {
	s, err := e.startSplit(r.Scenario)
	if err != nil {
		return r, err
	}
	defer s.close()
	run := newRun()
	inject, recover := fault(s, &r)
	load := c.startLoad(s.b.SMTPAddr, run)
	if err := drive(ctx, e, c, &r, load, inject, recover); err != nil {
		return r, err
	}
	e.logf("%s: waiting for ingest to drain JetStream (a killed consumer's batch comes back after AckWait)", r.Scenario)
	// Not drained: still compare, to tell a stall from a loss.
	drainErr := waitDrained(ctx, s.b.NATSURL, c.DrainWait)
	v, err := s.ch.Read(ctx, s.db, prefix(run))
	if err != nil {
		return r, err
	}
	r.compare(load.Ledger.Acked(), load.Ledger.All(), v)
	noteStream(ctx, &r, s.b.NATSURL, v)
	if got, err := s.b.ReportsReceived(ctx); err == nil && got != int64(len(v.Reports)) {
		r.Notes = append(r.Notes, fmt.Sprintf("API reports_received %d, distinct report ids in ClickHouse %d", got, len(v.Reports)))
	}
	wn, _ := s.w.Metric(ctx, "bouncer_reports_processed_total")
	we, _ := s.w.Metric(ctx, "bouncer_ingest_write_errors_total")
	bn, _ := s.b.Metric(ctx, "bouncer_reports_processed_total")
	be, _ := s.b.Metric(ctx, "bouncer_ingest_write_errors_total")
	r.Notes = append(r.Notes, fmt.Sprintf("reports written (write errors) since the last start: worker %v (%v), bouncer's in-process ingest %v (%v)", wn, we, bn, be))
	return r, errors.Join(drainErr, s.stop())
}

func runIngestKill9(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "ingest-kill9", Injected: "kill -9 of the bouncer-ingest worker under load, restart"}
	return runSplit(ctx, e, c, r, func(s *split, r *Result) (func() error, func() error) {
		return func() error {
				if st, err := Stream(ctx, s.b.NATSURL); err == nil {
					r.Notes = append(r.Notes, fmt.Sprintf("at the kill: %d reports delivered to ingest and not acked", st.AckPending))
				}
				return s.w.Kill()
			},
			func() error { return s.w.Start() }
	})
}

func runClickHouseFreeze(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "clickhouse-freeze", Injected: "SIGSTOP of clickhouse-server under load, SIGCONT after the fault time"}
	return runSplit(ctx, e, c, r, func(s *split, r *Result) (func() error, func() error) {
		return s.ch.Freeze, s.ch.Thaw
	})
}

func runClickHouseKill9(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "clickhouse-kill9", Injected: "kill -9 of clickhouse-server under load, restart on the same directory"}
	return runSplit(ctx, e, c, r, func(s *split, r *Result) (func() error, func() error) {
		return s.ch.Kill, s.ch.Start
	})
}
