package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/outcome"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/synclog"
	"github.com/nats-io/nats.go/jetstream"
)

// ClassificationVersion is store.Event.Version of the events ingest
// writes; a reclassification writes a higher one.
const ClassificationVersion uint32 = 1

// ackConcurrency bounds the acks in flight after a write.
const ackConcurrency = 32

// What refold groups per recipient (docs/outcomes.md): its newest events,
// and the window within which a report with no key joins the sync group
// before it. The same as api's GET /v1/recipients/{address}/outcomes.
const (
	refoldEventsLimit = 1000
	refoldWindow      = 5 * 24 * time.Hour
)

// decoded is what one message contributes to a batch's write.
type decoded struct {
	report *store.Report // nil when the message carries no report
	events []store.Event
	// results are, for a sync reply log, each event's synclog result,
	// parallel to events.
	results []synclog.Result
}

// unreadable is a message's failure to decode: it goes to the dead-letter
// stream with reason as the metric label.
type unreadable struct {
	reason string
	err    error
}

func (u *unreadable) Error() string { return u.err.Error() }
func (u *unreadable) Unwrap() error { return u.err }

// process handles one fetched batch: unreadable messages go to the dead
// letters, the rest are written with one Store.Write and acked after it.
// On a failed write nothing is acked: the messages are nak'ed with
// nakDelay, and the error is returned.
func (p *Pipeline) process(ctx context.Context, msgs []jetstream.Msg, nakDelay time.Duration) error {
	p.m.batches.Inc()
	p.m.batchSize.Observe(float64(len(msgs)))

	// The batch in hand is finished even when ctx is done: a write that
	// committed gets its acks, within WriteTimeout.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.WriteTimeout)
	defer cancel()

	var (
		reports   []store.Report
		events    []store.Event
		attempts  []attempt       // sync attempts among events, counted after the write
		pending   []jetstream.Msg // acked after the write
		seen      = map[string]bool{}
		newest    time.Time
		deadFails int
	)
	for _, msg := range msgs {
		d, err := p.decode(msg)
		if err != nil {
			if err := p.deadLetter(wctx, msg, err); err != nil {
				deadFails++
				p.log.Error("cannot dead-letter; will retry", "error", err, "seq", sequence(msg))
				nak(msg, nakDelay)
			}
			continue
		}
		pending = append(pending, msg)
		if d.report == nil {
			// A sync reply log: events only, deduplicated by id.
			for i, ev := range d.events {
				if !seen["event/"+ev.ID] {
					seen["event/"+ev.ID] = true
					events = append(events, ev)
					if i < len(d.results) {
						if a, ok := newAttempt(ev.Provider, d.results[i]); ok {
							attempts = append(attempts, a)
						}
					}
				}
			}
			continue
		}
		if seen[d.report.ID] {
			// The same bytes twice in one batch (published again after
			// the dedup window): written once, both acked.
			continue
		}
		seen[d.report.ID] = true
		reports = append(reports, *d.report)
		events = append(events, d.events...)
		if d.report.Received.After(newest) {
			newest = d.report.Received
		}
	}

	if len(reports) > 0 || len(events) > 0 {
		if err := p.cfg.Store.Write(wctx, reports, events); err != nil {
			p.m.writeErrors.Inc()
			p.setStoreErr(err)
			for _, msg := range pending {
				nak(msg, nakDelay)
			}
			return fmt.Errorf("ingest: writing %d reports and %d events: %w", len(reports), len(events), err)
		}
		p.setStoreErr(nil)
		p.m.reports.Add(float64(len(reports)))
		for _, ev := range events {
			p.m.countEvent(ev.Source, ev.Event)
		}
		for _, a := range attempts {
			p.m.countAttempt(a)
		}
		if !newest.IsZero() {
			p.m.lag.Set(p.now().Sub(newest).Seconds())
		}
		p.refold(wctx, events)
	}
	p.ackAll(wctx, pending)
	if deadFails > 0 {
		return fmt.Errorf("ingest: %d messages could not be dead-lettered", deadFails)
	}
	return nil
}

// refold re-folds the outcomes of every recipient the committed events
// touched and stores them (docs/outcomes.md "Storing and counting"): the
// recipient's newest events grouped by outcome.Group, one
// Store.WriteOutcomes per recipient. Two workers folding one recipient at
// once are safe: the fold that runs after the last commit sees every
// event and has the highest version, which WriteOutcomes keeps.
//
// A failure here is logged and counted, never returned: the batch is
// committed, and nak'ing it would write it again for nothing. The
// recipient's outcomes stay as they were until its next event, whose
// batch re-folds it from every stored event, this one included.
func (p *Pipeline) refold(ctx context.Context, events []store.Event) {
	seen := map[string]bool{}
	for _, ev := range events {
		rcpt := strings.ToLower(ev.Recipient)
		if rcpt == "" || seen[rcpt] {
			continue
		}
		seen[rcpt] = true
		if err := p.refoldRecipient(ctx, rcpt); err != nil {
			p.m.refoldErrors.Inc()
			p.log.Error("cannot store outcomes; the recipient's next event re-folds them", "error", err, "recipient", rcpt)
		}
	}
}

