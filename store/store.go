package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"time"

	"github.com/bouncer-mail/bouncer/event"
)

// Report is one raw message as the listener accepted it. Its ID is the
// envelope's: the hex SHA-256 of Raw.
type Report struct {
	event.Envelope
	Raw        []byte
	ParseError string // why the report could not be read, "" when it could
}

// Event is one event as stored: the classify contract plus where it came
// from.
type Event struct {
	ID       string    // deterministic: EventID(ReportID, Index)
	ReportID string    // the Report it was read from
	Index    int       // its position among the report's events
	Version  uint32    // classification version; reclassify writes a higher one
	Time     time.Time // when the report was received
	Source   string    // "ndr" for reports, "sync" for sync reply logs
	// Stream is the sending stream (tenant) of a sync event, "" for a
	// report: correlation (docs/outcomes.md) gives a report its stream.
	Stream string
	// ReturnPath is a correlation key: a sync event's envelope sender, or
	// the envelope recipient (the VERP address) a report was sent to; ""
	// when unknown.
	ReturnPath string
	event.Event
}

// EventID derives an event's id from its report and position, so a report
// processed twice yields the same ids.
func EventID(reportID string, index int) string {
	h := sha256.Sum256([]byte(reportID + "/" + strconv.Itoa(index)))
	return hex.EncodeToString(h[:16])
}

// FoldEvent is e with only the fields a re-fold of outcomes reads
// (ingest's Refolder, docs/outcomes.md), the others zero: what
// RecipientsEvents promises.
func FoldEvent(e Event) Event {
	return Event{
		ID: e.ID, Time: e.Time, Source: e.Source, Stream: e.Stream, ReturnPath: e.ReturnPath,
		Event: event.Event{
			Recipient: e.Recipient, Class: e.Class, Reason: e.Reason, Scope: e.Scope,
			Action: e.Action, Provider: e.Provider, MessageID: e.MessageID,
		},
	}
}

// Stats are counts over a time window.
type Stats struct {
	Since           time.Time
	ReportsReceived int64                 // raw reports durably accepted
	EventsByClass   map[event.Class]int64 // every class present, zero ones too
	// Events counts the same events by class, reason and provider (as
	// stored: a domain-derived name, "" when unknown); their sum per class
	// is EventsByClass.
	Events map[StatsKey]int64
}

// StatsKey is one group of Stats.Events.
type StatsKey struct {
	Class    event.Class
	Reason   event.Reason
	Provider string
}

// ResendWindow is how long after a report's first received time every
// engine still recognises the report received again (Store.Write).
// ClickHouse's default lookback is this.
const ResendWindow = 10 * time.Minute

// Store is implemented by every engine. All methods are safe for
// concurrent use.
type Store interface {
	// Write stores reports and events in one transaction. Rows whose id is
	// already stored are left as they are, so a retry after a crash or a
	// redelivery writes nothing twice. A report received again (the same
	// id under a later received time, with its events) is recognised at
	// least within ResendWindow of its first received time; an engine
	// may recognise it later too (store/sqlite always does, ClickHouse
	// within its ReportLookback).
	//
	// An event's id is unique per Version: a higher Version of an id
	// supersedes the lower ones in every read and count, whatever order
	// they were written in. The events of one report (ReportID != "")
	// are a set: every read and count takes, per report, only the
	// events of its highest Version, so a reclassification's set
	// replaces the old one whole, also when it has fewer events or other
	// recipients. Events without a report (sync events, ReportID "") are
	// superseded per id only. Recipients are stored lower-cased. Empty
	// slices are a no-op. A row with an empty id, a zero time or a Class
	// not in event.Classes fails the whole batch, nothing written. Times
	// are kept to the second at least (ClickHouse's DateTime); returned
	// times are UTC.
	Write(ctx context.Context, reports []Report, events []Event) error
	// RecipientEvents returns the newest events of one recipient address
	// (lower-cased), newest first, at most limit.
	//
	// Only the highest Version of each event id, and of each report's
	// set, is returned. An address
	// with no events yields an empty, non-nil slice; a limit below 1 is an
	// error.
	RecipientEvents(ctx context.Context, address string, limit int) ([]Event, error)
	// Stats counts reports and events received since a time.
	//
	// The window includes since. Each event id counts once, in the class
	// of its highest Version, and only when it is in its report's highest
	// set.
	Stats(ctx context.Context, since time.Time) (Stats, error)
	// Reports returns the raw reports received at or after since, in
	// (received, id) order, starting after the report whose id is after
	// ("" starts at the beginning), at most limit: keyset paging, so a
	// caller passes the last id of one page to get the next, and reports
	// written meanwhile are neither skipped nor repeated unless received
	// before the cursor. An after that names no stored report, or a limit
	// below 1, is an error; past the last report the slice is empty,
	// non-nil.
	Reports(ctx context.Context, since time.Time, after string, limit int) ([]Report, error)
	// WriteOutcomes stores folded outcomes (docs/outcomes.md). A row
	// replaces the stored outcome of its Key only when its Version is
	// higher, so rewriting one is a no-op and a fold that saw fewer
	// events, written late, does not undo a newer one. Recipients are
	// stored lower-cased. Empty slices are a no-op; a row with an empty
	// key or recipient, a zero time or an unknown class fails the whole
	// call, nothing written. Times are kept to the second at least.
	WriteOutcomes(ctx context.Context, outcomes []Outcome) error
	// RecipientOutcomes returns the stored outcomes of one recipient
	// address (compared lower-cased), the highest Version of each key,
	// newest Last first (ties by key). An address with none yields an
	// empty, non-nil slice.
	RecipientOutcomes(ctx context.Context, address string) ([]Outcome, error)
	// RecipientsEvents is RecipientEvents for several addresses in one
	// read (ingest re-folds a whole batch's recipients with it: one round
	// trip instead of one per recipient). The map has an entry for every
	// address asked for, keyed by the address lower-cased, holding what
	// RecipientEvents returns for it (an empty, non-nil slice when it has
	// none), of which only the fields FoldEvent keeps are promised: an
	// engine may leave the others zero. A limit below 1 is an error; no
	// addresses, an empty map.
	RecipientsEvents(ctx context.Context, addresses []string, limit int) (map[string][]Event, error)
	// RecipientsOutcomes is RecipientOutcomes for several addresses in
	// one read, keyed like RecipientsEvents.
	RecipientsOutcomes(ctx context.Context, addresses []string) (map[string][]Outcome, error)
	// Ping reports whether the store can take writes.
	Ping(ctx context.Context) error
	// Close releases the store after in-flight calls return. Every later
	// call returns ErrClosed, except Close, which returns nil.
	Close() error

	SuppressionStore
}

// ErrClosed is returned by a Store used after Close.
var ErrClosed = errors.New("store: closed")

// ErrBusy is returned by a read the engine refused at once rather than
// queue: every connection it may use for that read is taken. The caller
// may retry shortly; the API answers 503 with Retry-After.
var ErrBusy = errors.New("store: busy")
