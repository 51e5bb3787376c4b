package dsn

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// corpus is the development corpus of real bounces shared by the project.
// It is read in place, never copied into the repository.
const corpus = "../../shared/ndr-corpus/emails"

var (
	dsnContentType = regexp.MustCompile(`(?i)(^|[\r\n])content-type:\s*message/delivery-status`)
	recipientField = regexp.MustCompile(`(?i)(^|[\r\n])\s*(final|original)-recipient:`)
)

// TestCorpusNoPanic parses every sample of the shared corpus: none may panic,
// only the degenerate ones (a few bytes) may fail, and every sample with a
// message/delivery-status part must yield a report with a recipient.
func TestCorpusNoPanic(t *testing.T) {
	if _, err := os.Stat(corpus); err != nil {
		t.Skip("corpus not available:", err)
	}
	var files, failed, withDSN, emptyDSN, reports, recipients, originals, anomalous, feedback int
	err := filepath.WalkDir(corpus, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		m, perr := ParseBytes(b)
		if len(bytes.TrimSpace(b)) < 16 {
			if perr == nil {
				t.Errorf("%s: degenerate input parsed without error", path)
			}
			return nil
		}
		if perr != nil {
			failed++
			t.Errorf("%s: %v", path, perr)
			return nil
		}
		n := 0
		for _, r := range m.Reports {
			n += len(r.Recipients)
		}
		reports += len(m.Reports)
		recipients += n
		if m.Original != nil {
			originals++
		}
		if m.Feedback != nil {
			feedback++
		}
		if len(m.Anomalies) > 0 {
			anomalous++
			if testing.Verbose() {
				t.Logf("%s: anomalies %q", path, m.Anomalies)
			}
		}
		if dsnContentType.Match(b) {
			withDSN++
			if !recipientField.Match(b) {
				// The delivery-status part holds no per-recipient fields
				// at all (a handful of real MTAs send such reports).
				emptyDSN++
				return nil
			}
			if n == 0 {
				t.Errorf("%s: has a message/delivery-status part but no recipient was read (anomalies %q)", path, m.Anomalies)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d files, %d failed, %d with a delivery-status part (%d of them without any recipient field), %d reports, %d recipients, %d originals, %d feedback, %d with anomalies",
		files, failed, withDSN, emptyDSN, reports, recipients, originals, feedback, anomalous)
}
