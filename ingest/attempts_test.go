package ingest

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/rules"
	"github.com/bouncer-mail/bouncer/synclog"
)

// attemptRecords are sync reply logs of every result. The KumoMTA bounce
// has two recipients, both answered by Gmail's MX (the provider follows
// the MX as well as the domain): two attempts. The last is at no named
// provider.
var attemptRecords = []string{
	`{"id":"a-del","ts":"2026-11-25T10:00:00Z","recipient":"ok@gmail.com","mx":"gmail-smtp-in.l.google.com","reply_code":250,"status":"2.0.0","reply":"250 2.0.0 OK","smtp_command":"DATA","result":"delivered"}`,
	`{"id":"a-def","ts":"2026-11-25T10:00:00Z","recipient":"later@gmail.com","mx":"gmail-smtp-in.l.google.com","reply_code":451,"status":"4.7.1","reply":"451 4.7.1 Try again later","smtp_command":"RCPT","result":"deferred"}`,
	`{"id":"a-exp","ts":"2026-11-25T10:00:00Z","recipient":"never@gmail.com","mx":"gmail-smtp-in.l.google.com","reply_code":451,"status":"4.7.1","reply":"451 4.7.1 Try again later","smtp_command":"RCPT","result":"expired"}`,
	`{"type":"Bounce","id":"k-b","sender":"b+x@bounces.example.com","recipient":["gone@gmail.com","gone@hosted.example"],"queue":"gmail.com","response":{"code":550,"enhanced_code":{"class":5,"subject":1,"detail":1},"content":"The email account that you tried to reach does not exist.","command":"RCPT TO:<gone@gmail.com>\r\n"},"peer_address":{"name":"gmail-smtp-in.l.google.com.","addr":"192.0.2.5"},"timestamp":1795600000,"num_attempts":1}`,
	`{"id":"a-oth","ts":"2026-11-25T10:00:00Z","recipient":"gone@example.net","mx":"mx.example.net","reply_code":550,"status":"5.1.1","reply":"550 5.1.1 User unknown","smtp_command":"RCPT","result":"bounced"}`,
	`{"type":"Feedback","id":"k-f","sender":"b+y@bounces.example.com","recipient":"annoyed@gmail.com","queue":"gmail.com","response":{"code":200,"content":"","command":null},"timestamp":1795600000,"num_attempts":1}`,
	`{"type":"OOB","id":"k-o","sender":"b+z@bounces.example.com","recipient":"late@gmail.com","queue":"gmail.com","response":{"code":550,"enhanced_code":{"class":5,"subject":1,"detail":1},"content":"user unknown","command":null},"peer_address":{"name":"gmail-smtp-in.l.google.com.","addr":"192.0.2.5"},"timestamp":1795600000,"num_attempts":1}`,
}

// TestAttemptsCounted publishes sync records of each result and finds one
// bouncer_attempts_total count per stored recipient, by provider and
// result, only once the store has committed them.
func TestAttemptsCounted(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	st.setFailing(errors.New("disk I/O error"))
	p := e.run(st)
	ctx := context.Background()
	for _, rec := range attemptRecords {
		if _, err := e.js.Publish(ctx, "delivery.attempts.test", []byte(rec)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "failed writes", func() bool { _, _, failed := st.snapshot(); return failed >= 2 })
	if got := metric(t, p.reg, "bouncer_attempts_total", nil); got != 0 {
		t.Errorf("bouncer_attempts_total = %v while the store fails, want 0", got)
	}
	st.setFailing(nil)
	waitFor(t, "the attempts", func() bool { return metric(t, p.reg, "bouncer_attempts_total", nil) >= 8 })

	want := map[[2]string]float64{
		{"gmail", "delivered"}: 1,
		{"gmail", "deferred"}:  1,
		{"gmail", "expired"}:   1,
		{"gmail", "bounced"}:   2,
		{"other", "bounced"}:   1,
		{"gmail", "complaint"}: 1,
		{"gmail", "oob"}:       1,
	}
	checkAttempts(t, p.reg, want)
	if _, evs, _ := st.snapshot(); len(evs) != 8 {
		t.Errorf("%d events stored, want 8", len(evs))
	}

	// A replay (a re-publish, or a redelivery after a lost ack) is
	// written again, idempotently: the store keeps one event, and the
	// counter, which counts writes like bouncer_events_total, counts it
	// again. Documented in its help text.
	if _, err := e.js.Publish(ctx, "delivery.attempts.test", []byte(attemptRecords[0])); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replay", func() bool {
		return metric(t, p.reg, "bouncer_attempts_total", map[string]string{"provider": "gmail", "result": "delivered"}) == 2
	})
	want[[2]string{"gmail", "delivered"}] = 2
	checkAttempts(t, p.reg, want)
	if _, evs, _ := st.snapshot(); len(evs) != 8 {
		t.Errorf("after a replay %d events are stored, want 8", len(evs))
	}
}

// checkAttempts compares every pre-created bouncer_attempts_total series
// with want, zero when not in want.
func checkAttempts(t *testing.T, reg *prometheus.Registry, want map[[2]string]float64) {
	t.Helper()
	for _, pr := range append(append([]string(nil), event.Providers...), event.ProviderOther) {
		for _, r := range attemptResults {
			got := metric(t, reg, "bouncer_attempts_total", map[string]string{"provider": pr, "result": string(r)})
			if w := want[[2]string{pr, string(r)}]; got != w {
				t.Errorf("bouncer_attempts_total{provider=%q,result=%q} = %v, want %v", pr, r, got, w)
			}
		}
	}
}

// TestAttemptsPrecreated: a fresh pipeline has every provider × result
// series of bouncer_attempts_total at zero, and nothing else.
func TestAttemptsPrecreated(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(Config{
		JS: fakeJS{}, Store: newFaultStore(t), Classifier: classify.New(rules.MustDefault()),
		Logger: slog.New(slog.DiscardHandler), Registerer: reg,
	}); err != nil {
		t.Fatal(err)
	}
	checkAttempts(t, reg, nil)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "bouncer_attempts_total" {
			if n, want := len(mf.GetMetric()), (len(event.Providers)+1)*len(attemptResults); n != want {
				t.Errorf("bouncer_attempts_total has %d series, want %d", n, want)
			}
		}
	}
}

func TestAttemptResult(t *testing.T) {
	for _, tc := range []struct {
		in   synclog.Result
		want string
		ok   bool
	}{
		{synclog.ResultDelivered, "delivered", true},
		{synclog.ResultDeferred, "deferred", true},
		{synclog.ResultBounced, "bounced", true},
		{synclog.ResultExpired, "expired", true},
		{synclog.ResultComplaint, "complaint", true},
		{synclog.ResultBounceOOB, "oob", true},
		{"", "", false},
		{"Delivered", "", false},
		{"relayed", "", false},
	} {
		got, ok := attemptResult(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("attemptResult(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct {
		provider string
		want     attempt
	}{
		{"gmail", attempt{"gmail", "bounced"}},
		{"", attempt{"other", "bounced"}},
		{"some-isp.example", attempt{"other", "bounced"}},
	} {
		if got, ok := newAttempt(tc.provider, synclog.ResultBounced); !ok || got != tc.want {
			t.Errorf("newAttempt(%q, bounced) = %+v, %v; want %+v", tc.provider, got, ok, tc.want)
		}
	}
}
