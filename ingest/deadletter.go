package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// maxErrorHeader bounds the error text put in a dead letter's header.
const maxErrorHeader = 1024

// deadLetterSubject is where unreadable messages of a stream go.
func deadLetterSubject(stream string) string {
	switch {
	case broker.IsReportStream(stream):
		return broker.SubjectDeadLetterReports
	case stream == broker.StreamAttempts:
		return broker.SubjectDeadLetterAttempts
	default:
		return "bouncer.deadletter.other"
	}
}

// deadLetter republishes msg, its bytes and headers as they were, to the
// dead-letter stream with why it is there, then acks it. It returns an
// error, and leaves msg unacked, when the dead letter is not stored.
func (p *Pipeline) deadLetter(ctx context.Context, msg jetstream.Msg, cause error) error {
	stream, seq := "", uint64(0)
	if md, err := msg.Metadata(); err == nil {
		stream, seq = md.Stream, md.Sequence.Stream
	}
	out := &nats.Msg{Subject: deadLetterSubject(stream), Data: msg.Data(), Header: nats.Header{}}
	for k, vs := range msg.Headers() {
		if strings.HasPrefix(k, "Nats-") {
			continue // JetStream's own: a msg id or expectation would misapply here
		}
		out.Header[k] = vs
	}
	if err := p.publishDeadLetter(ctx, out, msg, cause, stream, seq, ""); err != nil {
		return err
	}
	if err := msg.DoubleAck(ctx); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		p.log.Warn("ack of dead-lettered message failed; it will be redelivered", "error", err, "seq", seq)
		return nil
	}
	p.settled(msg)
	return nil
}

// deadLetterBundled dead-letters reports of a bundle one by one, each as
// a plain report message (its envelope in broker.HeaderEnvelope, its
// bytes as the data, broker.HeaderDeadLetterIndex its place in the
// bundle), without acking the bundle: its other reports are still to be
// stored, and the bundle is acked with them.
func (p *Pipeline) deadLetterBundled(ctx context.Context, msg jetstream.Msg, dead []deadReport) error {
	stream, seq := "", uint64(0)
	if md, err := msg.Metadata(); err == nil {
		stream, seq = md.Stream, md.Sequence.Stream
	}
	for _, d := range dead {
		env, err := json.Marshal(d.report.Envelope)
		if err != nil {
			return fmt.Errorf("ingest: dead-lettering report %d of %s seq %d: %w", d.index, stream, seq, err)
		}
		out := &nats.Msg{Subject: deadLetterSubject(stream), Data: d.report.Raw, Header: nats.Header{}}
		out.Header.Set(broker.HeaderEnvelope, string(env))
		out.Header.Set(broker.HeaderDeadLetterIndex, strconv.Itoa(d.index))
		if err := p.publishDeadLetter(ctx, out, msg, d.err, stream, seq, "/"+strconv.Itoa(d.index)); err != nil {
			return err
		}
	}
	return nil
}

// publishDeadLetter stores out, a dead letter of msg (stream seq; idSuffix
// names a part of it), with why it is there, and counts it.
func (p *Pipeline) publishDeadLetter(ctx context.Context, out *nats.Msg, msg jetstream.Msg, cause error, stream string, seq uint64, idSuffix string) error {
	reason := deadUnknown
	var u *unreadable
	if errors.As(cause, &u) {
		reason = u.reason
	}
	out.Header.Set(broker.HeaderDeadLetterError, headerValue(cause.Error()))
	out.Header.Set(broker.HeaderDeadLetterStream, stream)
	out.Header.Set(broker.HeaderDeadLetterSubject, msg.Subject())
	out.Header.Set(broker.HeaderDeadLetterSequence, strconv.FormatUint(seq, 10))
	// The msg id makes a second dead-lettering of the same message (its
	// ack was lost) a duplicate.
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(broker.StreamDeadLetter)}
	if stream != "" {
		opts = append(opts, jetstream.WithMsgID(stream+"/"+strconv.FormatUint(seq, 10)+idSuffix))
	}
	ack, err := p.cfg.JS.PublishMsg(ctx, out, opts...)
	if err != nil {
		return fmt.Errorf("ingest: dead-lettering %s seq %d%s: %w", stream, seq, idSuffix, err)
	}
	if !ack.Duplicate {
		p.m.deadLetters.WithLabelValues(reason).Inc()
		p.log.Warn("message dead-lettered", "reason", reason, "error", cause, "stream", stream, "seq", seq,
			"part", idSuffix, "subject", msg.Subject(), "dead_letter_subject", out.Subject, "dead_letter_seq", ack.Sequence)
	}
	return nil
}

// headerValue makes s fit a header: one line, bounded.
func headerValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxErrorHeader {
		s = strings.ToValidUTF8(s[:maxErrorHeader], "")
	}
	return s
}
