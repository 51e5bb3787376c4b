package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/rules"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// dsnReport is a small RFC 3464 report from Postfix: recipient rcpt
// unknown (5.1.1). tag makes its bytes, and so its id, unique.
func dsnReport(rcpt, tag string) []byte {
	return []byte(strings.ReplaceAll(`Return-Path: <>
From: MAILER-DAEMON@mta1.example.net (Mail Delivery System)
To: b+tok@bounces.example.com
Subject: Undelivered Mail Returned to Sender
Date: Sun,  1 Mar 2026 12:00:00 +0000 (UTC)
Message-Id: <`+tag+`@mta1.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B0"

--B0
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mta1.example.net.

<`+rcpt+`>: host mx.example.org[198.51.100.5] said: 550 5.1.1
    <`+rcpt+`>: Recipient address rejected: User unknown (in reply to RCPT TO
    command)

--B0
Content-Type: message/delivery-status

Reporting-MTA: dns; mta1.example.net

Final-Recipient: rfc822; `+rcpt+`
Original-Recipient: rfc822;`+rcpt+`
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; 550 5.1.1 <`+rcpt+`>: Recipient address rejected: User
    unknown

--B0
Content-Type: text/rfc822-headers

From: news@shop.example.com
To: `+rcpt+`
Subject: Our offers
Message-ID: <orig-`+tag+`@shop.example.com>

--B0--
`, "\n", "\r\n"))
}

func envelopeOf(raw []byte) event.Envelope {
	sum := sha256.Sum256(raw)
	return event.Envelope{
		ID:         hex.EncodeToString(sum[:]),
		Recipients: []string{"b+tok@bounces.example.com"},
		ClientIP:   "198.51.100.5",
		Helo:       "mta1.example.net",
		Received:   time.Now().UTC().Truncate(time.Second),
	}
}

// env is one test's world: an embedded server with bouncer's streams and
// a client of it.
type env struct {
	t   *testing.T
	dir string
	srv *server.Server
	js  jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, dir: t.TempDir()}
	e.start()
	return e
}

// start starts the server on e.dir and connects to it.
func (e *env) start() {
	t := e.t
	t.Helper()
	s, err := broker.StartEmbedded(broker.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: e.dir})
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	e.srv = s
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	if e.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := broker.EnsureStreams(ctx, e.js, 1); err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
}

// stop shuts the server down, as a crash or a restart would.
func (e *env) stop() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// publish publishes raw as the listener does.
func (e *env) publish(raw []byte) event.Envelope {
	e.t.Helper()
	en := envelopeOf(raw)
	p := &broker.Publisher{JS: e.js}
	defer p.Close()
	if err := p.Publish(context.Background(), en, raw); err != nil {
		e.t.Fatalf("Publish: %v", err)
	}
	return en
}

// publishBundle publishes reports as one bundle (broker.HeaderBundle)
// saying it holds count of them, written here from the format's
// description rather than by the Publisher, and returns their envelopes.
func (e *env) publishBundle(count string, raws ...[]byte) []event.Envelope {
	e.t.Helper()
	var data []byte
	var envs []event.Envelope
	for _, raw := range raws {
		en := envelopeOf(raw)
		hdr, err := json.Marshal(en)
		if err != nil {
			e.t.Fatal(err)
		}
		data = binary.AppendUvarint(data, uint64(len(hdr)))
		data = append(data, hdr...)
		data = binary.AppendUvarint(data, uint64(len(raw)))
		data = append(data, raw...)
		envs = append(envs, en)
	}
	m := &nats.Msg{Subject: broker.SubjectReports, Data: data, Header: nats.Header{}}
	m.Header.Set(broker.HeaderBundle, count)
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		e.t.Fatal(err)
	}
	return envs
}

// pipeline is a running Pipeline and what a test looks at.
type pipeline struct {
	*Pipeline
	reg  *prometheus.Registry
	stop func()
}

// run starts a Pipeline on st with fast test timings; it stops at the
// end of the test or on stop.
func (e *env) run(st store.Store) *pipeline {
	e.t.Helper()
	return e.runWith(st, nil)
}

