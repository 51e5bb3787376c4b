package rules

import (
	"math/rand"
	"regexp"
	"strings"
	"testing"
)

func TestRequiredLiteral(t *testing.T) {
	tests := []struct{ expr, want string }{
		{`(?i)\b(?:ofr|lpn)[0-9]*_506\b`, "_506"},
		{`abc`, "abc"},
		{`(?i)abc`, ""},
		{`(?i)user 550-5\.1\.1 unknown`, " 550-5.1.1 "},
		{`(?i)user 550-5.1.1 unknown`, " 550-5"}, // '.' is any character
		{`(?i)k`, ""},                            // the Kelvin sign folds to k
		{`x+y`, "x"},
		{`(?:ab){2,}`, "ab"},
		{`(?:ab)?c`, "c"},
		{`(?:ab)*c`, "c"},
		{`(?:ab){0,3}`, ""},
		{`ab|cd`, ""},
		{`(a(bcd))e`, "bcd"},
		{`\x{FFFD}x`, "x"},
		// The parser factors the alternation's common "t" out.
		{`^(?:\d{3}[ -])?(?:try again later|temporarily rejected)\.?$`, "t"},
		{`(?i)^(?:\d{3}[ -])?(?:try again later|temporarily rejected)\.?$`, ""},
		{`(`, ""},
	}
	for _, tt := range tests {
		if got := requiredLiteral(tt.expr); got != tt.want {
			t.Errorf("requiredLiteral(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}

// TestRequiredLiteralDefault: every text a default reason regexp matches,
// among the sample lines and random texts around its literal, holds that
// literal; and the rules' answers are the plain regexp's.
func TestRequiredLiteralDefault(t *testing.T) {
	s := MustDefault()
	texts := []string{"", "\xff", "ofr_506", "lpn0_506 blocked", "ofr_5066", "OFR_506", "ofr_50"}
	for _, r := range benchReplies(t) {
		texts = append(texts, r.Text)
	}
	for _, rr := range s.reasons {
		for i, re := range rr.re {
			for _, text := range texts {
				if got, want := rr.need[i].index(text) >= 0 && re.MatchString(text), re.MatchString(text); got != want {
					t.Errorf("rule %s, %q on %q: prefiltered %v, regexp %v", rr.Name, re, text, got, want)
				}
			}
		}
	}
}

// TestRequiredLiteralRandom: for random patterns over a small alphabet
// and random texts, a text a pattern matches holds its literal.
func TestRequiredLiteralRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	parts := []string{"a", "b", "_", "5", "ab", "(?:a|b)", "[0-9]", "a*", "_+", "(?:5_){2}", "(?:b5)?", "\\b", "(?i)", "(?i:a_)", "K", "\u212a"}
	for range 5000 {
		var expr strings.Builder
		for range 1 + rng.Intn(5) {
			expr.WriteString(parts[rng.Intn(len(parts))])
		}
		re, err := regexp.Compile(expr.String())
		if err != nil {
			continue
		}
		lit := requiredLiteral(expr.String())
		for range 20 {
			var text strings.Builder
			for range rng.Intn(12) {
				text.WriteString([]string{"a", "A", "b", "_", "5", "k", "K", "\u212a", " ", "\xff"}[rng.Intn(10)])
			}
			if re.MatchString(text.String()) && !strings.Contains(text.String(), lit) {
				t.Fatalf("%q matches %q, which lacks its literal %q", expr.String(), text.String(), lit)
			}
		}
	}
}

// FuzzRequiredLiteral: a text a pattern matches holds the pattern's
// required literal.
func FuzzRequiredLiteral(f *testing.F) {
	for _, rr := range MustDefault().reasons {
		for _, expr := range rr.Regexps {
			f.Add("(?i)"+expr, "550 5.7.1 ofr_506 blocked")
		}
	}
	f.Add(`x(ab)+y`, "xababy")
	f.Fuzz(func(t *testing.T, expr, text string) {
		re, err := regexp.Compile(expr)
		if err != nil {
			return
		}
		if lit := requiredLiteral(expr); re.MatchString(text) && !strings.Contains(text, lit) {
			t.Fatalf("%q matches %q, which lacks its literal %q", expr, text, lit)
		}
	})
}
