package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bouncer-mail/bouncer/event"
)

// Where a suppression came from.
const (
	SourcePolicy = "policy" // suppress.Policy decided it from outcomes
	SourceManual = "manual" // added by hand (API PUT, web page)
	SourceImport = "import" // a CSV import
)

// Suppression is one address that must not be mailed on one stream, or on
// any stream when Stream is "" (the global scope).
//
// (Address, Stream) is its key: a stream holds at most one suppression of
// an address. Address is normalised by the caller (suppress.Normalization)
// and stored as given, lower-cased. Times are kept to the nanosecond and
// returned in UTC; an engine refuses those it cannot hold (both engines:
// before 1970 or after 2262).
type Suppression struct {
	Address string
	Stream  string
	Source  string       // SourcePolicy, SourceManual or SourceImport
	Class   event.Class  // the class that caused it; "" for manual entries without one
	Reason  event.Reason // likewise
	Rule    string       // the policy rule ("hard", "complaint", "soft"), "" when not the policy's
	Since   time.Time    // when it started
	Until   time.Time    // when it ends by itself; zero: never
	Actor   string       // who added it: a token's name, "policy", "import"
	Note    string       // why, in the actor's words
	// Updated orders the versions of one key: the row with the latest
	// Updated wins. The store sets it on every write to the write's time
	// (nanoseconds, and later than the key's stored version), so callers
	// leave it zero; reads return it.
	Updated time.Time
}

// InForce reports whether s suppresses mail at t.
func (s Suppression) InForce(t time.Time) bool {
	return !s.Since.After(t) && (s.Until.IsZero() || t.Before(s.Until))
}

// SuppressionChange is one line of an address's suppression audit trail:
// every add, import, removal and policy decision, never rewritten.
type SuppressionChange struct {
	Time    time.Time
	Address string
	Stream  string
	Action  string // ActionAdd or ActionRemove
	Source  string // SourcePolicy, SourceManual or SourceImport
	Actor   string
	Note    string
	// Class, Reason and Rule are the suppression's, for an add.
	Class  event.Class
	Reason event.Reason
	Rule   string
}

// Audit actions.
const (
	ActionAdd    = "add"
	ActionRemove = "remove"
)

// SuppressionQuery selects suppressions for a listing or an export.
type SuppressionQuery struct {
	// Stream limits the list to one stream's suppressions and the global
	// ones (which apply to it too); AllStreams lists every stream's.
	Stream     string
	AllStreams bool
	// Since keeps those whose Since is at or after it; zero keeps all.
	Since time.Time
	// Now: only suppressions in force at Now are listed. Required: a
	// zero Now is an error, not "nothing is in force".
	Now time.Time
	// After is the cursor: the key of the last row of the previous page;
	// zero starts at the beginning. Rows come in (Address, Stream) order.
	After SuppressionKey
	// Limit bounds the page, 1 or more. EachSuppression also takes 0:
	// every row.
	Limit int
}

// Validate refuses a query no engine should run: a Limit below 1, a zero
// Now, a Stream together with AllStreams.
func (q SuppressionQuery) Validate() error {
	switch {
	case q.Limit < 1:
		return fmt.Errorf("suppression query: limit %d, want at least 1", q.Limit)
	case q.Now.IsZero():
		return fmt.Errorf("suppression query: now: %w", ErrZeroTime)
	case q.AllStreams && q.Stream != "":
		return fmt.Errorf("suppression query: stream %q with AllStreams", q.Stream)
	}
	return nil
}

// ValidateEach is Validate for EachSuppression, where a Limit of 0
// means every row: it refuses a negative Limit, a zero Now, a Stream
// together with AllStreams.
func (q SuppressionQuery) ValidateEach() error {
	if q.Limit == 0 {
		q.Limit = 1
	}
	return q.Validate()
}

// SuppressionKey is a suppression's key, and a listing cursor.
type SuppressionKey struct {
	Address string
	Stream  string
}

// IsZero reports whether k is the zero key (the start of a listing).
func (k SuppressionKey) IsZero() bool { return k.Address == "" && k.Stream == "" }

// SuppressionStats counts the suppressions in force.
type SuppressionStats struct {
	Total    int64
	BySource map[string]int64      // every Source* key present, zero ones too
	ByClass  map[event.Class]int64 // "" counts those without a class
	ByStream map[string]int64      // "" is the global scope
}

