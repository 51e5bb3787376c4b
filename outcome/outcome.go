// Package outcome folds everything bouncer saw about one (stream, message,
// recipient), the sending MTA's synchronous replies and the asynchronous
// reports, into one outcome (DESIGN.md "Correlation and outcome"):
// accepted then bounced is a bounce, 4xx then 250 is a greylist resolved,
// and a bounce seen both in the sync log and as an NDR is one failure.
// Rates and suppressions count outcomes, never raw events. Group sorts
// one recipient's events into (stream, message) groups by their
// correlation keys and folds each. The package is pure and imports event
// only: the caller reads the events.
package outcome

import (
	"sort"
	"time"

	"github.com/bouncer-mail/bouncer/event"
)

// State is where a (message, recipient) stands.
type State string

// The states of an Outcome.
const (
	StatePending          State = "pending"           // only deferrals so far: the MTA is still trying
	StateDelivered        State = "delivered"         // accepted, nothing bad heard since
	StateGreylistResolved State = "greylist_resolved" // deferred by greylisting, then accepted
	StateBounced          State = "bounced"           // failed for good (sync 5xx, expiry or an NDR)
	StateComplained       State = "complained"        // the recipient reported it (ARF)
	StateAutoreplied      State = "autoreplied"       // only an auto-reply came back
	StateUnknown          State = "unknown"           // reports nobody could read
	// StateMerged is not a fold's: ingest stores it over an outcome whose
	// events a later fold put into another group (a report stored alone
	// before the sync log of its message arrived), so that it is counted
	// and suppressed only as part of that group.
	StateMerged State = "merged"
)

// Observation is one event about the (message, recipient): a sync reply or
// a report.
type Observation struct {
	Time     time.Time
	Source   string // "sync" or "ndr"
	Class    event.Class
	Reason   event.Reason
	Scope    event.Scope
	Provider string
	Action   string // DSN action: failed, delayed, delivered, ...
}

// Outcome is the one truth about a (message, recipient).
type Outcome struct {
	State State
	// Class is what rates count: hard or soft for a bounce, greylist for a
	// resolved or pending greylisting, delivered, complaint, autoreply.
	Class    event.Class
	Reason   event.Reason
	Scope    event.Scope
	Provider string
	// Final is false while the MTA may still try (pending); rates count
	// final outcomes only.
	Final        bool
	First, Last  time.Time
	Observations int
	// SyncAndNDR reports that the deciding failure was seen both in the
	// sync log and as an NDR (counted once).
	SyncAndNDR bool
}

// Fold returns the outcome of obs, which may come in any order. An empty
// obs has the zero Outcome.
func Fold(obs []Observation) Outcome {
	if len(obs) == 0 {
		return Outcome{}
	}
	sorted := append([]Observation(nil), obs...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Time.Before(sorted[j].Time) })
	o := Outcome{First: sorted[0].Time, Last: sorted[len(sorted)-1].Time, Observations: len(sorted)}

	var (
		failure, complaint, delivered, deferral, autoreply *Observation
		greylisted                                         bool
		failureSources                                     = map[string]bool{}
	)
	for i := range sorted {
		ob := &sorted[i]
		switch {
		case ob.Class == event.ClassComplaint:
			complaint = ob
		case ob.Class == event.ClassAutoreply:
			autoreply = ob
		case ob.Class == event.ClassDelivered:
			delivered = ob
		case ob.Class.IsFailure() && isPermanent(ob):
			// The most severe failure decides: a hard one over a soft one.
			if failure == nil || severity(ob.Class) >= severity(failure.Class) {
				failure = ob
			}
			failureSources[ob.Source] = true
		case ob.Class.IsFailure():
			deferral = ob
			if ob.Class == event.ClassGreylist {
				greylisted = true
			}
		}
	}
	set := func(s State, c event.Class, ob *Observation, final bool) Outcome {
		o.State, o.Class, o.Final = s, c, final
		if ob != nil {
			o.Reason, o.Scope, o.Provider = ob.Reason, ob.Scope, ob.Provider
		}
		return o
	}
	switch {
	case complaint != nil:
		return set(StateComplained, event.ClassComplaint, complaint, true)
	case failure != nil:
		// Accepted then bounced is a bounce, whatever came first.
		o.SyncAndNDR = failureSources["sync"] && failureSources["ndr"]
		return set(StateBounced, failure.Class, failure, true)
	case delivered != nil && greylisted:
		out := set(StateGreylistResolved, event.ClassGreylist, delivered, true)
		out.Reason = event.ReasonGreylisting
		return out
	case delivered != nil:
		return set(StateDelivered, event.ClassDelivered, delivered, true)
	case deferral != nil:
		return set(StatePending, deferral.Class, deferral, false)
	case autoreply != nil:
		return set(StateAutoreplied, event.ClassAutoreply, autoreply, true)
	}
	return set(StateUnknown, event.ClassUnknown, &sorted[len(sorted)-1], true)
}

// isPermanent reports whether a failure observation ends the delivery: a
// DSN or sync result that failed, as opposed to a delay. A greylisting
// answer is never permanent.
func isPermanent(ob *Observation) bool {
	if ob.Class == event.ClassGreylist {
		return false
	}
	return ob.Action == "failed" || ob.Action == ""
}

func severity(c event.Class) int {
	if c == event.ClassHard {
		return 2
	}
	return 1
}
