package verp

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testDomain = "bounces.example.com"
	testMID    = "<20261125.abc@mail.example.org>"
	key1       = "first-secret-key-0123"
	key2       = "second-secret-key-4567"
)

// signDay is the signing time of most tests: 2026-11-25 10:00 UTC.
var signDay = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

func mustKeys(t testing.TB, s string) Keys {
	t.Helper()
	ks, err := ParseKeys(s)
	if err != nil {
		t.Fatalf("ParseKeys: %v", err)
	}
	return ks
}

func newSigner(t testing.TB, keys string, now time.Time) *Signer {
	return &Signer{Keys: mustKeys(t, keys), Now: at(now)}
}

func localPart(addr string) string { return addr[:strings.LastIndexByte(addr, '@')] }

func TestRoundTrip(t *testing.T) {
	local64 := strings.Repeat("x", 64)
	tests := []struct {
		name, recipient string
		form            byte
		want            string // Token.Recipient; "" when only hashed
	}{
		{"short", "jane@example.net", formLiteral, "jane@example.net"},
		{"upper-case input", "Jane.Doe@Example.NET", formLiteral, "jane.doe@example.net"},
		{"angle brackets and space", " <jane@example.net> ", formLiteral, "jane@example.net"},
		{"plus tag", "jane+news@example.net", formLiteral, "jane+news@example.net"},
		{"longest literal", strings.Repeat("a", 21) + "@example.com", formLiteral, strings.Repeat("a", 21) + "@example.com"},
		{"one past literal", strings.Repeat("a", 22) + "@example.com", formHashed, ""},
		{"longest encoded", "ü" + strings.Repeat("a", 6) + "@example.com", formEncoded, "ü" + strings.Repeat("a", 6) + "@example.com"},
		{"one past encoded", "ü" + strings.Repeat("a", 7) + "@example.com", formHashed, ""},
		{"equals sign", "a=b@example.net", formEncoded, "a=b@example.net"},
		{"quoted local part", `"j d"@example.net`, formEncoded, `"j d"@example.net`},
		{"smtputf8", "jürgen@example.de", formEncoded, "jürgen@example.de"},
		{"smtputf8 domain", "用户@例子.广告", formEncoded, "用户@例子.广告"},
		{"smtputf8 long", "Пользователь@пример.рф", formHashed, ""},
		{"domain literal", "u@[192.0.2.1]", formEncoded, "u@[192.0.2.1]"},
		{"dot-atom edge", ".x@example.net", formEncoded, ".x@example.net"},
		{"long", "a.very.long.firstname.lastname@subsidiary.example-corporation.com", formHashed, ""},
		{"64-octet local part", local64 + "@example.com", formHashed, ""},
		{"longest address", local64 + "@" + strings.Repeat("d", 63) + "." + strings.Repeat("e", 63) + "." + strings.Repeat("f", 57) + ".com", formHashed, ""},
	}
	s := newSigner(t, key1, signDay)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, err := s.Sign(testDomain, tt.recipient, testMID)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			lp := localPart(addr)
			if len(lp) > MaxLocalPart {
				t.Errorf("local part %q is %d octets, want <= %d", lp, len(lp), MaxLocalPart)
			}
			if lp != strings.ToLower(lp) {
				t.Errorf("local part %q is not lower case", lp)
			}
			if !strings.HasPrefix(addr, "b+") || !strings.HasSuffix(addr, "@"+testDomain) {
				t.Errorf("address %q is not b+...@%s", addr, testDomain)
			}
			if got := lp[2]; got != tt.form {
				t.Errorf("form %q, want %q (%s)", got, tt.form, addr)
			}
			tok, err := s.Verify(addr)
			if err != nil {
				t.Fatalf("Verify(%q): %v", addr, err)
			}
			if tok.Recipient != tt.want {
				t.Errorf("Recipient %q, want %q", tok.Recipient, tt.want)
			}
			if want := RecipientHash(tt.recipient); tok.RecipientHash != want {
				t.Errorf("RecipientHash %q, want %q", tok.RecipientHash, want)
			}
			if want := MessageIDHash(testMID); tok.MessageIDHash != want {
				t.Errorf("MessageIDHash %q, want %q", tok.MessageIDHash, want)
			}
			if want := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC); !tok.Day.Equal(want) {
				t.Errorf("Day %v, want %v", tok.Day, want)
			}
			if want := time.Date(2026, 12, 26, 0, 0, 0, 0, time.UTC); !tok.Expires.Equal(want) {
				t.Errorf("Expires %v, want %v", tok.Expires, want)
			}
			if tok.Domain != testDomain || tok.KeyID != string(keyID([]byte(key1))) {
				t.Errorf("Domain %q KeyID %q, want %q %q", tok.Domain, tok.KeyID, testDomain, string(keyID([]byte(key1))))
			}
		})
	}
}

