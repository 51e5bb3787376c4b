package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/suppress"
)

// Who the policy's suppressions are by, in the audit trail.
const policyActor = "policy"

// resuppress brings the policy's suppressions of one recipient in line with
// its outcomes (DESIGN.md "Suppression policy"): it evaluates Config.Policy
// over the recipient's final outcomes and
//
//   - puts each decision not stored yet, or stored with another rule or
//     span (a soft suppression renewed by a later failure);
//   - lifts the policy's stored suppressions the policy no longer decides
//     (a delivery after soft failures);
//   - never touches a manual or imported suppression of the same key:
//     a person's decision outranks the policy's, both ways;
//   - counts only outcomes after the address's latest removal, so a
//     suppression removed by hand does not come back from the failures
//     that caused it; a new failure after the removal counts again.
//
// Outcomes are one per message, so a failure seen in the sync log and as
// an NDR counts once.
func (r *Refolder) resuppress(ctx context.Context, rcpt string, outcomes []store.Outcome, now time.Time, res *RefoldResult) error {
	addr := r.Policy.Normalize.Address(rcpt)
	if addr == "" {
		return nil // not an address: nothing can be suppressed
	}
	removed, err := r.Store.LatestRemoval(ctx, addr)
	if err != nil {
		return fmt.Errorf("reading removals: %w", err)
	}
	var in []suppress.Outcome
	for _, o := range outcomes {
		if !o.Final || !o.Last.After(removed) {
			continue
		}
		in = append(in, suppress.Outcome{Time: o.Last, Stream: o.Stream, Class: o.Class, Reason: o.Reason, Scope: o.Scope})
	}
	want := r.Policy.Evaluate(in, now)
	if len(want) == 0 && !mayHaveSuppression(outcomes) {
		return nil // nothing to put, and nothing the policy could have put to lift
	}
	stored, err := r.Store.AddressSuppressions(ctx, addr, now)
	if err != nil {
		return fmt.Errorf("reading suppressions: %w", err)
	}
	byStream := make(map[string]store.Suppression, len(stored))
	for _, s := range stored {
		byStream[s.Stream] = s
	}
	var put []store.Suppression
	decided := map[string]bool{}
	for _, d := range want {
		decided[d.Stream] = true
		old, ok := byStream[d.Stream]
		if ok && old.Source != store.SourcePolicy {
			continue // a person's entry stands
		}
		if ok && old.Rule == d.Rule && old.Since.Equal(d.Since) && old.Until.Equal(d.Until) {
			continue // stored as decided
		}
		put = append(put, store.Suppression{
			Address: addr, Stream: d.Stream, Source: store.SourcePolicy,
			Class: d.Class, Reason: d.Reason, Rule: d.Rule, Since: d.Since, Until: d.Until,
			Actor: policyActor, Note: policyNote(d, r.Policy),
		})
	}
	if err := r.Store.PutSuppressions(ctx, put); err != nil {
		return fmt.Errorf("writing %d suppressions: %w", len(put), err)
	}
	res.Suppressed = append(res.Suppressed, put...)
	for _, s := range stored {
		if s.Source != store.SourcePolicy || decided[s.Stream] {
			continue
		}
		key := store.SuppressionKey{Address: addr, Stream: s.Stream}
		err := r.Store.RemoveSuppression(ctx, key, store.SuppressionChange{
			Time: now, Address: addr, Stream: s.Stream, Action: store.ActionRemove,
			Source: store.SourcePolicy, Actor: policyActor,
			Note: "lifted by the policy: a delivery after the failures that caused it",
		})
		if errors.Is(err, store.ErrNotFound) {
			continue // lifted meanwhile, by hand or by another worker
		}
		if err != nil {
			return fmt.Errorf("lifting the %q suppression: %w", s.Stream, err)
		}
		res.Lifted = append(res.Lifted, s)
	}
	return nil
}

// mayHaveSuppression reports whether the policy can have suppressed a
// recipient with these outcomes: only then must resuppress read the stored
// suppressions to lift one. A recipient with nothing but deliveries and
// greylisting never had one from the policy, or it would have a failure
// outcome too (outcomes are kept, not expired).
func mayHaveSuppression(outcomes []store.Outcome) bool {
	for _, o := range outcomes {
		switch o.Class {
		case event.ClassHard, event.ClassSoft, event.ClassComplaint:
			return true
		}
	}
	return false
}

// policyNote says why the policy suppressed, for the audit trail.
func policyNote(d suppress.Decision, p suppress.Policy) string {
	switch d.Rule {
	case "hard":
		return fmt.Sprintf("hard %s failure", d.Reason)
	case "complaint":
		return "complaint (feedback report)"
	case "soft":
		return fmt.Sprintf("%d soft failures within %s, the last %s", p.SoftCount, time.Duration(p.SoftWindow), d.Reason)
	}
	return d.Rule
}
