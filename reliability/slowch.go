package reliability

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

func init() {
	Scenarios = append(Scenarios, Scenario{"clickhouse-slow",
		"clickhouse-server in its own network namespace, its link shaped to " + slowRate.Rate + " each way (tc tbf) under load, unshaped after the fault time",
		runClickHouseSlow})
}

// slowRate is the clickhouse-slow scenario's link. The kernel here has no
// sch_netem (modprobe sch_netem: module not found), so the link cannot
// delay every packet by a fixed time; a token bucket can throttle it,
// which is how a congested or saturated link to the database looks: the
// batches of raw reports crawl, and a small query waits behind them in
// the queue, up to Queue. 1 mbit/s (125 kB/s) is below what the load
// writes (raw reports of 2 kB at up to 250/s in CI size, 4 kB at 500/s
// by default), so ingest falls behind during the fault; a batch of 500
// reports of 4 kB takes 16 s to send, close to ingest's WriteTimeout.
var slowRate = shapeRate{Rate: "1mbit", Burst: "16kb", Queue: "1s"}

// chLink is the split topology with ClickHouse across a real network
// link: the bouncer (listener, embedded NATS, in-process ingest) and the
// bouncer-ingest worker in the harness's namespace, clickhouse-server in a
// namespace of a lab, reached over the lab's bridge.
type chLink struct {
	l  *lab
	ns *netns // ClickHouse's
	ch *nsClickHouse
	db string
	b  *Bouncer
	w  *IngestWorker
}

func (e *Env) startCHLink(ctx context.Context, name string) (*chLink, error) {
	s := &chLink{db: "reliability_" + strings.ReplaceAll(name, "-", "_")}
	var err error
	if s.l, err = e.newLab(); err != nil {
		return nil, err
	}
	if s.ns, err = s.l.add("ch"); err != nil {
		s.close()
		return nil, err
	}
	if s.ch, err = e.startClickHouseIn(ctx, s.ns); err != nil {
		s.close()
		return nil, err
	}
	if s.b, s.w, err = e.startBouncerAndWorker(name, s.ch.DSN(s.db)); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// close kills the processes and removes the lab.
func (s *chLink) close() {
	if s.w != nil {
		s.w.Kill()
	}
	if s.b != nil {
		s.b.Kill()
	}
	if s.ch != nil {
		s.ch.Close()
	}
	if s.l != nil {
		s.l.Close()
	}
}

// finish waits for ingest to drain, checks the store, notes what the
// processes did, and stops them.
func (s *chLink) finish(ctx context.Context, c Config, r *Result, load *Load, run string) error {
	drained := time.Now()
	drainErr := check(ctx, c, r, s.b, s.b.NATSURL, load, func(ctx context.Context) (StoreView, error) {
		return s.ch.Read(ctx, s.db, prefix(run))
	}, nil)
	r.Notes = append(r.Notes, fmt.Sprintf("drained %.1fs after the load ended; /readyz then: bouncer %s, worker %s",
		time.Since(drained).Seconds(), probe(ctx, s.b.HTTPAddr, "/readyz"), probe(ctx, s.w.HTTPAddr, "/readyz")))
	wn, _ := s.w.Metric(ctx, "bouncer_reports_processed_total")
	we, _ := s.w.Metric(ctx, "bouncer_ingest_write_errors_total")
	bn, _ := s.b.Metric(ctx, "bouncer_reports_processed_total")
	be, _ := s.b.Metric(ctx, "bouncer_ingest_write_errors_total")
	r.Notes = append(r.Notes, fmt.Sprintf("reports written (write errors): worker %v (%v), bouncer's in-process ingest %v (%v)", wn, we, bn, be))
	if n, _, _ := signatureLines(s.w.LogPath); n > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("the worker logged %d acks that ran out of time: %s", n, grepLog(s.w.LogPath, "ack failed")))
	}
	if w := grepLog(s.w.LogPath, "level=WARN", "level=ERROR"); w != "" {
		r.Notes = append(r.Notes, "worker's warnings: "+w)
	}
	var stopErr []error
	for _, stop := range []func() error{s.w.Stop, s.b.Stop} {
		if err := stop(); err != nil {
			stopErr = append(stopErr, err)
		}
	}
	return errors.Join(drainErr, errors.Join(stopErr...))
}

