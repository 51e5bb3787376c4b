package api_test

import (
	"context"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer-mail/bouncer/api"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/sqlite"
)

// Tokens of the web tests that configure some.
const (
	webReadToken  = "web-read-token-0123456789"
	webAdminToken = "web-admin-token-9876543210"
)

// webEnv is the API handler, pages included, over real HTTP on a fresh
// SQLite store.
type webEnv struct {
	store *sqlite.Store
	srv   *httptest.Server
}

// startWeb serves the handler with the given tokens (none: loopback mode).
func startWeb(t *testing.T, read, admin []string) *webEnv {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "bouncer.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h, err := api.New(api.Config{
		Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Gatherer: prometheus.NewRegistry(),
		ReadTokens: read, AdminTokens: admin,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &webEnv{store: st, srv: srv}
}

// webNow is whole seconds, as every engine keeps times.
var webNow = time.Now().UTC().Truncate(time.Second)

// webSeed is what seedWeb wrote, for the tests to expect.
type webSeed struct {
	reportsInWindow int64
	classInWindow   map[event.Class]int64
	inForce         int
	bulk            []string // addresses of the bulk suppressions, in key order
}

// seedWeb writes events, outcomes and suppressions through the store's public
// methods: alice has a hard bounce and its outcome, is suppressed
// on "news" by the policy and globally by hand; bob, carol, dave and erin
// have a soft bounce, a greylisting, a complaint and a delivery; an older
// hard bounce lies outside the 24-hour window; 55 imported suppressions
// on "promo" make the list longer than a page; one suppression has ended.
func seedWeb(t *testing.T, st *sqlite.Store) webSeed {
	t.Helper()
	ctx := context.Background()
	type ev struct {
		rcpt       string
		class      event.Class
		reason     event.Reason
		provider   string
		status     string
		code       int
		diagnostic string
		age        time.Duration
	}
	evs := []ev{
		{"alice@example.com", event.ClassHard, event.ReasonUserUnknown, "gmail", "5.1.1", 550,
			"smtp; 550-5.1.1 The email account that you tried to reach does not exist", 2 * time.Hour},
		{"bob@example.net", event.ClassSoft, event.ReasonMailboxFull, "outlook", "4.2.2", 452,
			"smtp; 452 4.2.2 Mailbox full, try again later", 3 * time.Hour},
		{"carol@example.org", event.ClassGreylist, event.ReasonGreylisting, "yahoo", "4.7.1", 451,
			"smtp; 451 4.7.1 Greylisting in action, please come back later", 4 * time.Hour},
		{"dave@example.com", event.ClassComplaint, event.ReasonFeedback, "yahoo", "", 0, "", 5 * time.Hour},
		{"erin@example.com", event.ClassDelivered, event.ReasonDelivered, "gmail", "2.0.0", 250, "smtp; 250 2.0.0 OK", 6 * time.Hour},
		{"alice@example.com", event.ClassHard, event.ReasonUserUnknown, "gmail", "5.1.1", 550,
			"smtp; 550 5.1.1 an old bounce outside the window", 48 * time.Hour},
	}
	s := webSeed{classInWindow: map[event.Class]int64{}}
	var reports []store.Report
	var events []store.Event
	for i, e := range evs {
		id := fmt.Sprintf("web-report-%d", i)
		at := webNow.Add(-e.age)
		reports = append(reports, store.Report{Envelope: event.Envelope{ID: id, Received: at}, Raw: []byte("raw " + id)})
		events = append(events, store.Event{
			ID: store.EventID(id, 0), ReportID: id, Version: 1, Time: at, Source: "ndr",
			Event: event.Event{
				Recipient: e.rcpt, Class: e.class, Reason: e.reason, Scope: e.reason.DefaultScope(), Status: e.status,
				ReplyCode: e.code, Action: "failed", Diagnostic: e.diagnostic, RemoteMTA: "mx." + e.provider + ".example",
				Provider: e.provider, Parser: "rfc3464", MessageID: "<" + id + "@example.com>",
			},
		})
		if e.age < 24*time.Hour {
			s.reportsInWindow++
			s.classInWindow[e.class]++
		}
	}
	if err := st.Write(ctx, reports, events); err != nil {
		t.Fatal(err)
	}
	last := webNow.Add(-2 * time.Hour)
	err := st.WriteOutcomes(ctx, []store.Outcome{{
		Key: "news/<web-report-0@example.com>", Stream: "news", MessageID: "<web-report-0@example.com>", Recipient: "alice@example.com",
		State: "bounced", Class: event.ClassHard, Reason: event.ReasonUserUnknown, Scope: event.ScopeRecipient, Provider: "gmail",
		Final: true, First: last.Add(-time.Minute), Last: last, Observations: 2, Version: store.OutcomeVersion(2, last),
	}})
	if err != nil {
		t.Fatal(err)
	}

	rows := []store.Suppression{
		{Address: "alice@example.com", Stream: "news", Source: store.SourcePolicy, Class: event.ClassHard,
			Reason: event.ReasonUserUnknown, Rule: "hard", Since: webNow.Add(-2 * time.Hour), Actor: "policy", Note: "hard bounce"},
		{Address: "alice@example.com", Source: store.SourceManual, Since: webNow.Add(-time.Hour), Actor: "token:1234abcd",
			Note: "asked us to stop"},
		{Address: "bob@example.net", Stream: "news", Source: store.SourcePolicy, Class: event.ClassSoft,
			Reason: event.ReasonMailboxFull, Rule: "soft", Since: webNow.Add(-3 * time.Hour), Until: webNow.Add(30 * 24 * time.Hour), Actor: "policy"},
		{Address: "ended@example.com", Stream: "news", Source: store.SourceManual, Since: webNow.Add(-48 * time.Hour),
			Until: webNow.Add(-24 * time.Hour), Actor: "token:1234abcd", Note: "over"},
	}
	for i := range 55 {
		a := fmt.Sprintf("bulk-%02d@example.org", i)
		s.bulk = append(s.bulk, a)
		rows = append(rows, store.Suppression{Address: a, Stream: "promo", Source: store.SourceImport,
			Class: event.ClassHard, Reason: event.ReasonHostUnknown, Since: webNow.Add(-time.Duration(i+1) * time.Minute), Actor: "import"})
	}
	if err := st.PutSuppressions(ctx, rows); err != nil {
		t.Fatal(err)
	}
	s.inForce = len(rows) - 1 // all but the ended one
	return s
}

