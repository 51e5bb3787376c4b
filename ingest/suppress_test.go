package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// syncRecord is a canonical sync log record of one attempt.
func syncRecord(id string, ts time.Time, rcpt, msgID, stream string, code int, status, reply string) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"ts":%q,"message_id":%q,"recipient":%q,"reply_code":%d,"status":%q,"reply":%q,"smtp_command":"RCPT","stream":%q}`,
		id, ts.Format(time.RFC3339), msgID, rcpt, code, status, reply, stream))
}

// TestResuppress drives the policy through ingest with sync records, the
// way a sending MTA's log arrives: every committed batch brings its
// recipients' suppressions in line with their outcomes.
func TestResuppress(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	p := e.run(st)
	ctx := context.Background()
	base := time.Now().UTC().Add(-48 * time.Hour).Truncate(time.Second)
	publish := func(rec []byte) {
		t.Helper()
		if _, err := e.js.Publish(ctx, "delivery.attempts.app", rec); err != nil {
			t.Fatal(err)
		}
	}
	suppressed := func(addr string) []store.Suppression {
		t.Helper()
		got, err := st.AddressSuppressions(ctx, addr, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	history := func(addr string) []store.SuppressionChange {
		t.Helper()
		got, err := st.SuppressionHistory(ctx, addr, 100)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	// A hard failure suppresses at once, globally.
	publish(syncRecord("h1", base, "gone@example.org", "<m1@x>", "news", 550, "5.1.1", "550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown"))
	waitFor(t, "the hard suppression", func() bool { return len(suppressed("gone@example.org")) == 1 })
	if s := suppressed("gone@example.org")[0]; s.Stream != "" || s.Source != store.SourcePolicy || s.Rule != "hard" || s.Reason != event.ReasonUserUnknown || !s.Since.Equal(base) || !s.Until.IsZero() {
		t.Errorf("hard suppression %+v: want global, policy, rule hard, userunknown, since %v, no end", s, base)
	}

	// Greylisting and a sender-scope block never suppress.
	publish(syncRecord("g1", base, "grey@example.org", "<m2@x>", "news", 450, "4.2.0", "450 4.2.0 <grey@example.org>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/"))
	publish(syncRecord("b1", base, "grey@example.org", "<m3@x>", "news", 554, "5.7.1", "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org"))

	// Two soft failures do not suppress; the third within the window does.
	full := "552 5.2.2 <full@example.org>: Mailbox full"
	for i := range 2 {
		publish(syncRecord(fmt.Sprintf("s%d", i), base.Add(time.Duration(i)*time.Hour), "full@example.org", fmt.Sprintf("<f%d@x>", i), "news", 552, "5.2.2", full))
	}
	waitFor(t, "the second soft outcome", func() bool {
		outs, _ := st.RecipientOutcomes(ctx, "full@example.org")
		return len(outs) == 2
	})
	if got := suppressed("full@example.org"); len(got) != 0 {
		t.Errorf("after two soft failures: %+v, want none", got)
	}
	publish(syncRecord("s2", base.Add(2*time.Hour), "full@example.org", "<f2@x>", "news", 552, "5.2.2", full))
	waitFor(t, "the soft suppression", func() bool { return len(suppressed("full@example.org")) == 1 })
	if s := suppressed("full@example.org")[0]; s.Rule != "soft" || !s.Since.Equal(base.Add(2*time.Hour)) || !s.Until.Equal(base.Add(2*time.Hour+30*24*time.Hour)) {
		t.Errorf("soft suppression %+v: want rule soft from the third failure for 30 days", s)
	}
	// A later delivery lifts it, and the history says so.
	publish(syncRecord("d1", base.Add(3*time.Hour), "full@example.org", "<f3@x>", "news", 250, "2.0.0", "250 2.0.0 Ok: queued as 4XYZ"))
	waitFor(t, "the lifted soft suppression", func() bool { return len(suppressed("full@example.org")) == 0 })
	if h := history("full@example.org"); len(h) != 2 || h[0].Action != store.ActionRemove || h[1].Action != store.ActionAdd {
		t.Errorf("history %+v: want the add, then the removal", h)
	}

	// A removal by hand sticks: the failure that caused it does not bring
	// it back when the recipient is re-folded; a new failure does.
	key := store.SuppressionKey{Address: "gone@example.org"}
	err := st.RemoveSuppression(ctx, key, store.SuppressionChange{Time: time.Now(), Address: key.Address, Action: store.ActionRemove, Source: store.SourceManual, Actor: "support", Note: "customer says the address works"})
	if err != nil {
		t.Fatal(err)
	}
	publish(syncRecord("h1b", base.Add(time.Minute), "gone@example.org", "<m4@x>", "news", 250, "2.0.0", "250 2.0.0 Ok")) // re-folds the recipient
	waitFor(t, "the delivery after the removal", func() bool {
		outs, _ := st.RecipientOutcomes(ctx, "gone@example.org")
		return len(outs) == 2
	})
	if got := suppressed("gone@example.org"); len(got) != 0 {
		t.Errorf("a removed suppression came back: %+v", got)
	}
	time.Sleep(1100 * time.Millisecond) // a failure in a later second than the removal
	publish(syncRecord("h2", time.Now().UTC().Truncate(time.Second), "gone@example.org", "<m5@x>", "news", 550, "5.1.1", "550 5.1.1 User unknown"))
	waitFor(t, "the suppression after a new failure", func() bool { return len(suppressed("gone@example.org")) == 1 })

	// A manual entry is not overwritten by the policy's decision.
	manual := store.Suppression{Address: "kept@example.org", Source: store.SourceManual, Since: base, Actor: "ops", Note: "asked to be left alone"}
	if err := st.PutSuppressions(ctx, []store.Suppression{manual}); err != nil {
		t.Fatal(err)
	}
	publish(syncRecord("k1", base.Add(time.Hour), "kept@example.org", "<k1@x>", "news", 550, "5.1.1", "550 5.1.1 User unknown"))
	waitFor(t, "the outcome of kept@", func() bool {
		outs, _ := st.RecipientOutcomes(ctx, "kept@example.org")
		return len(outs) == 1
	})
	if got := suppressed("kept@example.org"); len(got) != 1 || got[0].Source != store.SourceManual || got[0].Note != manual.Note {
		t.Errorf("manual entry after a hard failure: %+v, want it unchanged", got)
	}

	if got := suppressed("grey@example.org"); len(got) != 0 {
		t.Errorf("greylisting and a sender-scope block suppressed: %+v", got)
	}
	for name, want := range map[string]float64{"bouncer_ingest_suppress_errors_total": 0, "bouncer_suppressions_lifted_total": 1} {
		if got := metric(t, p.reg, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := metric(t, p.reg, "bouncer_suppressions_added_total", map[string]string{"rule": "hard"}); got != 2 {
		t.Errorf("hard suppressions added = %v, want 2", got)
	}
}
