package rules

import (
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bouncer-mail/bouncer/event"
)

func TestDefaultCompiles(t *testing.T) {
	s, err := Default()
	if err != nil {
		t.Fatalf("Default: %v", err)
	}
	if s.Formats() == 0 || len(s.reasons) == 0 || len(s.providers) == 0 || len(s.autoreply) == 0 {
		t.Errorf("default rules are missing a section: %d formats, %d reasons, %d providers, %d autoreply",
			s.Formats(), len(s.reasons), len(s.providers), len(s.autoreply))
	}
}

func TestVocabularyMatchesEvent(t *testing.T) {
	var want []string
	for _, r := range event.Reasons {
		want = append(want, string(r))
	}
	if !reflect.DeepEqual(reasonVocabulary, want) {
		t.Errorf("rules vocabulary %v\ndiffers from event.Reasons %v", reasonVocabulary, want)
	}
}

func TestDefaultProvidersAreBounded(t *testing.T) {
	known := map[string]bool{}
	for _, p := range event.Providers {
		known[p] = true
	}
	for _, p := range MustDefault().providers {
		if !known[p.Name] {
			t.Errorf("provider %q of the default rules is not in event.Providers (metric labels would not see it)", p.Name)
		}
	}
}

func TestProvider(t *testing.T) {
	s := MustDefault()
	tests := []struct {
		domain string
		hosts  []string
		want   string
	}{
		{"gmail.com", nil, "gmail"},
		{"GMAIL.COM", nil, "gmail"},
		{"example.com", []string{"aspmx.l.google.com"}, "gmail"},
		{"example.com", []string{"example-com.mail.protection.outlook.com"}, "outlook"},
		{"hotmail.co.uk", nil, "outlook"},
		{"yahoo.co.jp", nil, "yahoo"},
		{"sub.yahoo.com", nil, "yahoo"},
		{"example.com", []string{"notgoogle.com"}, ""},
		{"example.com", []string{"", "mx.example.com"}, ""},
		{"docomo.ne.jp", nil, "docomo"},
		{"ezweb.ne.jp", nil, "kddi"},
		{"", nil, ""},
	}
	for _, tt := range tests {
		if got := s.Provider(tt.domain, tt.hosts...); got != tt.want {
			t.Errorf("Provider(%q, %q) = %q, want %q", tt.domain, tt.hosts, got, tt.want)
		}
	}
}

