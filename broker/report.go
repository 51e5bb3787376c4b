package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
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

// DefaultPublishAttemptTimeout bounds one attempt of a publish when
// Publisher.AttemptTimeout is zero.
const DefaultPublishAttemptTimeout = 4 * time.Second

// publishRetryWait spaces attempts that failed at once (no responders,
// disconnected).
const publishRetryWait = 100 * time.Millisecond

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

// Publisher publishes raw reports to the reports partitions
// (ReportStream). It implements the listener's smtpd.Publisher.
type Publisher struct {
	JS jetstream.JetStream
	// Partitions is how many reports partitions it spreads reports over
	// (EnsureReportPartitions must have created them); below 2, all go to
	// StreamReports.
	Partitions int
	// Timeout bounds one publish, ack included; DefaultPublishTimeout
	// when zero.
	Timeout time.Duration
	// AttemptTimeout bounds one attempt; a publish unanswered in that
	// time is sent again, with the same message id, until Timeout. A
	// request the server lost (it restarted, or its store failed) then
	// costs an attempt, not the whole Timeout. DefaultPublishAttemptTimeout
	// when zero.
	AttemptTimeout time.Duration
	// Health, when set, learns the outcome of every publish.
	Health *PublishHealth
}

// Publish stores raw in its reports partition (ReportPartition of env.ID)
// with env in HeaderEnvelope and env.ID as the JetStream message id, and
// returns nil only once JetStream acknowledged it (on disk, with
// SyncAlways). A resend of the same bytes within ReportsDuplicates goes to
// the same partition and is acknowledged as a duplicate, stored once;
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

	part := ReportPartition(env.ID, p.Partitions)
	stream := ReportStream(part)
	msg := &nats.Msg{Subject: ReportSubject(part), Data: raw, Header: nats.Header{}}
	msg.Header.Set(HeaderEnvelope, string(hdr))
	// A duplicate ack (PubAck.Duplicate) means the bytes are stored
	// already: success like any other ack.
	attempt := p.AttemptTimeout
	if attempt <= 0 {
		attempt = DefaultPublishAttemptTimeout
	}
	for {
		actx, acancel := context.WithTimeout(ctx, attempt)
		_, err = p.JS.PublishMsg(actx, msg, jetstream.WithMsgID(env.ID), jetstream.WithExpectStream(stream))
		acancel()
		if err == nil || !IsUnavailable(err) || ctx.Err() != nil {
			break
		}
		// Sent again with the same id: JetStream stores it once.
		select {
		case <-ctx.Done():
		case <-time.After(publishRetryWait):
		}
		if ctx.Err() != nil {
			break
		}
	}
	p.Health.record(err)
	if err != nil {
		if IsUnavailable(err) {
			return fmt.Errorf("broker: publishing report %s: %w: %w", env.ID, ErrUnavailable, err)
		}
		return fmt.Errorf("broker: publishing report %s: %w", env.ID, err)
	}
	return nil
}

// PublishHealth follows the outcome of publishes for a readiness probe:
// JetStream can fail in ways that leave the connection up and the server
// answering everything but the publish itself (a file store that keeps a
// write error times every publish out).
type PublishHealth struct {
	// Window is how long a failed publish keeps Err failing when no
	// publish follows; DefaultPublishHealthWindow when zero. Without a
	// bound a probe that takes the listener out of service would keep it
	// out: no publish would come to clear it.
	Window time.Duration

	mu    sync.Mutex
	err   error     // the latest publish's error; nil after a success
	since time.Time // first failure of the current run
	last  time.Time // latest failure
	fails int
}

// DefaultPublishHealthWindow is PublishHealth.Window when zero.
const DefaultPublishHealthWindow = time.Minute

func (h *PublishHealth) record(err error) {
	if h == nil {
		return
	}
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		h.err, h.fails = nil, 0
		return
	}
	if h.err == nil {
		h.since = now
	}
	h.err, h.last = err, now
	h.fails++
}

// Err returns an error naming the failure while the latest publish failed,
// for Window after it; nil otherwise.
func (h *PublishHealth) Err() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	window := h.Window
	if window <= 0 {
		window = DefaultPublishHealthWindow
	}
	if h.err == nil || time.Since(h.last) > window {
		return nil
	}
	return fmt.Errorf("broker: publishing reports failing since %s (%d attempts): %w",
		h.since.UTC().Format(time.RFC3339), h.fails, h.err)
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
