package classify

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/bouncer-mail/bouncer/dsn"
)

// Bytes answers as Parse over a reader of the same bytes, events and
// error text (stored as a report's ParseError) alike: on every sample, in
// CRLF and CR-only too, and on the inputs Parse refuses.
func TestBytesSameAsParse(t *testing.T) {
	inputs := [][]byte{nil, []byte(" \r\n\t"), []byte("no header at all"),
		make([]byte, dsn.MaxSize+1), // too large
	}
	paths, _ := filepath.Glob("../testdata/ndr/*.eml")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, b, bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")),
			bytes.ReplaceAll(b, []byte("\n"), []byte("\r")))
	}
	events, failed := 0, map[error]bool{}
	for i, in := range inputs {
		got, gotErr := testClassifier.Bytes(in)
		want, wantErr := testClassifier.Parse(bytes.NewReader(in))
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			t.Errorf("input %d: Bytes error %v, Parse error %v", i, gotErr, wantErr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("input %d: Bytes = %+v, Parse = %+v", i, got, want)
		}
		events += len(got)
		for _, e := range []error{dsn.ErrEmpty, dsn.ErrTooLarge} {
			if errors.Is(gotErr, e) {
				failed[e] = true
			}
		}
	}
	if events < len(paths) || !failed[dsn.ErrEmpty] || !failed[dsn.ErrTooLarge] {
		t.Errorf("%d events from %d samples, refusals %v: want an event a sample and both refusals", events, len(paths), failed)
	}
}
