package dsn

import "errors"

// Limits applied by Parse and ParseBytes. They are read once at the start of
// each call; change them only before the package is used concurrently.
var (
	// MaxSize is the largest input, in bytes, that Parse reads. A larger
	// input fails with an error wrapping ErrTooLarge; at most MaxSize+1 bytes
	// are read from the reader.
	MaxSize int64 = 32 << 20

	// MaxDepth bounds MIME nesting: every multipart and message/* level
	// counts as one. Deeper entities are not read; an anomaly says so.
	MaxDepth = 16

	// MaxParts bounds the number of MIME entities visited in one message.
	// Entities beyond it are not read; an anomaly says so.
	MaxParts = 500

	// MaxText bounds Message.Text, in bytes. Longer text is cut on a rune
	// boundary and an anomaly says so.
	MaxText = 256 << 10

	// MaxHeaderBytes bounds one header block (the message's, a part's or the
	// returned original's). Fields beyond it are dropped with an anomaly.
	MaxHeaderBytes = 256 << 10

	// MaxOriginalHeaders bounds Original.Headers, in fields.
	MaxOriginalHeaders = 200

	// MaxRecipients bounds the recipients kept over all reports of a
	// message; the rest are dropped with an anomaly.
	MaxRecipients = 1000

	// MaxAnomalies bounds Message.Anomalies; the last entry says how many
	// more were dropped.
	MaxAnomalies = 64
)

// Errors returned by Parse and ParseBytes, possibly wrapped. Any other
// problem is recorded in Message.Anomalies and the message is still returned.
var (
	// ErrEmpty means the input held no bytes, or only white space.
	ErrEmpty = errors.New("empty message")
	// ErrTooLarge means the input is longer than MaxSize.
	ErrTooLarge = errors.New("message too large")
	// ErrNoHeader means the input does not start with a header field, so
	// it is not an email at all (binary garbage, a stray text file).
	ErrNoHeader = errors.New("no parsable header")
)
