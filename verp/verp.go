package verp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Sentinel errors of Verify. Each is returned wrapped with a detail; test
// with errors.Is.
var (
	// ErrNotVERP means the address carries no token: its local part has no
	// "+" (a plain "bounces@domain"), or it is not an address at all.
	// A listener that accepts unsigned bounces accepts exactly these.
	ErrNotVERP = errors.New("not a VERP address")
	// ErrForged means the address has a token that does not verify: a bad
	// MAC, an unknown key, another domain, or a malformed token.
	ErrForged = errors.New("forged")
	// ErrExpired means the token is authentic but its day stamp is older
	// than the validity, or more than one day in the future.
	ErrExpired = errors.New("expired")
)

const (
	// MaxLocalPart is the longest local part of a signed address, in
	// octets: RFC 5321 section 4.5.3.1.1.
	MaxLocalPart = 64
	// DefaultPrefix is the local part before the "+" when Signer.Prefix is
	// empty.
	DefaultPrefix = "b"
	// DefaultValidity is how long a return path verifies when
	// Signer.Validity is zero.
	DefaultValidity = 30 * 24 * time.Hour
	// MaxValidity is the longest Signer.Validity accepted; the day stamp
	// wraps after 32768 days and is read as the day nearest today.
	MaxValidity = 10 * 365 * 24 * time.Hour
	// maxPrefix is the longest Signer.Prefix accepted.
	maxPrefix = 16
)

// Token forms: the first character of a token, naming the layout version
// (1) and how the recipient is carried.
const (
	formLiteral = 'l' // recipient as "local=domain"
	formEncoded = 'e' // recipient as unpadded base32
	formHashed  = 'h' // recipient hash only
)

// Field widths of a token, in characters.
const (
	formLen   = 1
	keyIDLen  = 1
	dayLen    = 3                                      // 15 bits
	msgIDLen  = 8                                      // 40 bits
	macLen    = 16                                     // 80 bits
	rcptHLen  = 8                                      // 40 bits
	headerLen = formLen + keyIDLen + dayLen + msgIDLen // before the MAC
	fixedLen  = headerLen + macLen                     // before the recipient
	dayMod    = 1 << (5 * dayLen)
)

const alphabet = "abcdefghijklmnopqrstuvwxyz234567"

// b32 is RFC 4648 base32 in lower case without padding.
var b32 = base32.NewEncoding(alphabet).WithPadding(base32.NoPadding)

// epoch is day 0 of the day stamp.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

// Token is what a verified return path says.
type Token struct {
	// Domain is the bounce domain the token was signed for, lower case.
	Domain string
	// Recipient is the lower-cased recipient address, or "" when it did not
	// fit and only RecipientHash is carried.
	Recipient string
	// RecipientHash is RecipientHash(recipient), always set.
	RecipientHash string
	// MessageIDHash is MessageIDHash(message-id).
	MessageIDHash string
	// Day is the signing day, midnight UTC.
	Day time.Time
	// Expires is the first instant at which the token no longer verifies.
	Expires time.Time
	// KeyID is the one-character id of the key that signed.
	KeyID string
}

// Signer signs and verifies return paths. Its zero value has no keys; set
// Keys. A Signer is safe for concurrent use once it is no longer modified.
type Signer struct {
	// Keys: the first signs, all verify.
	Keys Keys
	// Prefix is the local part before "+": 1 to 16 of a-z, 0-9, "-", "_".
	// Empty means DefaultPrefix. It is not covered by the MAC, and Verify
	// accepts any prefix, so changing it does not break return paths in
	// flight.
	Prefix string
	// Validity is how long a return path verifies, rounded up to whole
	// days: a token stamped on day D verifies through the end of day
	// D+ceil(Validity/24h). Zero means DefaultValidity.
	Validity time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

func (s *Signer) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// validityDays returns Validity in whole days, rounded up.
func (s *Signer) validityDays() (int64, error) {
	v := s.Validity
	if v == 0 {
		v = DefaultValidity
	}
	if v < 0 || v > MaxValidity {
		return 0, fmt.Errorf("verp: Signer.Validity %v is out of range (0, %v]", v, MaxValidity)
	}
	return int64((v + day - 1) / day), nil
}

func (s *Signer) prefix() (string, error) {
	p := s.Prefix
	if p == "" {
		return DefaultPrefix, nil
	}
	if len(p) > maxPrefix {
		return "", fmt.Errorf("verp: Signer.Prefix %q is longer than %d", p, maxPrefix)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", fmt.Errorf("verp: Signer.Prefix %q: only a-z, 0-9, - and _ are allowed", p)
		}
	}
	return p, nil
}