// runWith is run with the Config changed by mod first.
func (e *env) runWith(st store.Store, mod func(*Config)) *pipeline {
	t := e.t
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{
		JS:         e.js,
		Store:      st,
		Classifier: classify.New(rules.MustDefault()),
		Logger:     slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		Registerer: reg,
		BatchSize:  10,
		BatchWait:  50 * time.Millisecond,
		Backoff:    10 * time.Millisecond,
		MaxBackoff: 100 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return &pipeline{Pipeline: p, reg: reg, stop: stop}
}

// waitFor polls cond until it holds, failing the test after 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// streamMsgs is the number of messages in a stream; in the reports
// stream, the ones ingest has not acked and trimmed yet (broker.Trim).
func (e *env) streamMsgs(name string) uint64 {
	e.t.Helper()
	st, err := e.js.Stream(context.Background(), name)
	if err != nil {
		e.t.Fatalf("stream %s: %v", name, err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		e.t.Fatalf("stream %s info: %v", name, err)
	}
	return info.State.Msgs
}

// consumerInfo is the ingest consumer's state.
func (e *env) consumerInfo() *jetstream.ConsumerInfo {
	e.t.Helper()
	c, err := e.js.Consumer(context.Background(), broker.StreamReports, DefaultDurable)
	if err != nil {
		e.t.Fatalf("consumer: %v", err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		e.t.Fatalf("consumer info: %v", err)
	}
	return info
}

// metric returns the value of a counter or gauge with the given labels
// (a subset match), summed over matching series; -1 when none matches.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	sum, found := 0.0, false
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				if labelValue(m, k) != v {
					continue series
				}
			}
			found = true
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	if !found {
		return -1
	}
	return sum
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func TestIngestReport(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	p := e.run(st)
	raw := dsnReport("Ghost@Example.org", "one")
	en := e.publish(raw)

	waitFor(t, "the report in the store", func() bool { r, _, _ := st.snapshot(); return len(r) == 1 })
	reports, events, _ := st.snapshot()
	rep, ok := reports[en.ID]
	if !ok {
		t.Fatalf("report %s not stored; stored: %v", en.ID, reports)
	}
	if string(rep.Raw) != string(raw) || rep.ParseError != "" || rep.ClientIP != en.ClientIP || !rep.Received.Equal(en.Received) {
		t.Errorf("report = %+v", rep)
	}
	if len(events) != 1 {
		t.Fatalf("%d events stored, want 1: %+v", len(events), events)
	}
	ev, ok := events[store.EventID(en.ID, 0)]
	if !ok {
		t.Fatalf("event %s not stored: %+v", store.EventID(en.ID, 0), events)
	}
	want := store.Event{ID: store.EventID(en.ID, 0), ReportID: en.ID, Index: 0, Version: 1, Time: en.Received, Source: "ndr"}
	if ev.ID != want.ID || ev.ReportID != want.ReportID || ev.Index != 0 || ev.Version != 1 || !ev.Time.Equal(want.Time) || ev.Source != want.Source {
		t.Errorf("event = %+v, want ids and times as %+v", ev, want)
	}
	if ev.Recipient != "ghost@example.org" || ev.Class != event.ClassHard || ev.Reason != event.ReasonUserUnknown ||
		ev.Scope != event.ScopeRecipient || ev.Status != "5.1.1" || ev.MessageID != "<orig-one@shop.example.com>" {
		t.Errorf("event = %+v, want ghost@example.org hard userunknown recipient 5.1.1", ev.Event)
	}
	// The correlation keys: the VERP address the report was sent to; a
	// report's stream comes from correlation, not from ingest.
	if ev.ReturnPath != "b+tok@bounces.example.com" || ev.Stream != "" {
		t.Errorf("event return path %q, stream %q; want b+tok@bounces.example.com and none", ev.ReturnPath, ev.Stream)
	}

	// Acked, and trimmed from the stream: nothing pending.
	waitFor(t, "the ack", func() bool { return e.streamMsgs(broker.StreamReports) == 0 })
	if ci := e.consumerInfo(); ci.NumAckPending != 0 || ci.NumPending != 0 {
		t.Errorf("consumer: %d ack pending, %d pending, want 0", ci.NumAckPending, ci.NumPending)
	}
	if err := p.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
	for name, want := range map[string]float64{
		"bouncer_reports_processed_total":   1,
		"bouncer_ingest_write_errors_total": 0,
		"bouncer_ingest_dead_letters_total": 0,
		"bouncer_panics_total":              0,
	} {
		if got := metric(t, p.reg, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := metric(t, p.reg, "bouncer_events_total", map[string]string{"source": "ndr", "class": "hard", "reason": "userunknown", "scope": "recipient", "provider": "other"}); got != 1 {
		t.Errorf("bouncer_events_total{hard,userunknown} = %v, want 1", got)
	}
	if got := metric(t, p.reg, "bouncer_ingest_batches_total", nil); got < 1 {
		t.Errorf("bouncer_ingest_batches_total = %v, want >= 1", got)
	}
	if lag := metric(t, p.reg, "bouncer_ingest_lag_seconds", nil); lag < 0 || lag > 60 {
		t.Errorf("bouncer_ingest_lag_seconds = %v", lag)
	}
	// Each stage timed once per batch at least; the re-fold runs after
	// the acks, which the loop above saw land.
	waitFor(t, "the re-fold's timing", func() bool {
		return metric(t, p.reg, "bouncer_ingest_stage_seconds", map[string]string{"stage": "refold"}) >= 1
	})
	for _, stage := range []string{"decode", "write", "ack"} {
		if got := metric(t, p.reg, "bouncer_ingest_stage_seconds", map[string]string{"stage": stage}); got < 1 {
			t.Errorf("bouncer_ingest_stage_seconds{stage=%q} has %v observations, want >= 1", stage, got)
		}
	}

	// NATS gone: not ready.
	e.stop()
	waitFor(t, "Ready to notice NATS is gone", func() bool {
		err := p.Ready()
		return err != nil && strings.Contains(err.Error(), "NATS connection")
	})
	t.Logf("Ready with NATS down: %v", p.Ready())
}

// TestIngestBundle publishes a bundle of three reports, the third the
// first's bytes again, and a bundle that says it holds two but holds
// one: the first bundle's two reports are stored with their events, the
// second bundle is dead-lettered whole, and both messages are acked.
func TestIngestBundle(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	p := e.run(st)
	one, two := dsnReport("one@example.org", "b1"), dsnReport("two@example.org", "b2")
	envs := e.publishBundle("3", one, two, one)
	bad := e.publishBundle("2", dsnReport("lost@example.org", "b3"))

	waitFor(t, "the reports in the store", func() bool { r, _, _ := st.snapshot(); return len(r) == 2 })
	dl := nextDeadLetter(t, e)
	if dl.Headers().Get(broker.HeaderBundle) != "2" || !strings.Contains(dl.Headers().Get(broker.HeaderDeadLetterError), "bad bundle") {
		t.Errorf("dead letter: %s %q, error %q; want the bad bundle", broker.HeaderBundle, dl.Headers().Get(broker.HeaderBundle),
			dl.Headers().Get(broker.HeaderDeadLetterError))
	}
	waitFor(t, "the acks", func() bool { return e.streamMsgs(broker.StreamReports) == 0 })
	reports, events, _ := st.snapshot()
	for i, rcpt := range []string{"one@example.org", "two@example.org"} {
		rep, ok := reports[envs[i].ID]
		if !ok {
			t.Errorf("report %d not stored", i)
			continue
		}
		if rep.Helo != envs[i].Helo || len(rep.Raw) == 0 {
			t.Errorf("report %d stored as %+v", i, rep.Envelope)
		}
		ev, ok := events[store.EventID(envs[i].ID, 0)]
		if !ok || ev.Recipient != rcpt || ev.Class != event.ClassHard || ev.ReportID != envs[i].ID {
			t.Errorf("report %d's event: %+v, %v; want %s hard", i, ev, ok, rcpt)
		}
	}
	if _, ok := reports[bad[0].ID]; ok {
		t.Error("a report of the bad bundle was stored")
	}
	if got := metric(t, p.reg, "bouncer_reports_processed_total", nil); got != 2 {
		t.Errorf("bouncer_reports_processed_total = %v, want 2", got)
	}
}

// TestBatchCountsBundledReports: with a batch size of 5 reports, three
// bundles of 3 and a plain report, all in the stream before ingest
// starts (one fetch), are written at most 5 reports at a time, a bundle
// never split, and all 10 are stored.
func TestBatchCountsBundledReports(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	var want []string
	for b := range 3 {
		var raws [][]byte
		for i := range 3 {
			raws = append(raws, dsnReport(fmt.Sprintf("u%d-%d@example.org", b, i), fmt.Sprintf("c%d-%d", b, i)))
		}
		for _, en := range e.publishBundle("3", raws...) {
			want = append(want, en.ID)
		}
	}
	want = append(want, e.publish(dsnReport("alone@example.org", "alone")).ID)
	e.runWith(st, func(c *Config) { c.BatchSize = 5 })
	waitFor(t, "the reports in the store", func() bool { r, _, _ := st.snapshot(); return len(r) == len(want) })
	st.mu.Lock()
	sizes := slices.Clone(st.sizes)
	st.mu.Unlock()
	total := 0
	for _, n := range sizes {
		if n > 5 || n%3 == 2 {
			t.Errorf("writes of %v reports: one above 5, or a bundle split", sizes)
			break
		}
		total += n
	}
	if total != len(want) {
		t.Errorf("writes of %v reports, %d in all; want %d", sizes, total, len(want))
	}
}

// TestBatchJoinsPartOfAFetch: a fetch of about a batch of bundles that
// does not fit beside the rest of the fetch before (carried) gives the
// batch what fits and carries the rest, rather than waiting whole: else
// every other batch is the small carry alone. 40 bundles of 4 reports,
// batches of 10: writes of 8 reports, not 8 and 4 in turn.
func TestBatchJoinsPartOfAFetch(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	for b := range 40 {
		var raws [][]byte
		for i := range 4 {
			raws = append(raws, dsnReport(fmt.Sprintf("u%d-%d@example.org", b, i), fmt.Sprintf("c%d-%d", b, i)))
		}
		e.publishBundle("4", raws...)
	}
	// Held, the store lets the fetchers fill up: each batch then finds
	// the next fetch waiting to join it.
	st.mu.Lock()
	e.runWith(st, func(c *Config) { c.BatchSize = 10 })
	time.Sleep(200 * time.Millisecond)
	st.mu.Unlock()
	waitFor(t, "all 160 reports in the store", func() bool { r, _, _ := st.snapshot(); return len(r) == 160 })
	st.mu.Lock()
	sizes := slices.Clone(st.sizes)
	st.mu.Unlock()
	small := 0
	for _, n := range sizes {
		if n > 10 || n%4 != 0 {
			t.Fatalf("writes of %v reports: one above 10, or a bundle split", sizes)
		}
		if n < 8 {
			small++
		}
	}
	// The first fetch (asked before any bundle was seen) and the last
	// may leave a small batch each; carried whole, half of them were.
	if small > 3 {
		t.Errorf("writes of %v reports: %d of fewer than 8, want at most 3", sizes, small)
	}
}

// TestFetchSizedByBundles: once ingest has seen bundles, a fetch asks
// for a batch of reports, not a batch of messages. With the store held
// (a write blocked, the fault a test cannot make a real store do on
// cue), the messages delivered and not acked stay a few batches' worth
// of reports, where a fetch of BatchSize bundles alone would hold ten
// times the batch.
func TestFetchSizedByBundles(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	bundle := func(b int) {
		var raws [][]byte
		for i := range 10 {
			raws = append(raws, dsnReport(fmt.Sprintf("u%d-%d@example.org", b, i), fmt.Sprintf("c%d-%d", b, i)))
		}
		e.publishBundle("10", raws...)
	}
	bundle(0)
	e.runWith(st, func(c *Config) { c.BatchSize = 20 })
	waitFor(t, "the first bundle in the store", func() bool { r, _, _ := st.snapshot(); return len(r) == 10 })

	st.mu.Lock()
	for b := 1; b <= 40; b++ {
		bundle(b)
	}
	// Ingest fetches until its loops wait on the held write; then the
	// ack-pending count stops moving.
	var pending []int
	for range 20 {
		time.Sleep(50 * time.Millisecond)
		pending = append(pending, e.consumerInfo().NumAckPending)
	}
	st.mu.Unlock()
	t.Logf("ack pending while the store was held: %v", pending)
	// Two messages (20 reports) a fetch: the batch being written, one
	// carried, one fetch waiting to be handed over and one under way.
	if most := slices.Max(pending); most == 0 || most > 8 {
		t.Errorf("bundles delivered and not acked while the store was held: %v; want 1..8 (a fetch of 2 bundles, a few in hand)", pending)
	}
	waitFor(t, "all 410 reports in the store", func() bool { r, _, _ := st.snapshot(); return len(r) == 410 })
}

// TestIngestDuplicates publishes the same bytes twice within the dedup
// window (JetStream stores them once), then once more past it (no msg id:
// ingest reads them again and the store keeps the rows it has).
func TestIngestDuplicates(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	e.run(st)
	raw := dsnReport("dup@example.org", "dup")
	en := e.publish(raw)
	e.publish(raw)
	waitFor(t, "the report in the store", func() bool { r, _, _ := st.snapshot(); return len(r) == 1 })
	waitFor(t, "the ack", func() bool { return e.streamMsgs(broker.StreamReports) == 0 })
	_, events1, _ := st.snapshot()

	// Past the dedup window: the same envelope and bytes, no msg id.
	m := &nats.Msg{Subject: broker.SubjectReports, Data: raw, Header: nats.Header{}}
	hdr := fmt.Sprintf(`{"id":%q,"recipients":["b+tok@bounces.example.com"],"received":%q}`, en.ID, en.Received.Format(time.RFC3339Nano))
	m.Header.Set(broker.HeaderEnvelope, hdr)
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second write", func() bool { return st.writes(en.ID) == 2 })
	waitFor(t, "the ack", func() bool { return e.streamMsgs(broker.StreamReports) == 0 })
	reports, events2, _ := st.snapshot()
	if len(reports) != 1 {
		t.Errorf("%d reports stored, want 1", len(reports))
	}
	if len(events2) != len(events1) {
		t.Errorf("events after the rewrite: %d, before: %d", len(events2), len(events1))
	}
	for id, ev := range events1 {
		if events2[id] != ev {
			t.Errorf("event %s changed: %+v -> %+v", id, ev, events2[id])
		}
	}
}

// TestStoreDown makes the store fail: nothing is acked, Ready says why,
// and after recovery every report lands once.
func TestStoreDown(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	st.setFailing(errors.New("disk I/O error"))
	p := e.run(st)
	var ids []string
	for i := range 3 {
		ids = append(ids, e.publish(dsnReport(fmt.Sprintf("r%d@example.org", i), fmt.Sprint("down", i))).ID)
	}
	waitFor(t, "failed writes", func() bool { _, _, failed := st.snapshot(); return failed >= 4 })

	reports, _, _ := st.snapshot()
	if len(reports) != 0 {
		t.Fatalf("%d reports stored by a failing store", len(reports))
	}
	if n := e.streamMsgs(broker.StreamReports); n != 3 {
		t.Errorf("reports stream holds %d messages, want all 3 unacked", n)
	}
	if ci := e.consumerInfo(); ci.NumAckPending == 0 && ci.NumPending == 0 {
		t.Errorf("consumer: nothing pending (%+v); the messages were acked", ci)
	}
	err := p.Ready()
	if err == nil || !strings.Contains(err.Error(), "disk I/O error") {
		t.Errorf("Ready = %v, want the store's error", err)
	}
	if got := metric(t, p.reg, "bouncer_ingest_write_errors_total", nil); got < 4 {
		t.Errorf("bouncer_ingest_write_errors_total = %v, want >= 4", got)
	}

	st.setFailing(nil)
	waitFor(t, "all reports in the store", func() bool { r, _, _ := st.snapshot(); return len(r) == 3 })
	waitFor(t, "the acks", func() bool { return e.streamMsgs(broker.StreamReports) == 0 })
	waitFor(t, "readiness", func() bool { return p.Ready() == nil })
	for _, id := range ids {
		if n := st.writes(id); n != 1 {
			t.Errorf("report %s written %d times, want 1", id, n)
		}
	}
	if got := metric(t, p.reg, "bouncer_reports_processed_total", nil); got != 3 {
		t.Errorf("bouncer_reports_processed_total = %v, want 3", got)
	}
}

// TestDeadLetter publishes garbage to the reports subject: it moves to the
// dead-letter subject with its bytes and an error, and is counted.
func TestDeadLetter(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	p := e.run(st)
	garbage := []byte("\x00\x01 not a report")
	m := &nats.Msg{Subject: broker.SubjectReports, Data: garbage, Header: nats.Header{"X-Test": []string{"kept"}}}
	ack, err := e.js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	// A good report after it still flows.
	good := e.publish(dsnReport("after@example.org", "after"))

	dl := nextDeadLetter(t, e)
	if string(dl.Data()) != string(garbage) {
		t.Errorf("dead letter data = %q, want the original bytes", dl.Data())
	}
	h := dl.Headers()
	if h.Get(broker.HeaderDeadLetterError) == "" || h.Get(broker.HeaderDeadLetterStream) != broker.StreamReports ||
		h.Get(broker.HeaderDeadLetterSequence) != fmt.Sprint(ack.Sequence) || h.Get("X-Test") != "kept" ||
		h.Get(broker.HeaderDeadLetterSubject) != broker.SubjectReports {
		t.Errorf("dead letter headers = %v", h)
	}
	waitFor(t, "the good report", func() bool { r, _, _ := st.snapshot(); _, ok := r[good.ID]; return ok })
	waitFor(t, "the acks", func() bool { return e.streamMsgs(broker.StreamReports) == 0 })
	if got := metric(t, p.reg, "bouncer_ingest_dead_letters_total", map[string]string{"reason": "decode"}); got != 1 {
		t.Errorf("bouncer_ingest_dead_letters_total{decode} = %v, want 1", got)
	}
	if r, _, _ := st.snapshot(); len(r) != 1 {
		t.Errorf("%d reports stored, want only the good one", len(r))
	}
}

// TestPanicDeadLetters makes classifying panic: a Classifier without
// rules dereferences nil, standing in for a bug in classify. The panic is
// recovered and counted, and the message is dead-lettered.
func TestPanicDeadLetters(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	p, err := New(Config{
		JS: e.js, Store: st, Classifier: classify.New(nil), Registerer: reg,
		Logger:    slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError + 1})),
		BatchWait: 50 * time.Millisecond, Backoff: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	raw := dsnReport("boom@example.org", "boom")
	e.publish(raw)
	dl := nextDeadLetter(t, e)
	if string(dl.Data()) != string(raw) || !strings.Contains(dl.Headers().Get(broker.HeaderDeadLetterError), "panic") {
		t.Errorf("dead letter: error header %q, %d bytes", dl.Headers().Get(broker.HeaderDeadLetterError), len(dl.Data()))
	}
	if dl.Headers().Get(broker.HeaderEnvelope) == "" {
		t.Error("dead letter lost the envelope header")
	}
	waitFor(t, "the ack", func() bool { return e.streamMsgs(broker.StreamReports) == 0 })
	if got := metric(t, reg, "bouncer_panics_total", map[string]string{"component": "ingest"}); got != 1 {
		t.Errorf("bouncer_panics_total{ingest} = %v, want 1", got)
	}
	if got := metric(t, reg, "bouncer_ingest_dead_letters_total", map[string]string{"reason": "panic"}); got != 1 {
		t.Errorf("bouncer_ingest_dead_letters_total{panic} = %v, want 1", got)
	}
}

// TestBundledPanic: in a bundle, the report whose classifying panics is
// dead-lettered alone, as a plain report message naming its place in the
// bundle, and the bundle's other report is stored. The panic is real: a
// Classifier without rules dereferences nil on a report it can parse,
// while one it cannot parse is stored with its parse error before any
// rule is needed.
func TestBundledPanic(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	reg := e.runWith(st, func(c *Config) {
		c.Classifier = classify.New(nil)
		c.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError + 1}))
	}).reg

	boom, plain := dsnReport("boom@example.org", "boom"), []byte("not a mail at all")
	envs := e.publishBundle("2", boom, plain)
	dl := nextDeadLetter(t, e)
	h := dl.Headers()
	var env event.Envelope
	if err := json.Unmarshal([]byte(h.Get(broker.HeaderEnvelope)), &env); err != nil || env.ID != envs[0].ID {
		t.Errorf("dead letter's envelope %q (%v), want report 0's", h.Get(broker.HeaderEnvelope), err)
	}
	if string(dl.Data()) != string(boom) || h.Get(broker.HeaderDeadLetterIndex) != "0" || h.Get(broker.HeaderBundle) != "" ||
		!strings.Contains(h.Get(broker.HeaderDeadLetterError), "panic") {
		t.Errorf("dead letter: index %q, bundle %q, error %q, %d bytes; want report 0 alone, its panic",
			h.Get(broker.HeaderDeadLetterIndex), h.Get(broker.HeaderBundle), h.Get(broker.HeaderDeadLetterError), len(dl.Data()))
	}
	waitFor(t, "the other report", func() bool { r, _, _ := st.snapshot(); _, ok := r[envs[1].ID]; return ok })
	waitFor(t, "the ack", func() bool { return e.streamMsgs(broker.StreamReports) == 0 })
	reports, _, _ := st.snapshot()
	if len(reports) != 1 || reports[envs[1].ID].ParseError == "" {
		t.Errorf("stored %d reports; want the unparsable one alone, with its parse error", len(reports))
	}
	if got := metric(t, reg, "bouncer_panics_total", map[string]string{"component": "ingest"}); got != 1 {
		t.Errorf("bouncer_panics_total{ingest} = %v, want 1", got)
	}
	if got := metric(t, reg, "bouncer_ingest_dead_letters_total", map[string]string{"reason": "panic"}); got != 1 {
		t.Errorf("bouncer_ingest_dead_letters_total{panic} = %v, want 1", got)
	}
}

