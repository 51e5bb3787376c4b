package dsn

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkParseCorpus parses every sample of the shared corpus once per
// iteration; ns/op divided by the file count is the cost of one message.
func BenchmarkParseCorpus(b *testing.B) {
	files, _ := filepath.Glob(filepath.Join(corpus, "maildir", "bsd", "*.eml"))
	if len(files) == 0 {
		b.Skip("corpus not available")
	}
	var msgs [][]byte
	size := 0
	for _, f := range files {
		m, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, m)
		size += len(m)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range msgs {
			ParseBytes(m)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/msg")
}

// BenchmarkParsePostfix parses one typical Postfix bounce (about 3 KB).
func BenchmarkParsePostfix(b *testing.B) {
	msg := []byte(postfixDSN)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseBytes(msg); err != nil {
			b.Fatal(err)
		}
	}
}
