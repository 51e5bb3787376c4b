package api

import (
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in, want string // want "" for an error
	}{
		{"user@example.com", "user@example.com"},
		{"User.Name+Tag@Example.COM", "user.name+tag@example.com"},
		{"a/b@example.com", "a/b@example.com"},
		{`"john doe"@example.com`, `"john doe"@example.com`},
		{"user@[192.0.2.1]", "user@[192.0.2.1]"},
		{"ÜSER@bücher.example", "üser@bücher.example"},
		{strings.Repeat("a", 308) + "@example.com", strings.Repeat("a", 308) + "@example.com"},
		{strings.Repeat("a", 309) + "@example.com", ""},
		{"", ""},
		{"user", ""},
		{"user@", ""},
		{"@example.com", ""},
		{"a@b@example.com", ""},
		{"../../etc/passwd", ""},
		{"x@../../etc", ""},
		{`x@..\..\etc`, ""},
		{"user@exa mple.com", ""},
		{" @0", ""}, // fuzz: a space is a local part only when quoted
		{"jo hn@example.com", ""},
		{" john@example.com", ""},
		{`"john doe "@example.com`, `"john doe "@example.com`},
		{"user\x00@example.com", ""},
		{"user@example.com\r\n", ""},
		{"us\ter@example.com", ""},
		{"user\x7f@example.com", ""},
		{"user\u0085@example.com", ""}, // C1 control NEL
		{"user\xff@example.com", ""},
	}
	for _, tt := range tests {
		got, err := parseAddress(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("parseAddress(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseAddress(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