// nextDeadLetter returns the first message of the dead-letter stream.
func nextDeadLetter(t *testing.T, e *env) jetstream.Msg {
	t.Helper()
	c, err := e.js.OrderedConsumer(context.Background(), broker.StreamDeadLetter, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{broker.SubjectDeadLetterReports},
	})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := c.Next(jetstream.FetchMaxWait(15 * time.Second))
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	return msg
}

// TestRestartKeepsUnacked stops the server while reports are delivered but
// unacked (the store is down), starts it again on the same store dir, and
// ingests them then.
func TestRestartKeepsUnacked(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	st.setFailing(errors.New("store down"))
	p := e.run(st)
	a := e.publish(dsnReport("a@example.org", "restart-a"))
	b := e.publish(dsnReport("b@example.org", "restart-b"))
	waitFor(t, "failed writes", func() bool { _, _, failed := st.snapshot(); return failed >= 2 })
	p.stop()
	e.stop()

	e.start()
	if n := e.streamMsgs(broker.StreamReports); n != 2 {
		t.Fatalf("after restart the reports stream holds %d messages, want 2", n)
	}
	st.setFailing(nil)
	e.run(st)
	waitFor(t, "both reports in the store", func() bool {
		r, _, _ := st.snapshot()
		_, okA := r[a.ID]
		_, okB := r[b.ID]
		return okA && okB
	})
	waitFor(t, "the acks", func() bool { return e.streamMsgs(broker.StreamReports) == 0 })
}

