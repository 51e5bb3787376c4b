package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
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
	// BundleBytes bounds the data of a bundle (HeaderBundle);
	// DefaultBundleBytes when zero. Below zero every report is published
	// alone.
	BundleBytes int
	// Sizes, when set, observes the reports of every message published:
	// 1 for a report alone, the count of a bundle.
	Sizes prometheus.Observer

	mu     sync.Mutex
	queues map[int]chan *pendingReport // by partition, each with its publisher
	quit   chan struct{}               // closed by Close
	wg     sync.WaitGroup
}

// Publish stores raw in its reports partition (ReportPartition of env.ID)
// with env in HeaderEnvelope and env.ID as the JetStream message id, and
// returns nil only once JetStream acknowledged it (on disk, with
// SyncAlways). A resend of the same bytes within ReportsDuplicates goes to
// the same partition and is acknowledged as a duplicate, stored once;
// that is success too.
//
// Reports that wait for their partition while the message before them is
// being stored go together, as one bundle (HeaderBundle), which the
// stream stores and syncs at once: under load a partition's fsync is
// shared by every report that came while the one before it ran. A report
// that finds its partition idle goes alone, as above. JetStream's
// duplicate window does not see the reports of a bundle one by one: the
// store's idempotent Write stores a resent report once (as it does after
// the window, ReportsDuplicates).
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
	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	part := ReportPartition(env.ID, p.Partitions)
	if p.BundleBytes < 0 {
		return p.publish(ctx, part, []*pendingReport{{env: env, hdr: hdr, raw: raw}})
	}
	q, err := p.queue(part)
	if err != nil {
		return fmt.Errorf("broker: publishing report %s: %w", env.ID, err)
	}
	w := &pendingReport{ctx: ctx, env: env, hdr: hdr, raw: raw, done: make(chan error, 1)}
	select {
	case q <- w:
	case <-ctx.Done():
		return fmt.Errorf("broker: publishing report %s: %w: waiting for its partition: %w", env.ID, ErrUnavailable, ctx.Err())
	case <-p.quit:
		return fmt.Errorf("broker: publishing report %s: %w", env.ID, ErrPublisherClosed)
	}
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		err := fmt.Errorf("broker: publishing report %s: %w: %w", env.ID, ErrUnavailable, ctx.Err())
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// Not stored in time, whatever the publish in flight does
			// later: a failure for /readyz as well.
			p.Health.record(err)
		}
		return err
	}
}

// ErrPublisherClosed is returned by Publish after Close.
var ErrPublisherClosed = errors.New("publisher closed")

// pendingReport is one Publish waiting for its partition's publisher.
type pendingReport struct {
	ctx  context.Context // the caller's; a report it gave up on is not sent
	env  event.Envelope
	hdr  []byte // env as JSON
	raw  []byte
	done chan error
}

func (p *Publisher) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return DefaultPublishTimeout
}

// queue returns the queue of a partition, starting its publisher on
// first use.
func (p *Publisher) queue(part int) (chan<- *pendingReport, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.quit == nil {
		p.quit = make(chan struct{})
	}
	select {
	case <-p.quit:
		return nil, ErrPublisherClosed
	default:
	}
	if p.queues == nil {
		p.queues = map[int]chan *pendingReport{}
	}
	q, ok := p.queues[part]
	if !ok {
		q = make(chan *pendingReport, MaxBundleReports)
		p.queues[part] = q
		quit := p.quit
		p.wg.Go(func() { p.run(part, q, quit) })
	}
	return q, nil
}

// Close stops the partitions' publishers once the reports they hold are
// published; a Publish after it fails with ErrPublisherClosed.
func (p *Publisher) Close() {
	p.mu.Lock()
	if p.quit == nil {
		p.quit = make(chan struct{})
	}
	select {
	case <-p.quit:
	default:
		close(p.quit)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// run publishes a partition's reports: what waits in q when one publish
// is acknowledged goes in the next, bundled, up to MaxBundleReports and
// the bundle bytes.
func (p *Publisher) run(part int, q chan *pendingReport, quit <-chan struct{}) {
	limit := p.BundleBytes
	if limit == 0 {
		limit = DefaultBundleBytes
	}
	var carry *pendingReport
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-q:
			case <-quit:
				// Publish no longer queues: what is queued now is all.
				for {
					select {
					case w := <-q:
						w.done <- p.publish(w.ctx, part, []*pendingReport{w})
					default:
						return
					}
				}
			}
		}
		batch := []*pendingReport{first}
		size := bundledSize(len(first.hdr), len(first.raw))
	fill:
		for len(batch) < MaxBundleReports {
			select {
			case w := <-q:
				s := bundledSize(len(w.hdr), len(w.raw))
				if size+s > limit {
					carry = w
					break fill
				}
				batch = append(batch, w)
				size += s
			default:
				break fill
			}
		}
		// Reports whose sender gave up are not sent: it was answered 451
		// and sends them again.
		live := batch[:0]
		for _, w := range batch {
			if err := w.ctx.Err(); err != nil {
				w.done <- fmt.Errorf("broker: publishing report %s: %w: %w", w.env.ID, ErrUnavailable, err)
				continue
			}
			live = append(live, w)
		}
		if len(live) == 0 {
			continue
		}
		// The publish lasts as long as the sender that waits the least
		// still waits.
		deadline := time.Now().Add(p.timeout())
		for _, w := range live {
			if d, ok := w.ctx.Deadline(); ok && d.Before(deadline) {
				deadline = d
			}
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := p.publish(ctx, part, live)
		cancel()
		for _, w := range live {
			w.done <- err
		}
	}
}

// publish stores reports as one message of partition part: a plain one
// for a single report, a bundle for more. It sends the message again,
// with the same message id, while JetStream is unavailable and ctx lasts.
func (p *Publisher) publish(ctx context.Context, part int, reports []*pendingReport) error {
	stream := ReportStream(part)
	msg := &nats.Msg{Subject: ReportSubject(part), Header: nats.Header{}}
	var id, what string
	if len(reports) == 1 {
		r := reports[0]
		msg.Data = r.raw
		msg.Header.Set(HeaderEnvelope, string(r.hdr))
		id, what = r.env.ID, "report "+r.env.ID
	} else {
		size := 0
		for _, r := range reports {
			size += bundledSize(len(r.hdr), len(r.raw))
		}
		data := make([]byte, 0, size)
		h := sha256.New()
		for _, r := range reports {
			data = appendBundled(data, r.hdr, r.raw)
			h.Write([]byte(r.env.ID))
		}
		msg.Data = data
		msg.Header.Set(HeaderBundle, strconv.Itoa(len(reports)))
		id = "bundle-" + hex.EncodeToString(h.Sum(nil))
		what = fmt.Sprintf("report %s in a bundle of %d", reports[0].env.ID, len(reports))
	}
	// A duplicate ack (PubAck.Duplicate) means the bytes are stored
	// already: success like any other ack.
	attempt := p.AttemptTimeout
	if attempt <= 0 {
		attempt = DefaultPublishAttemptTimeout
	}
	var err error
	for {
		actx, acancel := context.WithTimeout(ctx, attempt)
		_, err = p.JS.PublishMsg(actx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(stream))
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
	if err == nil && p.Sizes != nil {
		p.Sizes.Observe(float64(len(reports)))
	}
	if err != nil {
		if IsUnavailable(err) {
			return fmt.Errorf("broker: publishing %s: %w: %w", what, ErrUnavailable, err)
		}
		return fmt.Errorf("broker: publishing %s: %w", what, err)
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
