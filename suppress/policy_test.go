package suppress

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
)

var day0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func at(days float64) time.Time { return day0.Add(time.Duration(days * 24 * float64(time.Hour))) }

func o(days float64, stream string, class event.Class, reason event.Reason) Outcome {
	return Outcome{Time: at(days), Stream: stream, Class: class, Reason: reason, Scope: reason.DefaultScope()}
}

func TestEvaluate(t *testing.T) {
	hard := func(d float64) Outcome { return o(d, "news", event.ClassHard, event.ReasonUserUnknown) }
	full := func(d float64) Outcome { return o(d, "news", event.ClassSoft, event.ReasonMailboxFull) }
	blocked := func(d float64) Outcome { return o(d, "news", event.ClassSoft, event.ReasonBlocked) }
	grey := func(d float64) Outcome { return o(d, "news", event.ClassGreylist, event.ReasonGreylisting) }
	expired := func(d float64) Outcome { return o(d, "news", event.ClassSoft, event.ReasonExpired) }
	delivered := func(d float64) Outcome { return o(d, "news", event.ClassDelivered, event.ReasonDelivered) }
	complaint := func(d float64, s string) Outcome { return o(d, s, event.ClassComplaint, event.ReasonFeedback) }
	tests := []struct {
		name     string
		outcomes []Outcome
		now      float64
		want     []string // rule/stream of each decision in force
	}{
		{"nothing", nil, 1, nil},
		{"hard suppresses at once, every stream, for good", []Outcome{hard(0)}, 400, []string{"hard/"}},
		{"hard in the future of now does not count yet", []Outcome{hard(5)}, 1, nil},
		{"hard, then delivered, stays (hard is not lifted by a delivery)", []Outcome{hard(0), delivered(1)}, 2, []string{"hard/"}},
		{"complaint suppresses its stream", []Outcome{complaint(0, "news")}, 1, []string{"complaint/news"}},
		{"complaints on two streams", []Outcome{complaint(0, "news"), complaint(1, "billing")}, 2, []string{"complaint/billing", "complaint/news"}},
		{"one soft: no", []Outcome{full(0)}, 1, nil},
		{"two soft: no", []Outcome{full(0), full(1)}, 2, nil},
		{"three soft within 7 days: yes", []Outcome{full(0), full(3), full(6)}, 7, []string{"soft/"}},
		{"three soft over more than 7 days: no", []Outcome{full(0), full(4), full(8)}, 9, nil},
		{"three soft, the window slides", []Outcome{full(0), full(5), full(8), full(11)}, 12, []string{"soft/"}},
		{"soft suppression lasts 30 days", []Outcome{full(0), full(1), full(2)}, 31.9, []string{"soft/"}},
		{"soft suppression expires after 30 days", []Outcome{full(0), full(1), full(2)}, 32.1, nil},
		{"a delivery lifts a soft suppression", []Outcome{full(0), full(1), full(2), delivered(3)}, 4, nil},
		{"a delivery between soft failures restarts the count", []Outcome{full(0), full(1), delivered(2), full(3)}, 4, nil},
		{"soft failures in different streams count together", []Outcome{full(0), o(1, "billing", event.ClassSoft, event.ReasonMailboxFull), full(2)}, 3, []string{"soft/"}},
		{"sender-scope never suppresses", []Outcome{blocked(0), blocked(1), blocked(2), blocked(3)}, 4, nil},
		{"greylisting never suppresses", []Outcome{grey(0), grey(1), grey(2)}, 3, nil},
		{"transport failures never suppress", []Outcome{expired(0), expired(1), expired(2)}, 3, nil},
		{"order of input does not matter", []Outcome{full(2), full(0), full(1)}, 3, []string{"soft/"}},
		{"hard and complaint together", []Outcome{complaint(0, "news"), hard(1)}, 2, []string{"complaint/news", "hard/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Default.Evaluate(tt.outcomes, at(tt.now))
			var rules []string
			for _, d := range got {
				rules = append(rules, d.Rule+"/"+d.Stream)
			}
			if strings.Join(rules, " ") != strings.Join(tt.want, " ") {
				t.Errorf("Evaluate = %v, want %v", rules, tt.want)
			}
		})
	}
}

func TestEvaluateBounds(t *testing.T) {
	p := Default
	p.HardFor = Duration(90 * 24 * time.Hour)
	p.ComplaintScope = "global"
	outs := []Outcome{o(0, "news", event.ClassHard, event.ReasonHostUnknown), o(0, "news", event.ClassComplaint, event.ReasonFeedback)}
	got := p.Evaluate(outs, at(10))
	if len(got) != 2 || got[0].Stream != GlobalStream || got[1].Until != at(90) {
		t.Errorf("global complaint and a 90-day hard: %+v", got)
	}
	if got := p.Evaluate(outs, at(91)); len(got) != 1 || got[0].Rule != "complaint" {
		t.Errorf("after 90 days only the complaint stays: %+v", got)
	}
	if !Suppressed(got, "anything") {
		t.Error("a global complaint does not suppress another stream")
	}
	streamOnly := []Decision{{Stream: "news", Rule: "complaint"}}
	if Suppressed(streamOnly, "billing") || !Suppressed(streamOnly, "news") {
		t.Error("a stream complaint must suppress that stream only")
	}
}

func TestPolicyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "policy.json")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p, err := Load(write(`{"soft_count": 5, "soft_window": "48h", "normalize": {"plus_tags": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.SoftCount != 5 || time.Duration(p.SoftWindow) != 48*time.Hour || p.SoftFor != Default.SoftFor || !p.Normalize.PlusTags {
		t.Errorf("loaded %+v: want the file's values over the defaults", p)
	}
	for _, bad := range []string{`{"soft_count": 0}`, `{"soft_window": "soon"}`, `{"typo": 1}`, `{"complaint_scope": "tenant"}`, `{"hard_for": "-1h"}`} {
		if _, err := Load(write(bad)); err == nil {
			t.Errorf("policy %s: no error", bad)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file: no error")
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		n        Normalization
		in, want string
	}{
		{Normalization{}, "Jane.Doe+News@GMail.com", "jane.doe+news@gmail.com"},
		{Normalization{}, "<a@example.com>", "a@example.com"},
		{Normalization{PlusTags: true}, "jane+news@example.com", "jane@example.com"},
		{Normalization{PlusTags: true}, "+only@example.com", "+only@example.com"},
		{Normalization{GmailDots: true}, "Jane.Doe@googlemail.com", "janedoe@gmail.com"},
		{Normalization{GmailDots: true}, "jane.doe@example.com", "jane.doe@example.com"},
		{Normalization{GmailDots: true, PlusTags: true}, "j.a.n.e+x@gmail.com", "jane@gmail.com"},
		{Normalization{}, "not an address", ""},
		{Normalization{}, "a@b@", ""},
		{Normalization{}, "a@example.com,b@example.com", ""},
		{Normalization{GmailDots: true}, "...@gmail.com", ""},
	}
	for _, tt := range tests {
		if got := tt.n.Address(tt.in); got != tt.want {
			t.Errorf("%+v.Address(%q) = %q, want %q", tt.n, tt.in, got, tt.want)
		}
	}
}

// TestEvaluateMatrix runs every class × scope × count × spacing through
// the default policy and checks the decision against DESIGN.md's table,
// stated here plainly: hard recipient-scope and complaints suppress at
// once; soft recipient-scope after 3 within 7 days; everything else never.
// Each case also checks expiry (30 days after the last soft failure) and
// clearing (a delivery after the failures lifts a soft suppression only).
func TestEvaluateMatrix(t *testing.T) {
	scopes := []event.Scope{event.ScopeRecipient, event.ScopeSender, event.ScopeTransport, event.ScopeNone}
	spacings := []struct {
		name string
		days float64 // between consecutive failures
	}{{"same day", 0.1}, {"3 days apart", 3}, {"4 days apart", 4}}
	for _, class := range event.Classes {
		for _, scope := range scopes {
			for count := 1; count <= 4; count++ {
				for _, sp := range spacings {
					var outs []Outcome
					for i := range count {
						outs = append(outs, Outcome{Time: at(float64(i) * sp.days), Stream: "news", Class: class, Reason: event.ReasonUndefined, Scope: scope})
					}
					last := float64(count-1) * sp.days
					var want string
					switch {
					case class == event.ClassHard && scope == event.ScopeRecipient:
						want = "hard/"
					case class == event.ClassComplaint:
						want = "complaint/news"
					case class == event.ClassSoft && scope == event.ScopeRecipient && count >= 3:
						// Any 3 consecutive failures within 7 days.
						if 2*sp.days <= 7 {
							want = "soft/"
						}
					}
					name := class.String() + "/" + string(scope) + "/" + sp.name + "/" + string(rune('0'+count))
					check := func(when string, now float64, outs []Outcome, want string) {
						t.Helper()
						var got []string
						for _, d := range Default.Evaluate(outs, at(now)) {
							got = append(got, d.Rule+"/"+d.Stream)
						}
						if strings.Join(got, " ") != want {
							t.Errorf("%s, %s: %v, want %q", name, when, got, want)
						}
					}
					check("just after the last", last+0.01, outs, want)
					// Expiry: soft ends 30 days after the last failure,
					// hard and complaints do not end by themselves.
					later := want
					if want == "soft/" {
						later = ""
					}
					check("31 days after the last", last+31, outs, later)
					// Clearing: a delivery after the failures lifts a soft
					// suppression, not a hard one or a complaint.
					cleared := want
					if want == "soft/" {
						cleared = ""
					}
					delivered := append(append([]Outcome(nil), outs...), Outcome{Time: at(last + 0.5), Stream: "news", Class: event.ClassDelivered, Reason: event.ReasonDelivered})
					check("after a delivery", last+1, delivered, cleared)
				}
			}
		}
	}
}