// webClient is a browser-like client: cookies, no redirects followed.
func webClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

// webFetch sends a request with headers and returns the status, the body and
// the response.
func webFetch(t *testing.T, c *http.Client, method, u string, form url.Values, header map[string]string) (int, string, *http.Response) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// formToken reads the form token from a page.
func formToken(t *testing.T, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no form token in the page:\n%s", page)
	}
	return html.UnescapeString(m[1])
}

func TestWebEscapesHostileText(t *testing.T) {
	e := startWeb(t, nil, nil)
	ctx := context.Background()
	const hostile = `<script>alert("diag")</script><img src=x onerror=alert(1)>`
	addr := `x"><script>alert(1)</script>@example.com`
	at := webNow.Add(-time.Hour)
	err := e.store.Write(ctx, []store.Report{{Envelope: event.Envelope{ID: "hostile", Received: at}, Raw: []byte("raw")}},
		[]store.Event{{
			ID: store.EventID("hostile", 0), ReportID: "hostile", Version: 1, Time: at, Source: "ndr",
			Event: event.Event{Recipient: "victim@example.com", Class: event.ClassHard, Reason: event.ReasonUserUnknown,
				Scope: event.ScopeRecipient, Status: "5.1.1", ReplyCode: 550, Diagnostic: hostile, Provider: "<b>gmail</b>",
				RemoteMTA: "<script>mta</script>"},
		}, {
			ID: store.EventID("hostile", 1), ReportID: "hostile", Index: 1, Version: 1, Time: at, Source: "ndr",
			Event: event.Event{Recipient: addr, Class: event.ClassHard, Reason: event.ReasonUserUnknown, Diagnostic: "odd address"},
		}})
	if err != nil {
		t.Fatal(err)
	}
	err = e.store.PutSuppressions(ctx, []store.Suppression{{Address: "victim@example.com", Stream: `<script>s</script>`,
		Source: store.SourceManual, Since: at, Actor: `<i>actor</i>`, Note: hostile}})
	if err != nil {
		t.Fatal(err)
	}
	c := webClient(t)
	for _, u := range []string{
		"/ui/address?address=victim@example.com",
		"/ui/address?address=" + url.QueryEscape(addr),
		"/ui/suppressions",
		"/ui/address?address=" + url.QueryEscape("<script>alert(1)</script>"), // an error page that quotes the input
	} {
		status, body, resp := webFetch(t, c, "GET", e.srv.URL+u, nil, nil)
		if status != http.StatusOK && status != http.StatusBadRequest {
			t.Errorf("GET %s: %d\n%s", u, status, body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("GET %s: Content-Type %q", u, ct)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", u, csp)
		}
		for _, bad := range []string{"<script", "<img", "<b>", "<i>"} {
			if strings.Contains(body, bad) {
				t.Errorf("GET %s: the page holds %q unescaped:\n%s", u, bad, body)
			}
		}
	}
	_, body, _ := webFetch(t, c, "GET", e.srv.URL+"/ui/address?address=victim@example.com", nil, nil)
	for _, want := range []string{
		`&lt;script&gt;alert(&#34;diag&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;`, // the diagnostic and the note
		`&lt;i&gt;actor&lt;/i&gt;`,
		`value="&lt;script&gt;s&lt;/script&gt;"`, // the stream in the removal form
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the address page lacks the escaped %s:\n%s", want, body)
		}
	}
}

