package mbox

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReader: any input ends in io.EOF after a bounded number of calls,
// never panics, and never yields a message over the limit or more bytes
// than it read (plus the newline it adds to a last unterminated line).
func FuzzReader(f *testing.F) {
	for _, seed := range []string{
		"From a@b Mon Jan  1 00:00:00 2026\nSubject: one\n\nbody 1\n\nFrom c@d x\nSubject: two\n\nb2\n",
		"From a@b x\r\nSubject: one\r\n\r\nbody\r\n",
		"From a@b x\rSubject: one\r\rbody\r",
		"From a@b x\nSubject: q\n\n>From the start\n>>From deeper\n",
		"From \n\nFrom \n\nFrom ",
		"Subject: not an mbox\n",
		"From a@b x\n" + string(bytes.Repeat([]byte("y"), 5000)),
	} {
		f.Add([]byte(seed), 64)
	}
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max < 1 || max > 1<<20 {
			max = 1 << 20
		}
		r := NewReader(bytes.NewReader(in), max)
		total := 0
		for calls := 0; ; calls++ {
			if calls > len(in)+2 {
				t.Fatalf("more than %d messages from %d bytes", calls, len(in))
			}
			msg, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil && !errors.Is(err, ErrTooLarge) {
				if calls != 0 {
					t.Fatalf("message %d: %v", calls+1, err)
				}
				if _, err := r.Next(); err != io.EOF {
					t.Fatalf("after a refused first line: %v, want io.EOF", err)
				}
				break
			}
			if len(msg) > max+1 {
				t.Fatalf("message of %d bytes over the limit %d", len(msg), max)
			}
			total += len(msg)
			if total > len(in)+calls+1 {
				t.Fatalf("%d bytes out of %d in", total, len(in))
			}
		}
	})
}
