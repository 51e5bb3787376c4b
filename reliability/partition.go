package reliability

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bouncer-mail/bouncer/smtpd"
)

func init() {
	Scenarios = append(Scenarios, Scenario{"nats-partition",
		"nats-server, the listener, bouncer-ingest and ClickHouse each in a network namespace; nats-server's link cut under load (listener and ingest both lose it), restored after the fault time",
		runNATSPartition},
		Scenario{"clickhouse-partition",
			"clickhouse-server in its own network namespace; its link cut under load (both ingest processes lose it), restored after the fault time",
			runClickHousePartition})
}

// runClickHousePartition: chLink (slowch.go), whose link the fault cuts.
// Unlike SIGSTOP (clickhouse-freeze), the server runs on; the writers'
// connections retransmit into nothing. Ingest cannot write, so it does not
// ack; the listener goes on answering 250; once the link is back the
// backlog must drain with every report stored once.
func runClickHousePartition(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "clickhouse-partition", Injected: "ClickHouse's network link cut under load (bouncer's in-process ingest and the bouncer-ingest worker lose it), restored after the fault time"}
	s, err := e.startCHLink(ctx, r.Scenario)
	if err != nil {
		return r, err
	}
	defer s.close()
	run := newRun()
	load := c.startLoad(s.b.SMTPAddr, run)
	var (
		watch    *lagWatch
		probes   []*pendingProbe
		restored time.Time
	)
	inject := func() error {
		err := s.ns.Cut()
		watch = watchLag(ctx, s.b.NATSURL)
		return err
	}
	recover := func() error {
		probes = []*pendingProbe{
			startProbe(ctx, "bouncer /readyz", s.b.HTTPAddr, "/readyz"), startProbe(ctx, "worker /readyz", s.w.HTTPAddr, "/readyz"),
		}
		grace := time.After(probeGrace)
		for _, p := range probes {
			select {
			case <-p.done:
			case <-grace:
			}
		}
		r.Notes = append(r.Notes, "during the cut: "+watch.stop().String())
		watch = watchLag(ctx, s.b.NATSURL)
		restored = time.Now()
		return s.ns.Restore()
	}
	loadErr := drive(ctx, e, c, &r, load, fault{"the partition", inject, recover})
	if len(probes) > 0 {
		var ps []string
		for _, p := range probes {
			ps = append(ps, p.result(restored))
		}
		r.Notes = append(r.Notes, "probes at the end of the cut: "+strings.Join(ps, "; "))
	}
	if watch != nil {
		r.Notes = append(r.Notes, "after the link was back: "+watch.stop().String())
	}
	if loadErr != nil {
		return r, loadErr
	}
	return r, s.finish(ctx, c, &r, load, run)
}

// partitionMin is the shortest cut: longer than the listener's publish
// timeout, so that transfers waiting for JetStream during the cut run out
// of it and are answered 4xx, which is what the scenario is about. The
// fault time is used when longer.
const partitionMin = smtpd.DefaultPublishTimeout + 2*time.Second

