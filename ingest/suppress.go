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

// resuppress brings the policy's suppressions of the re-folded recipients
// in line with their outcomes (DESIGN.md "Suppression policy"): for each
// address (the recipients normalised by the policy; recipients of this
// call that normalise to one address are evaluated together) it
// evaluates Config.Policy over the final outcomes and
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
// an NDR counts once. current holds each recipient's outcomes as stored
// now. The reads and the puts are one store call each for every address;
// lifts, rare, one each. On an error it returns how many addresses may
// not be in line.
func (r *Refolder) resuppress(ctx context.Context, rcpts []string, current map[string][]store.Outcome, now time.Time, res *RefoldResult) (int, error) {
	byAddr := map[string][]store.Outcome{}
	var addrs []string
	for _, rcpt := range rcpts {
		outs := current[rcpt]
		addr := r.Policy.Normalize.Address(rcpt)
		// Only a failure or a complaint makes the policy suppress, and a
		// recipient with none never had a suppression from it to lift
		// (outcomes are kept, not expired): nothing to read or write.
		if addr == "" || !mayHaveSuppression(outs) {
			continue
		}
		if _, ok := byAddr[addr]; !ok {
			addrs = append(addrs, addr)
		}
		byAddr[addr] = append(byAddr[addr], outs...)
	}
	if len(addrs) == 0 {
		return 0, nil
	}
	removed, err := r.Store.LatestRemovals(ctx, addrs)
	if err != nil {
		return len(addrs), fmt.Errorf("reading removals: %w", err)
	}
	stored, err := r.Store.AddressesSuppressions(ctx, addrs, now)
	if err != nil {
		return len(addrs), fmt.Errorf("reading suppressions: %w", err)
	}
	type lift struct {
		addr string
		s    store.Suppression
	}
	var (
		put   []store.Suppression
		lifts []lift
	)
	for _, addr := range addrs {
		var in []suppress.Outcome
		for _, o := range byAddr[addr] {
			if !o.Final || !o.Last.After(removed[addr]) {
				continue
			}
			in = append(in, suppress.Outcome{Time: o.Last, Stream: o.Stream, Class: o.Class, Reason: o.Reason, Scope: o.Scope})
		}
		byStream := make(map[string]store.Suppression, len(stored[addr]))
		for _, s := range stored[addr] {
			byStream[s.Stream] = s
		}
		decided := map[string]bool{}
		for _, d := range strongest(r.Policy.Evaluate(in, now)) {
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
		for _, s := range stored[addr] {
			if s.Source == store.SourcePolicy && !decided[s.Stream] {
				lifts = append(lifts, lift{addr, s})
			}
		}
	}
	if err := r.Store.PutSuppressions(ctx, put); err != nil {
		return len(addrs), fmt.Errorf("writing %d suppressions: %w", len(put), err)
	}
	res.Suppressed = append(res.Suppressed, put...)
	failed := 0
	var firstErr error
	for _, l := range lifts {
		key := store.SuppressionKey{Address: l.addr, Stream: l.s.Stream}
		err := r.Store.RemoveSuppression(ctx, key, store.SuppressionChange{
			Time: now, Address: l.addr, Stream: l.s.Stream, Action: store.ActionRemove,
			Source: store.SourcePolicy, Actor: policyActor,
			Note: "lifted by the policy: a delivery after the failures that caused it",
		})
		if errors.Is(err, store.ErrNotFound) {
			continue // lifted meanwhile, by hand or by another worker
		}
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = fmt.Errorf("lifting the %q suppression of %s: %w", l.s.Stream, l.addr, err)
			}
			continue
		}
		res.Lifted = append(res.Lifted, l.s)
	}
	return failed, firstErr
}

// strongest keeps one decision per stream, as the store keeps one
// suppression per (address, stream): a hard failure, a complaint on the
// global scope and soft failures can all decide the global one. It keeps
// the one that lasts longest (no end outlasts any end), and of equal ones
// hard before complaint before soft. Putting them all would leave
// whichever came last, and every later fold would put the others again.
func strongest(ds []suppress.Decision) []suppress.Decision {
	rank := map[string]int{"hard": 0, "complaint": 1, "soft": 2}
	stronger := func(a, b suppress.Decision) bool {
		switch {
		case a.Until.IsZero() != b.Until.IsZero():
			return a.Until.IsZero()
		case !a.Until.Equal(b.Until):
			return a.Until.After(b.Until)
		}
		return rank[a.Rule] < rank[b.Rule]
	}
	var out []suppress.Decision
	at := map[string]int{}
	for _, d := range ds {
		i, ok := at[d.Stream]
		switch {
		case !ok:
			at[d.Stream] = len(out)
			out = append(out, d)
		case stronger(d, out[i]):
			out[i] = d
		}
	}
	return out
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
