package smtpd

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// replyCodes are the replies the listener itself gives, pre-created so
// dashboards see zeros.
var replyCodes = []int{250, 421, 451, 452, 550, 552, 554}

type metrics struct {
	connections *prometheus.CounterVec // by result: accepted, refused_total, refused_per_ip
	replies     *prometheus.CounterVec // by code
	bytes       prometheus.Counter
	latency     prometheus.Histogram
	panics      prometheus.Counter
	active      prometheus.Gauge
	timeouts    *prometheus.CounterVec // by deadline: command, envelope
	// budgetRefused counts messages answered 451 4.3.1 because the
	// in-flight budget (budget.go) had no room for them in time.
	budgetRefused prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bouncer_smtp_connections_total",
			Help: "SMTP connections, by result: accepted, refused over the total or per-IP limit, or evicted_idle (closed for a new one while full, having sent no command).",
		}, []string{"result"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bouncer_smtp_replies_total",
			Help: "Replies the listener gave to RCPT and DATA, by code.",
		}, []string{"code"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bouncer_smtp_received_bytes_total",
			Help: "Bytes of messages accepted with 250.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bouncer_smtp_accept_latency_seconds",
			Help:    "Time from MAIL FROM to the final reply to DATA.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "bouncer_panics_total",
			Help:        "Panics recovered, by component.",
			ConstLabels: prometheus.Labels{"component": "smtpd"},
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bouncer_smtp_active_connections",
			Help: "SMTP connections open now.",
		}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bouncer_smtp_timeouts_total",
			Help: "SMTP connections closed with 421 by a listener deadline: command (a command line not completed in time) or envelope (no DATA in time).",
		}, []string{"deadline"}),
		budgetRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bouncer_smtp_inflight_refusals_total",
			Help: "Messages answered 451 4.3.1 because the bytes of messages being received and published were at --max-inflight-bytes for 5 s.",
		}),
	}
	for _, d := range []string{timeoutCommand, timeoutEnvelope} {
		m.timeouts.WithLabelValues(d)
	}
	for _, r := range []string{"accepted", "refused_total", "refused_per_ip", "evicted_idle"} {
		m.connections.WithLabelValues(r)
	}
	for _, c := range replyCodes {
		m.replies.WithLabelValues(strconv.Itoa(c))
	}
	for _, c := range []prometheus.Collector{m.connections, m.replies, m.bytes, m.latency, m.panics, m.active, m.timeouts, m.budgetRefused} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
