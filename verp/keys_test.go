package verp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKeys(t *testing.T) {
	tests := []struct {
		in      string
		n       int
		wantErr error // nil: no error; errAny: some error
	}{
		{key1, 1, nil},
		{key1 + "," + key2, 2, nil},
		{" " + key1 + " ,\t" + key2 + " ,", 2, nil},
		{key1 + "," + key1, 1, nil},
		{key1 + ",," + key2, 2, nil},
		{"", 0, ErrNoKeys},
		{" , ,", 0, ErrNoKeys},
		{"short", 0, errAny},
		{key1 + ",fifteen-bytes!!", 0, errAny},
		{strings.Repeat("k", MinKeyLen), 1, nil},
	}
	for _, tt := range tests {
		ks, err := ParseKeys(tt.in)
		switch {
		case tt.wantErr == nil && err != nil:
			t.Errorf("ParseKeys(%q): %v", tt.in, err)
		case tt.wantErr == errAny && err == nil, tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
			t.Errorf("ParseKeys(%q) error %v, want %v", tt.in, err, tt.wantErr)
		case err == nil && ks.Len() != tt.n:
			t.Errorf("ParseKeys(%q): %d keys, want %d", tt.in, ks.Len(), tt.n)
		}
	}
	// The first key signs.
	ks := mustKeys(t, key2+","+key1)
	if ks.list()[0].id != keyID([]byte(key2)) {
		t.Errorf("the first key of the list does not come first")
	}
}

var errAny = errors.New("any error")

func TestShortKeyErrorHidesKey(t *testing.T) {
	secret := "hunter2-secret"
	_, err := ParseKeys(key1 + "," + secret)
	if err == nil {
		t.Fatal("short key accepted")
	}
	if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "item 2") {
		t.Errorf("error %q: want the position, never the key", err)
	}
}

func TestLoadKeysFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, content string
		n             int
		first         string
		wantErr       bool
	}{
		{"one", key1 + "\n", 1, key1, false},
		{"comments and blanks", "# rotated 2026-11\n\n  " + key2 + "  \r\n# old\n" + key1 + "\n\n", 2, key2, false},
		{"comma inside a key", "secret,with,commas-0123\n", 1, "secret,with,commas-0123", false},
		{"no final newline", key1, 1, key1, false},
		{"only comments", "# nothing\n\n", 0, "", true},
		{"empty", "", 0, "", true},
		{"short key", key1 + "\nshort\n", 0, "", true},
		{"too large", strings.Repeat("#\n", maxKeysFile), 0, "", true},
	}
	for _, tt := range tests {
		ks, err := LoadKeysFile(write(strings.ReplaceAll(tt.name, " ", "-"), tt.content))
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: error %v, want error %v", tt.name, err, tt.wantErr)
			continue
		}
		if err != nil {
			if strings.Contains(err.Error(), "short\n") || strings.Contains(err.Error(), key1) {
				t.Errorf("%s: error %q quotes a key", tt.name, err)
			}
			continue
		}
		want, err := newKeys([]string{tt.first}, "item")
		if err != nil {
			t.Fatal(err)
		}
		if ks.Len() != tt.n || mac(ks.list()[0], "d", "h", "r") != mac(want.list()[0], "d", "h", "r") {
			t.Errorf("%s: %d keys, want %d with the right one first", tt.name, ks.Len(), tt.n)
		}
	}
	if _, err := LoadKeysFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
}

// TestSecretsNeverPrinted: no fmt verb, logger or encoder prints a key
// (STYLE.md: secrets print "<secret>").
func TestSecretsNeverPrinted(t *testing.T) {
	ks := mustKeys(t, key1+","+key2)
	s := &Signer{Keys: ks}
	type config struct { // a Signer inside a caller's struct
		Verp   Signer
		Keys   Keys
		Domain string
		keys   Keys   // unexported: fmt cannot call Format
		signer Signer // nor here
	}
	c := config{Verp: *s, Keys: ks, Domain: testDomain, keys: ks, signer: *s}
	var outputs []string
	for _, v := range []any{ks, &ks, *s, s, c, &c} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%o", "%c", "%U", "%b", "%T %v"} {
			outputs = append(outputs, fmt.Sprintf(verb, v))
		}
	}
	for _, v := range []any{ks, &ks, struct{ Keys Keys }{ks}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Errorf("json.Marshal(%T): %v", v, err)
		}
		outputs = append(outputs, string(b))
	}
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		slog.New(h).Info("config", "keys", ks, "signer", s, "config", c)
	}
	outputs = append(outputs, logs.String())
	for _, out := range outputs {
		for _, k := range []string{key1, key2, fmt.Sprintf("%x", key1), fmt.Sprint([]byte(key1)), "first-secret"} {
			if strings.Contains(out, k) {
				t.Errorf("output %q contains a key", out)
			}
		}
	}
	if got := fmt.Sprint(ks); got != "<secret>" {
		t.Errorf("fmt.Sprint(Keys) = %q, want <secret>", got)
	}
}
