package classify

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/bouncer-mail/bouncer/event"
)

// FuzzClassify drives the whole path, dsn.Parse and the classifier, with
// arbitrary bytes. It must never panic, and every event it returns must be
// well-formed: a lower-cased address, a known class, a reason of the
// vocabulary. Bytes and Parse must answer alike.
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
		// Bytes skips Parse's copy of b: the same answer all the same.
		viaReader, readerErr := testClassifier.Parse(bytes.NewReader(b))
		if fmt.Sprint(err) != fmt.Sprint(readerErr) || !reflect.DeepEqual(evs, viaReader) {
			t.Fatalf("Bytes = %+v, %v; Parse = %+v, %v", evs, err, viaReader, readerErr)
		}
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
