package classify

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bouncer-mail/bouncer/rules"
)

// transcriptCommandByContains is transcriptCommand as it was before
// rules.Phrases: smtpCommands' phrases tried one by one.
func transcriptCommandByContains(lowerText string) string {
	for _, c := range smtpCommands {
		if c.command != "" && strings.Contains(lowerText, c.phrase) {
			return pipelined(c.command, lowerText)
		}
	}
	if greetingRefused(lowerText) {
		return "CONN"
	}
	return ""
}

// transcriptCommand answers as the phrase-by-phrase loop did on every
// sample of testdata/ndr, each of its lines, and each phrase alone, in
// pairs (both orders) and after a Sendmail greeting.
func TestTranscriptCommandSameAsContains(t *testing.T) {
	texts := []string{"", "while talking to mx.example.com.:\n<<< 554 go away\n"}
	paths, _ := filepath.Glob("../testdata/ndr/*.eml")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		lower := rules.LowerASCII(string(b))
		texts = append(texts, lower)
		texts = append(texts, strings.Split(lower, "\n")...)
	}
	for _, a := range smtpCommands {
		texts = append(texts, a.phrase, "x "+a.phrase+" need rcpt")
		for _, b := range smtpCommands {
			texts = append(texts, a.phrase+" ... "+b.phrase)
		}
	}
	named := map[string]bool{}
	for _, text := range texts {
		got, want := transcriptCommand(text), transcriptCommandByContains(text)
		if got != want {
			t.Errorf("transcriptCommand(%.80q) = %q, the phrase-by-phrase loop %q", text, got, want)
		}
		named[got] = true
	}
	// The texts reach every command the phrases name.
	for _, c := range smtpCommands {
		if c.command != "" && !named[c.command] {
			t.Errorf("no text drew %s", c.command)
		}
	}
}

// BenchmarkTranscriptCommand looks for the transcript phrases in every
// whole sample of testdata/ndr per iteration, in one pass (Phrases) and
// phrase by phrase as before (ByContains), for comparison.
func BenchmarkTranscriptCommand(b *testing.B) {
	paths, _ := filepath.Glob("../testdata/ndr/*.eml")
	var texts []string
	var total int64
	for _, p := range paths {
		m, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		texts = append(texts, rules.LowerASCII(string(m)))
		total += int64(len(m))
	}
	if len(texts) == 0 {
		b.Skip("no samples")
	}
	for _, bm := range []struct {
		name string
		fn   func(string) string
	}{{"Phrases", transcriptCommand}, {"ByContains", transcriptCommandByContains}} {
		b.Run(bm.name, func(b *testing.B) {
			b.SetBytes(total)
			for b.Loop() {
				for _, text := range texts {
					bm.fn(text)
				}
			}
		})
	}
}
