package api

import (
	"net/http"
	"slices"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/outcome"
	"github.com/bouncer-mail/bouncer/store"
)

// What GET /v1/recipients/{address}/outcomes groups: the recipient's
// newest events, and the window within which a report with no key joins
// the sync group before it (docs/outcomes.md).
const (
	outcomesEventsLimit = 1000
	outcomesWindow      = 5 * 24 * time.Hour
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

// recipientOutcomes answers a JSON array of the recipient's outcomes,
// newest first, folded from its newest outcomesEventsLimit events. The
// store keeps no outcomes yet: they are computed on each request.
func (s *server) recipientOutcomes(w http.ResponseWriter, r *http.Request) {
	address, err := parseAddress(r.PathValue("address"))
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	events, err := s.store.RecipientEvents(r.Context(), address, outcomesEventsLimit)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	groups := outcome.Group(outcomeItems(events), outcomesWindow)
	out := make([]outcomeJSON, 0, len(groups))
	for _, g := range slices.Backward(groups) {
		out = append(out, outcomeJSON{
			Stream: g.Stream, MessageID: g.MessageID, State: g.State, Class: g.Class, Reason: g.Reason,
			Scope: g.Scope, Provider: g.Provider, Final: g.Final, First: g.First.UTC(), Last: g.Last.UTC(),
			Observations: g.Observations,
		})
	}
	s.writeJSON(w, r, http.StatusOK, out)
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
