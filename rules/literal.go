package rules

import (
	"regexp/syntax"
	"unicode"
	"unicode/utf8"
)

// requiredLiteral returns a string every match of expr contains byte for
// byte, the longest it can tell, or "" when it finds none (or expr does
// not parse). A reason rule's regexp is tried only on a text holding its
// required literal: a regexp with no literal prefix (the rules' are
// case-insensitive, so none has one) is run at every offset of the text,
// and most texts are rejected by the literal alone.
//
// A case-insensitive literal is matched byte for byte only where its
// runes fold to nothing but themselves (digits, punctuation: "_506" of
// "ofr_506"), so only such runs count. U+FFFD never counts: the regexp
// matches it against any byte of invalid UTF-8.
func requiredLiteral(expr string) string {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return ""
	}
	return required(re.Simplify())
}

func required(re *syntax.Regexp) string {
	switch re.Op {
	case syntax.OpLiteral:
		best, run := "", []rune(nil)
		for i, r := range re.Rune {
			ok := r != utf8.RuneError && (re.Flags&syntax.FoldCase == 0 || unicode.SimpleFold(r) == r)
			if ok {
				run = append(run, r)
			}
			if !ok || i == len(re.Rune)-1 {
				if s := string(run); len(s) > len(best) {
					best = s
				}
				run = run[:0]
			}
		}
		return best
	case syntax.OpCapture, syntax.OpPlus:
		return required(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return required(re.Sub[0])
		}
	case syntax.OpConcat:
		best := ""
		for _, sub := range re.Sub {
			if s := required(sub); len(s) > len(best) {
				best = s
			}
		}
		return best
	}
	return ""
}