func TestReasonConditions(t *testing.T) {
	s, err := compile(File{Reasons: []ReasonRule{
		{Name: "temp-only", Reason: "greylisting", Codes: []int{4}, Phrases: []string{"Later"}},
		{Name: "exact-code", Reason: "blocked", Codes: []int{554}, Phrases: []string{"later"}},
		{Name: "status", Reason: "mailboxfull", Status: []string{"5.2."}, Phrases: []string{"later"}},
		{Name: "provider", Reason: "ratelimited", Provider: []string{"gmail"}, Phrases: []string{"later"}},
		{Name: "regexp", Reason: "userunknown", Regexps: []string{`^no\s+such`}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in   Reply
		want string
	}{
		{Reply{Text: "try later", Code: 450}, "temp-only"},
		{Reply{Text: "try later", Status: "4.7.1"}, "temp-only"},
		{Reply{Text: "try later", Code: 554}, "exact-code"},
		{Reply{Text: "try later", Code: 550, Status: "5.2.2"}, "status"},
		{Reply{Text: "try later", Code: 550, Provider: "gmail"}, "provider"},
		{Reply{Text: "try later", Code: 550}, ""},
		{Reply{Text: "no  such user"}, "regexp"},
		{Reply{Text: ""}, ""},
	}
	for _, tt := range tests {
		m, ok := s.Reason(tt.in)
		if (tt.want == "") == ok || m.Rule != tt.want {
			t.Errorf("Reason(%+v) = %q, %v; want %q", tt.in, m.Rule, ok, tt.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		f    File
		want string
	}{
		{"unknown reason", File{Reasons: []ReasonRule{{Name: "x", Reason: "nope", Phrases: []string{"a"}}}}, `unknown reason "nope"`},
		{"no phrases", File{Reasons: []ReasonRule{{Name: "x", Reason: "blocked"}}}, "needs phrases or regexps"},
		{"bad regexp", File{Reasons: []ReasonRule{{Name: "x", Reason: "blocked", Regexps: []string{"("}}}}, "missing closing )"},
		{"duplicate", File{Reasons: []ReasonRule{{Name: "x", Reason: "blocked", Phrases: []string{"a"}}, {Name: "x", Reason: "blocked", Phrases: []string{"b"}}}}, "duplicate name"},
		{"bad scope", File{Reasons: []ReasonRule{{Name: "x", Reason: "blocked", Scope: "everyone", Phrases: []string{"a"}}}}, `unknown scope "everyone"`},
		{"format no match", File{Formats: []Format{{Name: "f"}}}, "needs at least one match condition"},
		{"format empty cond", File{Formats: []Format{{Name: "f", Match: []Cond{{}}}}}, "empty match condition"},
		{"format no rcpt group", File{Formats: []Format{{Name: "f", Match: []Cond{{Body: []string{"x"}}}, Recipient: []string{`<(.*)>`}}}}, "no (?P<rcpt>...) group"},
		{"command unknown", File{Commands: []CommandRule{{Name: "c", Command: "RSET", Phrases: []string{"a"}}}}, `unknown command "RSET"`},
		{"command lower case", File{Commands: []CommandRule{{Name: "c", Command: "rcpt", Phrases: []string{"a"}}}}, `unknown command "rcpt"`},
		{"command no phrases", File{Commands: []CommandRule{{Name: "c", Command: "RCPT"}}}, "needs phrases"},
		{"command no name", File{Commands: []CommandRule{{Command: "RCPT", Phrases: []string{"a"}}}}, "command rule without a name"},
		{"command duplicate", File{Commands: []CommandRule{{Name: "c", Command: "RCPT", Phrases: []string{"a"}}, {Name: "c", Command: "DATA", Phrases: []string{"b"}}}}, "duplicate name"},
	}
	for _, tt := range tests {
		_, err := compile(tt.f)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: compile error = %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

// TestCommand: a command rule names the command its phrases place a reply
// at; the first matching rule wins, and no match is "".
func TestCommand(t *testing.T) {
	s, err := compile(File{Commands: []CommandRule{
		{Name: "rcpt", Command: "RCPT", Phrases: []string{"Recipient address rejected"}},
		{Name: "data", Command: "DATA", Phrases: []string{"after the message", "rejected"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ text, want string }{
		{"550 <a@b>: recipient address rejected: user unknown", "RCPT"},
		{"550 rejected after the message was read", "DATA"},
		{"550 user unknown", ""},
		{"", ""},
	} {
		if got := s.Command(tt.text); got != tt.want {
			t.Errorf("Command(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
	def := MustDefault()
	for _, tt := range []struct{ text, want string }{
		{"550 <a@example.com>: recipient address rejected: user unknown in local recipient table", "RCPT"},
		{"remote host said: 550 5.2.1 <a@example.com>... user unknown [rcpt_to]", "RCPT"},
		{"smtp:rcpt host 192.0.2.8: 553 5.3.0 <a@example.com>... no such user here", "RCPT"},
		{"550 <a@example.com>: user unknown", ""},
	} {
		if got := def.Command(tt.text); got != tt.want {
			t.Errorf("default Command(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
}

func TestLoadOverride(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.json")
	over := `{"reasons":[{"name":"mailboxfull","reason":"suspend","phrases":["mailbox is full"]},
	{"name":"site-local","reason":"blocked","phrases":["our own phrase"]}]}`
	if err := os.WriteFile(path, []byte(over), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if m, _ := s.Reason(Reply{Text: "550 mailbox is full"}); m.Rule != "mailboxfull" || m.Reason != "suspend" {
		t.Errorf("overridden rule: got %+v, want the override's reason suspend", m)
	}
	if m, _ := s.Reason(Reply{Text: "554 our own phrase"}); m.Rule != "site-local" {
		t.Errorf("added rule: got %+v", m)
	}
	over = `{"commands":[{"name":"recipient-address-rejected","command":"DATA","phrases":["recipient address rejected"]},
	{"name":"site-rcpt","command":"RCPT","phrases":["our rcpt words"]}]}`
	if err := os.WriteFile(path, []byte(over), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err = Load(path); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := s.Command("550 recipient address rejected"); got != "DATA" {
		t.Errorf("overridden command rule: got %q, want the override's DATA", got)
	}
	if got := s.Command("550 our rcpt words"); got != "RCPT" {
		t.Errorf("added command rule: got %q, want RCPT", got)
	}
	if got := s.Command("[rcpt_to]"); got != "RCPT" {
		t.Errorf("default command rule kept beside the override: got %q, want RCPT", got)
	}
	if err := os.WriteFile(path, []byte(`{"reasons":[{"name":"x","reason":"blocked","phrases":["a"],"typo":1}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "typo") {
		t.Errorf("unknown field: err = %v, want it named", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file: no error")
	}
}

func TestExtract(t *testing.T) {
	f := Format{Name: "t", Match: []Cond{{Body: []string{"x"}}},
		Start: []string{"I'm afraid"}, End: []string{"--- Below this line"},
		Recipient: []string{`^<(?P<rcpt>[^>]+@[^>]+)>:\s*(?P<diag>.*)$`}}
	s, err := compile(File{Formats: []Format{f}})
	if err != nil {
		t.Fatal(err)
	}
	fm := &s.formats[0]
	text := "Hi. This is the qmail-send program at mx.example.jp.\n" +
		"I'm afraid I wasn't able to deliver your message to the following addresses.\n\n" +
		"<a@example.com>:\n192.0.2.1 does not like recipient.\nRemote host said: 550 5.1.1 no such user\n\n" +
		"<b@example.net>: Sorry, no mailbox here by that name. (#5.1.1)\n\n" +
		"--- Below this line is a copy of the message.\n\n<c@example.org>: not a recipient\n"
	got := fm.Extract(text, LowerASCII(text))
	want := []Found{
		{Recipient: "a@example.com", Diagnostic: "192.0.2.1 does not like recipient. Remote host said: 550 5.1.1 no such user"},
		{Recipient: "b@example.net", Diagnostic: "Sorry, no mailbox here by that name. (#5.1.1)"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Extract:\n got %+v\nwant %+v", got, want)
	}
	if got := fm.Extract("no start phrase here <a@example.com>", "no start phrase here <a@example.com>"); got != nil {
		t.Errorf("Extract without the start phrase = %+v, want nil", got)
	}
}

// TestLocalFormats: the formats whose texts are their own system's verdict
// (local delivery, a directory) say so, and the flag survives loading.
func TestLocalFormats(t *testing.T) {
	local := map[string]bool{}
	for _, f := range MustDefault().formats {
		local[f.Name] = f.Local
	}
	for name, want := range map[string]bool{"domino": true, "notes": true, "imailserver": true, "verizon": true,
		"exchange2003": false, "qmail": false, "exim": false, "generic": false} {
		got, ok := local[name]
		if !ok {
			t.Errorf("no default format %q", name)
			continue
		}
		if got != want {
			t.Errorf("format %q: Local = %v, want %v", name, got, want)
		}
	}
}

func TestExtractBounded(t *testing.T) {
	f := &Format{Name: "generic"}
	var b strings.Builder
	for i := 0; i < 5000; i++ {
		b.WriteString("<user")
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString("@example.com>\n")
		b.WriteString(strings.Repeat("reply text ", 50))
		b.WriteString("\n\n")
	}
	text := b.String()
	got := f.Extract(text, LowerASCII(text))
	if len(got) > maxFound {
		t.Errorf("Extract returned %d recipients, limit %d", len(got), maxFound)
	}
	for _, fd := range got {
		if len(fd.Diagnostic) > maxDiagnosticLen {
			t.Fatalf("diagnostic of %d bytes, limit %d", len(fd.Diagnostic), maxDiagnosticLen)
		}
	}
}

func TestLowerASCII(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""}, {"abc", "abc"}, {"AbC", "abc"}, {"İX", "İx"}, {"Ünïcode MIX", "Ünïcode mix"},
	} {
		got := LowerASCII(tt.in)
		if got != tt.want || len(got) != len(tt.in) {
			t.Errorf("LowerASCII(%q) = %q, want %q of the same length", tt.in, got, tt.want)
		}
	}
}

// TestExtractGenericSameLine: without recipient patterns, a reply on the
// address's own line is the address's reply.
func TestExtractGenericSameLine(t *testing.T) {
	f := &Format{Name: "generic"}
	text := "For further assistance, please contact <support@example.com>\n\n" +
		" In:  MAIL FROM:<bounce=x@example.com>\n\n" +
		"A message is delayed for the following recipients:\n\n" +
		"a@example.com: 421 4.7.0 deferred due to user complaints\n\n" +
		"Delivery to the following recipient failed:\n\n     b@example.net\n\n" +
		"The error that the other server returned was:\n550 5.1.1 <b@example.net>... User Unknown\n\n" +
		"Unable to deliver message to: <c@example.org>\n\n" +
		"  d@example.com <e@example.net>: malformed address: <e@example.net> may not follow d@example.com\n\n"
	got := f.Extract(text, LowerASCII(text))
	want := []Found{
		{Recipient: "a@example.com", Diagnostic: "421 4.7.0 deferred due to user complaints"},
		{Recipient: "b@example.net", Diagnostic: "The error that the other server returned was: 550 5.1.1 <b@example.net>... User Unknown"},
		{Recipient: "c@example.org"},
		{Recipient: "e@example.net", Diagnostic: "<e@example.net>: malformed address: <e@example.net> may not follow d@example.com"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Extract:\n got %+v\nwant %+v", got, want)
	}
}

func TestClipDiagnostic(t *testing.T) {
	ascii := strings.Repeat("a", maxDiagnosticLen)
	for _, tt := range []struct {
		name, in, want string
	}{
		{"short", "550 user unknown", "550 user unknown"},
		{"at the limit", ascii, ascii},
		{"over, ASCII", ascii + "bcd", ascii},
		{"over, a 2-byte character across the limit", ascii[:maxDiagnosticLen-1] + "é" + "x", ascii[:maxDiagnosticLen-1]},
		{"over, a 3-byte character across the limit", ascii[:maxDiagnosticLen-2] + "€", ascii[:maxDiagnosticLen-2]},
		{"invalid bytes", ascii[:maxDiagnosticLen-1] + "\xd3\xd3\xd3", ascii[:maxDiagnosticLen-1] + "\xd3"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := clipDiagnostic(tt.in)
			if got != tt.want || len(got) > maxDiagnosticLen {
				t.Errorf("clipDiagnostic: %d bytes ending %q, want %d bytes ending %q", len(got), tail(got), len(tt.want), tail(tt.want))
			}
		})
	}
}

func tail(s string) string { return s[max(0, len(s)-4):] }

// lowerASCIIByByte is LowerASCII as written before it lowered 8 bytes at
// a time.
func lowerASCIIByByte(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// TestLowerASCIIEveryByte: every byte value, at every offset of a word
// and on both sides of the buffer's 512-byte steps, is lowered as the
// byte-by-byte loop lowers it; so are random texts.
func TestLowerASCIIEveryByte(t *testing.T) {
	for c := range 256 {
		for _, n := range []int{1, 7, 8, 9, 15, 16, 17, 511, 512, 513, 1030} {
			for _, at := range []int{0, 3, 7, n / 2, n - 1} {
				if at >= n {
					continue
				}
				b := []byte(strings.Repeat("xY", n)[:n])
				b[at] = byte(c)
				if got, want := LowerASCII(string(b)), lowerASCIIByByte(string(b)); got != want {
					t.Fatalf("LowerASCII(%q) = %q, want %q", b, got, want)
				}
			}
		}
	}
	rng := rand.New(rand.NewSource(1))
	for range 2000 {
		b := make([]byte, rng.Intn(1200))
		for i := range b {
			b[i] = byte(rng.Intn(256))
		}
		if got, want := LowerASCII(string(b)), lowerASCIIByByte(string(b)); got != want {
			t.Fatalf("LowerASCII(%q) = %q, want %q", b, got, want)
		}
	}
}

// FuzzLowerASCII: LowerASCII lowers as the byte-by-byte loop does.
func FuzzLowerASCII(f *testing.F) {
	f.Add("Return-Path: <MAILER-DAEMON@Example.COM>\n\x80\xffAZ@[`az{")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := LowerASCII(s), lowerASCIIByByte(s); got != want {
			t.Fatalf("LowerASCII(%q) = %q, want %q", s, got, want)
		}
	})
}

// collapseByFields is collapseSpace as written before its one-pass ASCII
// path.
func collapseByFields(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func TestCollapseSpace(t *testing.T) {
	tests := []string{
		"", " ", "a", " a", "a ", "a b", "a  b", "a\tb", "a \tb", "\r\n", "550 5.1.1 <a@b>... User unknown",
		"  550   5.1.1\v<a@b>\f ", "a\u00a0b", "a\u0085 b", "\xffa  b", "ä  b",
	}
	for _, s := range tests {
		if got, want := collapseSpace(s), collapseByFields(s); got != want {
			t.Errorf("collapseSpace(%q) = %q, want %q", s, got, want)
		}
	}
	rng := rand.New(rand.NewSource(1))
	const alphabet = "ab \t\n\v\f\r\x1c\x85"
	for range 20000 {
		b := make([]byte, rng.Intn(12))
		for i := range b {
			b[i] = alphabet[rng.Intn(len(alphabet))]
		}
		if got, want := collapseSpace(string(b)), collapseByFields(string(b)); got != want {
			t.Fatalf("collapseSpace(%q) = %q, want %q", b, got, want)
		}
	}
}

// FuzzCollapseSpace: collapseSpace joins the fields of any text as
// strings.Fields and Join do.
func FuzzCollapseSpace(f *testing.F) {
	f.Add("  550   5.1.1\v<a@b>\f \u00a0x")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := collapseSpace(s), collapseByFields(s); got != want {
			t.Fatalf("collapseSpace(%q) = %q, want %q", s, got, want)
		}
	})
}
