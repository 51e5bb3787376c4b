package procio

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSelfCountsWrites(t *testing.T) {
	_, w0, err := Self()
	if err != nil {
		t.Skipf("no /proc/self/io here: %v", err)
	}
	data := make([]byte, 1<<20)
	if err := os.WriteFile(filepath.Join(t.TempDir(), "f"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, w1, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	if w1-w0 < int64(len(data)) {
		t.Errorf("written grew by %d after writing %d bytes", w1-w0, len(data))
	}
}
