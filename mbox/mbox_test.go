package mbox

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want []string // messages; "ERR:..." for an error at that position
	}{
		{"two messages", "From a@b Mon Jan  1 00:00:00 2026\nSubject: one\n\nbody 1\n\nFrom c@d Mon Jan  1 00:00:01 2026\nSubject: two\n\nbody 2\n",
			0, []string{"Subject: one\n\nbody 1\n", "Subject: two\n\nbody 2\n"}},
		{"From inside a body is not a separator without a blank line before", "From a@b x\nSubject: one\n\nline\nFrom here on\n",
			0, []string{"Subject: one\n\nline\nFrom here on\n"}},
		{"mboxrd quoting", "From a@b x\nSubject: q\n\n>From the start\n>>From deeper\n",
			0, []string{"Subject: q\n\nFrom the start\n>From deeper\n"}},
		{"CRLF", "From a@b x\r\nSubject: one\r\n\r\nbody\r\n\r\nFrom c@d y\r\nSubject: two\r\n\r\nb2\r\n",
			0, []string{"Subject: one\r\n\r\nbody\r\n", "Subject: two\r\n\r\nb2\r\n"}},
		{"bare CR", "From a@b x\rSubject: one\r\rbody\r\rFrom c@d y\rSubject: two\r\rb2\r",
			0, []string{"Subject: one\n\nbody\n", "Subject: two\n\nb2\n"}},
		{"too large then fine", "From a@b x\nSubject: big\n\n" + strings.Repeat("x", 100) + "\n\nFrom c@d y\nSubject: s\n\nok\n",
			64, []string{"ERR:too large", "Subject: s\n\nok\n"}},
		{"not an mbox", "Subject: hi\n\nbody\n", 0, []string{"ERR:first line"}},
		{"empty", "", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(tt.in), tt.max)
			for i, want := range tt.want {
				got, err := r.Next()
				if strings.HasPrefix(want, "ERR:") {
					if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(want, "ERR:")) {
						t.Fatalf("message %d: err = %v, want %s", i+1, err, want)
					}
					if !errors.Is(err, ErrTooLarge) {
						return
					}
					continue
				}
				if err != nil {
					t.Fatalf("message %d: %v", i+1, err)
				}
				if string(got) != want {
					t.Errorf("message %d = %q, want %q", i+1, got, want)
				}
			}
			if _, err := r.Next(); !errors.Is(err, io.EOF) {
				t.Errorf("after the last message: err = %v, want io.EOF", err)
			}
		})
	}
}

func TestIsMbox(t *testing.T) {
	for in, want := range map[string]bool{"From a@b x\n": true, "From:a@b\n": false, "": false, "Received: x\n": false} {
		if got := IsMbox([]byte(in)); got != want {
			t.Errorf("IsMbox(%q) = %v, want %v", in, got, want)
		}
	}
}
