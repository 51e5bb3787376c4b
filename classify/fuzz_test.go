package classify

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bouncer-mail/bouncer/event"
)

// FuzzClassify drives the whole path, dsn.Parse and the classifier, with
// arbitrary bytes. It must never panic, and every event it returns must be
// well-formed: a lower-cased address, a known class, a reason of the
// vocabulary.
func FuzzClassify(f *testing.F) {
	seeds, _ := filepath.Glob("../testdata/ndr/*.eml")
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("From: MAILER-DAEMON@example.com\nSubject: failure notice\n\n<a@example.com>:\n550 no such user\n"))
	f.Add([]byte{})
	classes := map[event.Class]bool{}
	for _, c := range event.Classes {
		classes[c] = true
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := testClassifier.Bytes(b)
		if err != nil {
			return
		}
		for _, e := range evs {
			if normalizeAddress(e.Recipient) != e.Recipient || e.Recipient == "" {
				t.Fatalf("recipient %q is not a normalised address", e.Recipient)
			}
			if !classes[e.Class] {
				t.Fatalf("class %q is not a class", e.Class)
			}
			if !e.Reason.Valid() {
				t.Fatalf("reason %q is not in the vocabulary", e.Reason)
			}
			if e.Class.IsFailure() && e.Scope == event.ScopeNone {
				t.Fatalf("failure %s/%s without a scope", e.Class, e.Reason)
			}
		}
	})
}
