package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/outcome"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/suppress"
	"github.com/bouncer-mail/bouncer/synclog"
	"github.com/nats-io/nats.go/jetstream"
)

// ClassificationVersion is store.Event.Version of the events ingest
// writes; a reclassification writes a higher one.
const ClassificationVersion uint32 = 1

// What refold groups per recipient (docs/outcomes.md): its newest events,
// and the window within which a report with no key joins the sync group
// before it. The same as api's GET /v1/recipients/{address}/outcomes.
const (
	refoldEventsLimit = 1000
	refoldWindow      = 5 * 24 * time.Hour
)

// decoded is what one message contributes to a batch's write.
type decoded struct {
	// reports are the reports the message carries, with their events:
	// one, or a bundle's (broker.HeaderBundle); none for a sync reply log.
	reports []reportEvents
	// dead are the reports of a bundle that could not be read (classify
	// panicked): dead-lettered one by one, the bundle's others stored.
	dead []deadReport
	// events are a sync reply log's, and results each one's synclog
	// result, parallel to events.
	events  []store.Event
	results []synclog.Result
}

// deadReport is one report of a bundle that goes to the dead letters.
type deadReport struct {
	index  int // its place in the bundle, from 0
	report broker.BundledReport
	err    error
}

// reportEvents is a report and the events classify found in it.
type reportEvents struct {
	report store.Report
	events []store.Event
}

// unreadable is a message's failure to decode: it goes to the dead-letter
// stream with reason as the metric label.
type unreadable struct {
	reason string
	err    error
}

func (u *unreadable) Error() string { return u.err.Error() }
func (u *unreadable) Unwrap() error { return u.err }

// committed is a batch the store committed: its messages to ack, then
// its events' recipients to re-fold (Pipeline.finish).
type committed struct {
	msgs   []jetstream.Msg
	srcs   []source // the sources of msgs, trimmed after the acks
	events []store.Event
}

// process handles one fetched batch: unreadable messages go to the dead
// letters, the rest are written with one Store.Write, and the batch is
// handed to finish (acks, then the re-fold) through done, so the next
// batch is fetched, decoded and written while this one's acks are on
// their way: with JetStream syncing every ack to disk (the listener's
// SyncAlways), acking a batch takes longer than writing it. Nothing is
// acked before the store committed it. On a failed write nothing is
// acked: the messages are nak'ed with nakDelay, and the error is
// returned.
func (p *Pipeline) process(ctx context.Context, msgs []jetstream.Msg, srcs []source, nakDelay time.Duration, done chan<- committed) error {
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
	began := time.Now()
	decodedMsgs, errs := p.decodeAll(msgs)
	p.m.stageSeconds.WithLabelValues("decode").Observe(time.Since(began).Seconds())
	for i, msg := range msgs {
		d, err := decodedMsgs[i], errs[i]
		if err != nil {
			if err := p.deadLetter(wctx, msg, err); err != nil {
				deadFails++
				p.log.Error("cannot dead-letter; will retry", "error", err, "seq", sequence(msg))
				p.nak(msg, nakDelay)
			}
			continue
		}
		if len(d.dead) > 0 {
			if err := p.deadLetterBundled(wctx, msg, d.dead); err != nil {
				// The bundle comes back whole and is read again; its
				// dead letters that were stored are duplicates then.
				deadFails++
				p.log.Error("cannot dead-letter; will retry", "error", err, "seq", sequence(msg))
				p.nak(msg, nakDelay)
				continue
			}
		}
		pending = append(pending, msg)
		if d.reports == nil && d.dead == nil {
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
		for _, r := range d.reports {
			if seen[r.report.ID] {
				// The same bytes twice in one batch (published again
				// after the dedup window, or in a bundle): written
				// once, both acked.
				continue
			}
			seen[r.report.ID] = true
			reports = append(reports, r.report)
			events = append(events, r.events...)
			if r.report.Received.After(newest) {
				newest = r.report.Received
			}
		}
	}

	if len(reports) > 0 || len(events) > 0 {
		began := time.Now()
		err := p.cfg.Store.Write(wctx, reports, events)
		p.m.stageSeconds.WithLabelValues("write").Observe(time.Since(began).Seconds())
		if err != nil {
			p.m.writeErrors.Inc()
			p.setStoreErr(err)
			for _, msg := range pending {
				p.nak(msg, nakDelay)
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
	}
	done <- committed{msgs: pending, srcs: srcs, events: events}
	if deadFails > 0 {
		return fmt.Errorf("ingest: %d messages could not be dead-lettered", deadFails)
	}
	return nil
}

// finish acks committed batches, then re-folds their recipients, until
// batches is closed. It runs beside the loop that fetches and writes, so
// a batch's acks and re-fold overlap the next batch's write.
//
// Outcomes and suppressions are derived from the committed events, so
// the acks do not wait for them: a re-fold costs a few round trips more,
// and acks held behind a slow one would outlast AckWait and be
// redelivered. A crash between the acks and the re-fold leaves those
// recipients' outcomes as they were until their next event re-folds them
// from every stored event.
func (p *Pipeline) finish(batches <-chan committed) {
	for b := range batches {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.WriteTimeout)
		began := time.Now()
		p.ackAll(ctx, b.msgs)
		p.m.stageSeconds.WithLabelValues("ack").Observe(time.Since(began).Seconds())
		var tops map[string]uint64
		for _, src := range b.srcs {
			if src.trims != nil {
				if tops == nil {
					tops = highestSequences(b.msgs)
				}
				p.acked(src, tops[src.stream])
				p.trim(ctx, src, trimEvery)
			}
		}
		if len(b.events) > 0 {
			began := time.Now()
			p.refold(ctx, b.events)
			p.m.stageSeconds.WithLabelValues("refold").Observe(time.Since(began).Seconds())
		}
		cancel()
	}
}

// decodeAll decodes msgs on up to GOMAXPROCS goroutines: classifying is
// most of a batch's CPU. The results are parallel to msgs.
func (p *Pipeline) decodeAll(msgs []jetstream.Msg) ([]decoded, []error) {
	out := make([]decoded, len(msgs))
	errs := make([]error, len(msgs))
	workers := min(runtime.GOMAXPROCS(0), len(msgs))
	var (
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(msgs) {
					return
				}
				out[i], errs[i] = p.decode(msgs[i])
			}
		})
	}
	wg.Wait()
	return out, errs
}

