package dsn

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseStatus(t *testing.T) {
	tests := []struct {
		in   string
		want Status
		ok   bool
	}{
		{"5.1.1", Status{5, 1, 1}, true},
		{"  5.1.1  ", Status{5, 1, 1}, true},
		{"5.1.1 (bad destination mailbox address)", Status{5, 1, 1}, true},
		{"(comment) 4.2.2", Status{4, 2, 2}, true},
		{"#5.1.1", Status{5, 1, 1}, true},
		{"# 5.1.1", Status{5, 1, 1}, true},
		{"5.4.316", Status{5, 4, 316}, true},
		{"4.7.0", Status{4, 7, 0}, true},
		{"2.0.0", Status{2, 0, 0}, true},
		{"5.999.999", Status{5, 999, 999}, true},
		{"5.1.1 User unknown", Status{5, 1, 1}, true},
		{"5.1.10", Status{5, 1, 10}, true},
		{"", Status{}, false},
		{"(5.1.1)", Status{}, false}, // all comment
		{"3.1.1", Status{}, false},   // no class 3
		{"1.0.0", Status{}, false},
		{"6.0.0", Status{}, false},
		{"0.0.0", Status{}, false},
		{"5.1", Status{}, false},
		{"5.1.", Status{}, false},
		{"5..1", Status{}, false},
		{"5.1.1.", Status{}, false},
		{"5.1.1a", Status{}, false},
		{"55.1.1", Status{}, false},
		{"5.1000.1", Status{}, false},
		{"5.1.1000", Status{}, false},
		{"550", Status{}, false},
		{"550 5.1.1", Status{}, false},
		{"x.y.z", Status{}, false},
		{"5.-1.1", Status{}, false},
		{"5,1,1", Status{}, false},
		{"\x00\xff", Status{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseStatus(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseStatus(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
		if ok {
			// String and ParseStatus round-trip.
			if again, ok2 := ParseStatus(got.String()); again != got || !ok2 {
				t.Errorf("ParseStatus(%q.String()) = %v, %v; want %v, true", tt.in, again, ok2, got)
			}
		}
	}
	if s := (Status{}).String(); s != "" {
		t.Errorf("zero Status.String() = %q, want empty", s)
	}
}

func TestParseAction(t *testing.T) {
	tests := []struct {
		in   string
		want Action
		ok   bool
	}{
		{"failed", ActionFailed, true},
		{"FAILED", ActionFailed, true},
		{" Failed ", ActionFailed, true},
		{"failed (bad destination mailbox address)", ActionFailed, true},
		{"delayed", ActionDelayed, true},
		{"delivered", ActionDelivered, true},
		{"Relayed", ActionRelayed, true},
		{"expanded (to multi-recipient alias)", ActionExpanded, true},
		{"", ActionNone, false},
		{"(only a comment)", Action("(only a comment)"), false},
		{"deliverable", Action("deliverable"), false},
		{" Bounced ", Action("Bounced"), false},
	}
	for _, tt := range tests {
		got, ok := ParseAction(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseAction(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestStripComment(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"a (b) c", "a  c"},
		{"a (b (nested) c) d", "a  d"},
		{`"quoted (not a comment)" x`, `"quoted (not a comment)" x`},
		{`a (esc \) still) b`, "a  b"},
		{"unterminated (comment", "unterminated "},
		{"stray ) paren", "stray ) paren"},
	}
	for _, tt := range tests {
		if got := stripComment(tt.in); got != tt.want {
			t.Errorf("stripComment(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestBareAddress(t *testing.T) {
	tests := []struct{ in, want string }{
		{"user@example.com", "user@example.com"},
		{"<User@Example.com>", "User@Example.com"},
		{" < User@Example.com > ", "User@Example.com"},
		{`"Name" <a@b.example>`, "a@b.example"},
		{"|/usr/bin/procmail kijitora@example.com /home/x", "kijitora@example.com"},
		{"user @ example.com", "user@example.com"},
		{"<unterminated@example.com", "unterminated@example.com"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := bareAddress(tt.in); got != tt.want {
			t.Errorf("bareAddress(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDecodeUTF8Addr(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain@example.com", "plain@example.com"},
		{`Ren\x{E9}@example.com`, "René@example.com"},
		{`\x{65E5}\x{672C}@example.jp`, "日本@example.jp"},
		{"a+2Bb@example.com", "a+b@example.com"},
		{"user+tag@example.com", "user+tag@example.com"}, // not xtext: lower case
		{`bad\x{ZZ}@example.com`, `bad\x{ZZ}@example.com`},
		{`open\x{E9@example.com`, `open\x{E9@example.com`},
		{`huge\x{110000}@example.com`, `huge\x{110000}@example.com`},
	}
	for _, tt := range tests {
		if got := decodeUTF8Addr(tt.in); got != tt.want {
			t.Errorf("decodeUTF8Addr(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseContentType(t *testing.T) {
	tests := []struct {
		in       string
		typ      string
		boundary string
		charset  string
	}{
		{`multipart/report; report-type=delivery-status; boundary="abc/def"`, "multipart/report", "abc/def", ""},
		{`Multipart/Mixed; BOUNDARY=xyz`, "multipart/mixed", "xyz", ""},
		{`text/plain; charset="ISO-2022-JP"`, "text/plain", "", "ISO-2022-JP"},
		{`text/plain;; charset=utf-8;`, "text/plain", "", "utf-8"},
		{`text/plain; charset = "us-ascii" (comment)`, "text/plain", "", "us-ascii"},
		{`multipart/alternative; boundary="a\"b"`, "multipart/alternative", `a"b`, ""},
		{`multipart/mixed; boundary="unterminated`, "multipart/mixed", "unterminated", ""},
		{`text/plain (comment)`, "text/plain", "", ""},
		{``, "", "", ""},
		{`;;;=`, "", "", ""},
		// RFC 2231: continuations, extended values, both at once.
		{`multipart/report; boundary*0="abc"; boundary*1="def"`, "multipart/report", "abcdef", ""},
		{`multipart/report; boundary*1=def; boundary*0=abc`, "multipart/report", "abcdef", ""},
		{`text/plain; charset*=us-ascii'en'utf%2D8`, "text/plain", "", "utf-8"},
		{`multipart/mixed; boundary*0*=''a%20b; boundary*1=c%20d`, "multipart/mixed", "a bc%20d", ""},
		{`multipart/mixed; boundary=plain; boundary*0=cont`, "multipart/mixed", "plain", ""},
		{`multipart/mixed; boundary*0=a; boundary*2=c`, "multipart/mixed", "a", ""},
		{`multipart/mixed; boundary*x=a; boundary*-1=b`, "multipart/mixed", "", ""},
		{`text/plain; charset*=utf-8''%ZZ`, "text/plain", "", "%ZZ"},
	}
	for _, tt := range tests {
		m := parseContentType(tt.in)
		if m.typ != tt.typ || m.param("boundary") != tt.boundary || m.param("charset") != tt.charset {
			t.Errorf("parseContentType(%q) = %q boundary %q charset %q; want %q, %q, %q",
				tt.in, m.typ, m.param("boundary"), m.param("charset"), tt.typ, tt.boundary, tt.charset)
		}
	}
}

func TestStripHTML(t *testing.T) {
	tests := []struct{ in, want string }{
		{"<p>Hello <b>world</b></p>", "Hello world"},
		{"a&amp;b &lt;x&gt; &quot;q&quot;&nbsp;z", `a&b <x> "q" z`},
		{"line1<br>line2<BR/>line3", "line1\nline2\nline3"},
		{"<style>p{color:red}</style>text", "text"},
		{"<script>alert('<p>')</script>ok", "ok"},
		{"<!-- comment -->x", "x"},
		{"&#233;&#xE9;&unknown; & done", "éé&unknown; & done"},
		{"a\n\n   b", "a b"},
		{"<unterminated", ""},
		{"<table><tr><td>550</td><td>5.1.1</td></tr></table>", "550 5.1.1"},
	}
	for _, tt := range tests {
		if got := stripHTML(tt.in); got != tt.want {
			t.Errorf("stripHTML(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDecodeQP(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"a=3Db", "a=b"},
		{"soft=\nbreak", "softbreak"},
		{"soft= \t\nbreak", "softbreak"},
		{"bad=ZZ escape", "bad=ZZ escape"},
		{"trailing=", "trailing"},
		{"caf=C3=A9", "café"},
	}
	for _, tt := range tests {
		if got := decodeQP(tt.in); got != tt.want {
			t.Errorf("decodeQP(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDecodeBase64(t *testing.T) {
	tests := []struct {
		in, want string
		problem  bool
	}{
		{"aGVsbG8=", "hello", false},
		{"aGVs\nbG8=\n", "hello", false},
		{"aGVsbG8", "hello", false}, // padding missing
		{"aGVsbG8=aGVsbG8=", "hellohello", false},
		{"aGVs*bG8=", "hello", true}, // one stray byte skipped
		{"this is not base64 at all!!", "this is not base64 at all!!", true},
	}
	for _, tt := range tests {
		got, problem := decodeBase64(tt.in)
		if got != tt.want || (problem != "") != tt.problem {
			t.Errorf("decodeBase64(%q) = %q, %q; want %q, problem %v", tt.in, got, problem, tt.want, tt.problem)
		}
	}
}

func TestDecodeUTF7(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain ascii", "plain ascii"},
		{"1 +- 1", "1 + 1"},
		{"+ZeVnLIqe-", "日本語"},
		{"Hi Mom -+Jjo--!", "Hi Mom -☺-!"},
		{"a+", "a+"},
	}
	for _, tt := range tests {
		if got := decodeUTF7(tt.in); got != tt.want {
			t.Errorf("decodeUTF7(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestRFC2231Boundary: a report whose boundary comes as RFC 2231
// continuations is read as a report (its delivery-status part and the
// returned original), not only as text.
func TestRFC2231Boundary(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "testdata", "ndr", "generic-rfc2231-boundary.eml"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Reports) != 1 || len(m.Reports[0].Recipients) != 1 || m.Original == nil {
		t.Fatalf("reports %+v original %v anomalies %v: want one report with one recipient and the original", m.Reports, m.Original != nil, m.Anomalies)
	}
	if got := m.Reports[0].Recipients[0].Status.String(); got != "5.1.1" {
		t.Errorf("status %s, want 5.1.1", got)
	}
	// Read from the declared boundary, not the walker's guess.
	if len(m.Anomalies) != 0 {
		t.Errorf("anomalies %q, want none", m.Anomalies)
	}
}