// TestLocalPartLimit signs recipients of every length with the shortest and
// the longest prefix: the local part never exceeds 64 octets.
func TestLocalPartLimit(t *testing.T) {
	for _, prefix := range []string{"", "x", strings.Repeat("p", maxPrefix)} {
		s := newSigner(t, key1, signDay)
		s.Prefix = prefix
		for n := 1; n <= 240; n++ {
			for _, local := range []string{strings.Repeat("a", min(n, 64)), strings.Repeat("ü", min(n, 32)), `"` + strings.Repeat(" ", min(n, 60)) + `"`} {
				r := local + "@" + strings.Repeat("d", max(1, min(n, 63)))
				addr, err := s.Sign(testDomain, r, testMID)
				if err != nil {
					t.Fatalf("Sign(%q): %v", r, err)
				}
				if lp := localPart(addr); len(lp) > MaxLocalPart {
					t.Fatalf("prefix %q recipient %q: local part is %d octets", prefix, r, len(lp))
				}
				if _, err := s.Verify(addr); err != nil {
					t.Fatalf("Verify(%q): %v", addr, err)
				}
			}
		}
	}
}

func TestVerifyLetterCase(t *testing.T) {
	s := newSigner(t, key1, signDay)
	for _, r := range []string{"jane@example.net", "jürgen@example.de", strings.Repeat("x", 64) + "@example.com"} {
		addr, err := s.Sign(testDomain, r, testMID)
		if err != nil {
			t.Fatal(err)
		}
		for _, variant := range []string{
			strings.ToUpper(addr),
			strings.ToUpper(localPart(addr)) + "@" + testDomain,
			localPart(addr) + "@BOUNCES.Example.COM",
			"<" + addr + ">",
			"  " + addr + "\r\n",
		} {
			tok, err := s.Verify(variant)
			if err != nil {
				t.Errorf("Verify(%q): %v", variant, err)
				continue
			}
			if tok.RecipientHash != RecipientHash(r) {
				t.Errorf("Verify(%q): RecipientHash %q, want %q", variant, tok.RecipientHash, RecipientHash(r))
			}
		}
	}
}

func TestVerifyPrefixIgnored(t *testing.T) {
	s := newSigner(t, key1, signDay)
	s.Prefix = "bounce-2026"
	addr, err := s.Sign(testDomain, "jane@example.net", testMID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(addr, "bounce-2026+") {
		t.Errorf("address %q does not start with the prefix", addr)
	}
	v := newSigner(t, key1, signDay) // default prefix
	other := "x" + addr[strings.IndexByte(addr, '+'):]
	for _, a := range []string{addr, other} {
		if _, err := v.Verify(a); err != nil {
			t.Errorf("Verify(%q): %v", a, err)
		}
	}
}

func TestTampered(t *testing.T) {
	s := newSigner(t, key1, signDay)
	for _, r := range []string{"jane.doe@example.net", "jürgen@example.de", strings.Repeat("x", 64) + "@example.com"} {
		addr, err := s.Sign(testDomain, r, testMID)
		if err != nil {
			t.Fatal(err)
		}
		lp := localPart(addr)
		for i := 2; i < len(lp); i++ { // every token character
			for _, c := range []byte{'a', 'q', '7', 'l', 'e', 'h'} {
				if lp[i] == c {
					continue
				}
				forged := lp[:i] + string(c) + lp[i+1:] + "@" + testDomain
				if _, err := s.Verify(forged); !errors.Is(err, ErrForged) {
					t.Errorf("Verify(%q) = %v, want ErrForged", forged, err)
				}
			}
		}
		for _, forged := range []string{
			lp[:len(lp)-1] + "@" + testDomain, // truncated
			lp + "a@" + testDomain,            // extended
			lp + "@other.example.com",         // another bounce domain
			lp + "@" + testDomain + ".",       // trailing dot
			lp + "@bounces.example.co",        // shorter domain
		} {
			if _, err := s.Verify(forged); !errors.Is(err, ErrForged) {
				t.Errorf("Verify(%q) = %v, want ErrForged", forged, err)
			}
		}
	}
}

func TestExpiry(t *testing.T) {
	signed := time.Date(2026, 11, 25, 23, 59, 0, 0, time.UTC)
	tests := []struct {
		name     string
		validity time.Duration
		now      time.Time
		want     error
	}{
		{"same day", 0, signed, nil},
		{"last valid day", 0, time.Date(2026, 12, 25, 23, 59, 59, 0, time.UTC), nil},
		{"first expired day", 0, time.Date(2026, 12, 26, 0, 0, 0, 0, time.UTC), ErrExpired},
		{"a year later", 0, signed.AddDate(1, 0, 0), ErrExpired},
		{"short validity, next day", 24 * time.Hour, signed.Add(24 * time.Hour), nil},
		{"short validity, two days", 24 * time.Hour, signed.Add(48 * time.Hour), ErrExpired},
		{"partial day rounds up", 25 * time.Hour, signed.Add(48 * time.Hour), nil},
		{"verifier a day behind", 0, signed.Add(-24 * time.Hour), nil},
		{"stamp two days in the future", 0, signed.Add(-48 * time.Hour), ErrExpired},
		{"stamp a year in the future", 0, signed.AddDate(-1, 0, 0), ErrExpired},
	}
	s := newSigner(t, key1, signed)
	addr, err := s.Sign(testDomain, "jane@example.net", testMID)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &Signer{Keys: s.Keys, Validity: tt.validity, Now: at(tt.now)}
			_, err := v.Verify(addr)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Verify at %v = %v, want %v", tt.now, err, tt.want)
			}
		})
	}
}

