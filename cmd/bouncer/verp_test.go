package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/verp"
)

const (
	verpTestKey1 = "cli-test-secret-key-one"
	verpTestKey2 = "cli-test-secret-key-two"
)

func runVerpCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = runVerp(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// verpEnv sets the key environment for one test.
func verpEnv(t *testing.T, keys, keysFile string) {
	t.Setenv("BOUNCER_VERP_KEYS", keys)
	t.Setenv("BOUNCER_VERP_KEYS_FILE", keysFile)
}

func TestVerpSignVerify(t *testing.T) {
	verpEnv(t, verpTestKey1+","+verpTestKey2, "")
	today := time.Now().UTC().Format(time.DateOnly)
	tests := []struct {
		recipient, want string
	}{
		{"Jane.Doe@Example.NET", "jane.doe@example.net"},
		{"jürgen@example.de", "jürgen@example.de"},
		{strings.Repeat("x", 64) + "@example.com", ""},
	}
	for _, tt := range tests {
		code, out, errOut := runVerpCLI(t, "sign", "--domain", "bounces.example.com", "--recipient", tt.recipient, "--message-id", "<m1@example.org>")
		if code != 0 {
			t.Fatalf("sign %q: exit %d, stderr %q", tt.recipient, code, errOut)
		}
		addr := strings.TrimSuffix(out, "\n")
		if strings.ContainsAny(addr, "\n ") || !strings.HasSuffix(addr, "@bounces.example.com") {
			t.Fatalf("sign printed %q, want one address", out)
		}
		if lp := addr[:strings.LastIndexByte(addr, '@')]; len(lp) > 64 {
			t.Errorf("local part of %q is %d octets", addr, len(lp))
		}

		for _, a := range []string{addr, strings.ToUpper(addr)} {
			code, out, errOut = runVerpCLI(t, "verify", a)
			if code != 0 {
				t.Fatalf("verify %q: exit %d, stderr %q", a, code, errOut)
			}
			var res map[string]any
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("verify printed %q: %v", out, err)
			}
			want := map[string]any{
				"valid": true, "domain": "bounces.example.com", "recipient": tt.want,
				"recipient_hash": verp.RecipientHash(tt.recipient), "message_id_hash": verp.MessageIDHash("m1@example.org"),
				"day": today,
			}
			for k, v := range want {
				if res[k] != v {
					t.Errorf("verify %q: %s = %v, want %v", a, k, res[k], v)
				}
			}
			for _, k := range []string{"expires", "key_id"} {
				if s, _ := res[k].(string); s == "" {
					t.Errorf("verify %q: %s missing in %s", a, k, out)
				}
			}
		}
	}
}

func TestVerpVerifyRefused(t *testing.T) {
	verpEnv(t, verpTestKey1, "")
	ks, err := verp.ParseKeys(verpTestKey1)
	if err != nil {
		t.Fatal(err)
	}
	old := &verp.Signer{Keys: ks, Now: func() time.Time { return time.Now().AddDate(0, 0, -40) }}
	expired, err := old.Sign("bounces.example.com", "jane@example.net", "m1@example.org")
	if err != nil {
		t.Fatal(err)
	}
	valid, err := (&verp.Signer{Keys: ks}).Sign("bounces.example.com", "jane@example.net", "m1@example.org")
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := verp.ParseKeys(verpTestKey2)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := (&verp.Signer{Keys: otherKey}).Sign("bounces.example.com", "jane@example.net", "m1@example.org")
	if err != nil {
		t.Fatal(err)
	}
	lp := valid[:strings.LastIndexByte(valid, '@')]
	tests := []struct {
		name   string
		args   []string
		reason string
	}{
		{"expired", []string{expired}, "expired"},
		{"long validity", []string{"--validity", "1000h", expired}, ""},
		{"validity after the address", []string{expired, "--validity", "1000h"}, ""},
		{"short validity", []string{"--validity", "24h", valid}, ""},
		{"other domain", []string{lp + "@other.example.com"}, "forged"},
		{"tampered", []string{strings.Replace(valid, "jane", "john", 1)}, "forged"},
		{"other key", []string{foreign}, "forged"},
		{"plain", []string{"bounces@bounces.example.com"}, "not a VERP address"},
		{"garbage", []string{"\x00+\xff@"}, "forged"},
	}
	for _, tt := range tests {
		code, out, errOut := runVerpCLI(t, append([]string{"verify"}, tt.args...)...)
		if tt.reason == "" {
			if code != 0 {
				t.Errorf("%s: exit %d, stderr %q; want 0", tt.name, code, errOut)
			}
			continue
		}
		if code != 1 || out != "" || !strings.Contains(errOut, tt.reason) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 1 and %q on stderr", tt.name, code, out, errOut, tt.reason)
		}
	}
}

