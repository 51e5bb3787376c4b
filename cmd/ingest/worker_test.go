package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse"
	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
	"github.com/bouncer-mail/bouncer/store/sqlite"
)

// startNATS starts an embedded JetStream server standing in for the
// external cluster, and returns its URL and a client of the test's own.
func startNATS(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	s, err := broker.StartEmbedded(broker.EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return s.ClientURL(), js
}

// report returns the i-th test report: an RFC 3464 DSN with a recipient
// of its own, user<i>@example.net, a hard bounce (5.1.1).
func report(i int) (event.Envelope, []byte) {
	raw := []byte(strings.ReplaceAll(fmt.Sprintf(`From: MAILER-DAEMON@mx.example.net
To: b@bounces.example.com
Subject: Undelivered Mail Returned to Sender
Message-ID: <ndr-%[1]d@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

<user%[1]d@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1
    User unknown (in reply to RCPT TO command)

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; user%[1]d@example.net
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <user%[1]d@example.net>: User unknown

--b1--
`, i), "\n", "\r\n"))
	sum := sha256.Sum256(raw)
	return event.Envelope{
		ID: hex.EncodeToString(sum[:]), Recipients: []string{"b@bounces.example.com"},
		ClientIP: "192.0.2.1", Helo: "mx.example.net", Received: time.Now().UTC(),
	}, raw
}

// publish publishes reports from..to-1 as the listener does, pausing
// between them.
func publish(t *testing.T, js jetstream.JetStream, from, to int, pause time.Duration) {
	p := &broker.Publisher{JS: js}
	defer p.Close()
	for i := from; i < to; i++ {
		env, raw := report(i)
		if err := p.Publish(context.Background(), env, raw); err != nil {
			t.Errorf("publishing report %d: %v", i, err)
			return
		}
		time.Sleep(pause)
	}
}

// worker is one Run in a goroutine, as main runs it.
type worker struct {
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func runWorker(t *testing.T, name string, opts Options) *worker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &worker{reg: newRegistry(), cancel: cancel, done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})).With("worker", name)
	go func() { w.done <- Run(ctx, opts, log, w.reg) }()
	t.Cleanup(func() { w.stop(t) })
	return w
}

// stop cancels the worker's context and waits for Run to return; a
// second stop does nothing.
func (w *worker) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	if w.done == nil {
		return
	}
	select {
	case err := <-w.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		w.done = nil
	case <-time.After(40 * time.Second):
		t.Fatal("Run did not return 40s after its context was cancelled")
	}
}

