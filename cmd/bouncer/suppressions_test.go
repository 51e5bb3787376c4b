package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const (
	cliReadToken  = "cli-read-token-0123456789"
	cliAdminToken = "cli-admin-token-0123456789"
)

// runSuppressionsCLI runs `bouncer suppressions ...` in-process with the
// given environment only.
func runSuppressionsCLI(t *testing.T, env map[string]string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	getenv := func(k string) string { return env[k] }
	var code int
	switch args[0] {
	case "export":
		code = runSuppressionsExport(args[1:], &stdout, &stderr, getenv)
	case "import":
		code = runSuppressionsImport(args[1:], strings.NewReader(stdin), &stdout, &stderr, getenv)
	default:
		code = run(append([]string{"suppressions"}, args...), strings.NewReader(stdin), &stdout, &stderr)
	}
	return code, stdout.String(), stderr.String()
}

// TestSuppressionsCLI imports and exports through the running service's
// API, with its tokens.
func TestSuppressionsCLI(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("read "+cliReadToken+"\nadmin "+cliAdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := startService(t, "--api-tokens-file", tokens)
	api := "http://" + svc.HTTPAddr
	adminFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(adminFile, []byte(cliAdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := map[string]string{"BOUNCER_API_URL": api, "BOUNCER_API_TOKEN": cliAdminToken}
	reader := map[string]string{"BOUNCER_API_URL": api, "BOUNCER_API_TOKEN": cliReadToken}

	// Import a few thousand lines from a file, and a few from stdin.
	var in strings.Builder
	in.WriteString("address,stream,reason\n")
	var want [][]string
	for i := range 2500 {
		stream := []string{"", "news"}[i%2]
		fmt.Fprintf(&in, "User%04d@Example.com,%s,userunknown\n", i, stream)
		want = append(want, []string{fmt.Sprintf("user%04d@example.com", i), stream, "import", "", "userunknown", "", "", "", "", "moved from the old ESP"})
	}
	csvFile := filepath.Join(dir, "in.csv")
	if err := os.WriteFile(csvFile, []byte(in.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runSuppressionsCLI(t, map[string]string{"BOUNCER_API_URL": api}, "", "import", "--token-file", adminFile, "--note", "moved from the old ESP", csvFile)
	var answer struct {
		Imported int    `json:"imported"`
		Actor    string `json:"actor"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &answer) != nil || answer.Imported != 2500 || !strings.HasPrefix(answer.Actor, "token:") {
		t.Fatalf("import = %d %q %q", code, stdout, stderr)
	}
	code, stdout, stderr = runSuppressionsCLI(t, admin, "address,note\nlast@example.org,by hand\n", "import", "-")
	if code != 0 || !strings.Contains(stdout, `"imported":1`) {
		t.Fatalf("import from stdin = %d %q %q", code, stdout, stderr)
	}
	want = append([][]string{{"last@example.org", "", "import", "", "", "", "", "", "", "by hand"}}, want...) // key order

	// Export every stream to a file, CSV; compare what is not a time or the actor.
	out := filepath.Join(dir, "out.csv")
	if code, _, stderr := runSuppressionsCLI(t, reader, "", "export", "--all-streams", "-o", out); code != 0 {
		t.Fatalf("export = %d %q", code, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(want)+1 || recs[0][0] != "address" {
		t.Fatalf("export: %d lines, want %d", len(recs), len(want)+1)
	}
	for i, r := range recs[1:] {
		if r[6] == "" || r[8] != answer.Actor {
			t.Errorf("export line %d: since %q, actor %q (want %q)", i+2, r[6], r[8], answer.Actor)
		}
		r[6], r[8] = "", ""
		if !reflect.DeepEqual(r, want[i]) {
			t.Errorf("export line %d = %q, want %q", i+2, r, want[i])
			break
		}
	}
	// JSON on stdout, one stream (and the global ones).
	code, stdout, stderr = runSuppressionsCLI(t, reader, "", "export", "--format", "json", "--stream", "news")
	var list struct {
		Suppressions []struct{ Address, Stream string }
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &list) != nil || len(list.Suppressions) != 2501 {
		t.Errorf("JSON export = %d, %d rows, %q", code, len(list.Suppressions), stderr)
	}

	// Refusals: exit 1 with the server's reason; no file is left behind.
	failed := filepath.Join(dir, "failed.csv")
	for _, tt := range []struct {
		name  string
		env   map[string]string
		stdin string
		args  []string
		says  string
	}{
		{"import with a read token", reader, "address,note\nx@example.com,n\n", []string{"import", "-"}, "403 Forbidden: this needs an admin token"},
		{"import of a bad line", admin, "address,note\nx@example.com,n\nnot an address,n\n", []string{"import", "-"}, "400 Bad Request: line 3: "},
		{"import of an unknown column", admin, "address,colour\nx@example.com,red\n", []string{"import", "--note", "n", "-"}, `unknown column "colour"`},
		{"import without a note", admin, "address\nx@example.com\n", []string{"import", "-"}, "a note is required"},
		{"import of a missing file", admin, "", []string{"import", filepath.Join(dir, "nope.csv")}, "no such file"},
		{"export with a wrong token", map[string]string{"BOUNCER_API_URL": api, "BOUNCER_API_TOKEN": "wrong-token-0123456789"}, "", []string{"export", "-o", failed}, "403 Forbidden: the token does not grant this"},
		{"export without a token", map[string]string{"BOUNCER_API_URL": api}, "", []string{"export", "-o", failed}, "401 Unauthorized: a bearer token is required"},
		{"export with a bad since", reader, "", []string{"export", "--since", "yesterday", "-o", failed}, "400 Bad Request: since must be"},
		{"export from nowhere", reader, "", []string{"export", "--api", "http://127.0.0.1:1", "-o", failed}, "connection refused"},
	} {
		code, stdout, stderr := runSuppressionsCLI(t, tt.env, tt.stdin, tt.args...)
		if code != 1 || !strings.Contains(stderr, tt.says) || stdout != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 1 and %q", tt.name, code, stdout, stderr, tt.says)
		}
		if strings.Contains(stderr, "0123456789") {
			t.Errorf("%s: stderr shows a token: %q", tt.name, stderr)
		}
	}
	if _, err := os.Stat(failed); !os.IsNotExist(err) {
		t.Errorf("a failed export left %s: %v", failed, err)
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, ".failed.csv.*")); len(matches) != 0 {
		t.Errorf("a failed export left temporary files %v", matches)
	}
	// Nothing of the refused imports was stored.
	code, stdout, _ = runSuppressionsCLI(t, reader, "", "export", "--all-streams")
	if code != 0 || strings.Count(stdout, "\n") != len(want)+1 || strings.Contains(stdout, "x@example.com") {
		t.Errorf("after the refused imports: exit %d, %d lines", code, strings.Count(stdout, "\n"))
	}
}

func TestSuppressionsCLIUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"help"}, 0, ""},
		{[]string{"export", "--stream", "a", "--all-streams"}, 2, "exclude each other"},
		{[]string{"export", "--format", "xml"}, 2, "--format"},
		{[]string{"export", "extra"}, 2, "unexpected argument"},
		{[]string{"export", "--api", "ftp://example.com"}, 2, "--api"},
		{[]string{"export", "--token-file", "/nonexistent/token"}, 2, "token file"},
		{[]string{"import"}, 2, "want one FILE"},
		{[]string{"import", "a.csv", "b.csv"}, 2, "want one FILE"},
		{[]string{"import", "--bogus", "a.csv"}, 2, "bogus"},
	} {
		code, _, stderr := runSuppressionsCLI(t, nil, "", tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.says) {
			t.Errorf("suppressions %v: exit %d, stderr %q; want %d and %q", tt.args, code, stderr, tt.code, tt.says)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"suppressions"}, strings.NewReader(""), &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "bouncer suppressions export") {
		t.Errorf("bouncer suppressions: exit %d, %q", code, stderr.String())
	}
}
