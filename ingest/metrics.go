package ingest

import (
	"errors"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/synclog"
	"github.com/prometheus/client_golang/prometheus"
)

// Event sources, the "source" label of bouncer_events_total and
// store.Event.Source.
const (
	SourceNDR  = "ndr"  // asynchronous reports received by the listener
	SourceSync = "sync" // sync reply logs of the sending MTAs
)

// Dead-letter reasons, the "reason" label of
// bouncer_ingest_dead_letters_total.
const (
	deadDecode  = "decode"  // the message is not what its stream carries
	deadPanic   = "panic"   // reading it panicked
	deadUnknown = "unknown" // no reader for its stream
)

type metrics struct {
	batches     prometheus.Counter
	batchSize   prometheus.Histogram
	batchLimit  *prometheus.GaugeVec
	writeErrors prometheus.Counter
	// refoldErrors counts recipients whose outcomes could not be
	// re-folded after a committed batch (process.go, refold).
	refoldErrors prometheus.Counter
	// outcomes counts outcomes as they become final, or change their
	// final class (accepted, then bounced), by provider, class, reason
	// and scope: what the rate alerts divide.
	outcomes *prometheus.CounterVec
	// corrections counts, with the same labels, the outcomes counted
	// above that a later fold took back: the final class an outcome left
	// (delivered, when the NDR came after the 250), or an outcome merged
	// into another. outcomes minus corrections is the net count by class.
	corrections *prometheus.CounterVec
	// suppressions counts suppressions the policy put, by rule;
	// suppressionsLifted the ones it lifted (a delivery after soft
	// failures); suppressErrors recipients whose suppressions could not be
	// brought in line after a committed batch.
	suppressions       *prometheus.CounterVec
	suppressionsLifted prometheus.Counter
	suppressErrors     prometheus.Counter
	deadLetters        *prometheus.CounterVec // by reason
	lag                prometheus.Gauge
	events             *prometheus.CounterVec // by source, class, reason, scope, provider
	attempts           *prometheus.CounterVec // by provider, result
	reports            prometheus.Counter
	skipped            prometheus.Counter
	panics             prometheus.Counter
	trimErrors         prometheus.Counter
	stageSeconds       *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bouncer_ingest_batches_total",
			Help: "Non-empty batches of messages ingest fetched from JetStream.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bouncer_ingest_batch_size",
			Help:    "Messages per fetched batch.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000},
		}),
		stageSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bouncer_ingest_stage_seconds",
			Help: "Time a batch spent in each stage of ingest: decode (parse and classify), write (one Store.Write), ack (JetStream acks), refold (outcomes and suppressions of its recipients). " +
				"When bouncer_ingest_lag_seconds grows, the stage whose time grew is where ingest falls behind.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20},
		}, []string{"stage"}),
		batchLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bouncer_ingest_batch_limit",
			Help: "The most reports (a bundle counting each of its reports) or sync reply logs ingest puts in a batch now, per kind (reports, attempts): the configured batch size, " +
				"halved after each failed store write and grown back after quick ones. Below the batch size: writes have been failing or slow.",
		}, []string{"kind"}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bouncer_ingest_write_errors_total",
			Help: "Store writes that failed; their messages were not acked and are retried.",
		}),
		refoldErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bouncer_ingest_refold_errors_total",
			Help: "Recipients whose outcomes could not be re-folded and stored after a committed batch; their next event re-folds them.",
		}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bouncer_outcomes_total",
			Help: "Outcomes of (message, recipient) that became final, or changed their final class (accepted, then bounced), as the re-fold after a committed batch stored them. Two ingest workers re-folding one recipient at the same moment may both count its change.",
		}, []string{"provider", "class", "reason", "scope"}),
		corrections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bouncer_outcome_corrections_total",
			Help: "Outcomes counted in bouncer_outcomes_total that a later fold took back, with the labels they were counted with: " +
				"the class an outcome left when it changed (delivered, then bounced) or an outcome merged into another. " +
				"bouncer_outcomes_total minus this is the net count.",
		}, []string{"provider", "class", "reason", "scope"}),
		suppressions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bouncer_suppressions_added_total",
			Help: "Suppressions the policy put (new, or renewed by a later failure), by rule: hard, complaint, soft.",
		}, []string{"rule"}),
		suppressionsLifted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bouncer_suppressions_lifted_total",
			Help: "Suppressions the policy lifted: a delivery after the soft failures that caused them.",
		}),
		suppressErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bouncer_ingest_suppress_errors_total",
			Help: "Recipients whose suppressions could not be brought in line with their outcomes after a committed batch; their next event retries.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bouncer_ingest_dead_letters_total",
			Help: "Messages ingest could not read, moved to the dead-letter stream, by reason: decode, panic, unknown.",
		}, []string{"reason"}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bouncer_ingest_lag_seconds",
			Help: "Seconds from the listener receiving the newest report of the last written batch to its write.",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bouncer_events_total",
			Help: "Events written to the store, by source, class, reason, scope and provider.",
		}, []string{"source", "class", "reason", "scope", "provider"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bouncer_attempts_total",
			Help: "Sync delivery attempts (one per recipient) written to the store, by provider and result: " +
				"delivered, deferred, bounced, expired, complaint, oob. Like bouncer_events_total it counts writes: " +
				"a record redelivered or published again is written again, idempotently, and counted again.",
		}, []string{"provider", "result"}),
		reports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bouncer_reports_processed_total",
			Help: "Raw reports written to the store.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bouncer_ingest_sync_records_skipped_total",
			Help: "Sync log records that are not delivery attempts (KumoMTA Reception, Postfix qmgr lines), acknowledged and not stored.",
		}),
		// Same name and help as the listener's: one family, one series
		// per component.
		trimErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bouncer_ingest_trim_errors_total",
			Help: "Failed removals of acknowledged reports from the reports stream; they stay on disk until a later one succeeds.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "bouncer_panics_total",
			Help:        "Panics recovered, by component.",
			ConstLabels: prometheus.Labels{"component": "ingest"},
		}),
	}
	for _, r := range []string{"hard", "complaint", "soft"} {
		m.suppressions.WithLabelValues(r)
	}
	for _, r := range []string{deadDecode, deadPanic, deadUnknown} {
		m.deadLetters.WithLabelValues(r)
	}
	// The full cross product of bouncer_events_total is tens of thousands
	// of series. Pre-created are the plausible (class, reason) pairs of
	// NDRs with provider "other": every failure reason under each failure
	// class with the reason's default scope, and the one reason of each
	// other class with no scope. That is about a hundred series, enough for dashboards
	// that sum by class or reason to see zeros; the rest appear when
	// counted.
	for _, c := range event.Classes {
		for _, r := range event.Reasons {
			if !plausible(c, r) {
				continue
			}
			scope := event.ScopeNone
			if c.IsFailure() {
				scope = r.DefaultScope()
			}
			m.events.WithLabelValues(SourceNDR, c.String(), r.String(), scope.String(), event.ProviderOther)
		}
	}
	// bouncer_attempts_total is small enough to pre-create whole: every
	// provider label times every result.
	for _, p := range append(append([]string(nil), event.Providers...), event.ProviderOther) {
		for _, r := range attemptResults {
			m.attempts.WithLabelValues(p, string(r))
		}
		for _, o := range outcomeSeries {
			m.outcomes.WithLabelValues(p, o[0], o[1], o[2])
			m.corrections.WithLabelValues(p, o[0], o[1], o[2])
		}
	}
	for _, stage := range []string{"decode", "write", "ack", "refold"} {
		m.stageSeconds.WithLabelValues(stage)
	}
	for _, c := range []prometheus.Collector{m.batches, m.batchSize, m.batchLimit, m.writeErrors, m.refoldErrors, m.outcomes, m.corrections, m.suppressions, m.suppressionsLifted, m.suppressErrors, m.deadLetters, m.lag, m.events, m.attempts, m.reports, m.skipped, m.panics, m.trimErrors, m.stageSeconds} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("ingest: metrics already registered: one Pipeline per Registerer")
			}
			return nil, err
		}
	}
	return m, nil
}