// TestDayStampWraps: the 15-bit day stamp wraps in 2089; tokens keep working.
func TestDayStampWraps(t *testing.T) {
	for _, now := range []time.Time{
		time.Date(1999, 12, 31, 12, 0, 0, 0, time.UTC),
		time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2089, 9, 17, 12, 0, 0, 0, time.UTC),
		time.Date(2089, 9, 18, 12, 0, 0, 0, time.UTC),
		time.Date(2089, 9, 19, 12, 0, 0, 0, time.UTC),
		time.Date(2150, 6, 1, 12, 0, 0, 0, time.UTC),
		time.Date(2400, 2, 29, 12, 0, 0, 0, time.UTC),
	} {
		s := newSigner(t, key1, now)
		addr, err := s.Sign(testDomain, "jane@example.net", testMID)
		if err != nil {
			t.Fatal(err)
		}
		for _, later := range []time.Duration{0, 24 * time.Hour, 20 * 24 * time.Hour} {
			s.Now = at(now.Add(later))
			tok, err := s.Verify(addr)
			if err != nil {
				t.Errorf("signed %v, verified %v later: %v", now, later, err)
				continue
			}
			want := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
			if !tok.Day.Equal(want) {
				t.Errorf("signed %v: Day %v, want %v", now, tok.Day, want)
			}
		}
	}
}

func TestRotation(t *testing.T) {
	old := newSigner(t, key1, signDay)
	addr, err := old.Sign(testDomain, "jane@example.net", testMID)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		keys string
		want error
	}{
		{key1, nil},
		{key2 + "," + key1, nil},
		{key2 + ", " + key1 + ",", nil},
		{key2, ErrForged},
		{"third-secret-key-89ab," + key2, ErrForged},
	}
	for _, tt := range tests {
		v := newSigner(t, tt.keys, signDay)
		_, err := v.Verify(addr)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("keys %d (%q first): Verify = %v, want %v", v.Keys.Len(), strings.Split(tt.keys, ",")[0][:5], err, tt.want)
		}
	}
	// The new list signs with its first key.
	rotated := newSigner(t, key2+","+key1, signDay)
	addr2, err := rotated.Sign(testDomain, "jane@example.net", testMID)
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := rotated.Verify(addr2); err != nil || tok.KeyID != string(keyID([]byte(key2))) {
		t.Errorf("rotated: KeyID %q, err %v; want %q", tok.KeyID, err, string(keyID([]byte(key2))))
	}
	if _, err := old.Verify(addr2); !errors.Is(err, ErrForged) {
		t.Errorf("old keys verifying a new token: %v, want ErrForged", err)
	}
}