// processed is the worker's bouncer_reports_processed_total.
func (w *worker) processed(t *testing.T) int {
	t.Helper()
	mfs, err := w.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "bouncer_reports_processed_total" {
			return int(mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	return 0
}

// failedEarly fails the test when a worker's Run already returned.
func (w *worker) failedEarly(t *testing.T) {
	t.Helper()
	select {
	case err := <-w.done:
		w.done = nil
		t.Fatalf("Run returned before it was stopped: %v", err)
	default:
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool, workers ...*worker) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		for _, w := range workers {
			w.failedEarly(t)
		}
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %s for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func consumerInfo(t *testing.T, js jetstream.JetStream) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, broker.StreamReports, Durable)
	if err != nil {
		return nil
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// bothFetching waits until two workers have a pull request waiting on the
// shared consumer, so both take part from the first report on.
func bothFetching(t *testing.T, js jetstream.JetStream, ws ...*worker) {
	t.Helper()
	waitFor(t, 60*time.Second, "both workers fetching from the durable consumer", func() bool {
		info := consumerInfo(t, js)
		return info != nil && info.NumWaiting >= 2
	}, ws...)
}

// checkStored asserts the store holds exactly n reports and n hard events,
// and that JetStream kept none: every message was acked, none redelivered.
func checkStored(t *testing.T, st store.Store, js jetstream.JetStream, since time.Time, n int) {
	t.Helper()
	stats, err := st.Stats(context.Background(), since)
	if err != nil {
		t.Fatal(err)
	}
	if stats.ReportsReceived != int64(n) || stats.EventsByClass[event.ClassHard] != int64(n) {
		t.Errorf("store: %d reports, %d hard events; want %d of each", stats.ReportsReceived, stats.EventsByClass[event.ClassHard], n)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		evs, err := st.RecipientEvents(context.Background(), fmt.Sprintf("user%d@example.net", i), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].Reason != event.ReasonUserUnknown {
			t.Errorf("user%d@example.net: %d events %+v, want one userunknown", i, len(evs), evs)
		}
	}
	// Acks travel after the write: wait for JetStream to have them all.
	stream, err := js.Stream(context.Background(), broker.StreamReports)
	if err != nil {
		t.Fatal(err)
	}
	var info *jetstream.ConsumerInfo
	var msgs uint64
	deadline := time.Now().Add(10 * time.Second)
	for {
		info = consumerInfo(t, js)
		si, err := stream.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		msgs = si.State.Msgs
		if info.NumAckPending == 0 && msgs == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("consumer %s: %d ack pending, %d pending, %d redelivered; want 0, 0, 0", Durable, info.NumAckPending, info.NumPending, info.NumRedelivered)
	}
	if msgs != 0 {
		t.Errorf("stream %s still holds %d messages; once acked, ingest trims them (broker.Trim)", broker.StreamReports, msgs)
	}
}

// clickhouseWorkers starts NATS, a ClickHouse server and two workers on
// them, and returns the workers, a store handle of the test's own and the
// test's JetStream client.
func clickhouseWorkers(t *testing.T) (a, b *worker, st store.Store, js jetstream.JetStream) {
	t.Helper()
	url, js := startNATS(t)
	dsn := clickhousetest.Start(t)
	opts := func() Options {
		return Options{NATSURL: url, NATSReplicas: 1, ClickHouseDSN: dsn, DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", LogLevel: "info"}
	}
	// Started together: both open (and migrate) the new database at once,
	// as M workers of a fresh deployment do.
	a = runWorker(t, "a", opts())
	b = runWorker(t, "b", opts())
	bothFetching(t, js, a, b)
	ch, err := clickhouse.Open(context.Background(), dsn, clickhouse.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	return a, b, ch, js
}

const reports = 200

// TestWorkersShareDurable runs two workers on one NATS and one ClickHouse:
// every report is stored exactly once, and both did part of the work.
func TestWorkersShareDurable(t *testing.T) {
	since := time.Now().Add(-time.Hour)
	a, b, st, js := clickhouseWorkers(t)
	publish(t, js, 0, reports, 0)
	waitFor(t, 60*time.Second, fmt.Sprintf("%d reports processed", reports), func() bool {
		return a.processed(t)+b.processed(t) >= reports
	}, a, b)
	na, nb := a.processed(t), b.processed(t)
	t.Logf("worker a stored %d reports, worker b %d", na, nb)
	if na+nb != reports {
		t.Errorf("workers processed %d + %d reports, want %d in all: each message goes to one worker", na, nb, reports)
	}
	if na == 0 || nb == 0 {
		t.Errorf("workers processed %d and %d reports: the shared consumer should spread the work", na, nb)
	}
	checkStored(t, st, js, since, reports)
	a.stop(t)
	b.stop(t)
}

// TestWorkerStoppedMidway stops one of two workers (its context, as
// SIGTERM does) while reports keep arriving: it finishes the batch in
// hand, and the other worker stores the rest; nothing is lost or
// processed twice.
func TestWorkerStoppedMidway(t *testing.T) {
	since := time.Now().Add(-time.Hour)
	a, b, st, js := clickhouseWorkers(t)
	var published atomic.Bool
	go func() {
		publish(t, js, 0, reports, 50*time.Millisecond) // 10 s in all: worker a stops well before the last, also on a loaded machine
		published.Store(true)
	}()
	waitFor(t, 60*time.Second, "worker a to store some reports", func() bool { return a.processed(t) >= 10 }, a, b)
	a.stop(t)
	na := a.processed(t)
	if published.Load() {
		t.Fatal("every report was published before worker a stopped; the test proves nothing")
	}
	waitFor(t, 60*time.Second, "every report published", published.Load, b)
	waitFor(t, 60*time.Second, "worker b to store the rest", func() bool { return na+b.processed(t) >= reports }, b)
	nb := b.processed(t)
	t.Logf("worker a stored %d reports before it stopped, worker b %d", na, nb)
	if na+nb != reports {
		t.Errorf("workers processed %d + %d reports, want %d: the stopped worker must finish (and ack) its batch", na, nb, reports)
	}
	checkStored(t, st, js, since, reports)
	b.stop(t)
}

// TestWorkerSQLite runs one worker on SQLite and checks its HTTP endpoints:
// probes and metrics, no /v1/ API.
func TestWorkerSQLite(t *testing.T) {
	url, js := startNATS(t)
	dir := t.TempDir()
	var logBuf logBuffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	opts := Options{NATSURL: url, NATSReplicas: 1, DataDir: dir, HTTPAddr: "127.0.0.1:0", LogLevel: "info"}
	w, err := Start(context.Background(), opts, log, newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop(context.Background())
	if !strings.Contains(logBuf.String(), "several workers need ClickHouse") {
		t.Errorf("no warning about SQLite and several workers in the log:\n%s", logBuf.String())
	}
	publish(t, js, 0, 3, 0)

	st, err := sqlite.Open(context.Background(), dir+"/bouncer.db", sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	waitFor(t, 30*time.Second, "3 reports in SQLite", func() bool {
		s, err := st.Stats(context.Background(), time.Now().Add(-time.Hour))
		return err == nil && s.ReportsReceived == 3
	})

	base := "http://" + w.HTTPAddr
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/v1/stats": 404, "/": 404} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
		if path == "/metrics" {
			for _, m := range []string{"bouncer_reports_processed_total 3", "bouncer_ingest_batches_total", "go_goroutines", `bouncer_panics_total{component="ingest"} 0`, "bouncer_sqlite_checkpoints_total", "bouncer_sqlite_checkpoint_errors_total 0"} {
				if !strings.Contains(string(body), m) {
					t.Errorf("/metrics lacks %q", m)
				}
			}
		}
	}
	if err := w.Stop(context.Background()); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("HTTP still answers after Stop")
	}
}

// logBuffer is a log destination safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStartRefuses: what Start must refuse with a clear error, before it
// consumes anything.
func TestStartRefuses(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	opts := Options{NATSReplicas: 1, DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", LogLevel: "info"}

	// Nothing listens: the first connect fails (the supervisor restarts).
	o := opts
	o.NATSURL = "nats://127.0.0.1:1"
	if _, err := Start(context.Background(), o, log, newRegistry()); err == nil || !strings.Contains(err.Error(), "NATS nats://127.0.0.1:1") {
		t.Errorf("NATS down: %v", err)
	}

	// A server with NATS' default max_payload (1 MiB) would refuse large
	// reports: the listener answers 451 for them for ever.
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	o = opts
	o.NATSURL = s.ClientURL()
	if _, err := Start(context.Background(), o, log, newRegistry()); err == nil || !strings.Contains(err.Error(), "max_payload") {
		t.Errorf("max_payload 1 MiB: %v", err)
	}

	o = opts
	if _, err := Start(context.Background(), o, log, newRegistry()); err == nil || !strings.Contains(err.Error(), "--nats-url is required") {
		t.Errorf("no --nats-url: %v", err)
	}
}
