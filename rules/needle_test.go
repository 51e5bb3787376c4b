package rules

import (
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNeedleIndex: needle.index answers what strings.Index, which it
// replaces, answers.
func TestNeedleIndex(t *testing.T) {
	tests := []struct{ s, phrase string }{
		{"", ""},
		{"abc", ""},
		{"", "a"},
		{"a", "a"},
		{"ab", "abc"},
		{"user unknown", "user unknown"},
		{"550 user unknown", "unknown"},
		{"550 user unknown", "550"},
		{"user unknow", "user unknown"},
		{"the the then", "then"},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", "aab"},
		{"error message below:\n", "error message below:"},
		{"qmail qmail-send", "qmail-send"},
		// The rare byte first, last, and repeated in the phrase.
		{"x:y:z:", "z:"},
		{"::::::::::::::::::::::::::::::::a", ":a"},
		{"::::::::::::::::::::::::::::::::", "::a"},
		{"-------------------------------- original message", "----- original message"},
		{"----- original messag", "----- original message"},
		{"wasn’t found, it wasn’t", "wasn’t"},
	}
	for _, tt := range tests {
		if got, want := newNeedle(tt.phrase).index(tt.s), strings.Index(tt.s, tt.phrase); got != want {
			t.Errorf("index(%q, %q) = %d, want %d", tt.s, tt.phrase, got, want)
		}
	}
}

// TestNeedleIndexRandom compares the two over random texts of a small
// alphabet, where phrases occur often and partial matches oftener, and
// over long runs of one byte, where index gives up candidates for
// strings.Index.
func TestNeedleIndexRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	const alphabet = "ab:-q e"
	random := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.Intn(len(alphabet))]
		}
		return string(b)
	}
	for range 20000 {
		s, phrase := random(rng.Intn(300)), random(1+rng.Intn(6))
		if rng.Intn(4) == 0 {
			// A run of one byte with the phrase, or nearly it, at the end.
			s = strings.Repeat(phrase[len(phrase)-1:], rng.Intn(2000)) + phrase[:rng.Intn(len(phrase)+1)]
		}
		if got, want := newNeedle(phrase).index(s), strings.Index(s, phrase); got != want {
			t.Fatalf("index(%q, %q) = %d, want %d", s, phrase, got, want)
		}
	}
}

// TestNeedleRare: the byte looked for is the phrase's least frequent.
func TestNeedleRare(t *testing.T) {
	tests := []struct {
		phrase string
		rare   int
	}{
		{"", 0},
		{"e", 0},
		{"the", 1},
		{"qmail", 0},
		{"error message below:", 18},  // the 'w'
		{"----- original message", 9}, // the 'g'
	}
	for _, tt := range tests {
		if got := newNeedle(tt.phrase).rare; got != tt.rare {
			t.Errorf("newNeedle(%q).rare = %d, want %d", tt.phrase, got, tt.rare)
		}
	}
}

// FuzzNeedleIndex: needle.index and strings.Index agree on any text and
// phrase.
func FuzzNeedleIndex(f *testing.F) {
	// Each sample with one of the formats' start and end phrases.
	var phrases []string
	for _, fm := range MustDefault().formats {
		for _, n := range append(fm.start, fm.end...) {
			phrases = append(phrases, n.s)
		}
	}
	seeds, _ := filepath.Glob("../testdata/ndr/*.eml")
	for i, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(LowerASCII(string(b)), phrases[i%len(phrases)])
		}
	}
	f.Add("::::::::::::::::::::::::::::::::", "::a")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, text, phrase string) {
		if got, want := newNeedle(phrase).index(text), strings.Index(text, phrase); got != want {
			t.Fatalf("index(%q, %q) = %d, want %d", text, phrase, got, want)
		}
	})
}
