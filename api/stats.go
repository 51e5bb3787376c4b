package api

import (
	"net/http"
	"net/url"
	"time"

	"github.com/bouncer-mail/bouncer/event"
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
}

func (s *server) stats(w http.ResponseWriter, r *http.Request) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, "malformed query string")
		return
	}
	// TODO: by=provider|reason (DESIGN.md "HTTP API") needs counts the
	// store does not offer yet; by=class is what it has.
	if by := q.Get("by"); by != "" && by != "class" {
		s.writeError(w, r, http.StatusBadRequest, "by: only class is supported")
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
	s.writeJSON(w, r, http.StatusOK, resp)
}
