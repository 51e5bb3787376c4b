package verp

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"strings"
)

// MinKeyLen is the shortest secret accepted, in bytes.
const MinKeyLen = 16

// maxKeysFile bounds the size of a keys file.
const maxKeysFile = 64 << 10

// ErrNoKeys is returned when a key list holds no key at all.
var ErrNoKeys = errors.New("verp: no keys")

// Keys is an ordered list of HMAC secrets: the first signs, all verify. The
// zero value holds no key. A Keys value never prints its secrets: every fmt
// verb and slog print "<secret>"; and as each secret is held only inside a
// closure, even reflection (fmt printing a Keys in an unexported field, where
// it cannot call Format) shows no more than a function's address.
type Keys struct {
	keys []key
}

func (k Keys) list() []key { return k.keys }

type key struct {
	id     byte             // keyID(secret)
	newMAC func() hash.Hash // HMAC-SHA256 keyed with the secret
}

// ParseKeys parses a comma-separated list of raw secrets, as in the
// environment variable BOUNCER_VERP_KEYS. Space around each secret is
// trimmed and empty items are skipped; a secret therefore cannot contain a
// comma or begin or end with space (use LoadKeysFile for such a secret).
// Each secret must be at least MinKeyLen bytes.
func ParseKeys(s string) (Keys, error) {
	return newKeys(strings.Split(s, ","), "item")
}

// LoadKeysFile reads secrets from a file, one raw secret per line, the
// signing key first. Space around each line is trimmed; blank lines and
// lines starting with "#" are skipped.
func LoadKeysFile(path string) (Keys, error) {
	f, err := os.Open(path)
	if err != nil {
		return Keys{}, fmt.Errorf("verp: reading keys: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeysFile+1))
	if err != nil {
		return Keys{}, fmt.Errorf("verp: reading keys: %w", err)
	}
	if len(b) > maxKeysFile {
		return Keys{}, fmt.Errorf("verp: keys file %s is larger than %d bytes", path, maxKeysFile)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxKeysFile+1)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			line = ""
		}
		lines = append(lines, line)
	}
	if err := sc.Err(); err != nil {
		return Keys{}, fmt.Errorf("verp: reading keys: %w", err)
	}
	ks, err := newKeys(lines, "line")
	if err != nil {
		return Keys{}, fmt.Errorf("%w (in %s)", err, path)
	}
	return ks, nil
}

// newKeys builds Keys from secrets, skipping empty ones; unit names the
// position of a secret in errors ("item 2", "line 5"), which never quote it.
func newKeys(secrets []string, unit string) (Keys, error) {
	var ks []key
	seen := make(map[string]bool)
	for i, s := range secrets {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if len(s) < MinKeyLen {
			return Keys{}, fmt.Errorf("verp: key at %s %d is %d bytes, want at least %d", unit, i+1, len(s), MinKeyLen)
		}
		if seen[s] {
			continue
		}
		seen[s] = true
		secret := []byte(s)
		ks = append(ks, key{
			id:     keyID(secret),
			newMAC: func() hash.Hash { return hmac.New(sha256.New, secret) },
		})
	}
	if len(ks) == 0 {
		return Keys{}, ErrNoKeys
	}
	return Keys{ks}, nil
}

// keyID is the token's key id for secret: the first 5 bits of a hash of it,
// as one base32 character. Ids may collide; Verify then tries each key with
// the id.
func keyID(secret []byte) byte {
	h := sha256.New()
	h.Write([]byte("bouncer-verp-key-id\x00"))
	h.Write(secret)
	return alphabet[h.Sum(nil)[0]>>3]
}

// Len returns the number of keys.
func (k Keys) Len() int { return len(k.list()) }

// String returns "<secret>": keys are never printed.
func (k Keys) String() string { return "<secret>" }

// GoString returns "<secret>" for %#v.
func (k Keys) GoString() string { return "<secret>" }

// Format prints "<secret>" for every verb, so no verb (%d, %x, %+v, ...)
// reaches the secrets through reflection.
func (k Keys) Format(f fmt.State, verb rune) { io.WriteString(f, "<secret>") }

// LogValue keeps the keys out of structured logs.
func (k Keys) LogValue() slog.Value { return slog.StringValue("<secret>") }

// MarshalText makes encoders print "<secret>" rather than nothing or the keys.
func (k Keys) MarshalText() ([]byte, error) { return []byte("<secret>"), nil }
