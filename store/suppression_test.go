package store

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSuppressionQueryValidate(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name    string
		q       SuppressionQuery
		wantErr string
	}{
		{"one stream", SuppressionQuery{Stream: "news", Now: now, Limit: 1}, ""},
		{"global scope", SuppressionQuery{Now: now, Limit: 1000}, ""},
		{"all streams", SuppressionQuery{AllStreams: true, Now: now, Limit: 1}, ""},
		{"limit 0", SuppressionQuery{Now: now}, "limit 0"},
		{"negative limit", SuppressionQuery{Now: now, Limit: -5}, "limit -5"},
		{"zero now", SuppressionQuery{Limit: 1}, "zero time"},
		{"stream and all streams", SuppressionQuery{Stream: "news", AllStreams: true, Now: now, Limit: 1}, "AllStreams"},
	}
	for _, tt := range tests {
		err := tt.q.Validate()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: Validate = %v, want nil", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: Validate = %v, want an error mentioning %q", tt.name, err, tt.wantErr)
		}
	}
	if err := (SuppressionQuery{Limit: 1}).Validate(); !errors.Is(err, ErrZeroTime) {
		t.Errorf("zero Now: %v, want it to wrap ErrZeroTime", err)
	}
}

// ValidateEach is Validate with a Limit of 0 allowed: every row.
func TestSuppressionQueryValidateEach(t *testing.T) {
	now := time.Now()
	for _, q := range []SuppressionQuery{
		{AllStreams: true, Now: now},
		{Stream: "news", Now: now, Limit: 10},
	} {
		if err := q.ValidateEach(); err != nil {
			t.Errorf("ValidateEach(%+v) = %v, want nil", q, err)
		}
	}
	for _, q := range []SuppressionQuery{
		{AllStreams: true, Now: now, Limit: -1},
		{AllStreams: true},
		{Stream: "news", AllStreams: true, Now: now},
	} {
		if err := q.ValidateEach(); err == nil {
			t.Errorf("ValidateEach(%+v) = nil, want an error", q)
		}
	}
}

func TestValidateChange(t *testing.T) {
	key := SuppressionKey{Address: "a@example.com", Stream: "news"}
	ok := SuppressionChange{Time: time.Now(), Address: key.Address, Stream: key.Stream, Action: ActionRemove,
		Source: SourceManual, Actor: "ops", Note: "asked by the customer"}
	if err := ValidateChange(key, ok); err != nil {
		t.Fatalf("ValidateChange(valid) = %v", err)
	}
	upper := SuppressionKey{Address: "A@example.com", Stream: "news"}
	tests := []struct {
		name string
		key  SuppressionKey
		mod  func(c *SuppressionChange)
	}{
		{"other address", key, func(c *SuppressionChange) { c.Address = "b@example.com" }},
		{"other stream", key, func(c *SuppressionChange) { c.Stream = "" }},
		{"not an address", SuppressionKey{Address: "example.com"}, func(c *SuppressionChange) { c.Address, c.Stream = "example.com", "" }},
		{"upper case", upper, func(c *SuppressionChange) { c.Address = upper.Address }},
		{"zero time", key, func(c *SuppressionChange) { c.Time = time.Time{} }},
		{"add", key, func(c *SuppressionChange) { c.Action = ActionAdd }},
		{"unknown source", key, func(c *SuppressionChange) { c.Source = "api" }},
		{"control character", key, func(c *SuppressionChange) { c.Actor = "o\x00ps" }},
		{"oversize note", key, func(c *SuppressionChange) { c.Note = strings.Repeat("x", MaxSuppressionField+1) }},
	}
	for _, tt := range tests {
		c := ok
		tt.mod(&c)
		if err := ValidateChange(tt.key, c); err == nil {
			t.Errorf("%s: ValidateChange succeeded", tt.name)
		}
	}
}

func TestNewSuppressionStats(t *testing.T) {
	st := NewSuppressionStats()
	if len(st.BySource) != len(SuppressionSources) || st.Total != 0 || st.ByClass == nil || st.ByStream == nil {
		t.Fatalf("NewSuppressionStats = %+v", st)
	}
	for _, src := range SuppressionSources {
		if n, ok := st.BySource[src]; !ok || n != 0 {
			t.Errorf("BySource[%s] = %d, %v; want 0, present", src, n, ok)
		}
	}
}
