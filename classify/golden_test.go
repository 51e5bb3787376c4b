package classify

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/mbox"
)

var update = flag.Bool("update", false, "rewrite testdata/ndr/*.golden.json from the classifier's output")

// goldenEvent holds the fields of an event that a sample pins: the ones
// that decide what a user does with it. Free text (diagnostic) and the
// name of the deciding rule are left out so rewording a rule does not
// churn every golden file.
type goldenEvent struct {
	Recipient   string       `json:"recipient"`
	Class       event.Class  `json:"class"`
	Reason      event.Reason `json:"reason"`
	Scope       event.Scope  `json:"scope"`
	Status      string       `json:"status"`
	ReplyCode   int          `json:"reply_code"`
	Action      string       `json:"action"`
	SMTPCommand string       `json:"smtp_command"`
	Provider    string       `json:"provider"`
	MessageID   string       `json:"message_id"`
}

type goldenMessage struct {
	Events []goldenEvent `json:"events"`
}

type goldenMbox struct {
	Messages []goldenMessage `json:"messages"`
}

func goldenOf(evs []event.Event) goldenMessage {
	out := goldenMessage{Events: []goldenEvent{}}
	for _, e := range evs {
		out.Events = append(out.Events, goldenEvent{
			Recipient: e.Recipient, Class: e.Class, Reason: e.Reason, Scope: e.Scope,
			Status: e.Status, ReplyCode: e.ReplyCode, Action: e.Action,
			SMTPCommand: e.SMTPCommand, Provider: e.Provider, MessageID: e.MessageID,
		})
	}
	return out
}

// TestGolden classifies every sample of testdata/ndr and compares with its
// .golden.json. go test ./classify -run TestGolden -update rewrites them.
func TestGolden(t *testing.T) {
	samples, err := filepath.Glob("../testdata/ndr/*")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, path := range samples {
		if base := filepath.Base(path); strings.HasSuffix(base, ".golden.json") || strings.HasSuffix(base, ".md") || strings.HasPrefix(base, ".") {
			continue
		}
		n++
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var got any
			if mbox.IsMbox(raw) {
				var g goldenMbox
				r := mbox.NewReader(bytes.NewReader(raw), 0)
				for {
					msg, err := r.Next()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Fatalf("mbox: %v", err)
					}
					evs, err := testClassifier.Bytes(msg)
					if err != nil {
						t.Fatalf("message %d: %v", len(g.Messages)+1, err)
					}
					g.Messages = append(g.Messages, goldenOf(evs))
				}
				got = g
			} else {
				evs, err := testClassifier.Bytes(raw)
				if err != nil {
					t.Fatalf("classify: %v", err)
				}
				got = goldenOf(evs)
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false) // keep <message-id> readable
			enc.SetIndent("", "  ")
			if err := enc.Encode(got); err != nil {
				t.Fatal(err)
			}
			gotJSON := buf.Bytes()
			goldenPath := path + ".golden.json"
			if *update {
				if err := os.WriteFile(goldenPath, gotJSON, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			wantJSON, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("no golden file (run with -update to write it): %v", err)
			}
			var gotV, wantV any
			if err := json.Unmarshal(gotJSON, &gotV); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(wantJSON, &wantV); err != nil {
				t.Fatalf("%s: %v", goldenPath, err)
			}
			if !reflect.DeepEqual(gotV, wantV) {
				t.Errorf("%s differs from the classifier's output.\n got: %s\nwant: %s", goldenPath, compact(gotJSON), compact(wantJSON))
			}
		})
	}
	if n < 60 {
		t.Errorf("testdata/ndr holds %d samples; the project keeps at least 60", n)
	}
}

func compact(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}
