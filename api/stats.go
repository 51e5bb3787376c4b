package api

import (
	"net/http"
	"net/url"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// Bounds of GET /v1/stats?window=.
const (
	defaultStatsWindow = "24h"
	minStatsWindow     = time.Minute
	maxStatsWindow     = 90 * 24 * time.Hour
)

type statsResponse struct {
	Window          string           `json:"window"` // as the client gave it
	Since           time.Time        `json:"since"`  // now minus window, to the second
	ReportsReceived int64            `json:"reports_received"`
	EventsByClass   map[string]int64 `json:"events_by_class"` // every class, zeros too
	// By is the grouping asked for (by=provider or by=reason): per
	// provider label (event.Providers plus "other") or reason, the events
	// by class, every class present with zeros.
	By            string                      `json:"by,omitempty"`
	EventsByGroup map[string]map[string]int64 `json:"events_by_group,omitempty"`
}

// Values of GET /v1/stats?by=.
const (
	statsByClass    = "class"
	statsByProvider = "provider"
	statsByReason   = "reason"
)

func (s *server) stats(w http.ResponseWriter, r *http.Request) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, "malformed query string")
		return
	}
	by := q.Get("by")
	switch by {
	case "", statsByClass, statsByProvider, statsByReason:
	default:
		s.writeError(w, r, http.StatusBadRequest, "by must be class, provider or reason")
		return
	}
	window := q.Get("window")
	if window == "" {
		window = defaultStatsWindow
	}
	d, err := time.ParseDuration(window)
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, "window must be a duration such as 1h or 24h")
		return
	}
	if d < minStatsWindow || d > maxStatsWindow {
		s.writeError(w, r, http.StatusBadRequest, "window must be from 1m to 2160h (90 days)")
		return
	}
	// Whole seconds, the precision every engine keeps.
	since := time.Now().UTC().Add(-d).Truncate(time.Second)

	st, err := s.store.Stats(r.Context(), since)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	resp := statsResponse{
		Window:          window,
		Since:           since,
		ReportsReceived: st.ReportsReceived,
		EventsByClass:   make(map[string]int64, len(event.Classes)),
	}
	for _, c := range event.Classes {
		resp.EventsByClass[c.String()] = st.EventsByClass[c]
	}
	if by == statsByProvider || by == statsByReason {
		resp.By, resp.EventsByGroup = by, groupStats(st, by)
	}
	s.writeJSON(w, r, http.StatusOK, resp)
}

// groupStats sums st.Events by provider label or by reason, each group
// with every class (zeros too), so a client can divide without checking
// for missing keys. Provider names become their bounded label
// (event.ProviderLabel): the same values as the metrics' provider label.
func groupStats(st store.Stats, by string) map[string]map[string]int64 {
	out := map[string]map[string]int64{}
	for k, n := range st.Events {
		g := string(k.Reason)
		if by == statsByProvider {
			g = event.ProviderLabel(k.Provider)
		}
		m := out[g]
		if m == nil {
			m = make(map[string]int64, len(event.Classes))
			for _, c := range event.Classes {
				m[c.String()] = 0
			}
			out[g] = m
		}
		m[k.Class.String()] += n
	}
	return out
}
