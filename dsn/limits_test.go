package dsn

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestBadInput(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrEmpty},
		{"one byte", "x", ErrNoHeader},
		{"one space", " ", ErrEmpty},
		{"blank lines", "\r\n\n\r\n", ErrEmpty},
		{"digits", "22\n", ErrNoHeader},
		{"binary", "\x00\x01\x02\xff\xfe:\x89PNG\r\n\x1a\n\x00\x00", ErrNoHeader},
		{"colon first", ":value\n\nbody", ErrNoHeader},
		{"prose", "Hello, this is not an email.\nReally: not.\n", ErrNoHeader},
	}
	for _, tt := range tests {
		m, err := ParseBytes([]byte(tt.in))
		if !errors.Is(err, tt.want) || m != nil {
			t.Errorf("%s: ParseBytes = %v, %v; want nil, %v", tt.name, m, err, tt.want)
		}
	}
	// Odd but readable: a header and nothing else.
	m, err := ParseBytes([]byte("Subject: only a header"))
	if err != nil || m.Get("Subject") != "only a header" || m.Text != "" {
		t.Errorf("header only: %+v, %v", m, err)
	}
}

func TestBinaryGarbageNoPanic(t *testing.T) {
	// Deterministic pseudo-random bytes behind a plausible header.
	b := []byte("Content-Type: multipart/report; boundary=z\n\n--z\n")
	x := uint32(1)
	for i := 0; i < 1<<16; i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b = append(b, byte(x))
		if x%97 == 0 {
			b = append(b, "\n--z\nContent-Type: message/delivery-status\n\n"...)
		}
	}
	if _, err := ParseBytes(b); err != nil {
		t.Errorf("ParseBytes: %v", err)
	}
}

func TestDeepNesting(t *testing.T) {
	const levels = 10000
	var b strings.Builder
	b.WriteString("From: x@example.org\n")
	for i := 0; i < levels; i++ {
		n := strconv.Itoa(i)
		b.WriteString("Content-Type: multipart/mixed; boundary=\"b" + n + "\"\n\n--b" + n + "\n")
	}
	b.WriteString("Content-Type: text/plain\n\ndeepest\n")
	m := mustParse(t, b.String())
	if !hasAnomaly(m, "MIME nesting deeper than") {
		t.Errorf("Anomalies = %q", m.Anomalies)
	}
	if strings.Contains(m.Text, "deepest") {
		t.Errorf("text below MaxDepth was read")
	}
	if len(m.Anomalies) > MaxAnomalies+1 {
		t.Errorf("%d anomalies, more than MaxAnomalies", len(m.Anomalies))
	}
}

func TestManyParts(t *testing.T) {
	var b strings.Builder
	b.WriteString("From: x@example.org\nContent-Type: multipart/mixed; boundary=p\n\n")
	for i := 0; i < 5000; i++ {
		b.WriteString("--p\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; a\n\nFinal-Recipient: rfc822; a@b\nAction: failed\nStatus: 5.0.0\n")
	}
	b.WriteString("--p--\n")
	m := mustParse(t, b.String())
	if len(m.Reports) != MaxParts {
		t.Errorf("got %d reports, want MaxParts (%d)", len(m.Reports), MaxParts)
	}
	if !hasAnomaly(m, "MIME parts") {
		t.Errorf("Anomalies = %q", m.Anomalies)
	}
}

func TestMaxText(t *testing.T) {
	long := strings.Repeat("é", MaxText) // 2 bytes each
	m := mustParse(t, "Content-Type: text/plain; charset=utf-8\n\n"+long)
	if len(m.Text) > MaxText || len(m.Text) < MaxText-4 {
		t.Errorf("len(Text) = %d, want about MaxText (%d)", len(m.Text), MaxText)
	}
	if !strings.HasSuffix(m.Text, "é") || !hasAnomaly(m, "text longer than") {
		t.Errorf("Text cut inside a rune, or no anomaly: %q", m.Anomalies)
	}
}

// zeros is an endless reader with no Len method.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	z.n += int64(len(p))
	return len(p), nil
}

func TestTooLarge(t *testing.T) {
	// 50 MB through a plain reader: read up to MaxSize+1, then ErrTooLarge.
	src := io.MultiReader(strings.NewReader("Subject: big\n\n"), io.LimitReader(&zeros{}, 50<<20))
	if _, err := Parse(src); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Parse(50 MB) = %v, want ErrTooLarge", err)
	}
	// A reader that knows its length fails before reading.
	z := &zeros{}
	big := strings.NewReader(strings.Repeat("a", int(MaxSize)+1))
	if _, err := Parse(big); !errors.Is(err, ErrTooLarge) || big.Len() != int(MaxSize)+1 {
		t.Errorf("Parse(strings.Reader) = %v after reading %d bytes", err, int(MaxSize)+1-big.Len())
	}
	if _, err := Parse(io.LimitReader(z, MaxSize+1)); !errors.Is(err, ErrTooLarge) || z.n > MaxSize+1+32<<10 {
		t.Errorf("Parse read %d bytes for a limit of %d", z.n, MaxSize)
	}
	if _, err := ParseBytes(make([]byte, MaxSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ParseBytes(MaxSize+1) = %v, want ErrTooLarge", err)
	}
}

