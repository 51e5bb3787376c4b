package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/outcome"
	"github.com/bouncer-mail/bouncer/store"
)

// TestRefoldOutcomes: a sync 250, then an NDR bounce sent to the same
// VERP return path, in two batches, leave one stored outcome of the
// recipient, bounced: each committed batch re-folds its recipients.
func TestRefoldOutcomes(t *testing.T) {
	e := newEnv(t)
	st := newFaultStore(t)
	p := e.run(st)
	ctx := context.Background()
	const rcpt = "user@example.org"

	sent := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	rec := fmt.Sprintf(`{"id":"s1","ts":%q,"recipient":%q,"reply_code":250,"status":"2.0.0","reply":"250 2.0.0 OK","smtp_command":"DATA","stream":"news","return_path":"<B+tok@bounces.example.com>"}`,
		sent.Format(time.RFC3339), rcpt)
	if _, err := e.js.Publish(ctx, "delivery.attempts.app", []byte(rec)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the delivered outcome", func() bool {
		outs, _ := st.RecipientOutcomes(ctx, rcpt)
		return len(outs) == 1 && outs[0].State == string(outcome.StateDelivered)
	})

	e.publish(dsnReport(rcpt, "r1"))
	defer func() {
		if t.Failed() {
			_, evs, _ := st.snapshot()
			outs, _ := st.RecipientOutcomes(ctx, rcpt)
			t.Logf("events %+v\noutcomes %+v", evs, outs)
		}
	}()
	// The fold's counters move after its outcomes are stored (the
	// correction last), so the store showing the bounce is not enough.
	waitFor(t, "the bounced outcome and its counts", func() bool {
		outs, _ := st.RecipientOutcomes(ctx, rcpt)
		corrected := metric(t, p.reg, "bouncer_outcome_corrections_total", map[string]string{"provider": "other", "class": "delivered"})
		return len(outs) == 1 && outs[0].State == string(outcome.StateBounced) && corrected == 1
	})
	outs, err := st.RecipientOutcomes(ctx, rcpt)
	if err != nil {
		t.Fatal(err)
	}
	o := outs[0]
	if o.Stream != "news" || o.Observations != 2 || !o.Final || o.Class != "hard" || !o.First.Equal(sent) {
		t.Errorf("outcome %+v: want stream news, 2 observations, final, hard, first %v", o, sent)
	}
	if got := metric(t, p.reg, "bouncer_ingest_refold_errors_total", nil); got != 0 {
		t.Errorf("refold errors = %v, want 0", got)
	}
	// Delivered first, then bounced: each final class is counted once,
	// and the delivery is taken back: net, one hard outcome.
	for class, want := range map[string]float64{"delivered": 1, "hard": 1, "soft": 0} {
		labels := map[string]string{"provider": "other", "class": class}
		if got := metric(t, p.reg, "bouncer_outcomes_total", labels); got != want {
			t.Errorf("bouncer_outcomes_total{class=%q} = %v, want %v", class, got, want)
		}
	}
	for class, want := range map[string]float64{"delivered": 1, "hard": 0} {
		labels := map[string]string{"provider": "other", "class": class}
		if got := metric(t, p.reg, "bouncer_outcome_corrections_total", labels); got != want {
			t.Errorf("bouncer_outcome_corrections_total{class=%q} = %v, want %v", class, got, want)
		}
	}
}

