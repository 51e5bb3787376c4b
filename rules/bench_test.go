package rules

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// benchStatus and benchCode pick a reply's enhanced status and basic code
// out of a line, so the benchmark's replies meet the rules' conditions as
// real ones do.
var (
	benchStatus = regexp.MustCompile(`\b[245]\.\d{1,3}\.\d{1,3}\b`)
	benchCode   = regexp.MustCompile(`\b[245]\d\d\b`)
)

// benchReplies returns every line of the testdata/ndr samples of 16 bytes
// or more, lower-cased, as a reply: real bounce text, most of which no
// rule matches, as in a report where Reason is asked about each
// recipient's diagnostic.
func benchReplies(tb testing.TB) []Reply {
	paths, _ := filepath.Glob("../testdata/ndr/*.eml")
	var out []Reply
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if len(line) < 16 {
				continue
			}
			r := Reply{Text: LowerASCII(line), Status: benchStatus.FindString(line)}
			if c := benchCode.FindString(line); c != "" {
				r.Code, _ = strconv.Atoi(c)
			}
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		tb.Skip("no samples")
	}
	return out
}

// BenchmarkReason asks the default rules about every line of the samples
// per iteration.
func BenchmarkReason(b *testing.B) {
	s := MustDefault()
	replies := benchReplies(b)
	var total int64
	for _, r := range replies {
		total += int64(len(r.Text))
	}
	b.SetBytes(total)
	b.ReportAllocs()
	matched := 0
	for b.Loop() {
		matched = 0
		for _, r := range replies {
			if _, ok := s.Reason(r); ok {
				matched++
			}
		}
	}
	b.ReportMetric(float64(len(replies)), "replies/op")
	b.ReportMetric(float64(matched), "matched/op")
}

// BenchmarkCommand asks the default command rules about the same lines.
func BenchmarkCommand(b *testing.B) {
	s := MustDefault()
	replies := benchReplies(b)
	b.ReportAllocs()
	for b.Loop() {
		for _, r := range replies {
			s.Command(r.Text)
		}
	}
}

// BenchmarkLowerASCII lower-cases every sample of testdata/ndr, as the
// classifier does each message's text.
func BenchmarkLowerASCII(b *testing.B) {
	paths, _ := filepath.Glob("../testdata/ndr/*.eml")
	var texts []string
	var total int64
	for _, p := range paths {
		m, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		texts = append(texts, string(m))
		total += int64(len(m))
	}
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		for _, s := range texts {
			LowerASCII(s)
		}
	}
}