// TestPathologicalInputs feeds inputs built to trigger quadratic scans; each
// must parse in a few milliseconds (a quadratic scan of a few MB takes
// minutes).
func TestPathologicalInputs(t *testing.T) {
	const n = 4 << 20
	mp := "From: a@b\nContent-Type: multipart/mixed; boundary=b\n\n"
	tests := map[string]string{
		"dashes":           mp + strings.Repeat("-", n),
		"boundary-likes":   mp + strings.Repeat("--b--b--bx\n", n/11),
		"open parts":       mp + strings.Repeat("--b\n", n/4),
		"message-ids":      "Subject: x\n\n" + strings.Repeat("a message-id: ", n/14),
		"entities":         "Content-Type: text/html\n\n" + strings.Repeat("&amp", n/4),
		"tags":             "Content-Type: text/html\n\n" + strings.Repeat("<", n),
		"comments":         "Content-Type: text/html\n\n" + strings.Repeat("<!--", n/4),
		"scripts":          "Content-Type: text/html\n\n" + strings.Repeat("<script>", n/8),
		"qp":               "Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n" + strings.Repeat("=", n),
		"base64":           "Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n" + strings.Repeat("A B=", n/4),
		"utf7":             "Content-Type: text/plain; charset=utf-7\n\n" + strings.Repeat("+AAA", n/4),
		"folded header":    "Subject: x" + strings.Repeat("\n y", n/3) + "\n\nbody",
		"stray lines":      "Subject: x\n" + strings.Repeat("no field here\n", n/14),
		"dsn lines":        "Content-Type: message/delivery-status\n\n" + strings.Repeat("Final-Recipient: rfc822; a@b\n", n/29),
		"dsn comments":     "Content-Type: message/delivery-status\n\nStatus: " + strings.Repeat("(", n),
		"text dsn":         "Subject: x\n\n" + strings.Repeat("Reporting-MTA: x\n", n/17),
		"nested messages":  strings.Repeat("Content-Type: message/rfc822\n\n", n/30),
		"long line":        "Subject: x\n\n" + strings.Repeat("x", n),
		"unitext":          "Content-Type: message/delivery-status\n\nFinal-Recipient: utf-8; " + strings.Repeat(`\x{`, n/3),
		"encoded words":    "Subject: " + strings.Repeat("=?iso-2022-jp?B?GyRCJUYbKEI=?= ", n/32) + "\n\n",
		"report subparts":  "Content-Type: multipart/report; boundary=r\n\n" + strings.Repeat("--r\nContent-Type: message/rfc822\n\nContent-Type: multipart/mixed\n\n", n/64),
		"mixed delimiters": mp + strings.Repeat("--b\r\n--b \t\n--bb\n", n/18),
	}
	// The bound scales with a linear baseline of the same size, so that a
	// slow machine or -race does not fail the test; a quadratic scan is
	// thousands of times slower than the baseline.
	// CPU time, not wall time, is measured: other processes do not count.
	start := cpuTime()
	ParseBytes([]byte(tests["long line"]))
	limit := max(2*time.Second, 200*(cpuTime()-start))
	for name, in := range tests {
		start := cpuTime()
		_, err := ParseBytes([]byte(in))
		d := cpuTime() - start
		if d > limit {
			t.Errorf("%s: %v, limit %v (err %v)", name, d, limit, err)
		}
		t.Logf("%s: %v", name, d)
	}
}

func TestMaxHeaderBytes(t *testing.T) {
	huge := "X-Filler: " + strings.Repeat("y", 70) + "\n"
	msg := "From: a@example.org\n" + strings.Repeat(huge, MaxHeaderBytes/len(huge)+100) + "Subject: late\n\nthe body\n"
	m := mustParse(t, msg)
	if !hasAnomaly(m, "message header longer than") {
		t.Errorf("Anomalies = %q", m.Anomalies)
	}
	if m.Get("From") != "a@example.org" || m.Get("Subject") != "" {
		t.Errorf("From = %q, Subject = %q; want the first fields only", m.Get("From"), m.Get("Subject"))
	}
	if m.Text != "the body\n" {
		t.Errorf("Text = %q", m.Text)
	}
	// One field alone longer than the limit is cut.
	m = mustParse(t, "Subject: "+strings.Repeat("z", 2*MaxHeaderBytes)+"\n\nbody\n")
	if n := len(m.Get("Subject")); n > MaxHeaderBytes || n < MaxHeaderBytes/2 || m.Text != "body\n" {
		t.Errorf("len(Subject) = %d, Text = %q", n, m.Text)
	}
}