// TestKeyIDCollision: two keys with the same id both verify.
func TestKeyIDCollision(t *testing.T) {
	base := "collision-key-000"
	var a, b string
	seen := map[byte]string{}
	for i := 0; a == ""; i++ {
		k := base + strings.Repeat("z", i%7) + string(rune('a'+i%26)) + strings.Repeat("y", i/26)
		id := keyID([]byte(k))
		if prev, ok := seen[id]; ok && prev != k {
			a, b = prev, k
		}
		seen[id] = k
	}
	for _, signer := range []string{a, b} {
		addr, err := newSigner(t, signer, signDay).Sign(testDomain, "jane@example.net", testMID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := newSigner(t, a+","+b, signDay).Verify(addr); err != nil {
			t.Errorf("colliding key ids: Verify = %v", err)
		}
	}
}

func TestNoKeys(t *testing.T) {
	var s Signer
	if _, err := s.Sign(testDomain, "jane@example.net", testMID); !errors.Is(err, ErrNoKeys) {
		t.Errorf("Sign without keys: %v, want ErrNoKeys", err)
	}
	if _, err := s.Verify("b+l5jtbdn4ibufdswkw6uodfs4xdwavjane.doe=example.net@bounces.example.com"); !errors.Is(err, ErrNoKeys) {
		t.Errorf("Verify without keys: %v, want ErrNoKeys", err)
	}
}

func TestSignErrors(t *testing.T) {
	tests := []struct {
		name, prefix, domain, recipient, mid string
	}{
		{"empty domain", "", "", "jane@example.net", testMID},
		{"domain with space", "", "bounces example.com", "jane@example.net", testMID},
		{"domain with underscore", "", "b_x.example.com", "jane@example.net", testMID},
		{"domain label hyphen", "", "-b.example.com", "jane@example.net", testMID},
		{"domain empty label", "", "b..example.com", "jane@example.net", testMID},
		{"unicode domain", "", "bounces.例子.广告", "jane@example.net", testMID},
		{"domain label too long", "", strings.Repeat("a", 64) + ".com", "jane@example.net", testMID},
		{"no recipient", "", testDomain, "", testMID},
		{"recipient without @", "", testDomain, "jane", testMID},
		{"recipient empty local", "", testDomain, "@example.net", testMID},
		{"recipient empty domain", "", testDomain, "jane@", testMID},
		{"recipient control char", "", testDomain, "ja\nne@example.net", testMID},
		{"recipient invalid utf-8", "", testDomain, "ja\xffne@example.net", testMID},
		{"recipient too long", "", testDomain, strings.Repeat("a", 64) + "@" + strings.Repeat("b", 200) + ".com", testMID},
		{"empty message id", "", testDomain, "jane@example.net", ""},
		{"message id of brackets", "", testDomain, "jane@example.net", " <> "},
		{"prefix upper case", "B", testDomain, "jane@example.net", testMID},
		{"prefix plus", "a+b", testDomain, "jane@example.net", testMID},
		{"prefix too long", strings.Repeat("p", maxPrefix+1), testDomain, "jane@example.net", testMID},
	}
	for _, tt := range tests {
		s := newSigner(t, key1, signDay)
		s.Prefix = tt.prefix
		if addr, err := s.Sign(tt.domain, tt.recipient, tt.mid); err == nil {
			t.Errorf("%s: Sign = %q, want an error", tt.name, addr)
		}
	}
}

func TestValidityRange(t *testing.T) {
	for _, v := range []time.Duration{-time.Hour, MaxValidity + time.Hour} {
		s := newSigner(t, key1, signDay)
		addr, err := s.Sign(testDomain, "jane@example.net", testMID)
		if err != nil {
			t.Fatal(err)
		}
		s.Validity = v
		if _, err := s.Verify(addr); err == nil || errors.Is(err, ErrForged) || errors.Is(err, ErrExpired) {
			t.Errorf("Validity %v: Verify = %v, want a configuration error", v, err)
		}
	}
}

func TestVerifyGarbage(t *testing.T) {
	s := newSigner(t, key1, signDay)
	valid, err := s.Sign(testDomain, "jane@example.net", testMID)
	if err != nil {
		t.Fatal(err)
	}
	tok := valid[2:strings.IndexByte(valid, '@')]
	kate, err := s.Sign(testDomain, "kate@example.net", testMID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(strings.ToUpper(kate)); err != nil {
		t.Fatalf("Verify(%q): %v", kate, err)
	}
	tests := []struct {
		address string
		want    error
	}{
		{"", ErrNotVERP},
		{"   ", ErrNotVERP},
		{"<>", ErrNotVERP},
		{"bounces", ErrNotVERP},
		{"bounces@" + testDomain, ErrNotVERP},
		{"<bounces@" + testDomain + ">", ErrNotVERP},
		{"@" + testDomain, ErrNotVERP},
		{"b+" + tok, ErrNotVERP},
		{"b+@" + testDomain, ErrForged},
		{"+@", ErrForged},
		{"b+l@" + testDomain, ErrForged},
		{"b+" + strings.Repeat("a", fixedLen) + "@" + testDomain, ErrForged},
		{"b+" + strings.Repeat("a", fixedLen+1) + "@" + testDomain, ErrForged},
		{"b+h" + strings.Repeat("a", fixedLen+rcptHLen) + "@" + testDomain, ErrForged},
		{"b+h" + strings.Repeat("a", fixedLen+rcptHLen-1) + "@" + testDomain, ErrForged},
		{"b+x" + tok[1:] + "@" + testDomain, ErrForged},
		{"b+" + tok[:5] + "0" + tok[6:] + "@" + testDomain, ErrForged},
		{"b+" + tok + strings.Repeat("a", 64) + "@" + testDomain, ErrForged},
		{strings.Replace(kate, "k", "\u212a", 1), ErrForged}, // Kelvin sign, lower-cases to k
		{"b+\xff\xfe" + tok + "@" + testDomain, ErrForged},
		{"b+" + tok + "@" + testDomain + "@" + testDomain, ErrForged},
		{"b+" + tok + "\x00@" + testDomain, ErrForged},
		{`"b+` + tok + `"@` + testDomain, ErrForged},
		{strings.Repeat("+", 10000) + "@", ErrForged},
		{strings.Repeat("@", 10000), ErrNotVERP},
	}
	for _, tt := range tests {
		if _, err := s.Verify(tt.address); !errors.Is(err, tt.want) {
			t.Errorf("Verify(%.80q) = %v, want %v", tt.address, err, tt.want)
		}
	}
}

func TestHashes(t *testing.T) {
	for _, pair := range [][2]string{
		{"<abc@example.org>", "abc@example.org"},
		{" <abc@example.org>\t", "abc@example.org"},
	} {
		if a, b := MessageIDHash(pair[0]), MessageIDHash(pair[1]); a != b {
			t.Errorf("MessageIDHash(%q) = %q, MessageIDHash(%q) = %q; want equal", pair[0], a, pair[1], b)
		}
	}
	if MessageIDHash("<ABC@example.org>") == MessageIDHash("<abc@example.org>") {
		t.Errorf("MessageIDHash ignores case; the left part of a Message-ID is case-sensitive")
	}
	if a, b := RecipientHash("<Jane@Example.NET>"), RecipientHash("jane@example.net"); a != b {
		t.Errorf("RecipientHash not case-insensitive: %q, %q", a, b)
	}
	if a, b := RecipientHash("x@example.net"), MessageIDHash("x@example.net"); a == b {
		t.Errorf("recipient and message-id hashes are not kept apart: %q", a)
	}
	for _, h := range []string{MessageIDHash("x"), RecipientHash("x@y")} {
		if len(h) != 8 || !inAlphabet(h) {
			t.Errorf("hash %q: want 8 base32 characters", h)
		}
	}
}

func TestDocExample(t *testing.T) {
	s := newSigner(t, "example-secret-key-1", signDay)
	for r, want := range map[string]string{
		"Jane.Doe@Example.NET": "b+l5jtbdn4ibufdswkw6uodfs4xdwavjane.doe=example.net@bounces.example.com",
		"jürgen@example.de":    "b+e5jtbdn4ibufdfqvuzq34ztuqd5ucnlb3y4thmvxeazlymfwxa3dffzsgk@bounces.example.com",
		"a.very.long.firstname.lastname@subsidiary.example-corporation.com": "b+h5jtbdn4ibufdyg25owkfuvvr2ea2l4cop262@bounces.example.com",
	} {
		got, err := s.Sign(testDomain, r, testMID)
		if err != nil || got != want {
			t.Errorf("Sign(%q) = %q, %v; want %q (the package doc's example)", r, got, err, want)
		}
	}
}

func TestConcurrent(t *testing.T) {
	s := newSigner(t, key1+","+key2, signDay)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				r := strings.Repeat("u", (g*200+i)%70+1) + "@example.net"
				addr, err := s.Sign(testDomain, r, testMID)
				if err != nil {
					t.Errorf("Sign: %v", err)
					return
				}
				if _, err := s.Verify(addr); err != nil {
					t.Errorf("Verify(%q): %v", addr, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
