package ingest

import (
	"errors"

	"github.com/bouncer-mail/bouncer/event"
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
	writeErrors prometheus.Counter
	deadLetters *prometheus.CounterVec // by reason
	lag         prometheus.Gauge
	events      *prometheus.CounterVec // by source, class, reason, scope, provider
	reports     prometheus.Counter
	skipped     prometheus.Counter
	panics      prometheus.Counter
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
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bouncer_ingest_write_errors_total",
			Help: "Store writes that failed; their messages were not acked and are retried.",
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
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "bouncer_panics_total",
			Help:        "Panics recovered, by component.",
			ConstLabels: prometheus.Labels{"component": "ingest"},
		}),
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
	for _, c := range []prometheus.Collector{m.batches, m.batchSize, m.writeErrors, m.deadLetters, m.lag, m.events, m.reports, m.skipped, m.panics} {
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

// countEvent counts one written event.
func (m *metrics) countEvent(source string, ev event.Event) {
	m.events.WithLabelValues(source, ev.Class.String(), ev.Reason.String(), ev.Scope.String(), event.ProviderLabel(ev.Provider)).Inc()
}
