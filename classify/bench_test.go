package classify

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkClassify parses and classifies every sample of testdata/ndr per
// iteration; b.SetBytes makes MB/s comparable across runs. The corpus-wide
// figure comes from `go run ./cmd/accuracy`.
func BenchmarkClassify(b *testing.B) {
	paths, _ := filepath.Glob("../testdata/ndr/*.eml")
	var msgs [][]byte
	var total int64
	for _, p := range paths {
		m, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, m)
		total += int64(len(m))
	}
	if len(msgs) == 0 {
		b.Skip("no samples")
	}
	b.SetBytes(total)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, m := range msgs {
			if _, err := testClassifier.Bytes(m); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "msgs/s")
}
