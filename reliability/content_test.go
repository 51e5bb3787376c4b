package reliability

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/rules"
	"github.com/bouncer-mail/bouncer/verp"
)

// TestHostileContent runs the hostile-content scenario in CI size: it
// fails when a hostile message gets another reply than expected, one
// answered 250 is not stored or stored with other events than bouncer's
// classifier finds in its bytes (a complaint or auto-reply anything but
// that), a refused one is stored, bouncer dies, panics, dead-letters or
// its RSS passes contentRSSBound, or the load loses or duplicates a report.
//
// The decoding bombs decode to 1 MiB here, not 7: under -race the
// harness's own building and classifying of them took most of the time.
func TestHostileContent(t *testing.T) {
	hostileBomb = 1 << 20
	runScenario(t, "hostile-content")
}

// TestHostileKinds checks the hostile messages themselves, so that a
// failure of the scenario is bouncer's and not the harness's: each ends
// where the end of DATA adds nothing, is unique, lands on the right side
// of the limit it tests, and, classified in this process, has the events
// the scenario asserts explicitly (ARF and auto-replies exactly those).
func TestHostileKinds(t *testing.T) {
	rs, err := rules.Default()
	if err != nil {
		t.Fatal(err)
	}
	cl := classify.New(rs)
	seen := map[string]bool{}
	for _, k := range hostileKinds {
		for n := range 2 {
			m := k.build(k, "abc123", n)
			if m.Kind != k.name || len(m.Rcpts) != len(m.RcptWant) || len(m.Rcpts) == 0 {
				t.Errorf("%s: kind %q, %d RCPTs, %d expectations", k.name, m.Kind, len(m.Rcpts), len(m.RcptWant))
			}
			if m.Raw == nil {
				if m.Want < 500 || slices.Contains(m.RcptWant, 250) {
					t.Errorf("%s: no message, yet DATA is expected to get %d and RCPTs %v", k.name, m.Want, m.RcptWant)
				}
				continue
			}
			if seen[m.Sum] {
				t.Errorf("%s %d: not unique", k.name, n)
			}
			seen[m.Sum] = true
			if st := dataState(m.Raw); st != stateBeginLine {
				t.Errorf("%s: ends in reader state %d, not at a line start", k.name, st)
			}
			longest := 0
			for _, l := range bytes.Split(m.Raw, []byte("\n")) {
				longest = max(longest, len(l)+1)
			}
			switch {
			case m.Want == lineTooLongCode && longest <= listenerMaxLine:
				t.Errorf("%s: longest line %d, not over the %d limit", k.name, longest, listenerMaxLine)
			case m.Want != lineTooLongCode && longest > listenerMaxLine:
				t.Errorf("%s: a line of %d bytes, over the %d limit", k.name, longest, listenerMaxLine)
			case m.Want == 552 && len(m.Raw) <= listenerMaxMessage:
				t.Errorf("%s: %d bytes, not over the size limit", k.name, len(m.Raw))
			case m.Want == 250 && len(m.Raw) > listenerMaxMessage:
				t.Errorf("%s: %d bytes, over the size limit", k.name, len(m.Raw))
			}
			if m.Want != 250 {
				continue
			}
			evs, err := cl.Bytes(m.Raw)
			var got []wantEvent
			for _, ev := range evs {
				got = append(got, wantEvent{ev.Recipient, string(ev.Class), string(ev.Reason)})
			}
			if k.name == "binary-garbage" {
				if err == nil {
					t.Errorf("%s: parsed, want the parser's error (stored raw, no event)", k.name)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", k.name, err)
			}
			for _, x := range m.Explicit {
				if !slices.Contains(got, x) {
					t.Errorf("%s: classified as %v, want %v among them", k.name, got, x)
				}
			}
			if m.Group == groupARF && !slices.Equal(sortedEvents(got), sortedEvents(m.Explicit)) {
				t.Errorf("%s: classified as %v, want exactly %v", k.name, got, m.Explicit)
			}
		}
	}
}

// TestStuff checks dot-stuffing against go-smtp's DATA reader rules: a dot
// is doubled at the start and after CR LF only, not after a bare LF or CR.
func TestStuff(t *testing.T) {
	for _, c := range []struct{ raw, want string }{
		{".a\r\n", "..a\r\n.\r\n"},
		{"a\r\n.\r\n", "a\r\n..\r\n.\r\n"},
		{"a\n.b\r\n", "a\n.b\r\n.\r\n"},
		{"a\r.b\r\n", "a\r.b\r\n.\r\n"},
		{"a\r\r\n.b\r\n", "a\r\r\n.b\r\n.\r\n"},
		{"a\r\n\r\n.\r\n", "a\r\n\r\n..\r\n.\r\n"},
	} {
		if got := string(stuff([]byte(c.raw))); got != c.want {
			t.Errorf("stuff(%q) = %q, want %q", c.raw, got, c.want)
		}
	}
	// The fast forms against the byte-by-byte ones, on every string of
	// up to 7 bytes over the bytes that matter.
	var all func(prefix []byte, n int)
	all = func(prefix []byte, n int) {
		if got, want := string(stuff(prefix)), string(stuffSlow(prefix)); got != want {
			t.Fatalf("stuff(%q) = %q, byte by byte %q", prefix, got, want)
		}
		if got, want := dataState(prefix), stepState(prefix); got != want {
			t.Fatalf("dataState(%q) = %d, byte by byte %d", prefix, got, want)
		}
		if n == 0 {
			return
		}
		for _, c := range []byte(".\r\na") {
			all(append(prefix[:len(prefix):len(prefix)], c), n-1)
		}
	}
	all(nil, 7)
	for raw, want := range map[string]int{"a\r\n": stateBeginLine, "a\n": stateData, "a\r": stateCR, "a\r\r\n": stateData, "\r\n.": stateData} {
		if got := dataState([]byte(raw)); got != want {
			t.Errorf("dataState(%q) = %d, want %d", raw, got, want)
		}
	}
}

// TestBadVERP checks that every forged address of the flood fails to
// verify with the listener's own key, as forged or expired, or is not at
// the bounce domain; and that the valid one of verp-mixed verifies.
func TestBadVERP(t *testing.T) {
	s := contentSigner(time.Now(), contentVERPKey)
	for i := range 8 {
		a := badVERP("abc123", 1, i)
		_, err := s.Verify(a)
		switch {
		case !strings.HasSuffix(a, "@"+BounceDomain):
			// refused as not a bounce domain of this server
		case errors.Is(err, verp.ErrForged) || errors.Is(err, verp.ErrExpired):
		default:
			t.Errorf("bad address %d %s: Verify = %v, want forged or expired", i, a, err)
		}
	}
	good := signVERP("h-abc123-x-1@dest.example", "<m@sender.example>", time.Now())
	if _, err := s.Verify(good); err != nil {
		t.Errorf("Verify(%s) = %v", good, err)
	}
}
