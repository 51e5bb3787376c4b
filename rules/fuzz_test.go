package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzRules drives the rules engine with arbitrary text: format
// recognition, extraction by every default format, and reason matching.
// It must never panic, must keep Extract's bounds, and Reason must decide
// as the plain strings.Contains loop does.
func FuzzRules(f *testing.F) {
	seeds, _ := filepath.Glob("../testdata/ndr/*.eml")
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(string(b), "MAILER-DAEMON@example.com", "Undelivered Mail Returned to Sender")
		}
	}
	f.Add("<a@example.com>:\n550 5.1.1 no such user\n", "postmaster", "failure notice")
	f.Add("", "", "")
	s := MustDefault()
	f.Fuzz(func(t *testing.T, text, from, subject string) {
		h := fakeHeader{"From": from, "Subject": subject}
		lower := LowerASCII(text)
		if len(lower) != len(text) {
			t.Fatalf("LowerASCII changed the length: %d -> %d", len(text), len(lower))
		}
		s.DetectFormat(h, lower)
		s.IsAutoreply(h, lower)
		for i := range s.formats {
			found := s.formats[i].Extract(text, lower)
			if len(found) > maxFound {
				t.Fatalf("format %s: %d recipients, limit %d", s.formats[i].Name, len(found), maxFound)
			}
			for _, fd := range found {
				if !strings.Contains(fd.Recipient, "@") {
					t.Fatalf("format %s: recipient %q without @", s.formats[i].Name, fd.Recipient)
				}
				if len(fd.Diagnostic) > maxDiagnosticLen {
					t.Fatalf("format %s: diagnostic of %d bytes", s.formats[i].Name, len(fd.Diagnostic))
				}
			}
		}
		for _, r := range []Reply{{Text: lower, Status: "5.1.1", Code: 550}, {Text: lower}} {
			got, gotOK := s.Reason(r)
			if want, wantOK := s.reasonByContains(r); got != want || gotOK != wantOK {
				t.Fatalf("Reason(%+v) = %+v, %v; strings.Contains gives %+v, %v", r, got, gotOK, want, wantOK)
			}
		}
		s.Provider(subject, from)
	})
}

// fakeHeader is a map standing in for a parsed message's header; the
// fuzzer needs no MIME to exercise the rules.
type fakeHeader map[string]string

func (h fakeHeader) Get(name string) string { return h[name] }
