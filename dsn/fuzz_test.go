package dsn

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse checks that no input makes Parse panic or break its contract.
// Seeds: the inline samples of the tests and, when present, the project's
// NDR samples in ../testdata/ndr.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		postfixDSN,
		strings.ReplaceAll(postfixDSN, "\n", "\r\n"),
		strings.ReplaceAll(postfixDSN, "\n", "\r"),
		forwarded,
		"",
		"x",
		"Subject: only a header",
		"From: a@b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\nFinal-Recipient: utf-8; a\\x{E9}@b\nAction: failed\nStatus: 5.1.1\n",
		"From: a@b\nContent-Type: multipart/report; boundary=b\n\n--b\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: x\n--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: <m@x>\n",
		"From: a@b\nContent-Type: text/plain; charset=iso-2022-jp\nContent-Transfer-Encoding: base64\n\nGyRCJUYlOSVIGyhC\n",
		"From: a@b\nContent-Type: multipart/alternative\n\n--x\nContent-Type: text/html\n\n<p>a&amp;b</p>\n--x--\n",
		"Subject: x\n\n--- Below this line is a copy of the message.\n\nMessage-ID: <i@x>\nFrom: y\n",
	} {
		f.Add([]byte(s))
	}
	if files, err := os.ReadDir(filepath.Join("..", "testdata", "ndr")); err == nil {
		for _, e := range files {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".eml") {
				continue
			}
			if b, err := os.ReadFile(filepath.Join("..", "testdata", "ndr", e.Name())); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseBytes(b)
		if err != nil {
			if m != nil {
				t.Fatalf("error %v with a non-nil message", err)
			}
			return
		}
		if len(m.Text) > MaxText {
			t.Fatalf("len(Text) = %d > MaxText", len(m.Text))
		}
		if !utf8.ValidString(m.Text) {
			t.Fatalf("Text is not valid UTF-8: %q", m.Text)
		}
		if strings.IndexByte(m.Text, '\r') >= 0 {
			t.Fatalf("Text has a carriage return: %q", m.Text)
		}
		if len(m.Anomalies) > MaxAnomalies+1 {
			t.Fatalf("%d anomalies", len(m.Anomalies))
		}
		n := 0
		for _, r := range m.Reports {
			n += len(r.Recipients)
			for _, rc := range r.Recipients {
				if rc.Status.IsZero() {
					continue
				}
				st, ok := ParseStatus(rc.Status.String())
				if !ok || st != rc.Status {
					t.Fatalf("Status %v does not round-trip: %v, %v", rc.Status, st, ok)
				}
				if rc.Status.Class != 2 && rc.Status.Class != 4 && rc.Status.Class != 5 {
					t.Fatalf("Status class %d", rc.Status.Class)
				}
			}
		}
		if n > MaxRecipients {
			t.Fatalf("%d recipients > MaxRecipients", n)
		}
		if o := m.Original; o != nil && len(o.Headers) > MaxOriginalHeaders {
			t.Fatalf("%d original headers", len(o.Headers))
		}
		// Parse over a reader gives the same result.
		m2, err := Parse(strings.NewReader(string(b)))
		if err != nil || len(m2.Reports) != len(m.Reports) || m2.Text != m.Text {
			t.Fatalf("Parse and ParseBytes differ: %v", err)
		}
	})
}
