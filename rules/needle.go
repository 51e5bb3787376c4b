package rules

import "strings"

// needle is a phrase prepared for searching lower-cased bounce text: the
// offset of its least frequent byte is worked out once, when the rules
// are compiled.
//
// strings.Index looks for a phrase's first byte and compares from there,
// and the rules' phrases mostly begin with a frequent one ("the ...",
// "this ...", "----- ..."): in a text of a few kilobytes that is hundreds
// of short IndexByte calls per phrase, each finding a candidate that
// fails. Looking for the phrase's rarest byte instead (the ':' of
// "error message below:", the 'q' of "qmail") finds few candidates, each
// after a long vectorised skip.
type needle struct {
	s    string
	rare int // offset in s of its least frequent byte; 0 when s is empty
}

// commonBytes lists the bytes of lower-cased bounce text from the most
// frequent down, as counted over the samples of testdata/ndr; every byte
// not listed is rarer than all of them. Only speed depends on it.
const commonBytes = "e taomrsni.c0-lp\nd:2u1xfb4hyg5v3879@w=6<>;k/j,()#z_\"q+\t"

// byteRank is commonBytes as a table: the higher, the more frequent.
var byteRank = func() (r [256]uint8) {
	for i := 0; i < len(commonBytes); i++ {
		r[commonBytes[i]] = uint8(len(commonBytes) - i)
	}
	return r
}()

func newNeedle(s string) needle {
	n := needle{s: s}
	for i := 1; i < len(s); i++ {
		if byteRank[s[i]] < byteRank[s[n.rare]] {
			n.rare = i
		}
	}
	return n
}

func newNeedles(phrases []string) []needle {
	if len(phrases) == 0 {
		return nil
	}
	out := make([]needle, len(phrases))
	for i, p := range phrases {
		out[i] = newNeedle(p)
	}
	return out
}

// index returns what strings.Index(s, n.s) returns: the offset of the
// first occurrence of n.s in s, or -1.
func (n needle) index(s string) int {
	m := len(n.s)
	switch {
	case m == 0:
		return 0
	case m > len(s):
		return -1
	}
	c := n.s[n.rare]
	// The rare byte of a match starting at i is at i+n.rare; the last
	// possible start is len(s)-m.
	i, last := n.rare, len(s)-m+n.rare
	fails := 0
	for i <= last {
		j := strings.IndexByte(s[i:last+1], c)
		if j < 0 {
			return -1
		}
		i += j
		start := i - n.rare
		if s[start:start+m] == n.s {
			return start
		}
		// A text made of the rare byte (hostile, or a line of "=")
		// would make every offset a candidate: past as many failures
		// as strings.Index itself tolerates, let it finish, in time
		// linear in s.
		fails++
		if fails > 4+start>>4 {
			if k := strings.Index(s[start+1:], n.s); k >= 0 {
				return start + 1 + k
			}
			return -1
		}
		i++
	}
	return -1
}

// containsAny reports whether any of needles occurs in s.
func containsAny(s string, needles []needle) bool {
	for _, n := range needles {
		if n.index(s) >= 0 {
			return true
		}
	}
	return false
}
