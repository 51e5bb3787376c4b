package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

func TestRecipientOutcomes(t *testing.T) {
	e := start(t, nil)
	// m1: accepted, then an NDR to its VERP address; m2: greylisted, then
	// accepted; as ingest folds and stores them. m1's older fold (one
	// observation) is stored after its newer one and must not show.
	stored := func(key, state string, class event.Class, reason event.Reason, messageID string, first, last time.Time, obs int) store.Outcome {
		return store.Outcome{
			Key: key, Stream: "news", MessageID: messageID, Recipient: "alice@example.com", State: state,
			Class: class, Reason: reason, Scope: "recipient", Provider: "gmail", Final: true,
			First: first, Last: last, Observations: obs, Version: store.OutcomeVersion(obs, last),
		}
	}
	m1 := stored("k1", "bounced", event.ClassHard, event.ReasonUserUnknown, "<m1@example.com>", now.Add(-3*time.Hour), now.Add(-2*time.Hour), 2)
	m1Old := stored("k1", "delivered", event.ClassDelivered, event.ReasonDelivered, "<m1@example.com>", now.Add(-3*time.Hour), now.Add(-3*time.Hour), 1)
	m2 := stored("k2", "greylist_resolved", event.ClassGreylist, event.ReasonGreylisting, "<m2@example.com>", now.Add(-90*time.Minute), now.Add(-time.Hour), 2)
	for _, batch := range [][]store.Outcome{{m1, m2}, {m1Old}} {
		if err := e.store.WriteOutcomes(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}

	status, body, ctype := e.get(t, "/v1/recipients/Alice@Example.com/outcomes")
	if status != http.StatusOK || ctype != jsonType {
		t.Fatalf("GET outcomes = %d %q %s", status, ctype, body)
	}
	var raw []map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	wantKeys := []string{"class", "final", "first", "last", "message_id", "observations", "provider", "reason", "scope", "state", "stream"}
	for i, o := range raw {
		var keys []string
		for k := range o {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !reflect.DeepEqual(keys, wantKeys) {
			t.Errorf("outcome %d keys = %v, want %v", i, keys, wantKeys)
		}
	}

	type wireOutcome struct {
		Stream       string    `json:"stream"`
		MessageID    string    `json:"message_id"`
		State        string    `json:"state"`
		Class        string    `json:"class"`
		Reason       string    `json:"reason"`
		Scope        string    `json:"scope"`
		Provider     string    `json:"provider"`
		Final        bool      `json:"final"`
		First        time.Time `json:"first"`
		Last         time.Time `json:"last"`
		Observations int       `json:"observations"`
	}
	var got []wireOutcome
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	want := []wireOutcome{ // newest first
		{Stream: "news", MessageID: "<m2@example.com>", State: "greylist_resolved", Class: "greylist", Reason: "greylisting",
			Scope: "recipient", Provider: "gmail", Final: true, First: m2.First, Last: m2.Last, Observations: 2},
		{Stream: "news", MessageID: "<m1@example.com>", State: "bounced", Class: "hard", Reason: "userunknown",
			Scope: "recipient", Provider: "gmail", Final: true, First: m1.First, Last: m1.Last, Observations: 2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("outcomes =\n %+v\nwant\n %+v", got, want)
	}

	// No outcomes: an empty array, not null.
	if status, body, _ := e.get(t, "/v1/recipients/nobody@example.com/outcomes"); status != http.StatusOK || string(body) != "[]\n" {
		t.Errorf("GET outcomes of an unknown address = %d %q, want 200 []", status, body)
	}
	status, body, ctype = e.get(t, "/v1/recipients/not-an-address/outcomes")
	wantError(t, "GET outcomes of a bad address", status, body, ctype, http.StatusBadRequest)
}
