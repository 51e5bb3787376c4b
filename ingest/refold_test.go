package ingest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/sqlite"
	"github.com/bouncer-mail/bouncer/suppress"
)

// refoldMix writes to st the same pseudo-random events for n recipients
// each time: 1 to 6 sync and NDR events per recipient over a few days, of
// every class, some sharing a message id (accepted, then bounced), and
// returns the recipients.
func refoldMix(t *testing.T, st store.Store, n int, base time.Time) []string {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, uint64(n)))
	classes := []struct {
		class  event.Class
		reason event.Reason
		scope  event.Scope
		action string
	}{
		{event.ClassHard, event.ReasonUserUnknown, event.ScopeRecipient, "failed"},
		{event.ClassSoft, event.ReasonMailboxFull, event.ScopeRecipient, "failed"},
		{event.ClassSoft, event.ReasonMailboxFull, event.ScopeRecipient, "failed"},
		{event.ClassSoft, event.ReasonBlocked, event.ScopeSender, "failed"},
		{event.ClassGreylist, event.ReasonGreylisting, event.ScopeRecipient, "delayed"},
		{event.ClassDelivered, event.ReasonDelivered, "", "delivered"},
		{event.ClassDelivered, event.ReasonDelivered, "", "delivered"},
		{event.ClassComplaint, event.ReasonFeedback, "", ""},
	}
	var (
		rcpts   []string
		reports []store.Report
		events  []store.Event
	)
	for r := range n {
		rcpt := fmt.Sprintf("user%d+tag%d@example.org", r/2, r%2) // pairs normalise to one address with plus tags
		rcpts = append(rcpts, rcpt)
		for i := range 1 + rng.IntN(6) {
			c := classes[rng.IntN(len(classes))]
			at := base.Add(time.Duration(rng.IntN(96)) * time.Hour)
			msgID := fmt.Sprintf("<m%d.%d@example.com>", r, rng.IntN(3))
			ev := store.Event{
				Version: ClassificationVersion, Time: at, Stream: []string{"news", "billing"}[rng.IntN(2)],
				Event: event.Event{Recipient: rcpt, Class: c.class, Reason: c.reason, Scope: c.scope,
					Action: c.action, MessageID: msgID, Provider: "example"},
			}
			if rng.IntN(2) == 0 {
				ev.ID, ev.Source = store.EventID(fmt.Sprintf("sync:%d.%d", r, i), 0), SourceSync
			} else {
				rep := store.Report{Envelope: event.Envelope{ID: fmt.Sprintf("rep-%d-%d", r, i), Received: at,
					Recipients: []string{"b@bounces.example.com"}}, Raw: []byte("x")}
				reports = append(reports, rep)
				ev.ID, ev.ReportID, ev.Source, ev.Stream = store.EventID(rep.ID, 0), rep.ID, SourceNDR, ""
			}
			events = append(events, ev)
		}
	}
	if err := st.Write(context.Background(), reports, events); err != nil {
		t.Fatal(err)
	}
	return rcpts
}