// NewSuppressionStats returns empty SuppressionStats with every Source*
// key present at zero, for an engine to add its counts to.
func NewSuppressionStats() SuppressionStats {
	st := SuppressionStats{
		BySource: make(map[string]int64, len(SuppressionSources)),
		ByClass:  make(map[event.Class]int64),
		ByStream: make(map[string]int64),
	}
	for _, src := range SuppressionSources {
		st.BySource[src] = 0
	}
	return st
}

// ErrNotFound is returned when a suppression to remove is not in force.
var ErrNotFound = errors.New("store: not found")

// SuppressionStore is the suppression part of a Store
// (DESIGN.md "Suppression policy", "HTTP API").
type SuppressionStore interface {
	// PutSuppressions stores suppressions, each replacing whatever its key
	// held (in force or removed), and appends one ActionAdd change per row
	// to the audit trail, in one transaction. An add's Time is the row's
	// Updated. Empty is a no-op; a row that fails ValidateSuppressions
	// fails the whole call, nothing written.
	PutSuppressions(ctx context.Context, rows []Suppression) error
	// RemoveSuppression lifts the suppression of key in force at the
	// change's Time, and appends change (Action ActionRemove) to the audit
	// trail, in one transaction. When none is in force it returns
	// ErrNotFound and writes nothing. change.Address and change.Stream
	// must equal key's (ValidateChange).
	RemoveSuppression(ctx context.Context, key SuppressionKey, change SuppressionChange) error
	// AddressSuppressions returns the suppressions of one address in force
	// at now, on every stream, ordered by Stream (global first); address
	// is compared lower-cased, and a zero now is an error. None yields an
	// empty, non-nil slice. This is the check a sending
	// application makes before each send: engines answer it from their
	// key order, not a scan.
	AddressSuppressions(ctx context.Context, address string, now time.Time) ([]Suppression, error)
	// CheckSuppressions answers the check a sending application makes
	// before each send: what AddressSuppressions answers, except that an
	// engine may answer from memory (SuppressionFilter) that sees a
	// suppression written through another Store (another process) up
	// to MaxCheckStaleness after that write returned. Writes through
	// this Store show at once. Reads that must see every write (the
	// policy deciding, a change's before and after) use
	// AddressSuppressions.
	CheckSuppressions(ctx context.Context, address string, now time.Time) ([]Suppression, error)
	// Suppressions lists one page of suppressions in force, in key order
	// (see SuppressionQuery). Past the last row the slice is empty,
	// non-nil. A query that fails SuppressionQuery.Validate is an error.
	Suppressions(ctx context.Context, q SuppressionQuery) ([]Suppression, error)
	// EachSuppression calls fn with every suppression in force that q
	// selects, as Suppressions would page through them (Stream or
	// AllStreams, Since, Now, the rows after the cursor After), in key
	// order, but from one read of the store: one snapshot, rows handed to
	// fn as they arrive, so memory does not grow with the list and the
	// whole list costs one query (an export). q.Limit bounds the rows, 0
	// is every row. fn returning an error stops the read, and
	// EachSuppression returns that error as it is. A query that fails
	// SuppressionQuery.ValidateEach is an error, fn never called.
	EachSuppression(ctx context.Context, q SuppressionQuery, fn func(Suppression) error) error
	// SuppressionAddressesSince calls fn with the address of every key
	// whose Updated is at or after since, that is every key put or
	// removed since then: in force, ended or removed, on any stream. Each
	// such address comes at least once (it may come more than once), no
	// other comes, in no particular order; a zero since passes every
	// address stored. fn returning an error stops the read and is
	// returned as it is. (The ClickHouse check filter reads versions
	// instead, SuppressionFeed; bench/suppressions times this read.)
	SuppressionAddressesSince(ctx context.Context, since time.Time, fn func(address string) error) error
	// SuppressionHistory returns an address's audit trail, newest first,
	// at most limit (1 or more). None yields an empty, non-nil slice.
	SuppressionHistory(ctx context.Context, address string, limit int) ([]SuppressionChange, error)
	// LatestRemoval returns the time of the latest ActionRemove of an
	// address on any stream, zero when there is none: the policy counts
	// only outcomes after it, so a hand-removed suppression does not come
	// back from the failures that caused it.
	LatestRemoval(ctx context.Context, address string) (time.Time, error)
	// LatestRemovals is LatestRemoval for several addresses in one read:
	// an entry for every address asked for, keyed by the address
	// lower-cased, the zero time when it was never removed.
	LatestRemovals(ctx context.Context, addresses []string) (map[string]time.Time, error)
	// AddressesSuppressions is AddressSuppressions for several addresses
	// in one read: an entry for every address asked for, keyed by the
	// address lower-cased (an empty, non-nil slice when none is in
	// force).
	AddressesSuppressions(ctx context.Context, addresses []string, now time.Time) (map[string][]Suppression, error)
	// SuppressionStats counts the suppressions in force at now; a zero
	// now is an error.
	SuppressionStats(ctx context.Context, now time.Time) (SuppressionStats, error)
}

