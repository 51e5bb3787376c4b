package verp

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzVerify: Verify never panics on any address, and whatever Sign returns
// is at most 64 octets in its local part and verifies, in any letter case,
// to the recipient and message it was signed for.
func FuzzVerify(f *testing.F) {
	s := newSigner(f, key1+","+key2, signDay)
	old := newSigner(f, key2, signDay.AddDate(0, 0, -3))
	for _, r := range []string{
		"jane@example.net", "Jane.Doe+tag@Example.NET", `"j d"@example.net`, "jürgen@example.de",
		"用户@例子.广告", strings.Repeat("x", 64) + "@example.com", "a=b@example.net", "u@[192.0.2.1]",
	} {
		for _, signer := range []*Signer{s, old} {
			addr, err := signer.Sign(testDomain, r, testMID)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(addr, testDomain, r, testMID)
			f.Add(strings.ToUpper(addr), "b.example", r, "x")
		}
	}
	f.Add("bounces@"+testDomain, testDomain, "", "")
	f.Add("b+@", "", "@", "<>")
	f.Add("b+h"+strings.Repeat("a", fixedLen+rcptHLen-1)+"@x", "x", "a@b", "m")

	f.Fuzz(func(t *testing.T, address, domain, recipient, messageID string) {
		tok, err := s.Verify(address)
		if err == nil {
			if tok.RecipientHash == "" || tok.MessageIDHash == "" || tok.Domain == "" {
				t.Errorf("Verify(%q) = %+v: incomplete token", address, tok)
			}
		} else if !errors.Is(err, ErrNotVERP) && !errors.Is(err, ErrForged) && !errors.Is(err, ErrExpired) {
			t.Errorf("Verify(%q): %v is not a sentinel error", address, err)
		}

		addr, err := s.Sign(domain, recipient, messageID)
		if err != nil {
			return
		}
		if lp := addr[:strings.LastIndexByte(addr, '@')]; len(lp) > MaxLocalPart || lp != strings.ToLower(lp) {
			t.Fatalf("Sign(%q, %q, %q) = %q: local part too long or not lower case", domain, recipient, messageID, addr)
		}
		for _, a := range []string{addr, strings.ToUpper(addr)} {
			tok, err := s.Verify(a)
			if err != nil {
				t.Fatalf("Sign(%q, %q, %q) = %q; Verify(%q): %v", domain, recipient, messageID, addr, a, err)
			}
			if tok.Recipient != "" && tok.Recipient != normalizeRecipient(recipient) {
				t.Errorf("Verify(%q): Recipient %q, want %q", a, tok.Recipient, normalizeRecipient(recipient))
			}
			if tok.RecipientHash != RecipientHash(recipient) || tok.MessageIDHash != MessageIDHash(messageID) {
				t.Errorf("Verify(%q): hashes %q %q, want %q %q", a, tok.RecipientHash, tok.MessageIDHash, RecipientHash(recipient), MessageIDHash(messageID))
			}
			if want := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC); !tok.Day.Equal(want) {
				t.Errorf("Verify(%q): Day %v, want %v", a, tok.Day, want)
			}
		}
		if _, err := s.Verify(addr + "x"); !errors.Is(err, ErrForged) {
			t.Errorf("Verify(%q) under another domain: %v, want ErrForged", addr+"x", err)
		}
	})
}
