package api

import "testing"

func TestTextCell(t *testing.T) {
	tests := []struct{ in, out string }{
		{"", ""},
		{"plain note", "plain note"},
		{`=HYPERLINK("http://x.example/","click")`, `'=HYPERLINK("http://x.example/","click")`},
		{"+1", "'+1"},
		{"-5 days", "'-5 days"},
		{"@SUM(A1)", "'@SUM(A1)"},
		{"\t=1", "'\t=1"},
		{"\r=1", "'\r=1"},
		{"'=1", "''=1"},
		{"''", "'''"},
		{"'quoted'", "'quoted'"}, // an apostrophe before text: as it is
		{"'", "'"},
		{"a=b", "a=b"},
	}
	for _, tt := range tests {
		if got := textCell(tt.in); got != tt.out {
			t.Errorf("textCell(%q) = %q, want %q", tt.in, got, tt.out)
		}
	}
	// Every string of up to four of these bytes: the export never begins
	// a cell as a formula, and the import gives back what was exported.
	alphabet := []byte{'=', '+', '-', '@', '\t', '\r', '\'', 'a'}
	var walk func(s string)
	walk = func(s string) {
		c := textCell(s)
		if c != "" && formulaStart(c[0]) {
			t.Fatalf("textCell(%q) = %q begins as a formula", s, c)
		}
		if back := fromTextCell(c); back != s {
			t.Fatalf("fromTextCell(textCell(%q)) = %q", s, back)
		}
		if len(s) == 4 {
			return
		}
		for _, b := range alphabet {
			walk(s + string(b))
		}
	}
	walk("")
}
