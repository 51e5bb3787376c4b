package store

import (
	"fmt"
	"time"

	"github.com/bouncer-mail/bouncer/event"
)

// Outcome is one stored outcome (docs/outcomes.md): the fold of every
// event about one (stream, message, recipient), as outcome.Group gives it.
// State is an outcome.State; store does not import outcome, which is
// pure and above it.
type Outcome struct {
	// Key identifies the outcome among its recipient's: outcome.Grouped's
	// Key (stream, then message id, return path or first event id).
	Key       string
	Stream    string
	MessageID string
	Recipient string // lower-cased, as events
	State     string
	Class     event.Class
	Reason    event.Reason
	Scope     event.Scope
	Provider  string
	// Final is false while the MTA may still try (pending).
	Final        bool
	First, Last  time.Time
	Observations int
	// Version orders the folds of one key: a stored row is replaced only
	// by one of a higher Version. It is OutcomeVersion(Observations,
	// Last): a fold that saw more events wins, and among folds of as many
	// events the one whose latest event is later.
	Version uint64
}

// OutcomeVersion is an outcome's Version: observations in the high 32
// bits, its last event's Unix seconds (as uint32) in the low ones.
// Observations beyond 32 bits saturate; a fold that saw every event sees
// at least as many as any earlier fold, so the fold after the last commit
// has the highest version (docs/outcomes.md "Storing and counting").
func OutcomeVersion(observations int, last time.Time) uint64 {
	obs := uint64(0)
	if observations > 0 {
		obs = uint64(observations)
	}
	if obs > 1<<32-1 {
		obs = 1<<32 - 1
	}
	return obs<<32 | uint64(uint32(last.Unix()))
}

// ValidateOutcomes refuses outcomes no engine could store faithfully: an
// empty key or recipient, a zero first or last time, a class not in
// event.Classes.
func ValidateOutcomes(outcomes []Outcome) error {
	for i, o := range outcomes {
		switch {
		case o.Key == "":
			return fmt.Errorf("outcome %d: empty key", i)
		case o.Recipient == "":
			return fmt.Errorf("outcome %s: empty recipient", o.Key)
		case o.First.IsZero() || o.Last.IsZero():
			return fmt.Errorf("outcome %s: zero time", o.Key)
		case !KnownClass(o.Class):
			return fmt.Errorf("outcome %s: unknown class %q", o.Key, o.Class)
		}
	}
	return nil
}
