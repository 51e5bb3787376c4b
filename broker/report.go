package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// HeaderEnvelope holds a report's event.Envelope as JSON.
const HeaderEnvelope = "Bouncer-Envelope"

// MaxEnvelopeBytes bounds the envelope header. The listener's limits (100
// recipients, 2 KiB command lines) keep a real envelope well below it.
const MaxEnvelopeBytes = 64 << 10

// DefaultPublishTimeout bounds a publish when Publisher.Timeout is zero.
const DefaultPublishTimeout = 10 * time.Second

// ErrUnavailable is wrapped by Publish errors that mean JetStream could not
// be reached or did not answer in time: no responders, timeouts, a closed
// or reconnecting connection. The report may be retried later.
var ErrUnavailable = errors.New("jetstream unavailable")

// ErrNoEnvelope is returned by DecodeReport for a message without the
// envelope header: it was not published by Publisher.
var ErrNoEnvelope = errors.New("no " + HeaderEnvelope + " header")

// IsUnavailable reports whether err means JetStream could not be reached or
// did not answer in time, as opposed to a refusal.
func IsUnavailable(err error) bool {
	return errors.Is(err, ErrUnavailable) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrConnectionDraining) ||
		errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}

// Publisher publishes raw reports to SubjectReports. It implements the
// listener's smtpd.Publisher.
type Publisher struct {
	JS jetstream.JetStream
	// Timeout bounds one publish, ack included; DefaultPublishTimeout
	// when zero.
	Timeout time.Duration
}

// Publish stores raw in StreamReports with env in HeaderEnvelope and env.ID
// as the JetStream message id, and returns nil only once JetStream
// acknowledged it (on disk, with SyncAlways). A resend of the same bytes
// within ReportsDuplicates is acknowledged as a duplicate and stored once;
// that is success too.
func (p *Publisher) Publish(ctx context.Context, env event.Envelope, raw []byte) error {
	if env.ID == "" {
		return errors.New("broker: publishing report: envelope has no id")
	}
	hdr, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("broker: publishing report %s: encoding envelope: %w", env.ID, err)
	}
	if len(hdr) > MaxEnvelopeBytes {
		return fmt.Errorf("broker: publishing report %s: envelope is %d bytes, over %d", env.ID, len(hdr), MaxEnvelopeBytes)
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultPublishTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	msg := &nats.Msg{Subject: SubjectReports, Data: raw, Header: nats.Header{}}
	msg.Header.Set(HeaderEnvelope, string(hdr))
	// A duplicate ack (PubAck.Duplicate) means the bytes are stored
	// already: success like any other ack.
	_, err = p.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(env.ID), jetstream.WithExpectStream(StreamReports))
	if err != nil {
		if IsUnavailable(err) {
			return fmt.Errorf("broker: publishing report %s: %w: %w", env.ID, ErrUnavailable, err)
		}
		return fmt.Errorf("broker: publishing report %s: %w", env.ID, err)
	}
	return nil
}

// DecodeReport is Publish's inverse: the envelope and raw report of a
// message from StreamReports. A message without the envelope header, with
// an envelope that does not decode, or whose bytes do not hash to the
// envelope's id is an error; ingest dead-letters it.
func DecodeReport(msg jetstream.Msg) (event.Envelope, []byte, error) {
	var env event.Envelope
	h := msg.Headers().Get(HeaderEnvelope)
	if h == "" {
		return env, nil, ErrNoEnvelope
	}
	if len(h) > MaxEnvelopeBytes {
		return env, nil, fmt.Errorf("broker: %s header is %d bytes, over %d", HeaderEnvelope, len(h), MaxEnvelopeBytes)
	}
	if err := json.Unmarshal([]byte(h), &env); err != nil {
		return env, nil, fmt.Errorf("broker: decoding %s header: %w", HeaderEnvelope, err)
	}
	raw := msg.Data()
	sum := sha256.Sum256(raw)
	if want := hex.EncodeToString(sum[:]); env.ID != want {
		return env, nil, fmt.Errorf("broker: envelope id %q is not the SHA-256 of the report (%s)", env.ID, want)
	}
	return env, raw, nil
}