// refold re-folds the outcomes of every recipient the committed events
// touched and stores them (docs/outcomes.md "Storing and counting"), then
// brings their suppressions in line (Refolder.Recipients), counting what
// changed.
//
// A failure here is logged and counted, never returned: the batch is
// committed, and nak'ing it would write it again for nothing. The
// recipients' outcomes stay as they were until their next event, whose
// batch re-folds them from every stored event, this one included.
func (p *Pipeline) refold(ctx context.Context, events []store.Event) {
	var rcpts []string
	for _, ev := range events {
		rcpts = append(rcpts, ev.Recipient)
	}
	res, err := p.refolder.Recipients(ctx, rcpts)
	for _, o := range res.Counted {
		p.m.countOutcome(o)
	}
	for _, o := range res.Corrected {
		p.m.correctOutcome(o)
	}
	for _, s := range res.Suppressed {
		p.m.suppressions.WithLabelValues(s.Rule).Inc()
	}
	p.m.suppressionsLifted.Add(float64(len(res.Lifted)))
	var serr *suppressError
	switch {
	case errors.As(err, &serr):
		p.m.suppressErrors.Add(float64(res.Failed))
		p.log.Error("cannot update suppressions; the recipients' next events retry", "error", err, "recipients", res.Failed)
	case err != nil:
		p.m.refoldErrors.Add(float64(res.Failed))
		p.log.Error("cannot store outcomes; the recipients' next events re-fold them", "error", err, "recipients", res.Failed)
	}
}

// Refolder folds recipients' stored events into outcomes, stores them,
// and brings the recipients' policy suppressions in line with them.
// Ingest runs it after every committed batch; `bouncer reclassify` after
// writing new event versions.
//
// Two callers folding one recipient at once are safe: the fold that runs
// after the last commit sees every event and has the highest version,
// which Store.WriteOutcomes keeps.
type Refolder struct {
	Store  store.Store
	Policy suppress.Policy
	Now    func() time.Time // nil: time.Now
}

// RefoldResult is what one Refolder.Recipients changed.
type RefoldResult struct {
	// Counted are the outcomes that became final or changed their final
	// class; Corrected the counted ones taken back (outcomeCounts).
	Counted, Corrected []store.Outcome
	// Suppressed are the policy suppressions put, Lifted the ones lifted.
	Suppressed, Lifted []store.Suppression
	// Failed is, with an error, the number of recipients whose outcomes
	// (or, with a suppressError, suppressions) were not brought up to
	// date.
	Failed int
}

// suppressError is a failure after the outcomes were stored, while
// updating the suppressions.
type suppressError struct{ err error }

func (e *suppressError) Error() string { return e.err.Error() }
func (e *suppressError) Unwrap() error { return e.err }

// Recipient re-folds one recipient: Recipients of one.
func (r *Refolder) Recipient(ctx context.Context, rcpt string) (RefoldResult, error) {
	return r.Recipients(ctx, []string{rcpt})
}

