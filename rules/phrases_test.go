package rules

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// containsIDs is what phraseIndex replaces: strings.Contains tried phrase
// by phrase. It returns the ids found, sorted, each once.
func containsIDs(phrases []string, ids []int32, text string) []int32 {
	var out []int32
	for i, p := range phrases {
		if strings.Contains(text, p) {
			out = append(out, ids[i])
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// indexIDs scans text with an index of phrases and returns the ids found,
// sorted.
func indexIDs(phrases []string, ids []int32, n int, text string) []int32 {
	ix := newPhraseIndex(phrases, ids, n)
	found := make([]uint64, (n+63)/64+1) // one word more: must stay clear
	ix.scan(text, found)
	var out []int32
	for id := range int32(len(found) * 64) {
		if found[id>>6]&(1<<(id&63)) != 0 {
			out = append(out, id)
		}
	}
	return out
}

// reasonByContains is Set.Reason as it was before the phrase index and
// the regexps' required literals: each rule's phrases tried with
// strings.Contains and its regexps run, one rule after the other.
func (s *Set) reasonByContains(r Reply) (Match, bool) {
	if r.Text == "" {
		return Match{}, false
	}
	for i := range s.reasons {
		rr := &s.reasons[i]
		if !rr.conditionsHold(r) {
			continue
		}
		if slices.ContainsFunc(rr.Phrases, func(p string) bool { return strings.Contains(r.Text, p) }) ||
			slices.ContainsFunc(rr.re, func(re *regexp.Regexp) bool { return re.MatchString(r.Text) }) {
			return Match{Rule: rr.Name, Reason: rr.Reason, Scope: rr.Scope, AfterData: rr.AfterData}, true
		}
	}
	return Match{}, false
}

func TestPhraseIndex(t *testing.T) {
	tests := []struct {
		name    string
		phrases []string
		ids     []int32
		text    string
		want    []int32
	}{
		{"none", []string{"user unknown"}, []int32{0}, "mailbox full", nil},
		{"whole text", []string{"user unknown"}, []int32{0}, "user unknown", []int32{0}},
		{"at the end", []string{"unknown"}, []int32{0}, "550 user unknown", []int32{0}},
		{"at the start", []string{"550"}, []int32{0}, "550 user unknown", []int32{0}},
		{"cut short", []string{"user unknown"}, []int32{0}, "user unknow", nil},
		{"empty text", []string{"a"}, []int32{0}, "", nil},
		// The textbook set: "she" holds "he", "hers" needs the failure
		// link from "she" to "he".
		{"suffixes", []string{"he", "she", "his", "hers"}, []int32{0, 1, 2, 3}, "ushers", []int32{0, 1, 3}},
		{"nested", []string{"a", "aa", "aaa"}, []int32{0, 1, 2}, "baab", []int32{0, 1}},
		{"restart inside a partial match", []string{"aab"}, []int32{0}, "aaab", []int32{0}},
		{"one id, many phrases", []string{"x", "y", "z"}, []int32{5, 5, 5}, "zzz", []int32{5}},
		{"empty phrase, every text", []string{"", "q"}, []int32{1, 2}, "abc", []int32{1}},
		{"empty phrase, empty text", []string{""}, []int32{0}, "", []int32{0}},
		{"non-ASCII", []string{"wasn’t found"}, []int32{0}, "it wasn’t found.", []int32{0}},
		{"non-ASCII, cut in a rune", []string{"wasn’t found"}, []int32{0}, "wasn\xe2\x80 found", nil},
		{"bytes in no phrase", []string{"ab"}, []int32{0}, "a\x00b\xffab", []int32{0}},
		{"ids past 64", []string{"a", "b"}, []int32{3, 70}, "ba", []int32{3, 70}},
		{"no phrases", nil, nil, "anything", nil},
	}
	for _, tt := range tests {
		n := 1
		for _, id := range tt.ids {
			n = max(n, int(id)+1)
		}
		got := indexIDs(tt.phrases, tt.ids, n, tt.text)
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: %q in %q: found %v, want %v", tt.name, tt.phrases, tt.text, got, tt.want)
		}
		if ref := containsIDs(tt.phrases, tt.ids, tt.text); !slices.Equal(got, ref) {
			t.Errorf("%s: found %v, strings.Contains finds %v", tt.name, got, ref)
		}
	}
}

// defaultPhrases returns the default reason rules' phrases, each with its
// rule's number as id.
func defaultPhrases(s *Set) ([]string, []int32) {
	var phrases []string
	var ids []int32
	for i, r := range s.reasons {
		for _, p := range r.Phrases {
			phrases = append(phrases, p)
			ids = append(ids, int32(i))
		}
	}
	return phrases, ids
}

// Every line of the samples, and every default phrase alone and inside
// other text, is answered as strings.Contains answers it, and Reason
// decides as it did before with every status and code the rules ask for.
func TestReasonSameAsContains(t *testing.T) {
	s := MustDefault()
	phrases, ids := defaultPhrases(s)
	texts := []string{"", " ", "550 5.1.1 user unknown"}
	for _, r := range benchReplies(t) {
		texts = append(texts, r.Text)
	}
	for _, p := range phrases {
		texts = append(texts, p, "x"+p+"y", p[:len(p)/2], p[len(p)/2:]+p[:len(p)/2])
	}
	ix := s.reasonPhrases
	matched := 0
	for _, text := range texts {
		found := make([]uint64, (len(s.reasons)+63)/64)
		ix.scan(text, found)
		var got []int32
		for id := range int32(len(s.reasons)) {
			if found[id>>6]&(1<<(id&63)) != 0 {
				got = append(got, id)
			}
		}
		if want := containsIDs(phrases, ids, text); !slices.Equal(got, want) {
			t.Errorf("%q: rules %v found, strings.Contains finds %v", text, got, want)
		}
		for _, r := range []Reply{
			{Text: text},
			{Text: text, Status: "5.1.1", Code: 550},
			{Text: text, Status: "5.7.1", Code: 554, Provider: "gmail"},
			{Text: text, Status: "4.2.2", Code: 452},
			{Text: text, Status: "5.2.2"},
			{Text: text, Code: 421, Provider: "microsoft"},
		} {
			got, gotOK := s.Reason(r)
			want, wantOK := s.reasonByContains(r)
			if got != want || gotOK != wantOK {
				t.Errorf("Reason(%+v) = %+v, %v; strings.Contains gives %+v, %v", r, got, gotOK, want, wantOK)
			}
			if gotOK {
				matched++
			}
		}
	}
	// The comparison means something only if rules do match.
	if matched < len(phrases) {
		t.Errorf("only %d of the replies matched a rule, want at least %d", matched, len(phrases))
	}
}

// FuzzPhraseIndex compares the index with strings.Contains on arbitrary
// phrases (split at "|") and texts, so overlaps, repeats and odd bytes
// the default rules do not have are tried too.
func FuzzPhraseIndex(f *testing.F) {
	s := MustDefault()
	phrases, _ := defaultPhrases(s)
	paths, _ := filepath.Glob("../testdata/ndr/*.eml")
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		// Three default phrases a sample, in turn.
		k := 3 * i % len(phrases)
		f.Add(LowerASCII(string(b)), strings.Join(phrases[k:min(k+3, len(phrases))], "|"))
	}
	f.Add("ushers", "he|she|his|hers")
	f.Add("aaab", "a|aa|aab|aaab|b")
	f.Add("abc", "|x")
	f.Fuzz(func(t *testing.T, text, list string) {
		ps := strings.Split(list, "|")
		if len(ps) > 200 {
			ps = ps[:200]
		}
		ids := make([]int32, len(ps))
		for i := range ps {
			ids[i] = int32(i % 70) // two words of ids, some shared
		}
		got := indexIDs(ps, ids, 70, text)
		if want := containsIDs(ps, ids, text); !slices.Equal(got, want) {
			t.Fatalf("%q in %q: found %v, strings.Contains finds %v", ps, text, got, want)
		}
		if got, want := NewPhrases(ps...).First(text), firstByContains(ps, text); got != want {
			t.Fatalf("First(%q) of %q = %d, strings.Contains finds %d first", text, ps, got, want)
		}
	})
}

// firstByContains is what Phrases.First replaces.
func firstByContains(phrases []string, text string) int {
	for i, p := range phrases {
		if strings.Contains(text, p) {
			return i
		}
	}
	return -1
}

func TestPhrasesFirst(t *testing.T) {
	many := make([]string, 300)
	for i := range many {
		many[i] = fmt.Sprintf("<%d>", i)
	}
	tests := []struct {
		phrases []string
		text    string
		want    int
	}{
		{[]string{"in reply to rcpt to", "in reply to data"}, "... in reply to data command", 1},
		// The list's order decides, not the text's.
		{[]string{"after data", ">>> rcpt to"}, ">>> rcpt to:<a@b>\n>>> data\n... after data", 0},
		{[]string{"b", "a"}, "ab", 0},
		{[]string{"x"}, "abc", -1},
		{nil, "abc", -1},
		{[]string{"", "a"}, "zzz", 0},
		{many, "... <299> ... <257> ...", 257},
		{many, "... <3>", 3},
	}
	for _, tt := range tests {
		if got := NewPhrases(tt.phrases...).First(tt.text); got != tt.want {
			t.Errorf("First(%q) of %.40q = %d, want %d", tt.text, tt.phrases, got, tt.want)
		}
		if ref := firstByContains(tt.phrases, tt.text); ref != tt.want {
			t.Errorf("strings.Contains finds %d first in %q, the table says %d", ref, tt.text, tt.want)
		}
	}
}
