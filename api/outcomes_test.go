package api_test

import (
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
	syncEvent := func(id string, at time.Time, class event.Class, reason event.Reason, action, messageID string) store.Event {
		ev := newEvent(id, 0, "alice@example.com", class, at)
		ev.ReportID, ev.Source, ev.Stream = "", "sync", "news"
		ev.Reason, ev.Action, ev.MessageID = reason, action, messageID
		ev.ReturnPath = "b+" + messageID[1:3] + "@bounces.example.com"
		return ev
	}
	// m1: accepted, then an NDR to its VERP address; m2: greylisted, then
	// accepted.
	accepted := syncEvent("s1", now.Add(-3*time.Hour), event.ClassDelivered, event.ReasonDelivered, "delivered", "<m1@example.com>")
	ndr := newEvent("r1", 0, "alice@example.com", event.ClassHard, now.Add(-2*time.Hour))
	ndr.MessageID, ndr.ReturnPath = "", "b+m1@bounces.example.com"
	grey := syncEvent("s2", now.Add(-90*time.Minute), event.ClassGreylist, event.ReasonGreylisting, "delayed", "<m2@example.com>")
	later := syncEvent("s3", now.Add(-time.Hour), event.ClassDelivered, event.ReasonDelivered, "delivered", "<m2@example.com>")
	e.write(t, []store.Report{newReport("r1", ndr.Time)}, []store.Event{accepted, ndr, grey, later})

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
			Scope: "recipient", Provider: "gmail", Final: true, First: grey.Time, Last: later.Time, Observations: 2},
		{Stream: "news", MessageID: "<m1@example.com>", State: "bounced", Class: "hard", Reason: "userunknown",
			Scope: "recipient", Provider: "gmail", Final: true, First: accepted.Time, Last: ndr.Time, Observations: 2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("outcomes =\n %+v\nwant\n %+v", got, want)
	}

	// No events: an empty array, not null.
	if status, body, _ := e.get(t, "/v1/recipients/nobody@example.com/outcomes"); status != http.StatusOK || string(body) != "[]\n" {
		t.Errorf("GET outcomes of an unknown address = %d %q, want 200 []", status, body)
	}
	status, body, ctype = e.get(t, "/v1/recipients/not-an-address/outcomes")
	wantError(t, "GET outcomes of a bad address", status, body, ctype, http.StatusBadRequest)
}
