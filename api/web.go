package api

// The web page: what marketers and support staff use instead of curl
// (DESIGN.md "Who it serves"). Server-rendered html/template pages over the
// same store and the same guard as /v1/, so they work without JavaScript
// and the templates' contextual escaping keeps hostile addresses and
// diagnostic texts inert.
//
//	GET  /                     lookup form, 24-hour summary, suppressions in force
//	GET  /ui/address?address=  an address: suppressions, their audit trail, events, outcomes
//	GET  /ui/suppressions      the suppressions in force, paged (?stream=, ?after=&after_stream=)
//	POST /ui/remove            lift one suppression with a reason (admin)
//	GET  /ui/login             the token form (only when tokens are configured)
//	POST /ui/login, /ui/logout set or clear the token cookie
//	GET  /ui/static/style.css  the style sheet
//
// Access: viewing needs read access, removing admin access, exactly as on
// /v1/ (guard). A browser cannot easily send a bearer header, so with
// tokens configured the login form stores the token in an HttpOnly,
// SameSite=Strict cookie, which guard accepts in place of the header
// (sessionToken). Every POST is checked against cross-site forgery twice:
// its Origin (or Referer) must be this host, and it must carry the
// handler's per-process form token.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

//go:embed web
var webFiles embed.FS

// Page sizes and windows.
const (
	listPageSize     = 50  // suppressions per page of /ui/suppressions
	pageEventsLimit  = 100 // events shown on an address's page
	pageHistoryLimit = 50  // audit trail lines shown on an address's page
	summaryWindow    = 24 * time.Hour
)

// The login cookie. Its value is the token, base64url-encoded so any
// token survives the cookie syntax.
const (
	sessionCookie = "bouncer_token"
	sessionMaxAge = 12 * time.Hour
)

// maxFormBytes bounds a form body: a reason is at most
// store.MaxSuppressionField bytes, an address 320.
const maxFormBytes = 16 << 10

// web holds the page handlers' state: the API server they share the store
// and the tokens with, the parsed templates and the form token.
type web struct {
	s     *server
	pages map[string]*template.Template
	// csrf is the per-process form token every POST form carries. It is
	// not a secret from the people allowed to see the pages; it is one a
	// page on another site cannot read.
	csrf string
}

// webRoutes registers the pages on mux.
func (s *server) webRoutes(mux *http.ServeMux) {
	w := newWeb(s)
	page := func(pattern string, a access, h http.HandlerFunc) {
		mux.Handle(pattern, w.page(a, h))
	}
	page("GET /{$}", accessRead, w.home)
	page("GET /ui/address", accessRead, w.address)
	page("GET /ui/suppressions", accessRead, w.suppressions)
	page("POST /ui/remove", accessAdmin, w.remove)
	// Public: the way in, the way out and the style sheet.
	mux.HandleFunc("GET /ui/login", w.loginForm)
	mux.HandleFunc("POST /ui/login", w.login)
	mux.HandleFunc("POST /ui/logout", w.logout)
	mux.HandleFunc("GET /ui/static/style.css", w.style)
}

func newWeb(s *server) *web {
	funcs := template.FuncMap{
		"when":   formatTime,
		"stream": streamName,
	}
	pages := make(map[string]*template.Template)
	for _, name := range []string{"home", "address", "suppressions", "login", "error"} {
		pages[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(webFiles, "web/layout.html", "web/"+name+".html"))
	}
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand's documented contract)
	return &web{s: s, pages: pages, csrf: base64.RawURLEncoding.EncodeToString(b[:])}
}

// open reports whether no token is configured: then loopback clients
// may do everything, as on /v1/.
func (s *server) open() bool { return len(s.readTokens)+len(s.adminTokens) == 0 }

