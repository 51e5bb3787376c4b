// Package dsn parses Delivery Status Notifications: RFC 3464 delivery-status
// fields, RFC 6522 multipart/report containers in any nesting, RFC 6533
// internationalized reports (message/global-delivery-status), RFC 5965 ARF
// feedback reports, and the returned original message. It also hands the
// human-readable text of any bounce, DSN or not, to the rules engine.
//
// Parsing is lenient: a field that cannot be read becomes an Anomaly, it does
// not discard the report.
package dsn

import "strconv"

// Action is the per-recipient Action field, RFC 3464 section 2.3.3.
type Action string

// The actions of RFC 3464 section 2.3.3.
const (
	ActionNone      Action = ""
	ActionFailed    Action = "failed"
	ActionDelayed   Action = "delayed"
	ActionDelivered Action = "delivered"
	ActionRelayed   Action = "relayed"
	ActionExpanded  Action = "expanded"
)

// Status is an enhanced mail system status code, RFC 3463:
// class "." subject "." detail. The zero Status means "absent".
type Status struct {
	Class   int // 2, 4 or 5
	Subject int // 0..999
	Detail  int // 0..999
}

// IsZero reports whether s is absent.
func (s Status) IsZero() bool { return s.Class == 0 }

// String returns "5.1.1", or "" for the zero Status.
func (s Status) String() string {
	if s.IsZero() {
		return ""
	}
	return strconv.Itoa(s.Class) + "." + strconv.Itoa(s.Subject) + "." + strconv.Itoa(s.Detail)
}

// Field is one header-style field kept verbatim (unfolded).
type Field struct {
	Name  string
	Value string
}

// Recipient holds the per-recipient fields of RFC 3464 section 2.3.
type Recipient struct {
	OriginalRecipient  string // address only, as written
	FinalRecipient     string // address only, as written (no angle brackets, not lower-cased)
	FinalRecipientType string // address type, lower-cased: "rfc822", "utf-8"
	Action             Action
	Status             Status
	RawStatus          string // the Status field as written
	RemoteMTA          string // value without its "dns;" type
	DiagnosticType     string // "smtp", "x-postfix", ... lower-cased
	DiagnosticCode     string // unfolded, whitespace-collapsed, without the type
	LastAttemptDate    string
	FinalLogID         string
	WillRetryUntil     string
	Extra              []Field // X- and other unknown fields

	OriginalRecipientType string // address type of OriginalRecipient, lower-cased
}

// Report is one message/delivery-status (or message/global-delivery-status)
// part: the per-message fields of RFC 3464 section 2.2 and its recipients.
type Report struct {
	Global             bool   // message/global-delivery-status, RFC 6533
	OriginalEnvelopeID string // ENVID
	ReportingMTA       string // value without its "dns;" type
	DSNGateway         string
	ReceivedFromMTA    string
	ArrivalDate        string
	Extra              []Field
	Recipients         []Recipient
}

// Feedback holds the fields of a message/feedback-report part (ARF, RFC 5965).
type Feedback struct {
	FeedbackType     string // "abuse", "fraud", ... lower-cased
	UserAgent        string
	Version          string
	OriginalMailFrom string
	OriginalRcptTo   []string
	ArrivalDate      string
	SourceIP         string
	ReportedDomain   string
	ReportingMTA     string
	Extra            []Field
}

// Original describes the returned original message (message/rfc822,
// message/global, text/rfc822-headers, or a header block found inline in the
// text of a non-DSN bounce).
type Original struct {
	MessageID  string // without angle brackets
	From       string
	To         string
	Subject    string
	Date       string
	ReturnPath string
	EnvelopeID string  // from an X-Envelope-Id style header when present
	Headers    []Field // every header of the original, in order (bounded)
}

// Message is a parsed report-bearing email: its own headers, every DSN and
// ARF part found at any depth, its human-readable text and the returned
// original.
type Message struct {
	Header     []Field  // top-level header fields, unfolded, decoded (RFC 2047), in order
	ReportType string   // report-type parameter of the outermost multipart/report
	Reports    []Report // every delivery-status part, in document order
	Feedback   *Feedback
	// Text is the decoded human-readable text of the bounce, in document
	// order: text/plain parts (text/html with tags removed when a part has
	// no plain alternative), line endings normalised to "\n", bounded by
	// MaxText. It does not include the returned original's body.
	Text      string
	Original  *Original // nil when none was found
	Anomalies []string  // what could not be read, one line each
}

// Get returns the first top-level header field named name (case-insensitive),
// or "".
func (m *Message) Get(name string) string {
	for _, f := range m.Header {
		if equalFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
