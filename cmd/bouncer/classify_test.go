package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const qmailBounce = "From: MAILER-DAEMON@mx.example.jp\nTo: sender@example.org\nSubject: failure notice\n\n" +
	"Hi. This is the qmail-send program at mx.example.jp.\n" +
	"I'm afraid I wasn't able to deliver your message to the following addresses.\n" +
	"This is a permanent error; I've given up. Sorry it didn't work out.\n\n" +
	"<Nobody@Example.NET>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n" +
	"--- Below this line is a copy of the message.\n\nMessage-ID: <orig-1@example.org>\nSubject: hi\n\nhello\n"

func runCLI(t *testing.T, stdin string, args ...string) (int, []classifyResult, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(append([]string{"classify"}, args...), strings.NewReader(stdin), &out, &errOut)
	var res []classifyResult
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var r classifyResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("output line %q is not JSON: %v", sc.Text(), err)
		}
		res = append(res, r)
	}
	return code, res, errOut.String()
}

func TestClassifyCLI(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bounce := write("b/1-qmail.eml", qmailBounce)
	write("b/2-empty.eml", "")
	write("b/3-plain.eml", "From: friend@example.com\nTo: me@example.org\nSubject: lunch\n\nsee you at noon\n")
	mboxPath := write("two.mbox", "From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n"+qmailBounce+"\nFrom MAILER-DAEMON Thu Jan  1 00:00:01 2026\n"+strings.Replace(qmailBounce, "Nobody@Example.NET", "other@example.net", 1))

	t.Run("file", func(t *testing.T) {
		code, res, _ := runCLI(t, "", bounce)
		if code != 0 || len(res) != 1 {
			t.Fatalf("exit %d, %d results; want 0, 1", code, len(res))
		}
		r := res[0]
		if r.File != bounce || len(r.Events) != 1 {
			t.Fatalf("got %+v", r)
		}
		e := r.Events[0]
		if e.Recipient != "nobody@example.net" || e.Class != "hard" || e.Reason != "userunknown" || e.MessageID != "<orig-1@example.org>" {
			t.Errorf("event %+v: want nobody@example.net hard/userunknown <orig-1@example.org>", e)
		}
	})
	t.Run("directory in order", func(t *testing.T) {
		code, res, _ := runCLI(t, "", filepath.Join(dir, "b"))
		if code != 0 || len(res) != 3 {
			t.Fatalf("exit %d, %d results; want 0, 3", code, len(res))
		}
		for i, suffix := range []string{"1-qmail.eml", "2-empty.eml", "3-plain.eml"} {
			if !strings.HasSuffix(res[i].File, suffix) {
				t.Errorf("result %d is %s, want ...%s", i, res[i].File, suffix)
			}
		}
		if res[1].Error == "" || len(res[1].Events) != 0 {
			t.Errorf("empty file: %+v, want an error and no events", res[1])
		}
		if res[2].Error != "" || len(res[2].Events) != 0 {
			t.Errorf("ordinary email: %+v, want no error and no events", res[2])
		}
	})
	t.Run("stdin", func(t *testing.T) {
		code, res, _ := runCLI(t, qmailBounce, "-")
		if code != 0 || len(res) != 1 || res[0].File != "-" || len(res[0].Events) != 1 {
			t.Fatalf("exit %d, %+v", code, res)
		}
	})
	t.Run("mbox", func(t *testing.T) {
		code, res, _ := runCLI(t, "", mboxPath)
		if code != 0 || len(res) != 2 {
			t.Fatalf("exit %d, %d results; want 0, 2", code, len(res))
		}
		if res[0].File != mboxPath+"#1" || res[1].File != mboxPath+"#2" {
			t.Errorf("files %q %q, want #1 and #2", res[0].File, res[1].File)
		}
		if len(res[1].Events) != 1 || res[1].Events[0].Recipient != "other@example.net" {
			t.Errorf("second message: %+v", res[1])
		}
	})
	t.Run("missing argument", func(t *testing.T) {
		code, res, stderr := runCLI(t, "", filepath.Join(dir, "nope"), bounce)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		if len(res) != 1 {
			t.Errorf("%d results; the readable argument must still be classified", len(res))
		}
		if !strings.Contains(stderr, "nope") {
			t.Errorf("stderr %q does not name the missing file", stderr)
		}
	})
	t.Run("bad rules file", func(t *testing.T) {
		bad := write("rules.json", `{"reasons":[{"name":"x","reason":"nonsense","phrases":["a"]}]}`)
		code, _, stderr := runCLI(t, "", "--rules", bad, bounce)
		if code != 2 || !strings.Contains(stderr, "nonsense") {
			t.Errorf("exit %d, stderr %q; want 2 and the bad reason named", code, stderr)
		}
	})
	t.Run("events never null", func(t *testing.T) {
		var out bytes.Buffer
		run([]string{"classify", filepath.Join(dir, "b", "3-plain.eml")}, nil, &out, &bytes.Buffer{})
		if !strings.Contains(out.String(), `"events":[]`) {
			t.Errorf("output %q: events must be [] not null", out.String())
		}
	})
}
