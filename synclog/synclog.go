// Package synclog reads the sending MTA's synchronous delivery results, the
// "sync reply logs" of DESIGN.md, in the three formats bouncer accepts and
// tells apart by looking: bouncer's canonical JSON, KumoMTA's JSON log
// records, and Postfix's delivery log lines. Each record yields one Attempt
// per recipient; the classifier judges its reply like an NDR's.
package synclog

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Format names a sync log format.
type Format string

// The formats Parse detects.
const (
	FormatCanonical Format = "json"    // bouncer's canonical JSON
	FormatKumoMTA   Format = "kumomta" // a KumoMTA JSON log record
	FormatPostfix   Format = "postfix" // a Postfix smtp/lmtp/local/error delivery line
)

// Result is what the sending MTA did with a recipient.
type Result string

// The results of an Attempt.
const (
	ResultDelivered Result = "delivered" // accepted by the next hop (250)
	ResultDeferred  Result = "deferred"  // temporary failure, will retry
	ResultBounced   Result = "bounced"   // permanent failure, returned to sender
	ResultExpired   Result = "expired"   // given up after retrying
	ResultComplaint Result = "complaint" // a feedback report came back (KumoMTA Feedback)
	ResultBounceOOB Result = "oob"       // an out-of-band bounce the MTA itself parsed (KumoMTA OOB)
)

// Attempt is one recipient's result of one delivery attempt.
type Attempt struct {
	ID         string // stable: the record's own id and the recipient, or a hash of the record
	Time       time.Time
	Format     Format
	Result     Result
	MessageID  string // with angle brackets, "" when the record has none
	QueueID    string // the MTA's own message id (Postfix queue id, KumoMTA id)
	ReturnPath string // envelope sender as sent: the VERP return path when signing
	Sender     string
	Recipient  string // lower-cased
	MX         string // the host that answered
	ReplyCode  int
	Status     string // enhanced status, "5.1.1"
	Reply      string // the reply text
	Command    string // RCPT, DATA, MAIL, CONN, ... "" when unknown
	Attempt    int    // attempt number, 1 for the first; 0 when unknown
	Stream     string
	Campaign   string
}

// Limits of Parse.
const (
	MaxRecordBytes = 256 << 10 // a record longer than this is refused
	MaxRecipients  = 1000      // recipients fanned out of one record
)

// Errors of Parse. Every error wraps one of them.
var (
	ErrUnknownFormat = errors.New("synclog: not a known sync log format")
	ErrMalformed     = errors.New("synclog: malformed record")
	ErrTooLarge      = errors.New("synclog: record too large")
)

// Parse detects the format of one record (one NATS message) and reads it.
// A record that is neither JSON nor a Postfix delivery line is
// ErrUnknownFormat; one of a known format that lacks what an Attempt needs
// is ErrMalformed. Both mean: dead-letter it, do not drop it.
func Parse(b []byte) ([]Attempt, error) {
	if len(b) > MaxRecordBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), MaxRecordBytes)
	}
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return nil, fmt.Errorf("%w: empty record", ErrUnknownFormat)
	}
	if t[0] == '{' {
		return parseJSON(t)
	}
	if bytes.Contains(t, []byte("postfix")) || bytes.Contains(t, []byte(" status=")) {
		return parsePostfix(string(t))
	}
	return nil, fmt.Errorf("%w: starts with %q", ErrUnknownFormat, preview(t))
}

// recordID derives a stable id for an attempt of a record with no id of its
// own, so the same record read twice yields the same id.
func recordID(format Format, raw []byte, rcpt string) string {
	h := sha256.New()
	h.Write([]byte(format))
	h.Write([]byte{0})
	h.Write(raw)
	h.Write([]byte{0})
	h.Write([]byte(rcpt))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func preview(b []byte) string {
	if len(b) > 40 {
		b = b[:40]
	}
	return string(b)
}

func normAddr(a string) string {
	a = strings.TrimSpace(a)
	a = strings.TrimPrefix(a, "<")
	a = strings.TrimSuffix(a, ">")
	return strings.ToLower(a)
}

func angle(id string) string {
	id = strings.TrimSpace(id)
	if id == "" {
		return ""
	}
	return "<" + strings.Trim(id, "<>") + ">"
}
