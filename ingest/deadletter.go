package ingest

import (
	"context"
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
	reason := deadUnknown
	var u *unreadable
	if errors.As(cause, &u) {
		reason = u.reason
	}
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
	out.Header.Set(broker.HeaderDeadLetterError, headerValue(cause.Error()))
	out.Header.Set(broker.HeaderDeadLetterStream, stream)
	out.Header.Set(broker.HeaderDeadLetterSubject, msg.Subject())
	out.Header.Set(broker.HeaderDeadLetterSequence, strconv.FormatUint(seq, 10))
	// The msg id makes a second dead-lettering of the same message (its
	// ack was lost) a duplicate.
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(broker.StreamDeadLetter)}
	if stream != "" {
		opts = append(opts, jetstream.WithMsgID(stream+"/"+strconv.FormatUint(seq, 10)))
	}
	ack, err := p.cfg.JS.PublishMsg(ctx, out, opts...)
	if err != nil {
		return fmt.Errorf("ingest: dead-lettering %s seq %d: %w", stream, seq, err)
	}
	if !ack.Duplicate {
		p.m.deadLetters.WithLabelValues(reason).Inc()
		p.log.Warn("message dead-lettered", "reason", reason, "error", cause, "stream", stream, "seq", seq,
			"subject", msg.Subject(), "dead_letter_subject", out.Subject, "dead_letter_seq", ack.Sequence)
	}
	if err := msg.DoubleAck(ctx); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		p.log.Warn("ack of dead-lettered message failed; it will be redelivered", "error", err, "seq", seq)
		return nil
	}
	p.settled(msg)
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