// TestRecipientsEqualsOneByOne: re-folding a batch of recipients together
// stores the same outcomes and suppressions, and reports the same changes,
// as re-folding them one at a time, with the default policy and with
// plus tags on (two recipients of one address evaluated together), over
// two rounds (the second re-folds what the first stored, after a removal
// by hand).
func TestRecipientsEqualsOneByOne(t *testing.T) {
	base := time.Now().UTC().Add(-5 * 24 * time.Hour).Truncate(time.Second)
	now := base.Add(5 * 24 * time.Hour)
	plus := suppress.Default
	plus.Normalize.PlusTags = true
	for name, policy := range map[string]suppress.Policy{"default": suppress.Default, "plus tags": plus} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			open := func() store.Store {
				st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "bouncer.db"), sqlite.Options{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				return st
			}
			batch, single := open(), open()
			const n = 300
			rcpts := refoldMix(t, batch, n, base)
			refoldMix(t, single, n, base)
			fixed := func() time.Time { return now }
			rb := &Refolder{Store: batch, Policy: policy, Now: fixed}
			rs := &Refolder{Store: single, Policy: policy, Now: fixed}

			for round := range 2 {
				got, err := rb.Recipients(ctx, rcpts)
				if err != nil {
					t.Fatalf("round %d: Recipients: %v", round, err)
				}
				var want RefoldResult
				for _, rc := range rcpts {
					res, err := rs.Recipient(ctx, rc)
					if err != nil {
						t.Fatalf("round %d: Recipient(%s): %v", round, rc, err)
					}
					want.Counted = append(want.Counted, res.Counted...)
					want.Corrected = append(want.Corrected, res.Corrected...)
					want.Suppressed = append(want.Suppressed, res.Suppressed...)
					want.Lifted = append(want.Lifted, res.Lifted...)
				}
				if round == 0 && (len(got.Counted) == 0 || len(got.Suppressed) == 0) {
					t.Fatalf("round 0 counted %d outcomes and suppressed %d: the mix tests nothing", len(got.Counted), len(got.Suppressed))
				}
				for what, pair := range map[string][2]int{
					"counted": {len(got.Counted), len(want.Counted)}, "corrected": {len(got.Corrected), len(want.Corrected)},
					"lifted": {len(got.Lifted), len(want.Lifted)},
				} {
					if what == "lifted" && name != "default" {
						// One by one, the fold of one recipient of an address
						// lifts what the other's put; together it cannot.
						continue
					}
					if pair[0] != pair[1] {
						t.Errorf("round %d: %s %d together, %d one by one", round, what, pair[0], pair[1])
					}
				}
				// One by one, a pair of recipients of one address may put
				// the same decision twice (the second a no-op write);
				// together it is put once. Compare the distinct keys.
				if g, w := suppressionKeys(got.Suppressed), suppressionKeys(want.Suppressed); !reflect.DeepEqual(g, w) && name == "default" {
					t.Errorf("round %d: suppressed %v together, %v one by one", round, g, w)
				}
				for _, rc := range rcpts {
					ob, err := batch.RecipientOutcomes(ctx, rc)
					if err != nil {
						t.Fatal(err)
					}
					os, err := single.RecipientOutcomes(ctx, rc)
					if err != nil {
						t.Fatal(err)
					}
					if !reflect.DeepEqual(ob, os) {
						t.Errorf("round %d: outcomes of %s differ:\ntogether   %+v\none by one %+v", round, rc, ob, os)
					}
					addr := policy.Normalize.Address(rc)
					sb, err := batch.AddressSuppressions(ctx, addr, now)
					if err != nil {
						t.Fatal(err)
					}
					ss, err := single.AddressSuppressions(ctx, addr, now)
					if err != nil {
						t.Fatal(err)
					}
					if name == "default" && !sameSuppressions(sb, ss) {
						t.Errorf("round %d: suppressions of %s differ:\ntogether   %+v\none by one %+v", round, addr, sb, ss)
					}
					if name == "plus tags" {
						// Together, an address is suppressed when either of its
						// recipients' outcomes says so: never less than one by
						// one, where the later recipient's fold may lift what the
						// earlier put.
						checkCovers(t, round, addr, sb, ss)
					}
				}
				// Between the rounds, remove a few suppressions by hand in
				// both stores: the next fold must not bring them back.
				if round == 0 {
					for _, s := range got.Suppressed[:min(5, len(got.Suppressed))] {
						for _, st := range []store.Store{batch, single} {
							key := store.SuppressionKey{Address: s.Address, Stream: s.Stream}
							err := st.RemoveSuppression(ctx, key, store.SuppressionChange{Time: now.Add(-time.Second), Address: s.Address,
								Stream: s.Stream, Action: store.ActionRemove, Source: store.SourceManual, Actor: "ops", Note: "test"})
							if err != nil && name == "default" {
								t.Fatalf("RemoveSuppression(%s/%s): %v", s.Address, s.Stream, err)
							}
						}
					}
				}
			}
		})
	}
}

func suppressionKeys(rows []store.Suppression) []string {
	var out []string
	for _, s := range rows {
		out = append(out, s.Address+"/"+s.Stream+"/"+s.Rule)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// sameSuppressions compares what a policy decides (not the store's
// bookkeeping of when a row was written).
func sameSuppressions(a, b []store.Suppression) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Address != y.Address || x.Stream != y.Stream || x.Source != y.Source || x.Class != y.Class ||
			x.Reason != y.Reason || x.Rule != y.Rule || !x.Since.Equal(y.Since) || !x.Until.Equal(y.Until) {
			return false
		}
	}
	return true
}

// checkCovers: every stream suppressed one by one is suppressed together
// too (which rule decided it may differ: one by one, the fold of one
// recipient of the address replaces what the other's put).
func checkCovers(t *testing.T, round int, addr string, together, oneByOne []store.Suppression) {
	t.Helper()
	have := map[string]bool{}
	for _, s := range together {
		have[s.Stream] = true
	}
	for _, s := range oneByOne {
		if !have[s.Stream] {
			t.Errorf("round %d: %s: stream %q suppressed one by one (%s), not together", round, addr, s.Stream, s.Rule)
		}
	}
}

func TestStrongest(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	hard := suppress.Decision{Stream: "", Rule: "hard", Since: t0}
	hard90 := suppress.Decision{Stream: "", Rule: "hard", Since: t0, Until: t0.Add(90 * 24 * time.Hour)}
	complaint := suppress.Decision{Stream: "", Rule: "complaint", Since: t0.Add(time.Hour)}
	soft := suppress.Decision{Stream: "", Rule: "soft", Since: t0, Until: t0.Add(30 * 24 * time.Hour)}
	newsComplaint := suppress.Decision{Stream: "news", Rule: "complaint", Since: t0}
	for _, tt := range []struct {
		name string
		in   []suppress.Decision
		want []suppress.Decision
	}{
		{"none", nil, nil},
		{"one", []suppress.Decision{soft}, []suppress.Decision{soft}},
		{"forever beats an end", []suppress.Decision{soft, complaint}, []suppress.Decision{complaint}},
		{"hard before complaint, both forever", []suppress.Decision{complaint, hard}, []suppress.Decision{hard}},
		{"later end wins", []suppress.Decision{soft, hard90}, []suppress.Decision{hard90}},
		{"complaint forever beats hard for 90 days", []suppress.Decision{hard90, complaint, soft}, []suppress.Decision{complaint}},
		{"streams apart", []suppress.Decision{hard, newsComplaint, soft}, []suppress.Decision{hard, newsComplaint}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := strongest(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("strongest = %+v, want %+v", got, tt.want)
			}
		})
	}
}
