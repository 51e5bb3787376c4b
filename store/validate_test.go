package store

import (
	"errors"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
)

func TestValidate(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	okR := Report{Envelope: event.Envelope{ID: "r", Received: now}}
	okE := Event{ID: "e", Time: now, Event: event.Event{Class: event.ClassHard}}
	tests := []struct {
		name    string
		reports []Report
		events  []Event
		zero    bool // the error wraps ErrZeroTime
		ok      bool
	}{
		{"valid", []Report{okR}, []Event{okE}, false, true},
		{"nothing", nil, nil, false, true},
		{"report without id", []Report{{Envelope: event.Envelope{Received: now}}}, nil, false, false},
		{"report without time", []Report{{Envelope: event.Envelope{ID: "r"}}}, nil, true, false},
		{"event without id", nil, []Event{{Time: now, Event: event.Event{Class: event.ClassHard}}}, false, false},
		{"event without time", nil, []Event{{ID: "e", Event: event.Event{Class: event.ClassHard}}}, true, false},
		{"event with empty class", nil, []Event{{ID: "e", Time: now}}, false, false},
		{"event with unknown class", nil, []Event{{ID: "e", Time: now, Event: event.Event{Class: "HARD"}}}, false, false},
		{"bad row after good ones", []Report{okR, okR}, []Event{okE, {ID: "x", Time: now}}, false, false},
	}
	for _, tt := range tests {
		err := Validate(tt.reports, tt.events)
		if (err == nil) != tt.ok {
			t.Errorf("%s: Validate = %v, want ok %v", tt.name, err, tt.ok)
		}
		if got := errors.Is(err, ErrZeroTime); got != tt.zero {
			t.Errorf("%s: errors.Is(%v, ErrZeroTime) = %v, want %v", tt.name, err, got, tt.zero)
		}
	}
}
