package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const suppressionsUsage = `usage:
  bouncer suppressions export [--stream S | --all-streams] [--since TIME] [--format csv|json] [-o FILE] [--api URL] [--token-file FILE]
  bouncer suppressions import [--note N] [--api URL] [--token-file FILE] FILE|-

export writes the suppressions in force, as CSV (the default) or JSON, to
FILE or stdout: the global ones, plus one stream's with --stream, or every
stream's with --all-streams. import sends a CSV file (- for stdin) with a
header line naming its columns, address at least (stream, class, reason,
since, until, note); every line is checked before anything is stored, and
a note is required per line or with --note. It prints the server's answer.

Both talk to bouncer's HTTP API at --api (env BOUNCER_API_URL, default
http://127.0.0.1:8025) with the bearer token of --token-file (env
BOUNCER_API_TOKEN_FILE) or env BOUNCER_API_TOKEN; import needs an admin
token. A bouncer with no token configured serves loopback clients without
one. Exit status: 0 done, 1 refused or failed, 2 usage.
`

// defaultAPIURL is where `bouncer` with no flags serves HTTP.
const defaultAPIURL = "http://127.0.0.1:8025"

// maxErrorBody bounds how much of a refusal is read for its reason.
const maxErrorBody = 64 << 10

// runSuppressions runs `bouncer suppressions export|import`.
func runSuppressions(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, suppressionsUsage)
		return 2
	}
	switch args[0] {
	case "export":
		return runSuppressionsExport(args[1:], stdout, stderr, os.Getenv)
	case "import":
		return runSuppressionsImport(args[1:], stdin, stdout, stderr, os.Getenv)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, suppressionsUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "bouncer suppressions: unknown command %q\n\n%s", args[0], suppressionsUsage)
		return 2
	}
}

// apiClient is a client of bouncer's HTTP API.
type apiClient struct {
	base  *url.URL
	token string
	http  *http.Client
}

// apiFlags adds --api and --token-file to fl and returns a function that
// makes the client once the flags are parsed.
func apiFlags(fl *flag.FlagSet, getenv func(string) string) func() (*apiClient, error) {
	api := fl.String("api", cmp.Or(getenv("BOUNCER_API_URL"), defaultAPIURL), "bouncer HTTP API `url` (env BOUNCER_API_URL)")
	tokenFile := fl.String("token-file", getenv("BOUNCER_API_TOKEN_FILE"), "`file` holding the API bearer token (env BOUNCER_API_TOKEN_FILE; else env BOUNCER_API_TOKEN)")
	return func() (*apiClient, error) {
		u, err := url.Parse(*api)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("--api %q: want an http:// or https:// URL", *api)
		}
		c := &apiClient{base: u, token: strings.TrimSpace(getenv("BOUNCER_API_TOKEN"))}
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				return nil, fmt.Errorf("token file: %w", err)
			}
			if c.token = strings.TrimSpace(string(b)); c.token == "" {
				return nil, fmt.Errorf("token file %s is empty", *tokenFile)
			}
		}
		// No overall timeout: an export of millions of rows streams for
		// a while. Connecting and the server's first answer are bounded.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
		tr.ResponseHeaderTimeout = 5 * time.Minute // an import is checked whole before the answer
		c.http = &http.Client{Transport: tr}
		return c, nil
	}
}

// do sends a request to path (with query) and returns the response when
// it is a 2xx; otherwise an error with the server's reason.
func (c *apiClient) do(method, path string, query url.Values, body io.Reader, contentType string) (*http.Response, error) {
	u := c.base.JoinPath(path)
	u.RawQuery = query.Encode()
	req, err := http.NewRequest(method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var e struct {
		Error string `json:"error"`
	}
	reason := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		reason = e.Error
	}
	if len(reason) > 500 {
		reason = reason[:500] + "..."
	}
	return nil, fmt.Errorf("%s %s: %s: %s", method, u.Path, resp.Status, reason)
}

func suppressionsFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fl := flag.NewFlagSet("bouncer suppressions "+name, flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {
		fmt.Fprint(stderr, suppressionsUsage+"\nflags:\n")
		fl.PrintDefaults()
	}
	return fl
}

// parseSuppressionsFlags parses args; it returns -1 to go on, or the exit
// status.
func parseSuppressionsFlags(fl *flag.FlagSet, args []string) int {
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	return -1
}

func runSuppressionsExport(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fl := suppressionsFlagSet("export", stderr)
	stream := fl.String("stream", "", "also list this `stream`'s suppressions (the global ones are always listed)")
	all := fl.Bool("all-streams", false, "list every stream's suppressions")
	since := fl.String("since", "", "only suppressions that started at or after this RFC 3339 `time`")
	format := fl.String("format", "csv", "csv or json")
	out := fl.String("o", "", "write to `file` instead of stdout (replaced only when the export is whole)")
	client := apiFlags(fl, getenv)
	if code := parseSuppressionsFlags(fl, args); code >= 0 {
		return code
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "bouncer suppressions export: "+format+"\n", a...)
		return code
	}
	switch {
	case fl.NArg() > 0:
		return fail(2, "unexpected argument %q", fl.Arg(0))
	case *all && *stream != "":
		return fail(2, "--stream and --all-streams exclude each other")
	case *format != "csv" && *format != "json":
		return fail(2, "--format %q: want csv or json", *format)
	}
	c, err := client()
	if err != nil {
		return fail(2, "%v", err)
	}
	q := url.Values{"format": {*format}}
	if *stream != "" {
		q.Set("stream", *stream)
	}
	if *all {
		q.Set("all_streams", "true")
	}
	if *since != "" {
		q.Set("since", *since)
	}
	resp, err := c.do(http.MethodGet, "/v1/suppressions", q, nil, "")
	if err != nil {
		return fail(1, "%v", err)
	}
	defer resp.Body.Close()
	if *out == "" {
		if _, err := io.Copy(stdout, resp.Body); err != nil {
			return fail(1, "the export broke off: %v", err)
		}
		return 0
	}
	if err := writeFileAtomic(*out, resp.Body); err != nil {
		return fail(1, "%v", err)
	}
	return 0
}

// writeFileAtomic copies r into a temporary file beside path and renames
// it over path once r ended cleanly, so a broken transfer leaves no
// half-written file behind.
func writeFileAtomic(path string, r io.Reader) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err != nil {
		err = fmt.Errorf("the export broke off: %w", err)
	}
	if e := f.Close(); err == nil {
		err = e
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

func runSuppressionsImport(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	fl := suppressionsFlagSet("import", stderr)
	note := fl.String("note", "", "`note` (why) of every line whose note column is empty or absent")
	client := apiFlags(fl, getenv)
	if code := parseSuppressionsFlags(fl, args); code >= 0 {
		return code
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "bouncer suppressions import: "+format+"\n", a...)
		return code
	}
	if fl.NArg() != 1 {
		return fail(2, "want one FILE (- for stdin)")
	}
	c, err := client()
	if err != nil {
		return fail(2, "%v", err)
	}
	var body io.Reader = stdin
	if name := fl.Arg(0); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return fail(1, "%v", err)
		}
		defer f.Close()
		body = f
	}
	q := url.Values{}
	if *note != "" {
		q.Set("note", *note)
	}
	resp, err := c.do(http.MethodPost, "/v1/suppressions:import", q, body, "text/csv; charset=utf-8")
	if err != nil {
		return fail(1, "%v", err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(stdout, resp.Body); err != nil {
		return fail(1, "reading the answer: %v", err)
	}
	return 0
}
