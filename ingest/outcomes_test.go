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
	st := newMemStore()
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
	waitFor(t, "the bounced outcome", func() bool {
		outs, _ := st.RecipientOutcomes(ctx, rcpt)
		return len(outs) == 1 && outs[0].State == string(outcome.StateBounced)
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
	// Delivered first, then bounced: each final class is counted once.
	for class, want := range map[string]float64{"delivered": 1, "hard": 1, "soft": 0} {
		labels := map[string]string{"provider": "other", "class": class}
		if got := metric(t, p.reg, "bouncer_outcomes_total", labels); got != want {
			t.Errorf("bouncer_outcomes_total{class=%q} = %v, want %v", class, got, want)
		}
	}
}

func TestNewlyFinal(t *testing.T) {
	o := func(key string, final bool, class event.Class, version uint64) store.Outcome {
		return store.Outcome{Key: key, Final: final, Class: class, Version: version}
	}
	tests := []struct {
		name          string
		before, after []store.Outcome
		want          []string
	}{
		{"new final", nil, []store.Outcome{o("a", true, event.ClassDelivered, 1)}, []string{"a"}},
		{"new pending", nil, []store.Outcome{o("a", false, event.ClassGreylist, 1)}, nil},
		{"pending becomes final", []store.Outcome{o("a", false, event.ClassGreylist, 1)}, []store.Outcome{o("a", true, event.ClassGreylist, 2)}, []string{"a"}},
		{"delivered then bounced", []store.Outcome{o("a", true, event.ClassDelivered, 1)}, []store.Outcome{o("a", true, event.ClassHard, 2)}, []string{"a"}},
		{"same final class again", []store.Outcome{o("a", true, event.ClassHard, 1)}, []store.Outcome{o("a", true, event.ClassHard, 2)}, nil},
		{"an older fold", []store.Outcome{o("a", true, event.ClassHard, 5)}, []store.Outcome{o("a", true, event.ClassDelivered, 2)}, nil},
		{"the same fold again", []store.Outcome{o("a", true, event.ClassHard, 2)}, []store.Outcome{o("a", true, event.ClassHard, 2)}, nil},
	}
	for _, tt := range tests {
		var got []string
		for _, x := range newlyFinal(tt.before, tt.after) {
			got = append(got, x.Key)
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s: newlyFinal = %v, want %v", tt.name, got, tt.want)
		}
	}
}