// Sign returns the return path "<prefix>+<token>@<domain>" for a message to
// recipient. Its local part is at most MaxLocalPart octets and lower case.
// The domain must be an ASCII host name; the recipient must be an address
// (it is lower-cased); the message id must not be empty (angle brackets
// are optional).
func (s *Signer) Sign(domain, recipient, messageID string) (string, error) {
	keys := s.Keys.list()
	if len(keys) == 0 {
		return "", ErrNoKeys
	}
	prefix, err := s.prefix()
	if err != nil {
		return "", err
	}
	domain = asciiLower(strings.TrimSpace(domain))
	if !validHost(domain) {
		return "", fmt.Errorf("verp: invalid bounce domain %q", domain)
	}
	if !utf8.ValidString(recipient) {
		return "", fmt.Errorf("verp: recipient %q is not valid UTF-8", recipient)
	}
	rcpt := normalizeRecipient(recipient)
	if err := checkRecipient(rcpt); err != nil {
		return "", err
	}
	mid := normalizeMessageID(messageID)
	if mid == "" {
		return "", errors.New("verp: empty message id")
	}

	room := MaxLocalPart - len(prefix) - 1 - fixedLen
	form, rfield := byte(formHashed), RecipientHash(rcpt)
	if lit, ok := literal(rcpt); ok && len(lit) <= room {
		form, rfield = formLiteral, lit
	} else if n := b32.EncodedLen(len(rcpt)); n <= room {
		form, rfield = formEncoded, b32.EncodeToString([]byte(rcpt))
	}

	k := keys[0]
	d := mod(daysSinceEpoch(s.now()), dayMod)
	var b strings.Builder
	b.Grow(MaxLocalPart + 1 + len(domain))
	b.WriteByte(form)
	b.WriteByte(k.id)
	b.WriteByte(alphabet[d>>10&31])
	b.WriteByte(alphabet[d>>5&31])
	b.WriteByte(alphabet[d&31])
	b.WriteString(hashField(midHashLabel, mid))
	header := b.String()
	sum := mac(k, domain, header, rfield)

	return prefix + "+" + header + sum + rfield + "@" + domain, nil
}

// Verify checks a return path signed by Sign. It accepts the address in any
// letter case and with or without angle brackets, and returns an error
// wrapping ErrNotVERP, ErrForged or ErrExpired (or a configuration error:
// ErrNoKeys, Validity out of range). The MAC binds the token to the domain
// of address; whether that domain is one of ours is the caller's check.
func (s *Signer) Verify(address string) (Token, error) {
	keys := s.Keys.list()
	if len(keys) == 0 {
		return Token{}, ErrNoKeys
	}
	vdays, err := s.validityDays()
	if err != nil {
		return Token{}, err
	}
	a := strings.TrimSpace(address)
	if len(a) >= 2 && a[0] == '<' && a[len(a)-1] == '>' {
		a = a[1 : len(a)-1]
	}
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		return Token{}, fmt.Errorf("%w: no @", ErrNotVERP)
	}
	local, domain := a[:at], asciiLower(a[at+1:])
	plus := strings.IndexByte(local, '+')
	if plus < 0 {
		return Token{}, fmt.Errorf("%w: no + in the local part", ErrNotVERP)
	}
	tok := local[plus+1:]
	if len(tok) < fixedLen+1 || len(tok) > MaxLocalPart {
		return Token{}, fmt.Errorf("%w: token length %d", ErrForged, len(tok))
	}
	if !isASCII(tok) {
		return Token{}, fmt.Errorf("%w: non-ASCII token", ErrForged)
	}
	tok = asciiLower(tok)
	form, kid := tok[0], tok[1]
	header, sum, rfield := tok[:headerLen], tok[headerLen:fixedLen], tok[fixedLen:]
	switch form {
	case formLiteral, formEncoded:
	case formHashed:
		if len(rfield) != rcptHLen {
			return Token{}, fmt.Errorf("%w: recipient hash length %d", ErrForged, len(rfield))
		}
	default:
		return Token{}, fmt.Errorf("%w: unknown token form %q", ErrForged, form)
	}
	if !inAlphabet(tok[1:fixedLen]) {
		return Token{}, fmt.Errorf("%w: malformed token", ErrForged)
	}

	ok := false
	for _, k := range keys {
		if k.id == kid && hmac.Equal([]byte(mac(k, domain, header, rfield)), []byte(sum)) {
			ok = true
			break
		}
	}
	if !ok {
		return Token{}, fmt.Errorf("%w: bad MAC", ErrForged)
	}

	t := Token{Domain: domain, MessageIDHash: header[headerLen-msgIDLen:], KeyID: string(kid)}
	switch form {
	case formLiteral:
		eq := strings.LastIndexByte(rfield, '=')
		if eq < 0 {
			return Token{}, fmt.Errorf("%w: literal recipient without =", ErrForged)
		}
		t.Recipient = rfield[:eq] + "@" + rfield[eq+1:]
	case formEncoded:
		r, err := b32.DecodeString(rfield)
		if err != nil || !utf8.Valid(r) {
			return Token{}, fmt.Errorf("%w: undecodable recipient", ErrForged)
		}
		t.Recipient = string(r)
	case formHashed:
		t.RecipientHash = rfield
	}
	if t.Recipient != "" {
		t.RecipientHash = RecipientHash(t.Recipient)
	}

	// The day stamp is the day since the epoch modulo dayMod: read it as the
	// day nearest today.
	today := daysSinceEpoch(s.now())
	stamp := int64(strings.IndexByte(alphabet, header[2]))<<10 |
		int64(strings.IndexByte(alphabet, header[3]))<<5 |
		int64(strings.IndexByte(alphabet, header[4]))
	diff := mod(stamp-today, dayMod)
	if diff >= dayMod/2 {
		diff -= dayMod
	}
	d := today + diff
	t.Day = epoch.AddDate(0, 0, int(d))
	t.Expires = t.Day.AddDate(0, 0, int(vdays+1))
	switch {
	case diff > 1:
		return Token{}, fmt.Errorf("%w: day stamp %s is in the future", ErrExpired, t.Day.Format(time.DateOnly))
	case -diff > vdays:
		return Token{}, fmt.Errorf("%w: signed %s, valid until %s", ErrExpired, t.Day.Format(time.DateOnly), t.Expires.Format(time.DateTime))
	}
	return t, nil
}