// SuppressionSources lists the Source* values.
var SuppressionSources = []string{SourcePolicy, SourceManual, SourceImport}

// MaxSuppressionField bounds the length of a suppression's text fields
// (address, stream, actor, note), so no client stores a megabyte note.
const MaxSuppressionField = 1024

// ValidateSuppressions refuses rows no engine should store: an empty or
// non-lower-case address, an unknown source, a class not in event.Classes
// (empty is allowed), a zero Since, an Until not after Since, text fields
// over MaxSuppressionField bytes or holding control characters.
func ValidateSuppressions(rows []Suppression) error {
	for i, s := range rows {
		if err := validateText("address", s.Address); err != nil {
			return fmt.Errorf("suppression %d: %w", i, err)
		}
		switch {
		case s.Address == "" || !strings.Contains(s.Address, "@"):
			return fmt.Errorf("suppression %d: address %q is not an address", i, s.Address)
		case s.Address != strings.ToLower(s.Address):
			return fmt.Errorf("suppression %d: address %q is not lower-cased", i, s.Address)
		case !knownSource(s.Source):
			return fmt.Errorf("suppression %s: unknown source %q", s.Address, s.Source)
		case s.Class != "" && !KnownClass(s.Class):
			return fmt.Errorf("suppression %s: unknown class %q", s.Address, s.Class)
		case s.Since.IsZero():
			return fmt.Errorf("suppression %s: since: %w", s.Address, ErrZeroTime)
		case !s.Until.IsZero() && !s.Until.After(s.Since):
			return fmt.Errorf("suppression %s: until %s is not after since %s", s.Address, s.Until, s.Since)
		}
		for _, f := range []struct{ name, v string }{{"stream", s.Stream}, {"actor", s.Actor}, {"note", s.Note}, {"rule", s.Rule}, {"reason", string(s.Reason)}} {
			if err := validateText(f.name, f.v); err != nil {
				return fmt.Errorf("suppression %s: %w", s.Address, err)
			}
		}
	}
	return nil
}

// ValidateChange refuses a removal no engine should store: one whose
// address or stream differs from key's, whose address is not a
// lower-cased address (as ValidateSuppressions wants them), with a zero
// Time, another Action than ActionRemove, an unknown source, text fields
// over MaxSuppressionField bytes or holding control characters.
func ValidateChange(key SuppressionKey, c SuppressionChange) error {
	switch {
	case c.Address != key.Address || c.Stream != key.Stream:
		return fmt.Errorf("suppression change for %q/%q does not match key %q/%q", c.Address, c.Stream, key.Address, key.Stream)
	case !strings.Contains(c.Address, "@"):
		return fmt.Errorf("suppression change: address %q is not an address", c.Address)
	case c.Address != strings.ToLower(c.Address):
		return fmt.Errorf("suppression change: address %q is not lower-cased", c.Address)
	case c.Time.IsZero():
		return fmt.Errorf("suppression change %s: time: %w", c.Address, ErrZeroTime)
	case c.Action != ActionRemove:
		return fmt.Errorf("suppression change %s: action %q: want %q", c.Address, c.Action, ActionRemove)
	case !knownSource(c.Source):
		return fmt.Errorf("suppression change %s: unknown source %q", c.Address, c.Source)
	}
	for _, f := range []struct{ name, v string }{{"address", c.Address}, {"stream", c.Stream}, {"actor", c.Actor}, {"note", c.Note}} {
		if err := validateText(f.name, f.v); err != nil {
			return fmt.Errorf("suppression change %s: %w", c.Address, err)
		}
	}
	return nil
}

func knownSource(s string) bool {
	for _, k := range SuppressionSources {
		if s == k {
			return true
		}
	}
	return false
}

func validateText(name, v string) error {
	if len(v) > MaxSuppressionField {
		return fmt.Errorf("%s is %d bytes, over %d", name, len(v), MaxSuppressionField)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s holds a control character", name)
		}
	}
	return nil
}