// runClickHouseSlow: chLink, whose link the fault shapes. Both writers
// then write slowly, the stream's backlog grows, and once the link is back
// it must drain with every report stored once.
func runClickHouseSlow(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "clickhouse-slow", Injected: fmt.Sprintf("ClickHouse's link throttled to %s each way (tc tbf in a network namespace) under load, for the fault time", slowRate.Rate)}
	s, err := e.startCHLink(ctx, r.Scenario)
	if err != nil {
		return r, err
	}
	defer s.close()
	b, w := s.b, s.w
	run := newRun()
	load := c.startLoad(b.SMTPAddr, run)
	var (
		watch     *lagWatch
		shapedErr error // the shaping held nothing back: the fault did not happen
	)
	inject := func() error {
		if err := s.ns.shape(slowRate); err != nil {
			return err
		}
		watch = watchLag(ctx, b.NATSURL)
		return nil
	}
	recover := func() error {
		// While still slow: what the probes say, what the bucket did.
		r.Notes = append(r.Notes, fmt.Sprintf("slow link: bouncer /readyz %s, worker /readyz %s (%s)",
			timedProbe(ctx, b.HTTPAddr, "/readyz"), timedProbe(ctx, w.HTTPAddr, "/readyz"), grepLog(b.LogPath, "not ready")))
		in, out, err := s.ns.shapeStats()
		if err != nil {
			return err
		}
		r.Notes = append(r.Notes, fmt.Sprintf("token buckets: to ClickHouse %d bytes, %d packets held back, %d dropped; from it %d bytes, %d held back, %d dropped",
			in.Bytes, in.Overlimits, in.Dropped, out.Bytes, out.Overlimits, out.Dropped))
		if in.Overlimits+out.Overlimits == 0 {
			shapedErr = fmt.Errorf("the token buckets on ClickHouse's link held no packet back (%d and %d bytes through them): the link was not slow", in.Bytes, out.Bytes)
		}
		err = s.ns.unshape()
		r.Notes = append(r.Notes, watch.stop().String())
		watch = watchLag(ctx, b.NATSURL)
		return err
	}
	loadErr := drive(ctx, e, c, &r, load, fault{"the slow link", inject, recover})
	if watch != nil {
		r.Notes = append(r.Notes, "after the link was back: "+watch.stop().String())
	}
	if loadErr != nil {
		return r, loadErr
	}
	return r, errors.Join(s.finish(ctx, c, &r, load, run), shapedErr)
}

// lagWatch samples the ingest consumer's backlog until stopped.
type lagWatch struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	samples int
	errs    int
	first   StreamState
	max     uint64 // most reports in the stream at once
	last    StreamState
	start   time.Time
}

func watchLag(ctx context.Context, natsURL string) *lagWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &lagWatch{cancel: cancel, done: make(chan struct{}), start: time.Now()}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			st, err := Stream(ctx, natsURL)
			w.mu.Lock()
			switch {
			case ctx.Err() != nil: // stopped while reading
			case err != nil:
				w.errs++
			default:
				if w.samples == 0 {
					w.first = st
				}
				w.samples++
				w.last = st
				if st.Msgs > w.max {
					w.max = st.Msgs
				}
			}
			w.mu.Unlock()
			sleep(ctx, 250*time.Millisecond)
		}
	}()
	return w
}

// lagSummary is what a lagWatch saw.
type lagSummary struct {
	d                 time.Duration
	samples, errs     int
	first, last, most uint64
	ackPending        int
}

func (s lagSummary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "backlog over %.1fs (%d samples): %d reports in the stream at first, %d at most, %d at the end (%d of them delivered, not acked)",
		s.d.Seconds(), s.samples, s.first, s.most, s.last, s.ackPending)
	if s.errs > 0 {
		fmt.Fprintf(&b, "; %d samples failed", s.errs)
	}
	return b.String()
}

func (w *lagWatch) stop() lagSummary {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return lagSummary{d: time.Since(w.start), samples: w.samples, errs: w.errs,
		first: w.first.Msgs, last: w.last.Msgs, most: w.max, ackPending: w.last.AckPending}
}

// timedProbe is probe with the time the answer took.
func timedProbe(ctx context.Context, addr, path string) string {
	start := time.Now()
	st := probe(ctx, addr, path)
	return fmt.Sprintf("%s (%.1fs)", st, time.Since(start).Seconds())
}