func TestVerpKeys(t *testing.T) {
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "verp.keys")
	if err := os.WriteFile(keysFile, []byte("# current\n"+verpTestKey2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sign := []string{"sign", "--domain", "bounces.example.com", "--recipient", "jane@example.net", "--message-id", "m1"}
	signed := func(t *testing.T, args ...string) string {
		t.Helper()
		code, out, errOut := runVerpCLI(t, append(sign, args...)...)
		if code != 0 {
			t.Fatalf("sign: exit %d, stderr %q", code, errOut)
		}
		return strings.TrimSpace(out)
	}
	keyOnly := func(key string) *verp.Signer {
		ks, err := verp.ParseKeys(key)
		if err != nil {
			t.Fatal(err)
		}
		return &verp.Signer{Keys: ks}
	}

	t.Run("flag wins over env", func(t *testing.T) {
		verpEnv(t, verpTestKey1, "")
		addr := signed(t, "--verp-keys-file", keysFile)
		if _, err := keyOnly(verpTestKey2).Verify(addr); err != nil {
			t.Errorf("signed with the env key, not the file's: %v", err)
		}
		if code, _, errOut := runVerpCLI(t, "verify", "--verp-keys-file", keysFile, addr); code != 0 {
			t.Errorf("verify with the file: exit %d, %q", code, errOut)
		}
		if code, _, _ := runVerpCLI(t, "verify", addr); code != 1 {
			t.Errorf("verify with the env key: exit %d, want 1", code)
		}
	})
	t.Run("file from env", func(t *testing.T) {
		verpEnv(t, verpTestKey1, keysFile)
		if _, err := keyOnly(verpTestKey2).Verify(signed(t)); err != nil {
			t.Errorf("BOUNCER_VERP_KEYS_FILE not used: %v", err)
		}
	})
	t.Run("env", func(t *testing.T) {
		verpEnv(t, verpTestKey1, "")
		if _, err := keyOnly(verpTestKey1).Verify(signed(t)); err != nil {
			t.Errorf("BOUNCER_VERP_KEYS not used: %v", err)
		}
	})
	for _, tt := range []struct {
		name, env, file string
		args            []string
		want            string
	}{
		{"no keys", "", "", nil, "BOUNCER_VERP_KEYS"},
		{"only commas", " , ", "", nil, "no keys"},
		{"short key", "short", "", nil, "at least 16"},
		{"missing file", verpTestKey1, filepath.Join(dir, "missing"), nil, "missing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			verpEnv(t, tt.env, tt.file)
			for _, args := range [][]string{sign, {"verify", "b+x@bounces.example.com"}} {
				code, out, errOut := runVerpCLI(t, args...)
				if code != 2 || out != "" || !strings.Contains(errOut, tt.want) {
					t.Errorf("%s: exit %d, stdout %q, stderr %q; want 2 and %q", args[0], code, out, errOut, tt.want)
				}
				if tt.env != "" && strings.Contains(errOut, tt.env) {
					t.Errorf("%s: stderr %q prints the key", args[0], errOut)
				}
			}
		})
	}
}

func TestVerpUsage(t *testing.T) {
	verpEnv(t, verpTestKey1, "")
	tests := []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"frobnicate"}, 2},
		{[]string{"help"}, 0},
		{[]string{"sign", "-h"}, 0},
		{[]string{"sign"}, 2},
		{[]string{"sign", "--domain", "bounces.example.com", "--recipient", "jane@example.net"}, 2},
		{[]string{"sign", "--domain", "bounces.example.com", "--message-id", "m"}, 2},
		{[]string{"sign", "--recipient", "jane@example.net", "--message-id", "m"}, 2},
		{[]string{"sign", "--domain", "bad domain", "--recipient", "jane@example.net", "--message-id", "m"}, 2},
		{[]string{"sign", "--domain", "bounces.example.com", "--recipient", "jane", "--message-id", "m"}, 2},
		{[]string{"sign", "--domain", "bounces.example.com", "--recipient", "jane@example.net", "--message-id", "m", "extra"}, 2},
		{[]string{"sign", "--domain", "bounces.example.com", "--recipient", "jane@example.net", "--message-id", "m", "--prefix", "Bad+"}, 2},
		{[]string{"sign", "--nope"}, 2},
		{[]string{"verify"}, 2},
		{[]string{"verify", "a@b", "c@d"}, 2},
		{[]string{"verify", "--validity", "-1h", "a@b"}, 2},
		{[]string{"verify", "--validity", "nonsense", "a@b"}, 2},
	}
	for _, tt := range tests {
		code, _, errOut := runVerpCLI(t, tt.args...)
		if code != tt.code {
			t.Errorf("bouncer verp %q: exit %d, want %d (stderr %q)", tt.args, code, tt.code, errOut)
		}
	}
	code, out, _ := runVerpCLI(t, "sign", "--prefix", "bounce-x", "--domain", "bounces.example.com", "--recipient", "jane@example.net", "--message-id", "m")
	if code != 0 || !strings.HasPrefix(out, "bounce-x+") {
		t.Errorf("--prefix: exit %d, %q", code, out)
	}
	code, out, _ = runVerpCLI(t, "verify", "--", "bounces@bounces.example.com")
	if code != 1 || out != "" {
		t.Errorf("verify -- ADDRESS: exit %d, %q; want 1", code, out)
	}
}