func (p *Pipeline) refoldRecipient(ctx context.Context, rcpt string) error {
	evs, err := p.cfg.Store.RecipientEvents(ctx, rcpt, refoldEventsLimit)
	if err != nil {
		return fmt.Errorf("reading events: %w", err)
	}
	groups := outcome.Group(outcomeItems(evs), refoldWindow)
	if len(groups) == 0 {
		return nil
	}
	syncIDs := map[string]bool{}
	for _, e := range evs {
		if e.Source == SourceSync {
			syncIDs[e.ID] = true
		}
	}
	outs := make([]store.Outcome, len(groups))
	for i, g := range groups {
		outs[i] = storedOutcome(rcpt, g, syncIDs)
	}
	before, err := p.cfg.Store.RecipientOutcomes(ctx, rcpt)
	if err != nil {
		return fmt.Errorf("reading outcomes: %w", err)
	}
	if err := p.cfg.Store.WriteOutcomes(ctx, outs); err != nil {
		return fmt.Errorf("writing %d outcomes: %w", len(outs), err)
	}
	for _, o := range newlyFinal(before, outs) {
		p.m.countOutcome(o)
	}
	return nil
}

// newlyFinal returns the outcomes of after that are final where the stored
// one of their key was not, or was final with another class (accepted,
// then bounced), and that replace it (a higher version): what
// bouncer_outcomes_total counts.
func newlyFinal(before, after []store.Outcome) []store.Outcome {
	stored := make(map[string]store.Outcome, len(before))
	for _, o := range before {
		stored[o.Key] = o
	}
	var out []store.Outcome
	for _, o := range after {
		if !o.Final {
			continue
		}
		old, ok := stored[o.Key]
		if ok && (old.Version >= o.Version || old.Final && old.Class == o.Class) {
			continue
		}
		out = append(out, o)
	}
	return out
}

// outcomeItems are stored events as outcome.Group takes them.
func outcomeItems(events []store.Event) []outcome.Item {
	items := make([]outcome.Item, len(events))
	for i, e := range events {
		items[i] = outcome.Item{
			ID: e.ID, Stream: e.Stream, ReturnPath: e.ReturnPath, MessageID: e.MessageID,
			Observation: outcome.Observation{
				Time: e.Time, Source: e.Source, Class: e.Class, Reason: e.Reason, Scope: e.Scope,
				Provider: e.Provider, Action: e.Action,
			},
		}
	}
	return items
}

// storedOutcome is the group g of recipient rcpt as the store keeps it.
//
// The key must stay the same while the group grows, or the fold of the
// grown group is stored beside the old one instead of replacing it.
// Grouped.Key does not: a sync record without a message id (a Postfix
// line, most KumoMTA records) is keyed by its return path until the NDR
// brings the message id. So a group with a sync event is keyed by its
// first sync event's id (sync logs arrive in order), and only a group of
// reports alone by Grouped.Key. The key is the hex SHA-256 (first 16
// bytes) of the recipient and that, as Grouped.Key is unique among one
// recipient's groups only and holds a NUL byte.
//
// TODO: a report that arrives before its sync log is stored alone first,
// and its outcome stays beside the group's once the sync log joins it
// (docs/outcomes.md: the VERP message-id hash, or superseding the keys a
// fold no longer produces).
func storedOutcome(rcpt string, g outcome.Grouped, syncIDs map[string]bool) store.Outcome {
	id := g.Key()
	for _, eid := range g.IDs {
		if syncIDs[eid] {
			id = "sync:" + eid
			break
		}
	}
	key := sha256.Sum256([]byte(rcpt + "\x00" + id))
	return store.Outcome{
		Key:    hex.EncodeToString(key[:16]),
		Stream: g.Stream, MessageID: g.MessageID, Recipient: rcpt,
		State: string(g.State), Class: g.Class, Reason: g.Reason, Scope: g.Scope, Provider: g.Provider,
		Final: g.Final, First: g.First.UTC(), Last: g.Last.UTC(), Observations: g.Observations,
		Version: store.OutcomeVersion(g.Observations, g.Last),
	}
}

// decode reads one message by the stream it came from. A panic is
// recovered, counted, and makes the message unreadable.
func (p *Pipeline) decode(msg jetstream.Msg) (d decoded, err error) {
	defer func() {
		if r := recover(); r != nil {
			p.m.panics.Inc()
			p.log.Error("panic reading message", "panic", r, "seq", sequence(msg), "stack", string(debug.Stack()))
			d, err = decoded{}, &unreadable{reason: deadPanic, err: fmt.Errorf("panic: %v", r)}
		}
	}()
	md, err := msg.Metadata()
	if err != nil {
		return decoded{}, &unreadable{reason: deadUnknown, err: fmt.Errorf("no JetStream metadata: %w", err)}
	}
	switch md.Stream {
	case broker.StreamReports:
		return p.decodeReport(msg, md)
	case broker.StreamAttempts:
		return p.decodeAttempts(msg)
	default:
		return decoded{}, &unreadable{reason: deadUnknown, err: fmt.Errorf("no reader for stream %s (subject %s)", md.Stream, msg.Subject())}
	}
}

