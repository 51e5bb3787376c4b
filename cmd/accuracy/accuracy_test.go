package main

import (
	"os"
	"testing"

	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/rules"
)

// floor holds the figures reached on ../shared/ndr-corpus. They only go up:
// when a change raises a figure, raise its floor in the same commit.
var floor = map[string]float64{
	"coverage":  100.0,
	"recipient": 98.2,
	"class":     98.0,
	"reason":    92.1,
	"status":    98.7,
}

const corpusDir = "../../../shared/ndr-corpus"

func TestCorpusAccuracyFloor(t *testing.T) {
	if _, err := os.Stat(corpusDir + "/labels.jsonl"); err != nil {
		t.Skipf("corpus not here (%v)", err)
	}
	rep, err := Run(classify.New(rules.MustDefault()), corpusDir, 1)
	if err != nil {
		t.Fatal(err)
	}
	if rep.RefRecords == 0 {
		t.Fatal("the corpus labels hold no reference records")
	}
	for name, min := range floor {
		if got := rep.Figures()[name]; got < min {
			t.Errorf("%s agreement %.2f%% fell below its floor %.2f%%", name, got, min)
		}
	}
	if rep.NonBounceFail > 1 {
		t.Errorf("%d failure events on the corpus's non-bounce files", rep.NonBounceFail)
	}
}

func TestRefMappings(t *testing.T) {
	for _, tt := range []struct {
		rec   refRecord
		class string
	}{
		{refRecord{Reason: "userunknown", HardBounce: true}, "hard"},
		{refRecord{Reason: "mailboxfull"}, "soft"},
		{refRecord{Reason: "feedback"}, "complaint"},
		{refRecord{Reason: "vacation"}, "autoreply"},
		{refRecord{Reason: "delivered"}, "delivered"},
	} {
		if got := refClass(tt.rec); string(got) != tt.class {
			t.Errorf("refClass(%+v) = %s, want %s", tt.rec, got, tt.class)
		}
	}
	for in, want := range map[string]string{"mesgtoobig": "emailtoolarge", "exceedlimit": "emailtoolarge", "toomanyconn": "ratelimited", "speeding": "ratelimited", "blocked": "blocked"} {
		if got := refReason(in); got != want {
			t.Errorf("refReason(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]bool{"5.0.910": true, "4.0.947": true, "5.1.1": false, "5.4.316": false, "": false, "5.0.0": false} {
		if got := placeholderStatus(in); got != want {
			t.Errorf("placeholderStatus(%q) = %v, want %v", in, got, want)
		}
	}
}