// runNATSPartition: four namespaces on a lab's bridge — nats-server
// (JetStream, sync always), the bouncer listener (--nats-url, and its
// in-process ingest writing ClickHouse), the bouncer-ingest worker and
// clickhouse-server — and the load from the harness's namespace. The
// fault takes nats-server's link down: the listener can reach neither its
// stream nor can the two ingest processes fetch or ack, while the load
// still reaches the listener. Transfers then wait for their publish and
// are answered 4xx when it times out; a batch ingest wrote before the cut
// is acked after it, or written again when redelivered. After the restore
// every report answered 250 must be stored once.
func runNATSPartition(ctx context.Context, e *Env, c Config) (Result, error) {
	cut := max(c.Fault, partitionMin)
	r := Result{Scenario: "nats-partition",
		Injected: fmt.Sprintf("nats-server's network link cut for %s under load (listener and bouncer-ingest in their own namespaces lose it; the senders still reach the listener), then restored", cut)}
	l, err := e.newLab()
	if err != nil {
		return r, err
	}
	defer l.Close()
	nsNATS, err := l.add("nats")
	if err != nil {
		return r, err
	}
	nsListen, err := l.add("lsn")
	if err != nil {
		return r, err
	}
	nsIngest, err := l.add("ing")
	if err != nil {
		return r, err
	}
	nsCH, err := l.add("ch")
	if err != nil {
		return r, err
	}
	ch, err := e.startClickHouseIn(ctx, nsCH)
	if err != nil {
		return r, err
	}
	defer ch.Close()
	ns, err := e.startNATSIn(nsNATS, "nats-partition-nats")
	if err != nil {
		return r, err
	}
	defer ns.Close()
	const db = "reliability_nats_partition"
	dir, err := e.subdir("nats-partition")
	if err != nil {
		return r, err
	}
	b, err := e.newBouncerIn(nsListen, "nats-partition-bouncer", dir, BouncerOptions{NATSURL: ns.URL, ClickHouseDSN: ch.DSN(db)})
	if err != nil {
		return r, err
	}
	if err := b.Start(); err != nil {
		return r, err
	}
	defer b.Kill()
	w, err := e.newIngestWorkerIn(nsIngest, "nats-partition-ingest", ns.URL, ch.DSN(db))
	if err != nil {
		return r, err
	}
	if err := w.Start(); err != nil {
		return r, err
	}
	defer w.Kill()

	run := newRun()
	load := c.startLoad(b.SMTPAddr, run)
	pc := c
	pc.Fault = cut
	var (
		cutAt             Counts
		cutTime, restTime time.Time
		probes            []*pendingProbe
	)
	inject := func() error {
		if st, err := Stream(ctx, ns.URL); err == nil {
			r.Notes = append(r.Notes, fmt.Sprintf("at the cut: %d reports in the stream, %d delivered to ingest and not acked", st.Msgs, st.AckPending))
		}
		// Counted once the link is down: `ip` takes a while to run on a
		// loaded machine, and transfers go on meanwhile.
		err := nsNATS.Cut()
		cutAt, cutTime = load.Ledger.Counts(), time.Now()
		return err
	}
	recover := func() error {
		// Still cut: what the probes say. They get probeGrace to answer
		// before the link comes back, so that a hanging one does not
		// lengthen the cut; a late answer is noted with its time.
		probes = []*pendingProbe{
			startProbe(ctx, "listener /healthz", b.HTTPAddr, "/healthz"), startProbe(ctx, "listener /readyz", b.HTTPAddr, "/readyz"),
			startProbe(ctx, "worker /healthz", w.HTTPAddr, "/healthz"), startProbe(ctx, "worker /readyz", w.HTTPAddr, "/readyz"),
		}
		grace := time.After(probeGrace)
		for _, p := range probes {
			select {
			case <-p.done:
			case <-grace:
			}
		}
		// From the moment the link went down (drive's "during" also
		// counts the stream read above, before it).
		n := load.Ledger.Counts()
		r.Notes = append(r.Notes, fmt.Sprintf("from the cut to its end: +%d answered 250, +%d 4xx replies",
			n.Acked-cutAt.Acked, n.TempReplies-cutAt.TempReplies))
		restTime = time.Now()
		return nsNATS.Restore()
	}
	loadErr := drive(ctx, e, pc, &r, load, fault{"the partition", inject, recover})
	if len(probes) > 0 {
		var ps []string
		for _, p := range probes {
			ps = append(ps, p.result(restTime))
		}
		r.Notes = append(r.Notes, "probes at the end of the cut: "+strings.Join(ps, "; "))
	}
	if loadErr != nil {
		return r, loadErr
	}
	r.Notes = append(r.Notes, fmt.Sprintf("listener's log: %d reports not accepted (%s)",
		countLines(b.LogPath, "report not accepted"), grepLog(b.LogPath, "report not accepted")))
	if ts := logTimes(b.LogPath, `msg="report not accepted"`); len(ts) > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("the listener's 451s were logged %.1fs to %.1fs after the cut; the link was restored %.1fs after it",
			ts[0].Sub(cutTime).Seconds(), ts[len(ts)-1].Sub(cutTime).Seconds(), restTime.Sub(cutTime).Seconds()))
	}
	drainErr := check(ctx, c, &r, b, ns.URL, load, func(ctx context.Context) (StoreView, error) {
		return ch.Read(ctx, db, prefix(run))
	}, nil)
	wn, _ := w.Metric(ctx, "bouncer_reports_processed_total")
	bn, _ := b.Metric(ctx, "bouncer_reports_processed_total")
	r.Notes = append(r.Notes, fmt.Sprintf("reports written: worker %v, listener's in-process ingest %v; acks that failed: worker %d, listener %d",
		wn, bn, countLines(w.LogPath, "ack failed"), countLines(b.LogPath, "ack failed")))
	var stopErr []error
	for _, stop := range []func() error{w.Stop, b.Stop} {
		if err := stop(); err != nil {
			stopErr = append(stopErr, err)
		}
	}
	return r, errors.Join(drainErr, errors.Join(stopErr...))
}

// countLines counts the lines of a log holding s.
func countLines(path, s string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), s)
}

// probeGrace is how long the probes at the end of the cut may take before
// the link is restored anyway.
const probeGrace = 2 * time.Second

// pendingProbe is an HTTP probe running in the background.
type pendingProbe struct {
	what   string
	start  time.Time
	done   chan struct{}
	status string
	end    time.Time
}

func startProbe(ctx context.Context, what, addr, path string) *pendingProbe {
	p := &pendingProbe{what: what, start: time.Now(), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		if err == nil {
			var resp *http.Response
			if resp, err = http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
				p.status = strconv.Itoa(resp.StatusCode)
			}
		}
		if err != nil {
			p.status = err.Error()
		}
		p.end = time.Now()
	}()
	return p
}

// result waits for the probe and says what it answered and when,
// relative to restored, the link's restore.
func (p *pendingProbe) result(restored time.Time) string {
	<-p.done
	s := fmt.Sprintf("%s %s in %.1fs", p.what, p.status, p.end.Sub(p.start).Seconds())
	if !restored.IsZero() && p.end.After(restored) {
		s += fmt.Sprintf(", %.1fs after the link was restored", p.end.Sub(restored).Seconds())
	}
	return s
}

// logTimes returns the times of the log lines holding s, in order.
func logTimes(path, s string) []time.Time {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var ts []time.Time
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, s) {
			continue
		}
		v, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			ts = append(ts, t)
		}
	}
	return ts
}
