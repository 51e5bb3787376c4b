package classify

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/bouncer-mail/bouncer/dsn"
)

// TestBadInput feeds the whole path the inputs of the "bad input"
// list. Each must end in a clear error or an empty or partial result, never
// a panic or a hang.
func TestBadInput(t *testing.T) {
	nested := func(depth int) []byte {
		var b bytes.Buffer
		b.WriteString("From: MAILER-DAEMON@example.com\nSubject: failure notice\n")
		for i := 0; i < depth; i++ {
			b.WriteString("Content-Type: multipart/mixed; boundary=\"b" + itoa(i) + "\"\n\n--b" + itoa(i) + "\n")
		}
		b.WriteString("Content-Type: text/plain\n\n<a@example.com>: 550 no such user\n")
		return b.Bytes()
	}
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i*7919 + i>>3)
	}
	tests := []struct {
		name    string
		in      []byte
		wantErr bool
	}{
		{"empty", nil, true},
		{"one byte", []byte("x"), true},
		{"three bytes", []byte("22\n"), true},
		{"binary garbage", garbage, true},
		{"truncated mime", []byte("From: MAILER-DAEMON@example.com\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"x\"\n\n--x\nContent-Type: text/plain\n\nfailed\n--x\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\n\nFinal-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1"), false},
		{"10000 nested parts", nested(10000), false},
		{"invalid base64", []byte("From: MAILER-DAEMON@example.com\nSubject: Undelivered Mail\nContent-Transfer-Encoding: base64\n\n!!!! not base64 @@@@\n"), false},
		{"unknown charset", []byte("From: MAILER-DAEMON@example.com\nSubject: failure notice\nContent-Type: text/plain; charset=x-no-such-charset\n\n<a@example.com>:\n550 5.1.1 no such user\n"), false},
		{"invalid utf-8", []byte("From: MAILER-DAEMON@example.com\nSubject: failure notice\n\n<a@example.com>:\n550 \xff\xfe\xfd user unknown\n"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := testClassifier.Bytes(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if err != nil && err.Error() == "" {
				t.Error("an error without text")
			}
			for _, e := range evs {
				if !e.Reason.Valid() {
					t.Errorf("event with reason %q", e.Reason)
				}
			}
		})
	}
}

// TestHugeMessage checks that a message over dsn.MaxSize is refused with
// dsn.ErrTooLarge after reading no more than the limit: a 1 GiB message
// costs what a message just over the limit costs, not 30 times more.
func TestHugeMessage(t *testing.T) {
	alloc := func(size int64) uint64 {
		r := io.MultiReader(strings.NewReader("From: MAILER-DAEMON@example.com\nSubject: failure notice\n\n"), &repeatReader{b: []byte("<a@example.com>: 550 user unknown\n"), left: size})
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := testClassifier.Parse(r)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, dsn.ErrTooLarge) {
			t.Fatalf("%d bytes: err = %v, want dsn.ErrTooLarge", size, err)
		}
		return after.TotalAlloc - before.TotalAlloc
	}
	small := alloc(dsn.MaxSize + 1<<20)
	huge := alloc(1 << 30)
	if huge > 2*small+8<<20 {
		t.Errorf("a 1 GiB message allocated %d MiB, one just over the %d MiB limit %d MiB: memory grows with the input", huge>>20, dsn.MaxSize>>20, small>>20)
	}
}

type repeatReader struct {
	b    []byte
	left int64
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.left > 0 {
		c := copy(p[n:], r.b[r.off:])
		n += c
		r.off = (r.off + c) % len(r.b)
		r.left -= int64(c)
	}
	return n, nil
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for i > 0 {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
	}
	return string(b)
}