// TestWebRemove removes in loopback mode, and checks that a removal needs
// the same origin, the form token and a reason.
func TestWebRemove(t *testing.T) {
	e := startWeb(t, nil, nil)
	seedWeb(t, e.store)
	c := webClient(t)
	status, page, _ := webFetch(t, c, "GET", e.srv.URL+"/ui/address?address=alice@example.com", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("GET the address page: %d\n%s", status, page)
	}
	tok := formToken(t, page)
	removal := func(csrf, reason string) url.Values {
		return url.Values{"csrf": {csrf}, "address": {"alice@example.com"}, "stream": {"news"}, "lookup": {"alice@example.com"}, "reason": {reason}}
	}
	same := map[string]string{"Origin": e.srv.URL}
	refused := []struct {
		name   string
		form   url.Values
		header map[string]string
		want   int
	}{
		{"another site's origin", removal(tok, "r"), map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"another site by Sec-Fetch-Site", removal(tok, "r"), map[string]string{"Origin": e.srv.URL, "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"another site's referer", removal(tok, "r"), map[string]string{"Referer": "http://evil.example/form"}, http.StatusForbidden},
		{"origin null", removal(tok, "r"), map[string]string{"Origin": "null"}, http.StatusForbidden},
		{"no origin, no referer", removal(tok, "r"), nil, http.StatusForbidden},
		{"no form token", removal("", "r"), same, http.StatusForbidden},
		{"a wrong form token", removal(tok+"x", "r"), same, http.StatusForbidden},
		{"no reason", removal(tok, "  "), same, http.StatusBadRequest},
	}
	for _, tt := range refused {
		status, body, _ := webFetch(t, c, "POST", e.srv.URL+"/ui/remove", tt.form, tt.header)
		if status != tt.want {
			t.Errorf("%s: POST /ui/remove = %d, want %d\n%s", tt.name, status, tt.want, body)
		}
	}
	rows, err := e.store.AddressSuppressions(context.Background(), "alice@example.com", time.Now())
	if err != nil || len(rows) != 2 {
		t.Fatalf("after the refused removals: %v, %v; want both suppressions still in force", rows, err)
	}

	// From the page itself, with a Referer only (as a browser that sends
	// no Origin would): removed, and back to the address.
	status, body, resp := webFetch(t, c, "POST", e.srv.URL+"/ui/remove", removal(tok, "confirmed the address works"),
		map[string]string{"Referer": e.srv.URL + "/ui/address?address=alice@example.com"})
	if status != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/address?address=alice%40example.com&removed=news" {
		t.Fatalf("POST /ui/remove = %d, Location %q\n%s", status, resp.Header.Get("Location"), body)
	}
	rows, err = e.store.AddressSuppressions(context.Background(), "alice@example.com", time.Now())
	if err != nil || len(rows) != 1 || rows[0].Stream != "" {
		t.Fatalf("after the removal: %v, %v; want the global one only", rows, err)
	}
	hist, err := e.store.SuppressionHistory(context.Background(), "alice@example.com", 1)
	if err != nil || len(hist) != 1 || hist[0].Action != store.ActionRemove || hist[0].Note != "confirmed the address works" ||
		hist[0].Actor != "loopback" || hist[0].Source != store.SourceManual {
		t.Fatalf("the latest change = %+v, %v", hist, err)
	}
	// Twice: nothing in force any more.
	status, body, _ = webFetch(t, c, "POST", e.srv.URL+"/ui/remove", removal(tok, "again"), same)
	if status != http.StatusNotFound {
		t.Errorf("removing again = %d, want 404\n%s", status, body)
	}
}

// TestWebTokens: with tokens configured, the login cookie stands in for
// the bearer header, and only an admin's removes.
func TestWebTokens(t *testing.T) {
	e := startWeb(t, []string{webReadToken}, []string{webAdminToken})
	seedWeb(t, e.store)

	anon := webClient(t)
	status, _, resp := webFetch(t, anon, "GET", e.srv.URL+"/ui/address?address=alice@example.com", nil, nil)
	if status != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login?next=%2Fui%2Faddress%3Faddress%3Dalice%40example.com" {
		t.Fatalf("GET without a token = %d, Location %q; want the login form", status, resp.Header.Get("Location"))
	}
	status, page, _ := webFetch(t, anon, "GET", e.srv.URL+"/ui/login", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("GET /ui/login = %d", status)
	}
	tok := formToken(t, page)
	same := map[string]string{"Origin": e.srv.URL}

	login := func(c *http.Client, token, next string, header map[string]string) (int, *http.Response) {
		t.Helper()
		status, _, resp := webFetch(t, c, "POST", e.srv.URL+"/ui/login", url.Values{"csrf": {tok}, "token": {token}, "next": {next}}, header)
		return status, resp
	}
	if status, _ := login(anon, "not-a-token", "/", same); status != http.StatusForbidden {
		t.Errorf("login with a wrong token = %d, want 403", status)
	}
	if status, _ := login(anon, webAdminToken, "/", map[string]string{"Origin": "http://evil.example"}); status != http.StatusForbidden {
		t.Errorf("login from another site = %d, want 403", status)
	}
	if status, resp := login(anon, webReadToken, "//evil.example/", same); status != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Errorf("login with next=//evil.example/ = %d, Location %q; want / only", status, resp.Header.Get("Location"))
	}

	reader := webClient(t)
	status, resp = login(reader, webReadToken, "/ui/address?address=alice@example.com", same)
	if status != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/address?address=alice@example.com" {
		t.Fatalf("login = %d, Location %q", status, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "bouncer_token" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" || strings.Contains(cookie.Value, webReadToken) {
		t.Fatalf("login cookie = %+v; want HttpOnly, SameSite=Strict, Path=/, the token encoded", cookie)
	}
	status, page, _ = webFetch(t, reader, "GET", e.srv.URL+"/ui/address?address=alice@example.com", nil, nil)
	if status != http.StatusOK || !strings.Contains(page, "hard bounce") {
		t.Fatalf("GET the address page with the read cookie = %d\n%s", status, page)
	}
	if strings.Contains(page, `action="/ui/remove"`) {
		t.Errorf("a read token is shown the removal form")
	}
	// The cookie reads the API too, so the page's CSV export link works.
	status, csv, _ := webFetch(t, reader, "GET", e.srv.URL+"/v1/suppressions?format=csv&all_streams=true", nil, nil)
	if status != http.StatusOK || !strings.Contains(csv, "alice@example.com") {
		t.Errorf("GET the CSV export with the read cookie = %d\n%s", status, csv)
	}

	removal := url.Values{"csrf": {tok}, "address": {"alice@example.com"}, "stream": {"news"}, "reason": {"r"}}
	if status, body, _ := webFetch(t, reader, "POST", e.srv.URL+"/ui/remove", removal, same); status != http.StatusForbidden {
		t.Errorf("removal with a read token's cookie = %d, want 403\n%s", status, body)
	}
	if status, body, _ := webFetch(t, anon, "POST", e.srv.URL+"/ui/remove", removal,
		map[string]string{"Origin": e.srv.URL, "Authorization": "Bearer " + webReadToken}); status != http.StatusForbidden {
		t.Errorf("removal with a read bearer token = %d, want 403\n%s", status, body)
	}

	admin := webClient(t)
	if status, _ := login(admin, webAdminToken, "/", same); status != http.StatusSeeOther {
		t.Fatalf("admin login = %d", status)
	}
	// The admin's cookie does not go along with another site's form.
	if status, body, _ := webFetch(t, admin, "POST", e.srv.URL+"/ui/remove", removal, map[string]string{"Origin": "http://evil.example"}); status != http.StatusForbidden {
		t.Errorf("cross-site removal with the admin's cookie = %d, want 403\n%s", status, body)
	}
	// Nor does it work for the API's DELETE from another site.
	if status, body, _ := webFetch(t, admin, "DELETE", e.srv.URL+"/v1/suppressions/alice@example.com?stream=news", nil,
		map[string]string{"Origin": "http://evil.example"}); status != http.StatusUnauthorized {
		t.Errorf("cross-site DELETE with the admin's cookie = %d, want 401\n%s", status, body)
	}
	if rows, err := e.store.AddressSuppressions(context.Background(), "alice@example.com", time.Now()); err != nil || len(rows) != 2 {
		t.Fatalf("after the refused removals: %v, %v; want both suppressions in force", rows, err)
	}
	status, body, _ := webFetch(t, admin, "POST", e.srv.URL+"/ui/remove", removal, same)
	if status != http.StatusSeeOther {
		t.Fatalf("removal with the admin's cookie = %d\n%s", status, body)
	}
	hist, err := e.store.SuppressionHistory(context.Background(), "alice@example.com", 1)
	if err != nil || len(hist) != 1 || hist[0].Action != store.ActionRemove || !strings.HasPrefix(hist[0].Actor, "token:") {
		t.Errorf("the latest change = %+v, %v; want a removal by a token", hist, err)
	}

	// Log out: the cookie is cleared, the pages ask for a token again.
	if status, _, _ := webFetch(t, admin, "POST", e.srv.URL+"/ui/logout", url.Values{"csrf": {tok}}, same); status != http.StatusSeeOther {
		t.Errorf("logout = %d", status)
	}
	if status, _, _ := webFetch(t, admin, "GET", e.srv.URL+"/", nil, nil); status != http.StatusSeeOther {
		t.Errorf("GET / after logout = %d, want the login form", status)
	}
}

// TestWebLoopbackHost: with no token, the pages answer to loopback names
// only, so a DNS-rebound name cannot read them.
func TestWebLoopbackHost(t *testing.T) {
	e := startWeb(t, nil, nil)
	c := webClient(t)
	for host, want := range map[string]int{
		"":                        http.StatusOK, // the server's 127.0.0.1:port
		"localhost:8025":          http.StatusOK,
		"[::1]:8025":              http.StatusOK,
		"rebound.evil.example":    http.StatusForbidden,
		"rebound.evil.example:80": http.StatusForbidden,
	} {
		req, err := http.NewRequest("GET", e.srv.URL+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET / with Host %q = %d, want %d", host, resp.StatusCode, want)
		}
	}
}