// plausible reports whether an NDR can carry class c with reason r.
func plausible(c event.Class, r event.Reason) bool {
	switch c {
	case event.ClassComplaint:
		return r == event.ReasonFeedback
	case event.ClassAutoreply:
		return r == event.ReasonVacation
	case event.ClassDelivered:
		return r == event.ReasonDelivered
	case event.ClassUnknown:
		return r == event.ReasonUndefined
	}
	return c.IsFailure() && r.DefaultScope() != event.ScopeNone
}

// attemptResults are the "result" label values of bouncer_attempts_total:
// every synclog.Result, which synclog.Parse never leaves outside this set.
var attemptResults = []synclog.Result{
	synclog.ResultDelivered, synclog.ResultDeferred, synclog.ResultBounced,
	synclog.ResultExpired, synclog.ResultComplaint, synclog.ResultBounceOOB,
}

// attemptResult maps a sync log result to its bouncer_attempts_total
// label, false for one outside attemptResults (not counted, so the label
// stays bounded; synclog.Parse refuses such records).
func attemptResult(r synclog.Result) (string, bool) {
	for _, known := range attemptResults {
		if r == known {
			return string(r), true
		}
	}
	return "", false
}

// attempt is one stored sync delivery attempt's bouncer_attempts_total
// labels.
type attempt struct {
	provider, result string
}

// newAttempt is the labels of a recipient's attempt with result r whose
// event names provider; false when r is not a known result.
func newAttempt(provider string, r synclog.Result) (attempt, bool) {
	res, ok := attemptResult(r)
	return attempt{provider: event.ProviderLabel(provider), result: res}, ok
}

// The counters of what was written (bouncer_events_total,
// bouncer_attempts_total, bouncer_reports_processed_total) count after a
// committed Store.Write. Delivery is at least once and the write
// idempotent, so a redelivered or re-published message that is written
// again is counted again: they count writes, not distinct records.

// countEvent counts one written event.
func (m *metrics) countEvent(source string, ev event.Event) {
	m.events.WithLabelValues(source, ev.Class.String(), ev.Reason.String(), ev.Scope.String(), event.ProviderLabel(ev.Provider)).Inc()
}

// outcomeSeries are the (class, reason, scope) pre-created per provider,
// so dashboards and alert ratios see zeros before the first outcome.
var outcomeSeries = [][3]string{
	{"hard", "userunknown", "recipient"},
	{"soft", "mailboxfull", "recipient"},
	{"soft", "blocked", "sender"},
	{"greylist", "greylisting", "transport"},
	{"complaint", "feedback", ""},
	{"delivered", "delivered", ""},
}

// countOutcome counts one outcome that became final or changed class.
func (m *metrics) countOutcome(o store.Outcome) {
	m.outcomes.WithLabelValues(event.ProviderLabel(o.Provider), o.Class.String(), o.Reason.String(), o.Scope.String()).Inc()
}

// correctOutcome takes back a counted outcome, with its labels as counted.
func (m *metrics) correctOutcome(o store.Outcome) {
	m.corrections.WithLabelValues(event.ProviderLabel(o.Provider), o.Class.String(), o.Reason.String(), o.Scope.String()).Inc()
}

// countAttempt counts one written sync delivery attempt.
func (m *metrics) countAttempt(a attempt) {
	m.attempts.WithLabelValues(a.provider, a.result).Inc()
}