func TestOutcomeCounts(t *testing.T) {
	o := func(key string, final bool, class event.Class, version uint64) store.Outcome {
		return store.Outcome{Key: key, Final: final, Class: class, Version: version}
	}
	keys := func(outs []store.Outcome) string {
		var k []string
		for _, x := range outs {
			k = append(k, x.Key+"/"+string(x.Class))
		}
		return fmt.Sprint(k)
	}
	tests := []struct {
		name                  string
		before, after, merged []store.Outcome
		counted, corrected    string
	}{
		{"new final", nil, []store.Outcome{o("a", true, event.ClassDelivered, 1)}, nil, "[a/delivered]", "[]"},
		{"new pending", nil, []store.Outcome{o("a", false, event.ClassGreylist, 1)}, nil, "[]", "[]"},
		{"pending becomes final", []store.Outcome{o("a", false, event.ClassGreylist, 1)}, []store.Outcome{o("a", true, event.ClassGreylist, 2)}, nil, "[a/greylist]", "[]"},
		{"delivered then bounced", []store.Outcome{o("a", true, event.ClassDelivered, 1)}, []store.Outcome{o("a", true, event.ClassHard, 2)}, nil, "[a/hard]", "[a/delivered]"},
		{"same final class again", []store.Outcome{o("a", true, event.ClassHard, 1)}, []store.Outcome{o("a", true, event.ClassHard, 2)}, nil, "[]", "[]"},
		{"an older fold", []store.Outcome{o("a", true, event.ClassHard, 5)}, []store.Outcome{o("a", true, event.ClassDelivered, 2)}, nil, "[]", "[]"},
		{"the same fold again", []store.Outcome{o("a", true, event.ClassHard, 2)}, []store.Outcome{o("a", true, event.ClassHard, 2)}, nil, "[]", "[]"},
		{
			"a report alone, then merged into its message's group",
			[]store.Outcome{o("r", true, event.ClassHard, 1)},
			[]store.Outcome{o("s", true, event.ClassHard, 2)},
			[]store.Outcome{o("r", false, event.ClassHard, 3)},
			"[s/hard]", "[r/hard]",
		},
		{"a pending outcome merged", []store.Outcome{o("r", false, event.ClassSoft, 1)}, nil, []store.Outcome{o("r", false, event.ClassSoft, 2)}, "[]", "[]"},
	}
	for _, tt := range tests {
		counted, corrected := outcomeCounts(tt.before, tt.after, tt.merged)
		if got := keys(counted); got != tt.counted {
			t.Errorf("%s: counted %s, want %s", tt.name, got, tt.counted)
		}
		if got := keys(corrected); got != tt.corrected {
			t.Errorf("%s: corrected %s, want %s", tt.name, got, tt.corrected)
		}
	}
}

func TestSupersededOutcomes(t *testing.T) {
	at := func(h int) time.Time { return time.Date(2026, 11, 1, h, 0, 0, 0, time.UTC) }
	o := func(key string, state outcome.State, first time.Time) store.Outcome {
		return store.Outcome{Key: key, State: string(state), Final: state != outcome.StatePending, Observations: 1, First: first, Last: first, Version: store.OutcomeVersion(1, first)}
	}
	evs := []store.Event{{Time: at(9)}, {Time: at(5)}} // newest first, as RecipientEvents
	tests := []struct {
		name          string
		before, after []store.Outcome
		truncated     bool
		want          string
	}{
		{"every key produced again", []store.Outcome{o("a", outcome.StateBounced, at(6))}, []store.Outcome{o("a", outcome.StateBounced, at(6))}, false, "[]"},
		{"a key no longer produced", []store.Outcome{o("r", outcome.StateBounced, at(6))}, []store.Outcome{o("s", outcome.StateBounced, at(5))}, false, "[r]"},
		{"already merged", []store.Outcome{o("r", outcome.StateMerged, at(6))}, nil, false, "[]"},
		{"older than the events read", []store.Outcome{o("r", outcome.StateBounced, at(2))}, nil, true, "[]"},
		{"within the events read", []store.Outcome{o("r", outcome.StateBounced, at(6))}, nil, true, "[r]"},
	}
	for _, tt := range tests {
		got := supersededOutcomes(tt.before, tt.after, evs, tt.truncated)
		var k []string
		for _, m := range got {
			k = append(k, m.Key)
			if m.State != string(outcome.StateMerged) || m.Final {
				t.Errorf("%s: %s stored as %s final=%v, want merged, not final", tt.name, m.Key, m.State, m.Final)
			}
			if old := tt.before[0]; m.Version <= old.Version {
				t.Errorf("%s: version %d does not replace %d", tt.name, m.Version, old.Version)
			}
		}
		if fmt.Sprint(k) != tt.want {
			t.Errorf("%s: superseded %v, want %s", tt.name, k, tt.want)
		}
	}
}
