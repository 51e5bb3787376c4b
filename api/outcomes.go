package api

import (
	"net/http"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/outcome"
)

// outcomeJSON is one (stream, message) outcome of a recipient.
type outcomeJSON struct {
	Stream       string        `json:"stream"`
	MessageID    string        `json:"message_id"`
	State        outcome.State `json:"state"`
	Class        event.Class   `json:"class"`
	Reason       event.Reason  `json:"reason"`
	Scope        event.Scope   `json:"scope"`
	Provider     string        `json:"provider"`
	Final        bool          `json:"final"`
	First        time.Time     `json:"first"`
	Last         time.Time     `json:"last"`
	Observations int           `json:"observations"`
}

// recipientOutcomes answers a JSON array of the recipient's stored
// outcomes, newest last event first: ingest folds a recipient's events
// after each batch that touched it and stores the result
// (docs/outcomes.md "Storing and counting"), so nothing is folded here.
func (s *server) recipientOutcomes(w http.ResponseWriter, r *http.Request) {
	address, err := parseAddress(r.PathValue("address"))
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	stored, err := s.store.RecipientOutcomes(r.Context(), address)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := make([]outcomeJSON, 0, len(stored))
	for _, o := range stored {
		if o.State == string(outcome.StateMerged) {
			continue // its events are part of another outcome of the list
		}
		out = append(out, outcomeJSON{
			Stream: o.Stream, MessageID: o.MessageID, State: outcome.State(o.State), Class: o.Class, Reason: o.Reason,
			Scope: o.Scope, Provider: o.Provider, Final: o.Final, First: o.First.UTC(), Last: o.Last.UTC(),
			Observations: o.Observations,
		})
	}
	s.writeJSON(w, r, http.StatusOK, out)
}