// Recipients re-folds recipients (compared lower-cased; empty ones are
// skipped) together: the reads, the outcome write and the suppression
// write are one store call each for all of them, whatever their number
// (the store splits long lists itself), so a batch of 500 recipients
// costs a handful of round trips instead of a few thousand. The result
// holds what changed before an error, too: an error before the outcomes
// are stored changed nothing, and a suppressError came after they were.
func (r *Refolder) Recipients(ctx context.Context, recipients []string) (RefoldResult, error) {
	var res RefoldResult
	seen := make(map[string]bool, len(recipients))
	var rcpts []string
	for _, rc := range recipients {
		rc = strings.ToLower(rc)
		if rc != "" && !seen[rc] {
			seen[rc] = true
			rcpts = append(rcpts, rc)
		}
	}
	if len(rcpts) == 0 {
		return res, nil
	}
	res.Failed = len(rcpts)
	evsBy, err := r.Store.RecipientsEvents(ctx, rcpts, refoldEventsLimit)
	if err != nil {
		return res, fmt.Errorf("reading events: %w", err)
	}
	beforeBy, err := r.Store.RecipientsOutcomes(ctx, rcpts)
	if err != nil {
		return res, fmt.Errorf("reading outcomes: %w", err)
	}
	var (
		write              []store.Outcome
		counted, corrected []store.Outcome
		current            = make(map[string][]store.Outcome, len(rcpts))
	)
	for _, rcpt := range rcpts {
		evs, before := evsBy[rcpt], beforeBy[rcpt]
		groups := outcome.Group(outcomeItems(evs), refoldWindow)
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
		if len(outs) == 0 && len(before) == 0 {
			continue
		}
		merged := supersededOutcomes(before, outs, evs, len(evs) == refoldEventsLimit)
		written := append(outs, merged...)
		write = append(write, written...)
		c, k := outcomeCounts(before, outs, merged)
		counted, corrected = append(counted, c...), append(corrected, k...)
		current[rcpt] = currentOutcomes(before, written)
	}
	if err := r.Store.WriteOutcomes(ctx, write); err != nil {
		return res, fmt.Errorf("writing %d outcomes of %d recipients: %w", len(write), len(rcpts), err)
	}
	res.Counted, res.Corrected = counted, corrected
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	if n, err := r.resuppress(ctx, rcpts, current, now(), &res); err != nil {
		res.Failed = n
		return res, &suppressError{err}
	}
	res.Failed = 0
	return res, nil
}

// supersededOutcomes returns, as StateMerged rows that replace them, the
// stored outcomes (before) whose key the new fold (after) no longer
// produces although it read their events: a report stored alone before
// the sync log of its message arrived, now folded into that message's
// group. When the fold read only the newest events (truncated), outcomes
// older than the oldest event read are left alone: their events were not
// read, not regrouped. Rows already merged stay as they are.
func supersededOutcomes(before, after []store.Outcome, evs []store.Event, truncated bool) []store.Outcome {
	produced := make(map[string]bool, len(after))
	for _, o := range after {
		produced[o.Key] = true
	}
	var oldest time.Time
	if truncated && len(evs) > 0 {
		oldest = evs[len(evs)-1].Time // RecipientEvents is newest first
	}
	var out []store.Outcome
	for _, o := range before {
		if produced[o.Key] || o.State == string(outcome.StateMerged) || o.First.Before(oldest) {
			continue
		}
		m := o
		m.State, m.Final = string(outcome.StateMerged), false
		m.Version = store.OutcomeVersion(o.Observations+1, o.Last)
		out = append(out, m)
	}
	return out
}

// outcomeCounts returns what bouncer_outcomes_total counts and what
// bouncer_outcome_corrections_total takes back for one stored fold: an
// outcome of after that is final where the stored one of its key was not,
// or was final with another class (accepted, then bounced: the old class
// is taken back), and that replaces it (a higher version); and each final
// outcome merged into another group (taken back, the group counts).
func outcomeCounts(before, after, merged []store.Outcome) (counted, corrected []store.Outcome) {
	stored := make(map[string]store.Outcome, len(before))
	for _, o := range before {
		stored[o.Key] = o
	}
	for _, o := range after {
		if !o.Final {
			continue
		}
		old, ok := stored[o.Key]
		if ok && (old.Version >= o.Version || old.Final && old.Class == o.Class) {
			continue
		}
		if ok && old.Final {
			corrected = append(corrected, old)
		}
		counted = append(counted, o)
	}
	for _, m := range merged {
		if old := stored[m.Key]; old.Final {
			corrected = append(corrected, old)
		}
	}
	return counted, corrected
}

