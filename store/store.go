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
	event.Event
}

// EventID derives an event's id from its report and position, so a report
// processed twice yields the same ids.
func EventID(reportID string, index int) string {
	h := sha256.Sum256([]byte(reportID + "/" + strconv.Itoa(index)))
	return hex.EncodeToString(h[:16])
}

// Stats are counts over a time window.
type Stats struct {
	Since           time.Time
	ReportsReceived int64                 // raw reports durably accepted
	EventsByClass   map[event.Class]int64 // every class present, zero ones too
}

// Store is implemented by every engine. All methods are safe for
// concurrent use.
type Store interface {
	// Write stores reports and events in one transaction. Rows whose id is
	// already stored are left as they are, so a retry after a crash or a
	// redelivery writes nothing twice.
	Write(ctx context.Context, reports []Report, events []Event) error
	// RecipientEvents returns the newest events of one recipient address
	// (lower-cased), newest first, at most limit.
	RecipientEvents(ctx context.Context, address string, limit int) ([]Event, error)
	// Stats counts reports and events received since a time.
	Stats(ctx context.Context, since time.Time) (Stats, error)
	// Ping reports whether the store can take writes.
	Ping(ctx context.Context) error
	Close() error
}

// ErrClosed is returned by a Store used after Close.
var ErrClosed = errors.New("store: closed")