// page wraps a page handler: the security headers, the cross-site checks
// of a POST, a friendly way to the login form, then guard, which decides.
func (w *web) page(a access, h http.HandlerFunc) http.Handler {
	guarded := w.s.guard(a, h)
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		pageHeaders(rw.Header())
		if w.s.open() && !loopbackHost(r.Host) {
			// A loopback-only service reached by another name: a DNS
			// rebinding attack makes a browser do just that, so that
			// another site's scripts read the pages as same-origin.
			w.fail(rw, r, http.StatusForbidden, "With no API token configured, the pages answer only to localhost, 127.0.0.1 or [::1].")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !w.checkForm(rw, r) {
			return
		}
		if !w.s.open() {
			tok, ok := bearer(r)
			if !ok {
				tok, ok = sessionToken(r)
			}
			if !ok || !matchAny(tok, w.s.readTokens) && !matchAny(tok, w.s.adminTokens) {
				if r.Method == http.MethodGet || r.Method == http.MethodHead {
					clearSession(rw, r)
					http.Redirect(rw, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
					return
				}
				w.fail(rw, r, http.StatusUnauthorized, "Log in with an API token first.")
				return
			}
			if a != accessRead && !matchAny(tok, w.s.adminTokens) {
				w.fail(rw, r, http.StatusForbidden, "This needs an admin token; yours only reads.")
				return
			}
		}
		guarded.ServeHTTP(rw, r)
	})
}

// checkForm refuses a POST from another site: one whose Origin (or, when
// a browser sent none, Referer) is not this host, or whose form token is
// not this process's. It answers the refusal itself.
func (w *web) checkForm(rw http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(rw, r.Body, maxFormBytes)
	if !sameOrigin(r) {
		w.fail(rw, r, http.StatusForbidden, "Refused: the form was not sent from this site.")
		return false
	}
	if err := r.ParseForm(); err != nil {
		w.fail(rw, r, http.StatusBadRequest, "The form could not be read.")
		return false
	}
	if subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(w.csrf)) != 1 {
		w.fail(rw, r, http.StatusForbidden, "Refused: the form is stale or was not sent from this site. Reload the page and try again.")
		return false
	}
	return true
}

// sameOrigin reports whether a request comes from a page of this host: its
// Origin header, or its Referer when there is no Origin, names r.Host. The
// scheme is not compared, so a TLS-terminating proxy in front does not
// break the check; it must pass the Host header on. A request with
// neither header, or with Origin "null", is not same-origin, nor is one a
// browser marked Sec-Fetch-Site cross-site or same-site.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return false
	}
	src := r.Header.Get("Origin")
	if src == "" {
		src = r.Header.Get("Referer")
	}
	if src == "" || src == "null" {
		return false
	}
	u, err := url.Parse(src)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// sessionToken returns the token in the web login cookie, for guard. On
// methods other than GET and HEAD only a same-origin request may use the
// cookie, so no form or script on another site acts with it; SameSite=Strict
// tells browsers the same.
func sessionToken(r *http.Request) ([]byte, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !sameOrigin(r) {
		return nil, false
	}
	tok, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil || len(tok) == 0 {
		return nil, false
	}
	return tok, true
}