// currentOutcomes is the recipient's outcomes once written is stored:
// per key, the one of higher version.
func currentOutcomes(before, written []store.Outcome) []store.Outcome {
	byKey := make(map[string]store.Outcome, len(before)+len(written))
	var keys []string
	for _, o := range append(append([]store.Outcome(nil), before...), written...) {
		old, ok := byKey[o.Key]
		if !ok {
			keys = append(keys, o.Key)
		}
		if !ok || o.Version > old.Version {
			byKey[o.Key] = o
		}
	}
	out := make([]store.Outcome, len(keys))
	for i, k := range keys {
		out[i] = byKey[k]
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
	switch {
	case broker.IsReportStream(md.Stream):
		return p.decodeReport(msg, md)
	case md.Stream == broker.StreamAttempts:
		return p.decodeAttempts(msg)
	default:
		return decoded{}, &unreadable{reason: deadUnknown, err: fmt.Errorf("no reader for stream %s (subject %s)", md.Stream, msg.Subject())}
	}
}

// decodeReport reads a reports stream's message: its report, or a
// bundle's reports (broker.DecodeReports), each with its envelope and
// the events classify finds in it. A report classify cannot parse is
// stored with its ParseError and no events; a message that cannot even
// be decoded is unreadable, a bundle as a whole.
func (p *Pipeline) decodeReport(msg jetstream.Msg, md *jetstream.MsgMetadata) (decoded, error) {
	bundled, err := broker.DecodeReports(msg)
	if err != nil {
		return decoded{}, &unreadable{reason: deadDecode, err: err}
	}
	if len(bundled) == 1 {
		// A report alone: a panic makes the message unreadable (decode).
		return decoded{reports: []reportEvents{p.classifyReport(bundled[0].Envelope, bundled[0].Raw, md.Timestamp)}}, nil
	}
	d := decoded{reports: make([]reportEvents, 0, len(bundled))}
	for i, b := range bundled {
		r, err := p.classifyBundled(b, md.Timestamp)
		if err != nil {
			d.dead = append(d.dead, deadReport{index: i, report: b, err: err})
			continue
		}
		d.reports = append(d.reports, r)
	}
	return d, nil
}

// classifyBundled is classifyReport for one report of a bundle, a panic
// recovered, counted and returned as its error, so that the bundle's
// other reports are stored.
func (p *Pipeline) classifyBundled(b broker.BundledReport, stored time.Time) (r reportEvents, err error) {
	defer func() {
		if v := recover(); v != nil {
			p.m.panics.Inc()
			p.log.Error("panic reading a bundled report", "panic", v, "report", b.Envelope.ID, "stack", string(debug.Stack()))
			err = &unreadable{reason: deadPanic, err: fmt.Errorf("panic: %v", v)}
		}
	}()
	return p.classifyReport(b.Envelope, b.Raw, stored), nil
}

// classifyReport is one report with its events; a report with no
// received time takes stored, its message's time in JetStream.
func (p *Pipeline) classifyReport(env event.Envelope, raw []byte, stored time.Time) reportEvents {
	if env.Received.IsZero() {
		env.Received = stored
	}
	r := reportEvents{report: store.Report{Envelope: env, Raw: raw}}
	evs, err := p.cfg.Classifier.Bytes(raw)
	if err != nil {
		r.report.ParseError = err.Error()
	}
	r.events = make([]store.Event, 0, len(evs))
	returnPath := reportReturnPath(env)
	for i, ev := range evs {
		r.events = append(r.events, store.Event{
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
	return r
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

// ackAll acks msgs, then waits until the server has them all: one round
// trip for the batch rather than one per message. An ack lost on the way
// (the connection broke) is logged: the message comes back after AckWait
// and is written again, to no effect.
func (p *Pipeline) ackAll(ctx context.Context, msgs []jetstream.Msg) {
	failed := 0
	acked := msgs[:0:0]
	for _, msg := range msgs {
		if err := msg.Ack(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			failed++
			if failed == 1 {
				p.log.Warn("ack failed; the message will be redelivered", "error", err, "seq", sequence(msg))
			}
			continue
		}
		acked = append(acked, msg)
	}
	p.settled(acked...)
	if failed > 1 {
		p.log.Warn("acks failed; the messages will be redelivered", "messages", failed)
	}
	if nc := p.cfg.JS.Conn(); nc != nil && failed < len(msgs) {
		if err := nc.FlushWithContext(ctx); err != nil {
			p.log.Warn("acks not confirmed; unconfirmed messages will be redelivered", "error", err, "messages", len(msgs)-failed)
		}
	}
}

// highestSequences is the highest stream sequence among msgs, by
// stream, read in one pass over a batch however many streams it holds.
func highestSequences(msgs []jetstream.Msg) map[string]uint64 {
	tops := map[string]uint64{}
	for _, msg := range msgs {
		if md, err := msg.Metadata(); err == nil {
			tops[md.Stream] = max(tops[md.Stream], md.Sequence.Stream)
		}
	}
	return tops
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