// TestUnparsableReport stores a report classify cannot read at all with
// its ParseError, and no events.
func TestUnparsableReport(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	e.run(st)
	raw := []byte("this is not a mail message at all, no header\x00\xff")
	en := e.publish(raw)
	waitFor(t, "the report", func() bool { r, _, _ := st.snapshot(); return len(r) == 1 })
	reports, events, _ := st.snapshot()
	rep := reports[en.ID]
	if rep.ParseError == "" || len(events) != 0 {
		t.Errorf("ParseError = %q with %d events, want the parser's error and none", rep.ParseError, len(events))
	}
	if string(rep.Raw) != string(raw) {
		t.Error("the unparsable report's bytes were not kept")
	}
}

// TestMetricsRegistered gathers a fresh pipeline's registry: every metric
// is there (pre-created), and named bouncer_*.
func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, err := New(Config{
		JS: fakeJS{}, Store: newFaultStore(t), Classifier: classify.New(rules.MustDefault()),
		Logger: slog.New(slog.DiscardHandler), Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "bouncer_") {
			t.Errorf("metric %s is not bouncer_*", mf.GetName())
		}
		got[mf.GetName()] = true
	}
	for _, name := range []string{
		"bouncer_ingest_batches_total", "bouncer_ingest_batch_size", "bouncer_ingest_write_errors_total",
		"bouncer_ingest_dead_letters_total", "bouncer_ingest_lag_seconds", "bouncer_events_total",
		"bouncer_reports_processed_total", "bouncer_panics_total", "bouncer_ingest_stage_seconds",
	} {
		if !got[name] {
			t.Errorf("metric %s not registered (or not pre-created)", name)
		}
	}
	for _, c := range event.Classes {
		if metric(t, reg, "bouncer_events_total", map[string]string{"class": c.String()}) != 0 {
			t.Errorf("bouncer_events_total{class=%s} not pre-created at zero", c)
		}
	}
	// A second pipeline on the same registry is refused, not half-registered silently.
	if _, err := New(Config{
		JS: fakeJS{}, Store: newFaultStore(t), Classifier: classify.New(rules.MustDefault()),
		Logger: slog.New(slog.DiscardHandler), Registerer: reg,
	}); err == nil {
		t.Error("second New on one Registerer: no error")
	}
}

