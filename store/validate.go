package store

import (
	"errors"
	"fmt"

	"github.com/bouncer-mail/bouncer/event"
)

// ErrZeroTime is wrapped by Validate's error for a row without a time.
var ErrZeroTime = errors.New("zero time")

// Validate refuses a batch no engine could store faithfully: a report or
// event with an empty id or a zero time, an event whose Class is not in
// event.Classes. Every engine's Write calls it before it writes anything,
// so one bad row fails the whole batch; an engine adds the checks of its
// own column ranges (ClickHouse's DateTime, SQLite's int64 nanoseconds).
// Messages name the row but no engine: callers add their prefix.
func Validate(reports []Report, events []Event) error {
	for i, r := range reports {
		if r.ID == "" {
			return fmt.Errorf("report %d: empty id", i)
		}
		if r.Received.IsZero() {
			return fmt.Errorf("report %s: received: %w", r.ID, ErrZeroTime)
		}
	}
	for i, e := range events {
		if e.ID == "" {
			return fmt.Errorf("event %d: empty id", i)
		}
		if e.Time.IsZero() {
			return fmt.Errorf("event %s: time: %w", e.ID, ErrZeroTime)
		}
		if !KnownClass(e.Class) {
			return fmt.Errorf("event %s: unknown class %q", e.ID, e.Class)
		}
	}
	return nil
}

// KnownClass reports whether c is one of event.Classes.
func KnownClass(c event.Class) bool {
	for _, k := range event.Classes {
		if c == k {
			return true
		}
	}
	return false
}
