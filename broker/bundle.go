package broker

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/nats-io/nats.go/jetstream"
)

// HeaderBundle marks a message that holds several reports (a bundle); its
// value is their count. The Publisher bundles the reports that wait for
// the same partition while the one before them is being stored, so one
// fsync of the stream covers them all (group commit): with SyncAlways a
// stream stores one message at a time, each synced before the next.
//
// A bundle's data is its reports one after the other, each as
//
//	uvarint length of the envelope JSON, the envelope JSON,
//	uvarint length of the raw report,    the raw report
//
// and every envelope's ID is the SHA-256 of its raw report, as in
// HeaderEnvelope. A message without HeaderBundle is one report.
const HeaderBundle = "Bouncer-Bundle"

// MaxBundleReports bounds the reports of one bundle, and
// DefaultBundleBytes its data when Publisher.BundleBytes is zero: a
// bundle is written and synced whole before any of its senders gets its
// 250, so a bigger one would delay them all.
const (
	MaxBundleReports   = 256
	DefaultBundleBytes = 1 << 20
)

// BundledReport is one report of a bundle.
type BundledReport struct {
	Envelope event.Envelope
	Raw      []byte
}

// appendBundled appends one report, its envelope already JSON, to a
// bundle's data.
func appendBundled(b, env, raw []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(env)))
	b = append(b, env...)
	b = binary.AppendUvarint(b, uint64(len(raw)))
	return append(b, raw...)
}

// bundledSize is what appendBundled adds for an envelope and a report of
// these lengths.
func bundledSize(env, raw int) int {
	return uvarintLen(env) + env + uvarintLen(raw) + raw
}

func uvarintLen(n int) int {
	l := 1
	for n >= 0x80 {
		n >>= 7
		l++
	}
	return l
}

// ErrBadBundle is wrapped by DecodeBundle's errors.
var ErrBadBundle = errors.New("broker: bad bundle")

// DecodeBundle reads a bundle's data: exactly count reports, each with a
// valid envelope whose ID is the SHA-256 of its bytes. The raw reports
// share data's memory. Anything else, a truncated entry, bytes left over,
// a count out of range, is an error wrapping ErrBadBundle: nothing of it
// is returned, and ingest dead-letters the message whole.
func DecodeBundle(data []byte, count string) ([]BundledReport, error) {
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 || n > MaxBundleReports {
		return nil, fmt.Errorf("%w: %s %q is not a count from 1 to %d", ErrBadBundle, HeaderBundle, count, MaxBundleReports)
	}
	out := make([]BundledReport, 0, n)
	rest := data
	field := func(what string, limit int) ([]byte, error) {
		l, k := binary.Uvarint(rest)
		if k <= 0 {
			return nil, fmt.Errorf("%w: report %d of %d: %s length unreadable", ErrBadBundle, len(out)+1, n, what)
		}
		rest = rest[k:]
		if l > uint64(len(rest)) || l > uint64(limit) {
			return nil, fmt.Errorf("%w: report %d of %d: %s of %d bytes, %d left (at most %d)", ErrBadBundle, len(out)+1, n, what, l, len(rest), limit)
		}
		f := rest[:l:l]
		rest = rest[l:]
		return f, nil
	}
	for len(out) < n {
		envJSON, err := field("envelope", MaxEnvelopeBytes)
		if err != nil {
			return nil, err
		}
		raw, err := field("report", ReportsMaxMsgSize)
		if err != nil {
			return nil, err
		}
		var env event.Envelope
		if err := json.Unmarshal(envJSON, &env); err != nil {
			return nil, fmt.Errorf("%w: report %d of %d: envelope: %w", ErrBadBundle, len(out)+1, n, err)
		}
		sum := sha256.Sum256(raw)
		if want := hex.EncodeToString(sum[:]); env.ID != want {
			return nil, fmt.Errorf("%w: report %d of %d: envelope id %q is not the SHA-256 of the report (%s)", ErrBadBundle, len(out)+1, n, env.ID, want)
		}
		out = append(out, BundledReport{Envelope: env, Raw: raw})
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("%w: %d bytes after its %d reports", ErrBadBundle, len(rest), n)
	}
	return out, nil
}

// DecodeReports reads a message from a reports stream: the one report of
// a plain message (DecodeReport), or every report of a bundle
// (DecodeBundle).
func DecodeReports(msg jetstream.Msg) ([]BundledReport, error) {
	if count := msg.Headers().Get(HeaderBundle); count != "" {
		return DecodeBundle(msg.Data(), count)
	}
	env, raw, err := DecodeReport(msg)
	if err != nil {
		return nil, err
	}
	return []BundledReport{{Envelope: env, Raw: raw}}, nil
}