func setSession(rw http.ResponseWriter, r *http.Request, tok string) {
	http.SetCookie(rw, &http.Cookie{
		Name: sessionCookie, Value: base64.RawURLEncoding.EncodeToString([]byte(tok)), Path: "/",
		MaxAge: int(sessionMaxAge / time.Second), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}

func clearSession(rw http.ResponseWriter, r *http.Request) {
	if _, err := r.Cookie(sessionCookie); err != nil {
		return
	}
	http.SetCookie(rw, &http.Cookie{Name: sessionCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
}

// loopbackHost reports whether a Host header names this machine's
// loopback interface.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// pageHeaders: HTML that is never cached (it shows personal data), never
// framed (the removal button), runs no script at all, and sends a Referer
// (with addresses in it) only to itself.
func pageHeaders(h http.Header) {
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
}

// base is what every page's layout needs.
type base struct {
	CSRF    string
	Admin   bool // may remove suppressions: show the forms
	Session bool // logged in by the cookie: show Log out
	Open    bool // no tokens configured: loopback mode
}

func (w *web) base(r *http.Request) base {
	b := base{CSRF: w.csrf, Open: w.s.open()}
	if b.Open {
		b.Admin = true // guard served a loopback client
		return b
	}
	tok, ok := bearer(r)
	if !ok {
		tok, b.Session = sessionToken(r)
		ok = b.Session
	}
	b.Admin = ok && matchAny(tok, w.s.adminTokens)
	return b
}

// render executes a page into a buffer first, so a template failure is
// still a clean 500.
func (w *web) render(rw http.ResponseWriter, r *http.Request, status int, name string, data any) {
	var buf bytes.Buffer
	if err := w.pages[name].ExecuteTemplate(&buf, "layout", data); err != nil {
		w.s.log.ErrorContext(r.Context(), "api: rendering page", "page", name, "err", err)
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString("<!doctype html><title>bouncer</title><p>Internal error.</p>\n")
	}
	pageHeaders(rw.Header())
	rw.WriteHeader(status)
	if r.Method != http.MethodHead {
		rw.Write(buf.Bytes())
	}
}

type errorPage struct {
	base
	Status  int
	Message string
}

func (w *web) fail(rw http.ResponseWriter, r *http.Request, status int, msg string) {
	w.render(rw, r, status, "error", errorPage{base: base{CSRF: w.csrf, Open: w.s.open()}, Status: status, Message: msg})
}

// storeFail answers a failed store call as storeError does, in HTML.
func (w *web) storeFail(rw http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, store.ErrClosed):
		w.s.log.WarnContext(r.Context(), "api: store closed", "path", r.URL.Path)
		w.fail(rw, r, http.StatusServiceUnavailable, "The store is unavailable. Try again shortly.")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		w.s.log.DebugContext(r.Context(), "api: request canceled", "path", r.URL.Path)
	default:
		w.s.log.ErrorContext(r.Context(), "api: store", "path", r.URL.Path, "err", err)
		w.fail(rw, r, http.StatusInternalServerError, "Internal error. The log has the details.")
	}
}

// count is one row of a summary table.
type count struct {
	Name string
	N    int64
}

type homePage struct {
	base
	Since           time.Time
	ReportsReceived int64
	ByClass         []count // every class, zeros too
	Failures        int64   // hard + soft + greylist
	Suppressed      int64   // in force now
	SuppressedBy    []count // by source
	SuppressedClass []count
	SuppressedIn    []count // by stream, the global scope first
	// ProviderClasses head the columns of ByProvider, a row per provider
	// label with events in the window, most events first.
	ProviderClasses []string
	ByProvider      []providerRow
}

// providerRow is one provider's events by ProviderClasses, and its total
// over every class.
type providerRow struct {
	Name  string
	N     []int64
	Total int64
}

// summaryClasses are the columns of the home page's provider table.
var summaryClasses = []event.Class{event.ClassHard, event.ClassSoft, event.ClassGreylist, event.ClassComplaint, event.ClassDelivered}

func (w *web) home(rw http.ResponseWriter, r *http.Request) {
	now := time.Now().UTC()
	since := now.Add(-summaryWindow).Truncate(time.Second)
	st, err := w.s.store.Stats(r.Context(), since)
	if err != nil {
		w.storeFail(rw, r, err)
		return
	}
	p := homePage{base: w.base(r), Since: since, ReportsReceived: st.ReportsReceived}
	for _, c := range event.Classes {
		p.ByClass = append(p.ByClass, count{c.String(), st.EventsByClass[c]})
		if c.IsFailure() {
			p.Failures += st.EventsByClass[c]
		}
	}
	for _, c := range summaryClasses {
		p.ProviderClasses = append(p.ProviderClasses, c.String())
	}
	for name, byClass := range groupStats(st, statsByProvider) {
		row := providerRow{Name: name}
		for _, c := range summaryClasses {
			row.N = append(row.N, byClass[c.String()])
		}
		for _, n := range byClass {
			row.Total += n
		}
		p.ByProvider = append(p.ByProvider, row)
	}
	sort.Slice(p.ByProvider, func(i, j int) bool {
		if p.ByProvider[i].Total != p.ByProvider[j].Total {
			return p.ByProvider[i].Total > p.ByProvider[j].Total
		}
		return p.ByProvider[i].Name < p.ByProvider[j].Name
	})
	sup, err := w.s.store.SuppressionStats(r.Context(), now)
	if err != nil {
		w.storeFail(rw, r, err)
		return
	}
	p.Suppressed = sup.Total
	for _, src := range store.SuppressionSources {
		p.SuppressedBy = append(p.SuppressedBy, count{src, sup.BySource[src]})
	}
	for _, c := range event.Classes {
		if n := sup.ByClass[c]; n > 0 {
			p.SuppressedClass = append(p.SuppressedClass, count{c.String(), n})
		}
	}
	if n := sup.ByClass[""]; n > 0 {
		p.SuppressedClass = append(p.SuppressedClass, count{"", n})
	}
	for s, n := range sup.ByStream {
		p.SuppressedIn = append(p.SuppressedIn, count{s, n})
	}
	sort.Slice(p.SuppressedIn, func(i, j int) bool { return p.SuppressedIn[i].Name < p.SuppressedIn[j].Name })
	w.render(rw, r, http.StatusOK, "home", p)
}

type addressPage struct {
	base
	Query       string // as typed
	Address     string // as looked up: events and outcomes are keyed by it
	Error       string
	Removed     bool   // just removed: say so
	RemovedFrom string // the stream it was removed from
	// Suppressible: the address can be a suppression's key, Key (the
	// configured normalisation of Address).
	Suppressible bool
	Key          string
	Suppressions []store.Suppression
	History      []store.SuppressionChange
	Events       []store.Event
	Outcomes     []store.Outcome
}

func (w *web) address(rw http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := addressPage{base: w.base(r), Query: q.Get("address")}
	address, err := parseAddress(strings.TrimSpace(p.Query))
	if err != nil {
		p.Error = err.Error()
		w.render(rw, r, http.StatusBadRequest, "address", p)
		return
	}
	p.Address = address
	p.Removed, p.RemovedFrom = q.Has("removed"), q.Get("removed")

	ctx, now := r.Context(), time.Now().UTC()
	// An address that cannot be a suppression key (a comma, say) may
	// still have events: show those.
	if key, err := w.s.suppressionAddress(address); err == nil {
		p.Suppressible, p.Key = true, key
		if p.Suppressions, err = w.s.store.AddressSuppressions(ctx, key, now); err != nil {
			w.storeFail(rw, r, err)
			return
		}
		if p.History, err = w.s.store.SuppressionHistory(ctx, key, pageHistoryLimit); err != nil {
			w.storeFail(rw, r, err)
			return
		}
	}
	if p.Events, err = w.s.store.RecipientEvents(ctx, address, pageEventsLimit); err != nil {
		w.storeFail(rw, r, err)
		return
	}
	if p.Outcomes, err = w.s.store.RecipientOutcomes(ctx, address); err != nil {
		w.storeFail(rw, r, err)
		return
	}
	w.render(rw, r, http.StatusOK, "address", p)
}

type suppressionsPage struct {
	base
	Stream string // the filter, "" for every stream
	Rows   []store.Suppression
	First  bool   // the first page
	Next   string // the next page's URL, "" on the last
	Export string // the API's CSV export of the same selection
}

func (w *web) suppressions(rw http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := suppressionsPage{base: w.base(r), Stream: strings.TrimSpace(q.Get("stream"))}
	if err := checkStream(p.Stream); err != nil {
		w.fail(rw, r, http.StatusBadRequest, "Stream: "+err.Error()+".")
		return
	}
	after := store.SuppressionKey{Address: q.Get("after"), Stream: q.Get("after_stream")}
	p.First = after.IsZero()
	rows, err := w.s.store.Suppressions(r.Context(), store.SuppressionQuery{
		Stream: p.Stream, AllStreams: p.Stream == "", Now: time.Now().UTC(), After: after, Limit: listPageSize + 1,
	})
	if err != nil {
		w.storeFail(rw, r, err)
		return
	}
	if len(rows) > listPageSize {
		rows = rows[:listPageSize]
		last := rows[len(rows)-1]
		next := url.Values{"after": {last.Address}, "after_stream": {last.Stream}}
		if p.Stream != "" {
			next.Set("stream", p.Stream)
		}
		p.Next = "/ui/suppressions?" + next.Encode()
	}
	p.Rows = rows
	// The API lists the global scope alone without a stream; every
	// stream takes all_streams.
	export := url.Values{"format": {"csv"}, "all_streams": {"true"}}
	if p.Stream != "" {
		export = url.Values{"format": {"csv"}, "stream": {p.Stream}}
	}
	p.Export = "/v1/suppressions?" + export.Encode()
	w.render(rw, r, http.StatusOK, "suppressions", p)
}

// remove lifts one suppression (page and guard checked admin access,
// origin and form token) and sends the browser back to the address,
// whose page then shows it gone and the removal in the trail.
func (w *web) remove(rw http.ResponseWriter, r *http.Request) {
	address, err := w.s.suppressionAddress(r.PostForm.Get("address"))
	if err != nil {
		w.fail(rw, r, http.StatusBadRequest, "Address: "+err.Error()+".")
		return
	}
	stream := r.PostForm.Get("stream")
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	if reason == "" {
		w.fail(rw, r, http.StatusBadRequest, "Say why the suppression is removed: the reason is kept in its history.")
		return
	}
	if err := checkText("reason", reason); err != nil {
		w.fail(rw, r, http.StatusBadRequest, "The "+err.Error()+".")
		return
	}
	key := store.SuppressionKey{Address: address, Stream: stream}
	change := store.SuppressionChange{
		Time: time.Now().UTC(), Address: address, Stream: stream, Action: store.ActionRemove,
		Source: store.SourceManual, Actor: actor(r), Note: reason,
	}
	if err := store.ValidateChange(key, change); err != nil {
		w.fail(rw, r, http.StatusBadRequest, "The removal cannot be stored: "+err.Error()+".")
		return
	}
	err = w.s.store.RemoveSuppression(r.Context(), key, change)
	if errors.Is(err, store.ErrNotFound) {
		w.fail(rw, r, http.StatusNotFound, "No suppression of "+address+" on "+streamName(stream)+" is in force: it may have been removed or have ended meanwhile.")
		return
	}
	if err != nil {
		w.storeFail(rw, r, err)
		return
	}
	w.s.log.InfoContext(r.Context(), "api: suppression removed on the web page", "address", address, "stream", stream, "actor", change.Actor)
	// Back to the address as it was looked up, which may differ from the
	// key by the normalisation, so its events show too.
	lookup, err := parseAddress(r.PostForm.Get("lookup"))
	if err != nil {
		lookup = address
	}
	back := url.Values{"address": {lookup}, "removed": {stream}}
	http.Redirect(rw, r, "/ui/address?"+back.Encode(), http.StatusSeeOther)
}

type loginPage struct {
	base
	Next  string
	Error string
}

func (w *web) loginForm(rw http.ResponseWriter, r *http.Request) {
	next := localPath(r.URL.Query().Get("next"))
	if w.s.open() {
		http.Redirect(rw, r, next, http.StatusSeeOther)
		return
	}
	w.render(rw, r, http.StatusOK, "login", loginPage{base: base{CSRF: w.csrf}, Next: next})
}

// login checks a token as guard does and keeps it in the cookie.
func (w *web) login(rw http.ResponseWriter, r *http.Request) {
	pageHeaders(rw.Header())
	if !w.checkForm(rw, r) {
		return
	}
	next := localPath(r.PostForm.Get("next"))
	if w.s.open() {
		http.Redirect(rw, r, next, http.StatusSeeOther)
		return
	}
	tok := []byte(strings.TrimSpace(r.PostForm.Get("token")))
	if len(tok) == 0 || !matchAny(tok, w.s.readTokens) && !matchAny(tok, w.s.adminTokens) {
		w.s.log.InfoContext(r.Context(), "api: web login with an unknown token", "remote", r.RemoteAddr)
		w.render(rw, r, http.StatusForbidden, "login", loginPage{base: base{CSRF: w.csrf}, Next: next, Error: "That token is not one of this server's."})
		return
	}
	setSession(rw, r, string(tok))
	http.Redirect(rw, r, next, http.StatusSeeOther)
}

func (w *web) logout(rw http.ResponseWriter, r *http.Request) {
	pageHeaders(rw.Header())
	if !w.checkForm(rw, r) {
		return
	}
	clearSession(rw, r)
	http.Redirect(rw, r, "/ui/login", http.StatusSeeOther)
}

// localPath returns p when it is a path on this server, "/" otherwise, so
// the login form cannot be made to send anyone elsewhere.
func localPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") || strings.ContainsAny(p, "\r\n") {
		return "/"
	}
	return p
}

func (w *web) style(rw http.ResponseWriter, r *http.Request) {
	css, err := webFiles.ReadFile("web/style.css")
	if err != nil {
		http.Error(rw, "not found", http.StatusNotFound)
		return
	}
	h := rw.Header()
	h.Set("Content-Type", "text/css; charset=utf-8")
	h.Set("Cache-Control", "max-age=3600")
	h.Set("X-Content-Type-Options", "nosniff")
	rw.Write(css)
}

// formatTime shows a time in UTC to the second; the zero time is "—".
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// streamName names a suppression's stream; "" is the global scope.
func streamName(s string) string {
	if s == "" {
		return "every stream (global)"
	}
	return s
}