// decodeReport reads a raw report: its envelope, and the events classify
// finds in it. A report classify cannot parse is stored with its
// ParseError and no events; one it cannot even decode is unreadable.
func (p *Pipeline) decodeReport(msg jetstream.Msg, md *jetstream.MsgMetadata) (decoded, error) {
	env, raw, err := broker.DecodeReport(msg)
	if err != nil {
		return decoded{}, &unreadable{reason: deadDecode, err: err}
	}
	if env.Received.IsZero() {
		env.Received = md.Timestamp
	}
	rep := &store.Report{Envelope: env, Raw: raw}
	evs, err := p.cfg.Classifier.Bytes(raw)
	if err != nil {
		rep.ParseError = err.Error()
	}
	d := decoded{report: rep, events: make([]store.Event, 0, len(evs))}
	returnPath := reportReturnPath(env)
	for i, ev := range evs {
		d.events = append(d.events, store.Event{
			ID:         store.EventID(env.ID, i),
			ReportID:   env.ID,
			Index:      i,
			Version:    ClassificationVersion,
			Time:       env.Received,
			Source:     SourceNDR,
			ReturnPath: returnPath,
			Event:      ev,
		})
	}
	return d, nil
}

// reportReturnPath is a report's correlation return path
// (docs/outcomes.md): the envelope recipient it was sent to, the VERP
// address naming the message and recipient, lower-cased as sync log
// return paths are. A report sent to several bounce addresses at once
// cannot say which one it is about, so it has none.
func reportReturnPath(env event.Envelope) string {
	if len(env.Recipients) != 1 {
		return ""
	}
	return strings.ToLower(strings.TrimSpace(env.Recipients[0]))
}

// ackAll acks msgs, each confirmed by the server. A failed ack is logged:
// the message comes back after AckWait and is written again, to no effect.
func (p *Pipeline) ackAll(ctx context.Context, msgs []jetstream.Msg) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, ackConcurrency)
	for _, msg := range msgs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := msg.DoubleAck(ctx); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
				p.log.Warn("ack failed; the message will be redelivered", "error", err, "seq", sequence(msg))
			}
		})
	}
	wg.Wait()
}

// nak asks for msg again after delay; should that fail too, AckWait
// brings it back.
func nak(msg jetstream.Msg, delay time.Duration) {
	_ = msg.NakWithDelay(delay)
}

// sequence is msg's stream sequence, 0 when unknown, for logs.
func sequence(msg jetstream.Msg) uint64 {
	md, err := msg.Metadata()
	if err != nil {
		return 0
	}
	return md.Sequence.Stream
}

// syncActions maps a sync log result to the DSN action of its event.
var syncActions = map[synclog.Result]string{
	synclog.ResultDelivered: "delivered",
	synclog.ResultDeferred:  "delayed",
	synclog.ResultBounced:   "failed",
	synclog.ResultExpired:   "failed",
	synclog.ResultBounceOOB: "failed",
	synclog.ResultComplaint: "",
}

// decodeAttempts reads one sync reply log record and classifies each of
// its recipients' replies like an NDR's. A record that is not a delivery
// attempt (a KumoMTA Reception, a Postfix qmgr line) is acked and skipped;
// one that cannot be read is unreadable and dead-lettered.
func (p *Pipeline) decodeAttempts(msg jetstream.Msg) (decoded, error) {
	attempts, err := synclog.Parse(msg.Data())
	if errors.Is(err, synclog.ErrNotAttempt) {
		p.m.skipped.Inc()
		return decoded{}, nil
	}
	if err != nil {
		return decoded{}, &unreadable{reason: deadDecode, err: err}
	}
	d := decoded{events: make([]store.Event, 0, len(attempts)), results: make([]synclog.Result, 0, len(attempts))}
	for _, a := range attempts {
		var ev store.Event
		ev.Event = p.cfg.Classifier.Sync(classify.SyncReply{
			Recipient: a.Recipient, MX: a.MX, Action: syncActions[a.Result],
			Code: a.ReplyCode, Status: a.Status, Text: a.Reply, Command: a.Command, MessageID: a.MessageID,
		})
		if a.Result == synclog.ResultComplaint {
			ev.Class, ev.Reason, ev.Scope = "complaint", "feedback", ""
		}
		ev.ID = store.EventID("sync:"+a.ID, 0)
		ev.ReportID = ""
		ev.Version = ClassificationVersion
		ev.Time = a.Time
		ev.Source = SourceSync
		ev.Stream = a.Stream
		ev.ReturnPath = a.ReturnPath
		d.events = append(d.events, ev)
		d.results = append(d.results, a.Result)
	}
	return d, nil
}