// Hash labels keep the hashes of different fields apart.
const (
	midHashLabel  = "bouncer-verp-message-id\x00"
	rcptHashLabel = "bouncer-verp-recipient\x00"
	macLabel      = "bouncer-verp-1\x00"
)

// MessageIDHash returns the token's hash of a Message-ID: 8 base32
// characters (40 bits) of SHA-256. Surrounding space and one pair of angle
// brackets are ignored; case is kept. Ingest matches it against the
// Message-ID of the returned original or of the sync log.
func MessageIDHash(messageID string) string {
	return hashField(midHashLabel, normalizeMessageID(messageID))
}

// RecipientHash returns the token's hash of a recipient address: 8 base32
// characters (40 bits) of SHA-256 of the lower-cased address without angle
// brackets. It identifies the recipient when the address did not fit in
// the token: ingest finds the address in the sync log that carried the same
// return path, or checks a candidate (a DSN's Final-Recipient) against it.
func RecipientHash(recipient string) string {
	return hashField(rcptHashLabel, normalizeRecipient(recipient))
}

func hashField(label, v string) string {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write([]byte(v))
	return b32.EncodeToString(h.Sum(nil)[:5])
}

// mac returns the token's MAC: 16 base32 characters, the first 80 bits of
// HMAC-SHA256(secret, "bouncer-verp-1\0" domain "\0" header rfield).
func mac(k key, domain, header, rfield string) string {
	m := k.newMAC()
	m.Write([]byte(macLabel))
	m.Write([]byte(domain))
	m.Write([]byte{0})
	m.Write([]byte(header))
	m.Write([]byte(rfield))
	return b32.EncodeToString(m.Sum(nil)[:10])
}

func normalizeRecipient(r string) string {
	r = strings.TrimSpace(r)
	if len(r) >= 2 && r[0] == '<' && r[len(r)-1] == '>' {
		r = strings.TrimSpace(r[1 : len(r)-1])
	}
	return strings.ToLower(r)
}

func normalizeMessageID(id string) string {
	id = strings.TrimSpace(id)
	if len(id) >= 2 && id[0] == '<' && id[len(id)-1] == '>' {
		id = strings.TrimSpace(id[1 : len(id)-1])
	}
	return id
}

// maxRecipient bounds a recipient address: RFC 5321 section 4.5.3.1.3
// limits a path to 256 octets with its angle brackets.
const maxRecipient = 254

func checkRecipient(r string) error {
	at := strings.LastIndexByte(r, '@')
	switch {
	case at <= 0 || at == len(r)-1:
		return fmt.Errorf("verp: recipient %q is not an address", r)
	case len(r) > maxRecipient:
		return fmt.Errorf("verp: recipient is %d octets, longer than %d", len(r), maxRecipient)
	}
	for _, c := range r {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("verp: recipient %q contains a control character", r)
		}
	}
	return nil
}

// literal returns the recipient as "local=domain" when it can be carried
// readably: an ASCII dot-atom local part of a-z, 0-9, ".", "_", "-", "+"
// (no "=", which separates) and a host-name domain.
func literal(r string) (string, bool) {
	at := strings.LastIndexByte(r, '@')
	local, domain := r[:at], r[at+1:]
	if local == "" || local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return "", false
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '+') {
			return "", false
		}
	}
	if !validHost(domain) {
		return "", false
	}
	return local + "=" + domain, true
}

// validHost reports whether h is a lower-case ASCII host name: dot-separated
// labels of a-z, 0-9 and inner "-", each 1 to 63 octets, 253 in all.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func daysSinceEpoch(t time.Time) int64 {
	return floorDiv(t.Unix()-epoch.Unix(), 86400)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func mod(a, m int64) int64 {
	r := a % m
	if r < 0 {
		r += m
	}
	return r
}

// asciiLower lower-cases ASCII letters only, so no non-ASCII spelling (such
// as the Kelvin sign) folds onto a valid token.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func inAlphabet(s string) bool {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(alphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}