// fakeJS satisfies Config.JS for tests that never run the pipeline.
type fakeJS struct{ jetstream.JetStream }

func TestConfigValidate(t *testing.T) {
	ok := Config{
		JS: fakeJS{}, Store: newFaultStore(t), Classifier: classify.New(rules.MustDefault()),
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(),
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(defaults) = %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no JS", func(c *Config) { c.JS = nil }, "Config.JS is required"},
		{"no store", func(c *Config) { c.Store = nil }, "Config.Store is required"},
		{"no classifier", func(c *Config) { c.Classifier = nil }, "Config.Classifier is required"},
		{"no logger", func(c *Config) { c.Logger = nil }, "Config.Logger is required"},
		{"no registerer", func(c *Config) { c.Registerer = nil }, "Config.Registerer is required"},
		{"batch too big", func(c *Config) { c.BatchSize = maxBatchSize + 1 }, "BatchSize"},
		{"negative batch", func(c *Config) { c.BatchSize = -1 }, "BatchSize"},
		{"negative wait", func(c *Config) { c.BatchWait = -time.Second }, "BatchWait"},
		{"bytes below a report", func(c *Config) { c.BatchBytes = 1 << 20 }, "BatchBytes"},
		{"negative backoff", func(c *Config) { c.Backoff = -1 }, "Backoff"},
		{"max below backoff", func(c *Config) { c.Backoff, c.MaxBackoff = time.Second, time.Millisecond }, "MaxBackoff"},
		{"write timeout over ack wait", func(c *Config) { c.WriteTimeout = AckWait }, "WriteTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.change(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{first: 10 * time.Millisecond, max: 50 * time.Millisecond}
	var got []time.Duration
	for range 5 {
		got = append(got, b.fail())
	}
	want := []time.Duration{10, 20, 40, 50, 50}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(got, want) {
		t.Errorf("backoff = %v, want %v", got, want)
	}
	b.reset()
	if d := b.next(); d != 10*time.Millisecond {
		t.Errorf("after reset next = %v, want 10ms", d)
	}
}

func TestHeaderValue(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"two\r\nlines", "two  lines"},
		{strings.Repeat("é", maxErrorHeader), strings.Repeat("é", maxErrorHeader/2)},
	} {
		if got := headerValue(tc.in); got != tc.want {
			t.Errorf("headerValue(%.20q) = %.20q (%d bytes), want %.20q", tc.in, got, len(got), tc.want)
		}
	}
}

func TestReportReturnPath(t *testing.T) {
	tests := []struct {
		rcpts []string
		want  string
	}{
		{[]string{"B+Tok.Xyz@Bounces.Example.com"}, "b+tok.xyz@bounces.example.com"},
		{[]string{" b+tok@bounces.example.com "}, "b+tok@bounces.example.com"},
		{nil, ""},
		{[]string{}, ""},
		// Several bounce addresses in one transaction: which one the
		// report is about is unknown.
		{[]string{"b+a@bounces.example.com", "b+b@bounces.example.com"}, ""},
	}
	for _, tt := range tests {
		if got := reportReturnPath(event.Envelope{Recipients: tt.rcpts}); got != tt.want {
			t.Errorf("reportReturnPath(%q) = %q, want %q", tt.rcpts, got, tt.want)
		}
	}
}
