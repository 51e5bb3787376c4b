package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bouncer-mail/bouncer/broker"
)

// TestIngestSyncLogs publishes sync reply logs in all three formats to
// delivery.attempts.> and finds each recipient's judged reply in the store;
// a record nobody can read is dead-lettered, a non-attempt skipped, and a
// replay stores nothing twice.
func TestIngestSyncLogs(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	p := e.run(st)
	records := map[string]string{
		"delivery.attempts.app":     `{"id":"c1","ts":"2026-11-25T10:00:00Z","message_id":"<m1@example.org>","recipient":"grey@example.net","reply_code":450,"status":"4.2.0","reply":"450 4.2.0 <grey@example.net>: Recipient address rejected: Greylisted","smtp_command":"RCPT","stream":"news","return_path":"<B+M1.Grey@Bounces.Example.com>"}`,
		"delivery.attempts.kumo":    `{"type":"Bounce","id":"k1","sender":"b+x@bounces.example.com","recipient":["gone@gmail.com","also@gmail.com"],"queue":"gmail.com","site":"","response":{"code":550,"enhanced_code":{"class":5,"subject":1,"detail":1},"content":"The email account that you tried to reach does not exist.","command":"RCPT TO:<gone@gmail.com>\r\n"},"peer_address":{"name":"gmail-smtp-in.l.google.com.","addr":"192.0.2.5"},"timestamp":1795600000,"num_attempts":1,"meta":{"stream":"shop"}}`,
		"delivery.attempts.postfix": `2026-11-25T10:00:00Z mail postfix/smtp[1]: 4ABCDEF: to=<blocked@example.net>, relay=mx.example.net[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.7.1, status=bounced (host mx.example.net[192.0.2.1] said: 554 5.7.1 Service unavailable; Client host [192.0.2.9] blocked using zen.spamhaus.org (in reply to RCPT TO command))`,
		"delivery.attempts.skip":    `{"type":"Reception","id":"r1","sender":"s@example.org","recipient":"x@example.net","response":{"code":250,"content":"","command":null},"timestamp":1795600000}`,
		"delivery.attempts.bad":     `this is not a sync log record`,
	}
	ctx := context.Background()
	for subj, rec := range records {
		if _, err := e.js.Publish(ctx, subj, []byte(rec)); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{ // recipient -> class/reason/scope
		"grey@example.net":    "greylist/greylisting/transport",
		"gone@gmail.com":      "hard/userunknown/recipient",
		"also@gmail.com":      "hard/userunknown/recipient",
		"blocked@example.net": "soft/blocked/sender",
	}
	// The correlation keys (docs/outcomes.md): stream, return path
	// (lower-cased, no brackets), message id.
	wantKeys := map[string]string{
		"grey@example.net":    "news b+m1.grey@bounces.example.com <m1@example.org>",
		"gone@gmail.com":      "shop b+x@bounces.example.com ",
		"also@gmail.com":      "shop b+x@bounces.example.com ",
		"blocked@example.net": "  ",
	}
	waitFor(t, "the sync events", func() bool { _, ev, _ := st.snapshot(); return len(ev) >= len(want) })
	_, evs, _ := st.snapshot()
	if len(evs) != len(want) {
		t.Errorf("%d events stored, want %d", len(evs), len(want))
	}
	for _, ev := range evs {
		got := string(ev.Class) + "/" + string(ev.Reason) + "/" + string(ev.Scope)
		if want[ev.Recipient] != got {
			t.Errorf("%s: %s, want %s", ev.Recipient, got, want[ev.Recipient])
		}
		if ev.Source != SourceSync || ev.ID == "" || ev.Time.IsZero() {
			t.Errorf("event %+v: want source sync, an id and a time", ev)
		}
		if keys := ev.Stream + " " + ev.ReturnPath + " " + ev.MessageID; keys != wantKeys[ev.Recipient] {
			t.Errorf("%s: stream, return path, message id %q, want %q", ev.Recipient, keys, wantKeys[ev.Recipient])
		}
	}
	dl, err := e.js.OrderedConsumer(ctx, broker.StreamDeadLetter, jetstream.OrderedConsumerConfig{FilterSubjects: []string{broker.SubjectDeadLetterAttempts}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := dl.Next(jetstream.FetchMaxWait(15 * time.Second))
	if err != nil {
		t.Fatalf("no dead letter for the unreadable record: %v", err)
	}
	if string(msg.Data()) != records["delivery.attempts.bad"] {
		t.Errorf("dead letter %q", msg.Data())
	}
	if got := metric(t, p.reg, "bouncer_ingest_sync_records_skipped_total", nil); got != 1 {
		t.Errorf("skipped records = %v, want 1", got)
	}
	// A replay of the same records (a re-publish, a redelivery) writes the
	// same ids: nothing new.
	for subj, rec := range records {
		if subj == "delivery.attempts.bad" {
			continue
		}
		if _, err := e.js.Publish(ctx, subj, []byte(rec)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the replay to be skipped", func() bool {
		return metric(t, p.reg, "bouncer_ingest_sync_records_skipped_total", nil) == 2
	})
	time.Sleep(300 * time.Millisecond)
	if _, evs, _ := st.snapshot(); len(evs) != len(want) {
		t.Errorf("after a replay %d events are stored, want %d", len(evs), len(want))
	}
}
