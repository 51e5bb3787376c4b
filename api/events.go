package api

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// Limits of GET /v1/recipients/{address}/events.
const (
	defaultEventsLimit = 100
	maxEventsLimit     = 1000
)

// eventJSON is one event in a response: the `bouncer classify` fields
// (event.Event's JSON tags) plus where the event is stored.
type eventJSON struct {
	ID      string    `json:"id"`
	Time    time.Time `json:"time"`
	Source  string    `json:"source"`
	Version uint32    `json:"version"`
	event.Event
}

type recipientEventsResponse struct {
	Recipient string      `json:"recipient"`
	Events    []eventJSON `json:"events"`
}

func (s *server) recipientEvents(w http.ResponseWriter, r *http.Request) {
	address, err := parseAddress(r.PathValue("address"))
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, "malformed query string")
		return
	}
	limit := defaultEventsLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxEventsLimit {
			s.writeError(w, r, http.StatusBadRequest, "limit must be a number from 1 to 1000")
			return
		}
		limit = n
	}

	events, err := s.store.RecipientEvents(r.Context(), address, limit)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	resp := recipientEventsResponse{Recipient: address, Events: make([]eventJSON, len(events))}
	for i, e := range events {
		resp.Events[i] = toJSON(e)
	}
	s.writeJSON(w, r, http.StatusOK, resp)
}

func toJSON(e store.Event) eventJSON {
	return eventJSON{ID: e.ID, Time: e.Time.UTC(), Source: e.Source, Version: e.Version, Event: e.Event}
}
