package api_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer-mail/bouncer/api"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse"
	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
	"github.com/bouncer-mail/bouncer/store/sqlite"
	"github.com/bouncer-mail/bouncer/suppress"
)

const (
	readToken  = "read-token-0123456789"
	adminToken = "admin-token-0123456789"
)

// adminActor is the audit trail's name of adminToken.
var adminActor = func() string {
	sum := sha256.Sum256([]byte(adminToken))
	return "token:" + hex.EncodeToString(sum[:])[:8]
}()

type supEnv struct {
	st  store.Store
	srv *httptest.Server
}

// startSup serves the API over real HTTP with read and admin tokens on st,
// a fresh SQLite store when nil.
func startSup(t *testing.T, st store.Store, mod func(*api.Config)) *supEnv {
	t.Helper()
	if st == nil {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "bouncer.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		st = s
	}
	cfg := api.Config{
		Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Gatherer: prometheus.NewRegistry(),
		ReadTokens: []string{readToken}, AdminTokens: []string{adminToken},
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &supEnv{st: st, srv: httptest.NewServer(h)}
	t.Cleanup(e.srv.Close)
	return e
}

type reply struct {
	status int
	body   []byte
	header http.Header
}

// call makes a request with the path exactly as written (already escaped)
// and a bearer token ("" for none).
func (e *supEnv) call(t *testing.T, method, path, token string, body io.Reader) reply {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = "//" + req.URL.Host + strings.SplitN(path, "?", 2)[0]
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return reply{resp.StatusCode, b, resp.Header}
}

func (e *supEnv) put(t *testing.T, address, body string) reply {
	t.Helper()
	return e.call(t, http.MethodPut, "/v1/suppressions/"+url.PathEscape(address), adminToken, strings.NewReader(body))
}

// decode decodes a 200/201 JSON body into v, strictly.
func decode(t *testing.T, what string, r reply, want int, v any) {
	t.Helper()
	if r.status != want {
		t.Fatalf("%s: status %d, want %d: %s", what, r.status, want, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != jsonType {
		t.Errorf("%s: Content-Type %q", what, ct)
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v: %s", what, err, r.body)
	}
}

// wire is a suppression as the API answers it.
type wire struct {
	Address string     `json:"address"`
	Stream  string     `json:"stream"`
	Source  string     `json:"source"`
	Class   string     `json:"class"`
	Reason  string     `json:"reason"`
	Rule    string     `json:"rule"`
	Since   time.Time  `json:"since"`
	Until   *time.Time `json:"until"`
	Actor   string     `json:"actor"`
	Note    string     `json:"note"`
	Updated time.Time  `json:"updated"`
}

type wireAddress struct {
	Address      string `json:"address"`
	Suppressed   bool   `json:"suppressed"`
	Suppressions []wire `json:"suppressions"`
}

type wireChange struct {
	Time    time.Time `json:"time"`
	Address string    `json:"address"`
	Stream  string    `json:"stream"`
	Action  string    `json:"action"`
	Source  string    `json:"source"`
	Actor   string    `json:"actor"`
	Note    string    `json:"note"`
	Class   string    `json:"class"`
	Reason  string    `json:"reason"`
	Rule    string    `json:"rule"`
}

type wireHistory struct {
	Address      string       `json:"address"`
	Suppressions []wire       `json:"suppressions"`
	Changes      []wireChange `json:"changes"`
}

type wireList struct {
	Suppressions []wire `json:"suppressions"`
	NextCursor   string `json:"next_cursor"`
}

// snapshot is everything the suppression routes can change, to show that
// a refused request changed nothing.
func (e *supEnv) snapshot(t *testing.T, addresses ...string) string {
	t.Helper()
	ctx := context.Background()
	far := time.Now().Add(time.Hour)
	rows, err := e.st.Suppressions(ctx, store.SuppressionQuery{AllStreams: true, Now: far, Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	stats, err := e.st.SuppressionStats(ctx, far)
	if err != nil {
		t.Fatal(err)
	}
	hist := map[string][]store.SuppressionChange{}
	for _, a := range addresses {
		if hist[a], err = e.st.SuppressionHistory(ctx, a, 1000); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal([]any{rows, stats, hist})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// openClickHouse opens a store on a throwaway ClickHouse server.
func openClickHouse(t *testing.T) store.Store {
	t.Helper()
	st, err := clickhouse.Open(context.Background(), clickhousetest.Start(t), clickhouse.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestSuppressionPutGetDelete runs the add, check, remove and audit flow
// on SQLite and on a throwaway ClickHouse server.
func TestSuppressionPutGetDelete(t *testing.T) {
	plusTags := func(c *api.Config) { c.Normalize = suppress.Normalization{PlusTags: true} }
	t.Run("sqlite", func(t *testing.T) { testPutGetDelete(t, startSup(t, nil, plusTags)) })
	t.Run("clickhouse", func(t *testing.T) { testPutGetDelete(t, startSup(t, openClickHouse(t), plusTags)) })
}

func testPutGetDelete(t *testing.T, e *supEnv) {
	before := time.Now().UTC().Truncate(time.Second)

	// Add: 201, the stored row, a Location.
	r := e.put(t, "Jane+Promo@Example.COM", `{"note":"asked by phone, ticket 4711","reason":"userunknown"}`)
	var got wire
	decode(t, "first PUT", r, http.StatusCreated, &got)
	if got.Address != "jane@example.com" || got.Stream != "" || got.Source != store.SourceManual || got.Reason != "userunknown" ||
		got.Actor != adminActor || got.Note != "asked by phone, ticket 4711" || got.Until != nil || got.Class != "" || got.Rule != "" {
		t.Errorf("first PUT = %+v", got)
	}
	if got.Since.Before(before) || got.Since.After(time.Now()) || got.Updated.IsZero() {
		t.Errorf("first PUT: since %v (want from %v), updated %v", got.Since, before, got.Updated)
	}
	if loc := r.header.Get("Location"); loc != "/v1/suppressions/jane@example.com" {
		t.Errorf("Location = %q", loc)
	}
	// Replace: 200.
	until := time.Now().UTC().Add(48 * time.Hour).Truncate(time.Second)
	r = e.put(t, "jane@example.com", `{"note":"until the dispute is settled","until":"`+until.Format(time.RFC3339)+`"}`)
	decode(t, "second PUT", r, http.StatusOK, &got)
	if got.Until == nil || !got.Until.Equal(until) || got.Note != "until the dispute is settled" || got.Reason != "" {
		t.Errorf("second PUT = %+v, want until %v", got, until)
	}
	// One stream only.
	decode(t, "PUT on a stream", e.put(t, "bob@example.org", `{"stream":"newsletter","note":"unsubscribed on paper"}`), http.StatusCreated, &got)
	if got.Stream != "newsletter" {
		t.Errorf("PUT on a stream = %+v", got)
	}

	for _, tt := range []struct {
		path       string
		address    string
		suppressed bool
		streams    []string
	}{
		{"/v1/suppressions/jane@example.com", "jane@example.com", true, []string{""}},
		{"/v1/suppressions/JANE%2Bother@example.com?stream=newsletter", "jane@example.com", true, []string{""}}, // global counts
		{"/v1/suppressions/bob@example.org", "bob@example.org", true, []string{"newsletter"}},
		{"/v1/suppressions/bob@example.org?stream=newsletter", "bob@example.org", true, []string{"newsletter"}},
		{"/v1/suppressions/bob@example.org?stream=receipts", "bob@example.org", false, []string{"newsletter"}},
		{"/v1/suppressions/bob@example.org?stream=no-such-stream", "bob@example.org", false, []string{"newsletter"}},
		{"/v1/suppressions/nobody@example.org", "nobody@example.org", false, []string{}},
	} {
		var a wireAddress
		decode(t, tt.path, e.call(t, http.MethodGet, tt.path, readToken, nil), http.StatusOK, &a)
		streams := []string{}
		for _, s := range a.Suppressions {
			streams = append(streams, s.Stream)
		}
		if a.Address != tt.address || a.Suppressed != tt.suppressed || a.Suppressions == nil || !reflect.DeepEqual(streams, tt.streams) {
			t.Errorf("GET %s = %+v, want %s suppressed=%v streams %v", tt.path, a, tt.address, tt.suppressed, tt.streams)
		}
	}

	// Remove: a note is required, then 200 with the removed row, then 404.
	del := "/v1/suppressions/jane@example.com?note=" + url.QueryEscape("confirmed the address works")
	r = e.call(t, http.MethodDelete, "/v1/suppressions/jane@example.com", adminToken, nil)
	if msg := wantError(t, "DELETE without a note", r.status, r.body, r.header.Get("Content-Type"), http.StatusBadRequest); !strings.Contains(msg, "note") {
		t.Errorf("DELETE without a note: %q does not mention the note", msg)
	}
	var removed struct {
		Removed wire `json:"removed"`
	}
	decode(t, "DELETE", e.call(t, http.MethodDelete, del, adminToken, nil), http.StatusOK, &removed)
	if removed.Removed.Address != "jane@example.com" || removed.Removed.Note != "until the dispute is settled" {
		t.Errorf("DELETE removed %+v", removed.Removed)
	}
	r = e.call(t, http.MethodDelete, del, adminToken, nil)
	wantError(t, "DELETE again", r.status, r.body, r.header.Get("Content-Type"), http.StatusNotFound)
	r = e.call(t, http.MethodDelete, "/v1/suppressions/bob@example.org?note=x", adminToken, nil)
	wantError(t, "DELETE global of a stream-only address", r.status, r.body, r.header.Get("Content-Type"), http.StatusNotFound)
	var a wireAddress
	decode(t, "GET after DELETE", e.call(t, http.MethodGet, "/v1/suppressions/jane@example.com", readToken, nil), http.StatusOK, &a)
	if a.Suppressed || len(a.Suppressions) != 0 {
		t.Errorf("GET after DELETE = %+v, want not suppressed", a)
	}

	// The audit trail: both adds and the removal, newest first, by whom and why.
	var h wireHistory
	decode(t, "history", e.call(t, http.MethodGet, "/v1/recipients/jane+x@example.com/history", readToken, nil), http.StatusOK, &h)
	type line struct{ action, source, actor, note string }
	var lines []line
	for _, c := range h.Changes {
		if c.Address != "jane@example.com" || c.Stream != "" || c.Time.IsZero() {
			t.Errorf("history change %+v", c)
		}
		lines = append(lines, line{c.Action, c.Source, c.Actor, c.Note})
	}
	want := []line{
		{store.ActionRemove, store.SourceManual, adminActor, "confirmed the address works"},
		{store.ActionAdd, store.SourceManual, adminActor, "until the dispute is settled"},
		{store.ActionAdd, store.SourceManual, adminActor, "asked by phone, ticket 4711"},
	}
	if h.Address != "jane@example.com" || len(h.Suppressions) != 0 || !reflect.DeepEqual(lines, want) {
		t.Errorf("history = %s %v %v, want %v", h.Address, h.Suppressions, lines, want)
	}
	decode(t, "history limit", e.call(t, http.MethodGet, "/v1/recipients/jane@example.com/history?limit=1", readToken, nil), http.StatusOK, &h)
	if len(h.Changes) != 1 || h.Changes[0].Action != store.ActionRemove {
		t.Errorf("history?limit=1 = %+v", h.Changes)
	}
	decode(t, "history of bob", e.call(t, http.MethodGet, "/v1/recipients/bob@example.org/history", readToken, nil), http.StatusOK, &h)
	if len(h.Suppressions) != 1 || h.Suppressions[0].Stream != "newsletter" || len(h.Changes) != 1 {
		t.Errorf("history of bob = %+v", h)
	}
}

// TestSuppressionLoopback: with no token configured, a loopback client
// may change suppressions and is named "loopback"; nobody else is served.
func TestSuppressionLoopback(t *testing.T) {
	e := startSup(t, nil, func(c *api.Config) { c.ReadTokens, c.AdminTokens = nil, nil })
	var got wire
	decode(t, "loopback PUT", e.call(t, http.MethodPut, "/v1/suppressions/a@example.com", "", strings.NewReader(`{"note":"n"}`)), http.StatusCreated, &got)
	if got.Actor != "loopback" {
		t.Errorf("loopback PUT actor = %q", got.Actor)
	}
	h := e.srv.Config.Handler
	for _, m := range []string{http.MethodPut, http.MethodDelete, http.MethodGet} {
		r := httptest.NewRequest(m, "/v1/suppressions/a@example.com?note=x", strings.NewReader(`{"note":"n"}`))
		r.RemoteAddr = "192.0.2.1:4000"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusForbidden {
			t.Errorf("%s from a remote client without tokens: %d, want 403", m, w.Code)
		}
	}
}

// TestSuppressionRefused sends requests that must be refused, and checks
// each answer's status and JSON error, and that nothing changed.
func TestSuppressionRefused(t *testing.T) {
	e := startSup(t, nil, nil)
	e.put(t, "kept@example.com", `{"note":"present before"}`)
	e.put(t, "kept@example.com", `{"note":"on a stream","stream":"news"}`)
	before := e.snapshot(t, "kept@example.com", "new@example.com")

	long := strings.Repeat("a", 321-len("@example.com")) + "@example.com"
	type req struct {
		name, method, path, token, body string
		status                          int
		says                            string // in the error, "" for anything
	}
	tests := []req{
		// Tokens.
		{"PUT without a token", "PUT", "/v1/suppressions/new@example.com", "", `{"note":"n"}`, 401, "token"},
		{"PUT with a read token", "PUT", "/v1/suppressions/new@example.com", readToken, `{"note":"n"}`, 403, "admin"},
		{"PUT with a wrong token", "PUT", "/v1/suppressions/new@example.com", "nope-nope-nope-nope", `{"note":"n"}`, 403, ""},
		{"PUT with a token's prefix", "PUT", "/v1/suppressions/new@example.com", adminToken[:10], `{"note":"n"}`, 403, ""},
		{"DELETE with a read token", "DELETE", "/v1/suppressions/kept@example.com?note=x", readToken, "", 403, "admin"},
		{"import with a read token", "POST", "/v1/suppressions:import?note=x", readToken, "address\nnew@example.com\n", 403, "admin"},
		{"list without a token", "GET", "/v1/suppressions", "", "", 401, ""},
		{"check with a wrong token", "GET", "/v1/suppressions/kept@example.com", "nope-nope-nope-nope", "", 403, ""},
		// PUT bodies.
		{"PUT without a note", "PUT", "/v1/suppressions/new@example.com", adminToken, `{"reason":"userunknown"}`, 400, "note"},
		{"PUT with a blank note", "PUT", "/v1/suppressions/new@example.com", adminToken, `{"note":"  "}`, 400, "note"},
		{"PUT with an empty body", "PUT", "/v1/suppressions/new@example.com", adminToken, ``, 400, "JSON"},
		{"PUT not JSON", "PUT", "/v1/suppressions/new@example.com", adminToken, `note=x`, 400, "JSON"},
		{"PUT with an unknown field", "PUT", "/v1/suppressions/new@example.com", adminToken, `{"note":"n","source":"policy"}`, 400, "JSON"},
		{"PUT of two objects", "PUT", "/v1/suppressions/new@example.com", adminToken, `{"note":"n"}{"note":"m"}`, 400, "one JSON object"},
		{"PUT with an unknown reason", "PUT", "/v1/suppressions/new@example.com", adminToken, `{"note":"n","reason":"annoying"}`, 400, "reason"},
		{"PUT with until in the past", "PUT", "/v1/suppressions/new@example.com", adminToken, `{"note":"n","until":"2001-01-01T00:00:00Z"}`, 400, "until"},
		{"PUT with until not RFC 3339", "PUT", "/v1/suppressions/new@example.com", adminToken, `{"note":"n","until":"tomorrow"}`, 400, "until"},
		{"PUT with a control character in the note", "PUT", "/v1/suppressions/new@example.com", adminToken, `{"note":"a\nb"}`, 400, "note"},
		{"PUT with a huge note", "PUT", "/v1/suppressions/new@example.com", adminToken, `{"note":"` + strings.Repeat("n", 1025) + `"}`, 400, "note"},
		{"PUT with a control character in the stream", "PUT", "/v1/suppressions/new@example.com", adminToken, `{"note":"n","stream":"a\tb"}`, 400, "stream"},
		{"PUT with a long stream", "PUT", "/v1/suppressions/new@example.com", adminToken, `{"note":"n","stream":"` + strings.Repeat("s", 256) + `"}`, 400, "stream"},
		{"PUT with a body over 64 KiB", "PUT", "/v1/suppressions/new@example.com", adminToken, `{"note":"` + strings.Repeat("n", 70000) + `"}`, 413, ""},
		// DELETE.
		{"DELETE without a note", "DELETE", "/v1/suppressions/kept@example.com", adminToken, "", 400, "note"},
		{"DELETE with a control character in the note", "DELETE", "/v1/suppressions/kept@example.com?note=a%0Db", adminToken, "", 400, "note"},
		{"DELETE of a stream with none", "DELETE", "/v1/suppressions/kept@example.com?stream=other&note=x", adminToken, "", 404, "stream"},
		{"DELETE of an unknown address", "DELETE", "/v1/suppressions/new@example.com?note=x", adminToken, "", 404, ""},
		// Listing.
		{"since not RFC 3339", "GET", "/v1/suppressions?since=yesterday", readToken, "", 400, "since"},
		{"format xml", "GET", "/v1/suppressions?format=xml", readToken, "", 400, "format"},
		{"limit zero", "GET", "/v1/suppressions?limit=0", readToken, "", 400, "limit"},
		{"limit over 10000", "GET", "/v1/suppressions?limit=10001", readToken, "", 400, "limit"},
		{"limit huge", "GET", "/v1/suppressions?limit=99999999999999999999999", readToken, "", 400, "limit"},
		{"limit not a number", "GET", "/v1/suppressions?limit=ten", readToken, "", 400, "limit"},
		{"cursor not base64", "GET", "/v1/suppressions?cursor=***", readToken, "", 400, "cursor"},
		{"cursor not JSON", "GET", "/v1/suppressions?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("kept@example.com")), readToken, "", 400, "cursor"},
		{"cursor without an address", "GET", "/v1/suppressions?cursor=" + base64.RawURLEncoding.EncodeToString([]byte(`["",""]`)), readToken, "", 400, "cursor"},
		{"all_streams not a boolean", "GET", "/v1/suppressions?all_streams=maybe", readToken, "", 400, "all_streams"},
		{"stream and all_streams", "GET", "/v1/suppressions?all_streams=true&stream=news", readToken, "", 400, "stream"},
		{"bad query escape", "GET", "/v1/suppressions?stream=%zz", readToken, "", 400, "query"},
		{"stream with a newline", "GET", "/v1/suppressions/kept@example.com?stream=a%0Ab", readToken, "", 400, "stream"},
		{"history limit too big", "GET", "/v1/recipients/kept@example.com/history?limit=1001", readToken, "", 400, "limit"},
	}
	// Addresses in paths, on every route that takes one.
	for _, p := range []struct{ name, address string }{
		{"no @", "new.example.com"},
		{"two @", "a@b@example.com"},
		{"empty local part", "@example.com"},
		{"path traversal", "..%2F..%2Fetc"},
		{"path traversal with @", "x@..%2F..%2Fetc%2Fpasswd"},
		{"dots", "%2E%2E"},
		{"empty domain label", "new@example..com"},
		{"leading dot in the domain", "new@.example.com"},
		{"CR LF", "new@example.com%0D%0AX-Injected:%201"},
		{"NUL", "new%00@example.com"},
		{"space", "new%20one@example.com"},
		{"comma", "new,old@example.com"},
		{"invalid UTF-8", "new%FF@example.com"},
		{"321 octets", long},
		{"huge", strings.Repeat("a", 100000) + "@example.com"},
	} {
		tests = append(tests,
			req{"GET " + p.name, "GET", "/v1/suppressions/" + p.address, readToken, "", 400, ""},
			req{"PUT " + p.name, "PUT", "/v1/suppressions/" + p.address, adminToken, `{"note":"n"}`, 400, ""},
			req{"DELETE " + p.name, "DELETE", "/v1/suppressions/" + p.address + "?note=x", adminToken, "", 400, ""},
			req{"history " + p.name, "GET", "/v1/recipients/" + p.address + "/history", readToken, "", 400, ""},
		)
	}
	// Imports: a bad line anywhere refuses the whole file.
	good := "address,stream,note\nnew@example.com,,ok\nnew2@example.com,news,ok\n"
	for _, tt := range []struct{ name, query, body, says string }{
		{"empty", "?note=x", "", "header"},
		{"no address column", "?note=x", "email,note\nnew@example.com,x\n", "unknown column"},
		{"unknown column", "?note=x", "address,colour\nnew@example.com,red\n", `unknown column "colour"`},
		{"header only without address", "?note=x", "stream,note\n", "no address column"},
		{"duplicate column", "?note=x", "address,note,Note\nnew@example.com,a,b\n", "twice"},
		{"bare quote", "?note=x", good + "ne\"w3@example.com,,x\n", "line 4"},
		{"unterminated quote", "?note=x", good + "\"new3@example.com,,x\n", "line 4"},
		{"too few fields", "?note=x", good + "new3@example.com,news\n", "line 4"},
		{"too many fields", "?note=x", good + "new3@example.com,news,a,b\n", "line 4"},
		{"bad address", "?note=x", good + "not-an-address,,x\n", "line 4"},
		{"address with CR LF", "?note=x", good + "\"new3@example.com\r\nX: 1\",,x\n", "line 4"},
		{"no note", "", "address\nnew@example.com\n", "line 2: a note is required"},
		{"blank note, none in the query", "", good + "new3@example.com,,\n", "line 4"},
		{"note with a control character", "", good + "new3@example.com,,\"a\nb\"\n", "line 4"},
		{"until in the past", "?note=x", "address,until\nnew@example.com,2001-01-01T00:00:00Z\n", "line 2: until"},
		{"since not RFC 3339", "?note=x", "address,since\nnew@example.com,last week\n", "line 2: since"},
		{"since in the future", "?note=x", "address,since\nnew@example.com,2999-01-01T00:00:00Z\n", "line 2: since"},
		{"unknown class", "?note=x", "address,class\nnew@example.com,nasty\n", "line 2: class"},
		{"unknown reason", "?note=x", "address,reason\nnew@example.com,nasty\n", "line 2: reason"},
		{"stream with a control character", "?note=x", "address,stream\nnew@example.com,\"a\tb\"\n", "line 2: stream"},
		{"overlong line", "?note=x", good + "new3@example.com,," + strings.Repeat("n", 17<<10) + "\n", "line 4 is longer"},
		{"query note with a control character", "?note=a%0Ab", good, "note"},
	} {
		tests = append(tests, req{"import " + tt.name, "POST", "/v1/suppressions:import" + tt.query, adminToken, tt.body, 400, tt.says})
	}

	for _, tt := range tests {
		var body io.Reader
		if tt.body != "" {
			body = strings.NewReader(tt.body)
		}
		r := e.call(t, tt.method, tt.path, tt.token, body)
		msg := wantError(t, tt.name, r.status, r.body, r.header.Get("Content-Type"), tt.status)
		if !strings.Contains(msg, tt.says) {
			t.Errorf("%s: error %q does not say %q", tt.name, msg, tt.says)
		}
		if strings.Contains(msg, "Injected") || strings.Contains(msg, "etc") {
			t.Errorf("%s: the error repeats the input: %q", tt.name, msg)
		}
	}
	if after := e.snapshot(t, "kept@example.com", "new@example.com"); after != before {
		t.Errorf("refused requests changed the store:\nbefore %s\nafter  %s", before, after)
	}
}

// TestSuppressionImportTooBig sends a body over 64 MiB: 413, nothing
// written.
func TestSuppressionImportTooBig(t *testing.T) {
	e := startSup(t, nil, nil)
	line := "big@example.com,,a note that is not short at all, to fill the file\n"
	body := io.MultiReader(strings.NewReader("address,stream,note\n"), &repeatReader{line: line, n: (64<<20)/len(line) + 10})
	r := e.call(t, http.MethodPost, "/v1/suppressions:import", adminToken, body)
	wantError(t, "64 MiB import", r.status, r.body, r.header.Get("Content-Type"), http.StatusRequestEntityTooLarge)
	if rows, err := e.st.Suppressions(context.Background(), store.SuppressionQuery{AllStreams: true, Now: time.Now(), Limit: 1}); err != nil || len(rows) != 0 {
		t.Errorf("after a refused import the store holds %v, %v", rows, err)
	}
}

// repeatReader yields line n times.
type repeatReader struct {
	line string
	n    int
	off  int // into line
}

func (r *repeatReader) Read(p []byte) (int, error) {
	read := 0
	for read < len(p) && r.n > 0 {
		c := copy(p[read:], r.line[r.off:])
		read += c
		if r.off += c; r.off == len(r.line) {
			r.off, r.n = 0, r.n-1
		}
	}
	if read == 0 {
		return 0, io.EOF
	}
	return read, nil
}

// importCSV imports body and returns the count the API answered.
func (e *supEnv) importCSV(t *testing.T, query, body string) int {
	t.Helper()
	var got struct {
		Imported int    `json:"imported"`
		Actor    string `json:"actor"`
	}
	decode(t, "import", e.call(t, http.MethodPost, "/v1/suppressions:import"+query, adminToken, strings.NewReader(body)), http.StatusOK, &got)
	if got.Actor != adminActor {
		t.Errorf("import actor = %q, want %q", got.Actor, adminActor)
	}
	return got.Imported
}

func TestSuppressionImport(t *testing.T) {
	e := startSup(t, nil, nil)
	since := time.Now().UTC().Add(-72 * time.Hour).Truncate(time.Second)
	until := time.Now().UTC().Add(72 * time.Hour).Truncate(time.Second)
	// A spreadsheet's BOM, odd header case and spaces, the export's
	// ignored columns, quoting.
	body := "\xef\xbb\xbfAddress, Note ,stream,CLASS,reason,since,until,source,rule,actor\n" +
		"One@Example.com,first,,hard,userunknown,,,policy,hard,someone\n" +
		"two@example.com,,news,,,,\"" + until.Format(time.RFC3339) + "\",,,\n" +
		"one@example.com,second,,,,,,,,\n" + // the same key again: the later line wins
		"three@example.com,\"a, \"\"quoted\"\" note\",,,,,,,,\n" +
		"four@example.com,old,,hard,userunknown," + since.Format(time.RFC3339) + ",,,,\n"
	if n := e.importCSV(t, "?note="+url.QueryEscape("from the old ESP"), body); n != 5 {
		t.Errorf("imported %d, want 5", n)
	}
	var l wireList
	decode(t, "list", e.call(t, http.MethodGet, "/v1/suppressions?all_streams=true", readToken, nil), http.StatusOK, &l)
	type row struct {
		address, stream, source, class, reason, note, actor string
		since, until                                        string
	}
	var got []row
	for _, s := range l.Suppressions {
		u := ""
		if s.Until != nil {
			u = s.Until.Format(time.RFC3339)
		}
		got = append(got, row{s.Address, s.Stream, s.Source, s.Class, s.Reason, s.Note, s.Actor, s.Since.Format(time.RFC3339), u})
	}
	if len(got) != 4 {
		t.Fatalf("after the import: %+v", l.Suppressions)
	}
	for _, g := range got {
		if g.source != store.SourceImport || g.actor != adminActor {
			t.Errorf("%s: source %q actor %q, want import by %q", g.address, g.source, g.actor, adminActor)
		}
	}
	if g := got[0]; g.address != "four@example.com" || g.class != "hard" || g.reason != "userunknown" || g.since != since.Format(time.RFC3339) || g.until != "" {
		t.Errorf("four@example.com = %+v, want since %v", g, since)
	}
	if g := got[1]; g.address != "one@example.com" || g.note != "second" || g.class != "" {
		t.Errorf("one@example.com = %+v, want the later line's", g)
	}
	if g := got[2]; g.address != "three@example.com" || g.note != `a, "quoted" note` {
		t.Errorf("three@example.com = %+v", g)
	}
	if g := got[3]; g.address != "two@example.com" || g.stream != "news" || g.note != "from the old ESP" || g.until != until.Format(time.RFC3339) {
		t.Errorf("two@example.com = %+v", g)
	}
}

// putRows stores rows straight into the store, as the policy would.
func (e *supEnv) putRows(t *testing.T, rows []store.Suppression) {
	t.Helper()
	for len(rows) > 0 {
		n := min(len(rows), 1000)
		if err := e.st.PutSuppressions(context.Background(), rows[:n]); err != nil {
			t.Fatal(err)
		}
		rows = rows[n:]
	}
}

// manyRows returns n suppressions in force across three streams, and one
// that has ended, in key order.
func manyRows(n int) (inForce []store.Suppression, ended store.Suppression) {
	now := time.Now().UTC().Truncate(time.Second)
	streams := []string{"", "news", "receipts"}
	for i := range n {
		s := store.Suppression{
			Address: fmt.Sprintf("user%05d@example.com", i/2), Stream: streams[i%3], Source: store.SourcePolicy,
			Class: event.ClassHard, Reason: event.ReasonUserUnknown, Rule: "hard",
			Since: now.Add(-time.Duration(i) * time.Minute), Actor: "policy",
			Note: fmt.Sprintf(`550 5.1.1 "user%d" unknown, sorry – ü`, i),
		}
		if i%2 == 1 {
			s.Stream = streams[(i+1)%3] // two rows of one address: distinct streams
		}
		if i%7 == 0 {
			s.Source, s.Class, s.Reason, s.Rule, s.Actor = store.SourceManual, "", "", "", "token:0badf00d"
			s.Until = now.Add(time.Duration(i+1) * time.Hour)
		}
		inForce = append(inForce, s)
	}
	slices.SortFunc(inForce, func(a, b store.Suppression) int {
		return cmp.Or(strings.Compare(a.Address, b.Address), strings.Compare(a.Stream, b.Stream))
	})
	ended = store.Suppression{
		Address: "gone@example.com", Source: store.SourceManual, Since: now.Add(-48 * time.Hour),
		Until: now.Add(-time.Hour), Actor: "token:0badf00d", Note: "over",
	}
	return inForce, ended
}

func csvRecord(s store.Suppression) []string {
	until := ""
	if !s.Until.IsZero() {
		until = s.Until.UTC().Format(time.RFC3339)
	}
	return []string{s.Address, s.Stream, s.Source, string(s.Class), string(s.Reason), s.Rule,
		s.Since.UTC().Format(time.RFC3339), until, s.Actor, s.Note}
}

func wireRecord(s wire) []string {
	until := ""
	if s.Until != nil {
		until = s.Until.Format(time.RFC3339)
	}
	return []string{s.Address, s.Stream, s.Source, s.Class, s.Reason, s.Rule, s.Since.Format(time.RFC3339), until, s.Actor, s.Note}
}

// filter keeps the rows a listing of stream (or all streams) shows.
func filter(rows []store.Suppression, keep func(store.Suppression) bool) [][]string {
	out := [][]string{}
	for _, s := range rows {
		if keep(s) {
			out = append(out, csvRecord(s))
		}
	}
	return out
}

// TestSuppressionExport lists thousands of rows, whole and by pages, as
// JSON and CSV, on SQLite and on a throwaway ClickHouse server.
func TestSuppressionExport(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testExport(t, startSup(t, nil, nil), 3001) })
	t.Run("clickhouse", func(t *testing.T) { testExport(t, startSup(t, openClickHouse(t), nil), 1201) })
}

func testExport(t *testing.T, e *supEnv, n int) {
	rows, ended := manyRows(n)
	e.putRows(t, append(rows, ended))
	all := filter(rows, func(store.Suppression) bool { return true })

	// CSV, everything: parse it back.
	r := e.call(t, http.MethodGet, "/v1/suppressions?all_streams=true&format=csv", readToken, nil)
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "text/csv; charset=utf-8" ||
		r.header.Get("Content-Disposition") != `attachment; filename="suppressions.csv"` || r.header.Get("X-Next-Cursor") != "" {
		t.Fatalf("CSV export: %d %v", r.status, r.header)
	}
	recs, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil {
		t.Fatalf("CSV export does not parse: %v", err)
	}
	wantHeader := []string{"address", "stream", "source", "class", "reason", "rule", "since", "until", "actor", "note"}
	if !reflect.DeepEqual(recs[0], wantHeader) {
		t.Errorf("CSV header = %v, want %v", recs[0], wantHeader)
	}
	if !reflect.DeepEqual(recs[1:], all) {
		t.Errorf("CSV export: %d rows, want %d; first %v, want %v", len(recs)-1, len(all), recs[1:min(2, len(recs))], all[0])
	}

	// JSON, everything, and by filter.
	list := func(query string) ([][]string, string) {
		t.Helper()
		var l wireList
		decode(t, query, e.call(t, http.MethodGet, "/v1/suppressions"+query, readToken, nil), http.StatusOK, &l)
		if l.Suppressions == nil {
			t.Errorf("%s: suppressions is null", query)
		}
		out := [][]string{}
		for _, s := range l.Suppressions {
			out = append(out, wireRecord(s))
		}
		return out, l.NextCursor
	}
	sinceCut := time.Now().UTC().Add(-100 * time.Minute).Truncate(time.Second)
	for _, tt := range []struct {
		query string
		want  [][]string
	}{
		{"?all_streams=true", all},
		{"?all_streams=1&format=json", all},
		{"", filter(rows, func(s store.Suppression) bool { return s.Stream == "" })},
		{"?stream=news", filter(rows, func(s store.Suppression) bool { return s.Stream == "" || s.Stream == "news" })},
		{"?stream=no-such-stream", filter(rows, func(s store.Suppression) bool { return s.Stream == "" })},
		{"?all_streams=true&since=" + url.QueryEscape(sinceCut.Format(time.RFC3339)), filter(rows, func(s store.Suppression) bool { return !s.Since.Before(sinceCut) })},
		{fmt.Sprintf("?all_streams=true&limit=%d", n), all},
	} {
		got, cursor := list(tt.query)
		if !reflect.DeepEqual(got, tt.want) || cursor != "" {
			t.Errorf("GET /v1/suppressions%s: %d rows, cursor %q; want %d, no cursor", tt.query, len(got), cursor, len(tt.want))
		}
	}

	// Pages: JSON by next_cursor, CSV by X-Next-Cursor, put together.
	for _, limit := range []int{1000, 999, n} {
		var got [][]string
		cursor, pages := "", 0
		for {
			q := fmt.Sprintf("?all_streams=true&limit=%d", limit)
			if cursor != "" {
				q += "&cursor=" + cursor
			}
			page, next := list(q)
			if len(page) > limit {
				t.Fatalf("limit %d: a page of %d", limit, len(page))
			}
			got, cursor = append(got, page...), next
			if pages++; cursor == "" || pages > 10 {
				break
			}
		}
		if wantPages := (len(all) + limit - 1) / limit; pages != wantPages || !reflect.DeepEqual(got, all) {
			t.Errorf("JSON pages of %d: %d pages, %d rows; want %d pages, %d rows", limit, pages, len(got), wantPages, len(all))
		}
	}
	var got [][]string
	for cursor, pages := "", 0; ; pages++ {
		q := fmt.Sprintf("?all_streams=true&format=csv&limit=%d", n/2)
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		r := e.call(t, http.MethodGet, "/v1/suppressions"+q, readToken, nil)
		recs, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
		if r.status != http.StatusOK || err != nil || len(recs) == 0 || !reflect.DeepEqual(recs[0], wantHeader) {
			t.Fatalf("CSV page %s: %d %v %s", q, r.status, err, r.body)
		}
		got = append(got, recs[1:]...)
		if cursor = r.header.Get("X-Next-Cursor"); cursor == "" || pages > 10 {
			break
		}
	}
	if !reflect.DeepEqual(got, all) {
		t.Errorf("CSV pages: %d rows, want %d", len(got), len(all))
	}

	// HEAD answers the headers only.
	if r := e.call(t, http.MethodHead, "/v1/suppressions?format=csv", readToken, nil); r.status != http.StatusOK || len(r.body) != 0 {
		t.Errorf("HEAD: %d, %d bytes", r.status, len(r.body))
	}
}

// TestSuppressionExportImport moves every suppression from one server to
// another through the CSV export and import.
func TestSuppressionExportImport(t *testing.T) {
	from, to := startSup(t, nil, nil), startSup(t, nil, nil)
	rows, _ := manyRows(2500)
	from.putRows(t, rows)
	r := from.call(t, http.MethodGet, "/v1/suppressions?all_streams=true&format=csv", readToken, nil)
	if r.status != http.StatusOK {
		t.Fatalf("export: %d %s", r.status, r.body)
	}
	if n := to.importCSV(t, "", string(r.body)); n != len(rows) {
		t.Errorf("imported %d rows, want %d", n, len(rows))
	}
	// The same suppressions, now from import by the importer.
	want := filter(rows, func(store.Suppression) bool { return true })
	for _, rec := range want {
		rec[2], rec[8] = store.SourceImport, adminActor
		rec[5] = "" // an import has no policy rule
	}
	r = to.call(t, http.MethodGet, "/v1/suppressions?all_streams=true&format=csv", readToken, nil)
	recs, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(recs[1:], want) {
		t.Errorf("after the round trip: %d rows, want %d; first %v, want %v", len(recs)-1, len(want), recs[1:min(2, len(recs))], want[0])
	}
}

func TestSuppressionStats(t *testing.T) {
	e := startSup(t, nil, nil)
	type stats struct {
		Total    int64            `json:"total"`
		BySource map[string]int64 `json:"by_source"`
		ByClass  map[string]int64 `json:"by_class"`
		ByStream map[string]int64 `json:"by_stream"`
	}
	var got stats
	decode(t, "empty stats", e.call(t, http.MethodGet, "/v1/suppressions:stats", readToken, nil), http.StatusOK, &got)
	zeroClasses := map[string]int64{"": 0}
	for _, c := range event.Classes {
		zeroClasses[string(c)] = 0
	}
	if got.Total != 0 || !reflect.DeepEqual(got.BySource, map[string]int64{"policy": 0, "manual": 0, "import": 0}) ||
		!reflect.DeepEqual(got.ByClass, zeroClasses) || len(got.ByStream) != 0 {
		t.Errorf("empty stats = %+v", got)
	}
	rows, ended := manyRows(30)
	e.putRows(t, append(rows, ended))
	decode(t, "stats", e.call(t, http.MethodGet, "/v1/suppressions:stats", readToken, nil), http.StatusOK, &got)
	want := stats{BySource: map[string]int64{"policy": 0, "manual": 0, "import": 0}, ByClass: zeroClasses, ByStream: map[string]int64{}}
	for _, s := range rows {
		want.Total++
		want.BySource[s.Source]++
		want.ByClass[string(s.Class)]++
		want.ByStream[s.Stream]++
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
}

// TestSuppressionExportFormulaNotes: notes a spreadsheet would run as
// formulas leave the export as text and come back from its import as
// they were; addresses leave as they are.
func TestSuppressionExportFormulaNotes(t *testing.T) {
	from, to := startSup(t, nil, nil), startSup(t, nil, nil)
	since := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	notes := map[string]string{
		"a@example.com":  `=HYPERLINK("http://x.example/","click")`,
		"b@example.com":  "'=already quoted",
		"-c@example.com": "-5 days",
		"=d@example.com": "@SUM(A1)",
		"e@example.com":  "plain",
	}
	cells := map[string]string{ // what the export's note cells hold
		"a@example.com":  `'=HYPERLINK("http://x.example/","click")`,
		"b@example.com":  "''=already quoted",
		"-c@example.com": "'-5 days",
		"=d@example.com": "'@SUM(A1)",
		"e@example.com":  "plain",
	}
	var rows []store.Suppression
	for addr, note := range notes {
		rows = append(rows, store.Suppression{Address: addr, Source: store.SourceManual, Since: since, Actor: "=ops", Note: note})
	}
	from.putRows(t, rows)
	r := from.call(t, http.MethodGet, "/v1/suppressions?format=csv", readToken, nil)
	recs, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("export: %d, %v", r.status, err)
	}
	for _, rec := range recs[1:] {
		addr, actor, note := rec[0], rec[8], rec[9]
		want, ok := cells[addr]
		if !ok {
			t.Errorf("exported address %q: not one put (addresses must leave as they are)", addr)
			continue
		}
		if note != want {
			t.Errorf("%s: note cell %q, want %q", addr, note, want)
		}
		if actor != "'=ops" {
			t.Errorf("%s: actor cell %q, want '=ops", addr, actor)
		}
	}
	if n := to.importCSV(t, "", string(r.body)); n != len(notes) {
		t.Fatalf("imported %d rows, want %d", n, len(notes))
	}
	for addr, note := range notes {
		got, err := to.st.AddressSuppressions(context.Background(), addr, time.Now())
		if err != nil || len(got) != 1 || got[0].Note != note {
			t.Errorf("%s after the round trip: %+v, %v; want the note %q", addr, got, err, note)
		}
	}
}
