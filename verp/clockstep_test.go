package verp

import (
	"errors"
	"testing"
	"time"
)

// TestClockSteps: the sender's or the verifier's wall clock stepped by 10
// minutes (the reliability harness's clock-jump scenario, which steps the
// host clock under load, cannot sign return paths: its load is unsigned).
// Day stamps are whole days, so a step matters only across midnight: a
// stamp one day ahead of the verifier's day verifies, and a token expires
// when the verifier's clock says so, up to the step early or late.
func TestClockSteps(t *testing.T) {
	const step = 10 * time.Minute
	day := func(d, h, m int) time.Time { return time.Date(2026, 11, d, h, m, 0, 0, time.UTC) }
	// Signed on November 1 with the default validity of 30 days: it
	// verifies through December 1.
	lastValid := time.Date(2026, 12, 1, 23, 55, 0, 0, time.UTC)
	tests := []struct {
		name         string
		sign, verify time.Time // the clocks' readings
		want         error
	}{
		{"sender's clock stepped forward past midnight: tomorrow's stamp", day(25, 23, 55).Add(step), day(25, 23, 55), nil},
		{"verifier's clock stepped back before midnight: tomorrow's stamp", day(26, 0, 5), day(26, 0, 5).Add(-step), nil},
		{"sender's clock a day and a step ahead: two days ahead", day(25, 23, 55).Add(24*time.Hour + step), day(25, 23, 55), ErrExpired},
		{"verifier's clock stepped forward past the last valid day", day(1, 12, 0), lastValid.Add(step), ErrExpired},
		{"verifier's clock stepped back into the last valid day", day(1, 12, 0), lastValid.Add(10 * time.Minute).Add(-step), nil},
		{"the same day, stepped both ways", day(25, 12, 0).Add(step), day(25, 12, 0).Add(-step), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSigner(t, key1, tt.sign)
			addr, err := s.Sign(testDomain, "jane@example.net", testMID)
			if err != nil {
				t.Fatal(err)
			}
			s.Now = at(tt.verify)
			_, err = s.Verify(addr)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("signed at %v, verified at %v: %v, want %v", tt.sign, tt.verify, err, tt.want)
			}
		})
	}
}
