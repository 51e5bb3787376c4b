package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer-mail/bouncer/api"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/sqlite"
)

type env struct {
	store *sqlite.Store
	srv   *httptest.Server
	reg   *prometheus.Registry
	logs  *syncBuffer
}

// start serves the API over real HTTP on a fresh SQLite store.
func start(t *testing.T, ready func() error) *env {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "bouncer.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{store: st, reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	h, err := api.New(api.Config{
		Store:    st,
		Logger:   slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Gatherer: e.reg,
		Ready:    ready,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

// syncBuffer collects the log lines of handlers on several connections.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// get fetches a path (already escaped) and returns the status, the body
// and the Content-Type.
func (e *env) get(t *testing.T, path string) (int, []byte, string) {
	t.Helper()
	return e.do(t, http.MethodGet, path)
}

func (e *env) do(t *testing.T, method, path string) (int, []byte, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Keep the path exactly as written: no client-side cleaning.
	req.URL.Opaque = "//" + req.URL.Host + strings.SplitN(path, "?", 2)[0]
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body, resp.Header.Get("Content-Type")
}

func (e *env) write(t *testing.T, reports []store.Report, events []store.Event) {
	t.Helper()
	if err := e.store.Write(context.Background(), reports, events); err != nil {
		t.Fatal(err)
	}
}

const jsonType = "application/json; charset=utf-8"

// wantError checks an error response: the status, JSON {"error": ...}
// and nothing else.
func wantError(t *testing.T, what string, status int, body []byte, ctype string, wantStatus int) string {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s: status %d, want %d; body %s", what, status, wantStatus, body)
	}
	if ctype != jsonType {
		t.Errorf("%s: Content-Type %q, want %q", what, ctype, jsonType)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("%s: body %q is not JSON: %v", what, body, err)
	}
	msg, ok := m["error"].(string)
	if len(m) != 1 || !ok || msg == "" {
		t.Errorf("%s: body %s, want {\"error\":\"...\"}", what, body)
	}
	return msg
}

func TestConfigValidate(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "x.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	full := api.Config{Store: st, Logger: slog.New(slog.DiscardHandler), Gatherer: prometheus.NewRegistry()}
	tests := []struct {
		name string
		mod  func(c *api.Config)
		want string // substring of the error, "" for none
	}{
		{"complete", func(c *api.Config) {}, ""},
		{"no Ready", func(c *api.Config) { c.Ready = nil }, ""},
		{"no Store", func(c *api.Config) { c.Store = nil }, "api: Config.Store is required"},
		{"no Logger", func(c *api.Config) { c.Logger = nil }, "api: Config.Logger is required"},
		{"no Gatherer", func(c *api.Config) { c.Gatherer = nil }, "api: Config.Gatherer is required"},
	}
	for _, tt := range tests {
		c := full
		tt.mod(&c)
		err := c.Validate()
		h, newErr := api.New(c)
		if tt.want == "" {
			if err != nil || newErr != nil || h == nil {
				t.Errorf("%s: Validate = %v, New = %v, %v", tt.name, err, h, newErr)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Validate = %v, want %q", tt.name, err, tt.want)
		}
		if newErr == nil || h != nil {
			t.Errorf("%s: New = %v, %v; want an error", tt.name, h, newErr)
		}
	}
}

func TestHealthz(t *testing.T) {
	e := start(t, func() error { return errors.New("not yet") })
	status, body, _ := e.get(t, "/healthz")
	if status != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("GET /healthz = %d %q, want 200 \"ok\\n\" even when not ready", status, body)
	}
}

func TestReadyz(t *testing.T) {
	var (
		mu       sync.Mutex
		readyErr error
	)
	setReady := func(err error) { mu.Lock(); readyErr = err; mu.Unlock() }
	e := start(t, func() error { mu.Lock(); defer mu.Unlock(); return readyErr })

	status, body, ctype := e.get(t, "/readyz")
	if status != http.StatusOK || ctype != jsonType || !strings.Contains(string(body), `"ready"`) {
		t.Errorf("GET /readyz = %d %s %q, want 200 ready", status, ctype, body)
	}

	setReady(errors.New("nats: dial tcp 10.1.2.3:4222: connection refused"))
	status, body, ctype = e.get(t, "/readyz")
	if msg := wantError(t, "not ready", status, body, ctype, http.StatusServiceUnavailable); msg != "not ready" {
		t.Errorf("not ready: reason %q, want \"not ready\"", msg)
	}
	if strings.Contains(string(body), "10.1.2.3") {
		t.Errorf("readyz leaks the internal error: %s", body)
	}
	// Probes repeat; the log says it once.
	e.get(t, "/readyz")
	if n := strings.Count(e.logs.String(), "api: not ready"); n != 1 {
		t.Errorf("logged \"not ready\" %d times over two probes, want 1:\n%s", n, e.logs)
	}

	// Another cause under the same reason is logged too (it is the
	// operator's only way to see it).
	setReady(errors.New("broker: JetStream cannot store: no space left on device"))
	e.get(t, "/readyz")
	e.get(t, "/readyz")
	if n := strings.Count(e.logs.String(), "api: not ready"); n != 2 || !strings.Contains(e.logs.String(), "no space left") {
		t.Errorf("a second cause: logged \"not ready\" %d times, want 2 with the new cause:\n%s", n, e.logs)
	}

	setReady(nil)
	if status, body, _ := e.get(t, "/readyz"); status != http.StatusOK {
		t.Errorf("ready again: GET /readyz = %d %s", status, body)
	}

	e.store.Close()
	status, body, ctype = e.get(t, "/readyz")
	if msg := wantError(t, "store closed", status, body, ctype, http.StatusServiceUnavailable); msg != "store unavailable" {
		t.Errorf("store closed: reason %q, want \"store unavailable\"", msg)
	}
	// The other endpoints say so too, and /healthz still answers.
	for _, path := range []string{"/v1/stats", "/v1/recipients/a@example.com/events"} {
		status, body, ctype := e.get(t, path)
		wantError(t, path+" on a closed store", status, body, ctype, http.StatusServiceUnavailable)
	}
	if status, _, _ := e.get(t, "/healthz"); status != http.StatusOK {
		t.Errorf("GET /healthz with the store closed = %d, want 200", status)
	}
}

func TestMetrics(t *testing.T) {
	e := start(t, nil)
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bouncer_test_things_total", Help: "Things."}, []string{"class"})
	e.reg.MustRegister(c)
	c.WithLabelValues("hard").Add(3)

	status, body, ctype := e.get(t, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics = %d %s", status, body)
	}
	if !strings.HasPrefix(ctype, "text/plain") {
		t.Errorf("GET /metrics Content-Type %q, want the text exposition format", ctype)
	}
	if want := `bouncer_test_things_total{class="hard"} 3`; !strings.Contains(string(body), want) {
		t.Errorf("GET /metrics lacks %q:\n%s", want, body)
	}
}

func TestMethods(t *testing.T) {
	e := start(t, nil)
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{http.MethodPost, "/v1/stats", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/v1/recipients/a@example.com/events", http.StatusMethodNotAllowed},
		{http.MethodPut, "/healthz", http.StatusMethodNotAllowed},
		{http.MethodHead, "/v1/stats", http.StatusOK},
		{http.MethodGet, "/v1/nothing", http.StatusNotFound},
		{http.MethodGet, "/v1/recipients/a@example.com", http.StatusNotFound},
	} {
		if status, body, _ := e.do(t, tt.method, tt.path); status != tt.want {
			t.Errorf("%s %s = %d %s, want %d", tt.method, tt.path, status, body, tt.want)
		}
	}
}

// now is whole seconds, as the suite's engines keep them.
var now = time.Now().UTC().Truncate(time.Second)

func newEvent(reportID string, index int, recipient string, class event.Class, t time.Time) store.Event {
	return store.Event{
		ID: store.EventID(reportID, index), ReportID: reportID, Index: index, Version: 1, Time: t, Source: "ndr",
		Event: event.Event{
			Recipient: recipient, Class: class, Reason: event.ReasonUserUnknown, Scope: event.ScopeRecipient,
			Status: "5.1.1", ReplyCode: 550, Action: "failed",
			Diagnostic: "smtp; 550 5.1.1 <" + recipient + ">: User unknown & gone",
			RemoteMTA:  "mx.example.org", ReportingMTA: "mta.example.com", SMTPCommand: "RCPT",
			Provider: "gmail", Parser: "rfc3464", Rule: "user-unknown", MessageID: "<m" + reportID + "@example.com>",
		},
	}
}

func newReport(id string, t time.Time) store.Report {
	return store.Report{Envelope: event.Envelope{ID: id, Received: t}, Raw: []byte("raw " + id)}
}

// classifyFields are the keys of an event in `bouncer classify` output.
var classifyFields = []string{
	"recipient", "class", "reason", "scope", "status", "reply_code", "action", "diagnostic",
	"remote_mta", "reporting_mta", "smtp_command", "provider", "parser", "rule", "message_id",
}

func TestRecipientEvents(t *testing.T) {
	e := start(t, nil)
	old := newEvent("r1", 0, "alice@example.com", event.ClassSoft, now.Add(-2*time.Hour))
	recent := newEvent("r2", 0, "alice@example.com", event.ClassHard, now.Add(-time.Hour))
	recent.Version = 3
	recent.Source = "sync"
	recent.ReportID = "" // a sync event: version 3 is its own, not r2's set
	slash := newEvent("r2", 1, "a/b+tag@example.com", event.ClassHard, now)
	e.write(t, []store.Report{newReport("r1", old.Time), newReport("r2", recent.Time)}, []store.Event{old, recent, slash})

	status, body, ctype := e.get(t, "/v1/recipients/Alice@Example.COM/events")
	if status != http.StatusOK || ctype != jsonType {
		t.Fatalf("GET events = %d %q %s", status, ctype, body)
	}
	// The exact field names first: tools parse them.
	var raw struct {
		Recipient string           `json:"recipient"`
		Events    []map[string]any `json:"events"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.Recipient != "alice@example.com" {
		t.Errorf("recipient = %q, want the lower-cased address", raw.Recipient)
	}
	if len(raw.Events) != 2 {
		t.Fatalf("got %d events, want 2: %s", len(raw.Events), body)
	}
	wantKeys := append([]string{"id", "time", "source", "version"}, classifyFields...)
	slices.Sort(wantKeys)
	for i, ev := range raw.Events {
		var keys []string
		for k := range ev {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !reflect.DeepEqual(keys, wantKeys) {
			t.Errorf("event %d keys = %v, want %v", i, keys, wantKeys)
		}
	}
	if !strings.Contains(string(body), `<mr2@example.com>`) || !strings.Contains(string(body), "& gone") {
		t.Errorf("body escapes <, > or &, unlike bouncer classify: %s", body)
	}

	// Then the values, newest first.
	type wireEvent struct {
		ID      string    `json:"id"`
		Time    time.Time `json:"time"`
		Source  string    `json:"source"`
		Version uint32    `json:"version"`
		event.Event
	}
	var got struct {
		Events []wireEvent `json:"events"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	for i, want := range []store.Event{recent, old} {
		g := got.Events[i]
		if g.ID != want.ID || !g.Time.Equal(want.Time) || g.Source != want.Source || g.Version != want.Version || g.Event != want.Event {
			t.Errorf("event %d = %+v, want %+v", i, g, want)
		}
	}

	// limit, and an address holding an escaped slash.
	for _, tt := range []struct {
		path string
		want []string
	}{
		{"/v1/recipients/alice@example.com/events?limit=1", []string{recent.ID}},
		{"/v1/recipients/alice%40example.com/events?limit=1000", []string{recent.ID, old.ID}},
		{"/v1/recipients/a%2Fb+tag@example.com/events", []string{slash.ID}},
		{"/v1/recipients/nobody@example.com/events", []string{}},
	} {
		status, body, _ := e.get(t, tt.path)
		if status != http.StatusOK {
			t.Errorf("GET %s = %d %s", tt.path, status, body)
			continue
		}
		var resp struct {
			Events []wireEvent `json:"events"`
		}
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Events == nil {
			t.Errorf("GET %s: events is null, want []: %s", tt.path, body)
		}
		ids := []string{}
		for _, ev := range resp.Events {
			ids = append(ids, ev.ID)
		}
		if !reflect.DeepEqual(ids, tt.want) {
			t.Errorf("GET %s = %v, want %v", tt.path, ids, tt.want)
		}
	}
}

func TestRecipientEventsBadRequest(t *testing.T) {
	e := start(t, nil)
	ev := newEvent("r1", 0, "alice@example.com", event.ClassHard, now)
	e.write(t, []store.Report{newReport("r1", now)}, []store.Event{ev})
	before, err := e.store.Stats(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct{ name, path string }{
		{"no @", "/v1/recipients/alice.example.com/events"},
		{"two @", "/v1/recipients/a@b@example.com/events"},
		{"empty local part", "/v1/recipients/@example.com/events"},
		{"empty domain", "/v1/recipients/alice@/events"},
		{"path traversal", "/v1/recipients/..%2F..%2Fetc/events"},
		{"path traversal with @", "/v1/recipients/x@..%2F..%2Fetc%2Fpasswd/events"},
		{"NUL", "/v1/recipients/alice%00@example.com/events"},
		{"newline", "/v1/recipients/alice@example.com%0D%0AX-Injected:%201/events"},
		{"DEL", "/v1/recipients/alice%7F@example.com/events"},
		{"tab", "/v1/recipients/alice@exa%09mple.com/events"},
		{"invalid UTF-8", "/v1/recipients/alice%FF@example.com/events"},
		{"321 octets", "/v1/recipients/" + strings.Repeat("a", 321-len("@example.com")) + "@example.com/events"},
		{"huge", "/v1/recipients/" + strings.Repeat("a", 100000) + "@example.com/events"},
		{"space in domain", "/v1/recipients/alice@exa%20mple.com/events"},
		{"limit zero", "/v1/recipients/alice@example.com/events?limit=0"},
		{"limit negative", "/v1/recipients/alice@example.com/events?limit=-5"},
		{"limit too big", "/v1/recipients/alice@example.com/events?limit=1001"},
		{"limit not a number", "/v1/recipients/alice@example.com/events?limit=ten"},
		{"limit overflow", "/v1/recipients/alice@example.com/events?limit=99999999999999999999999"},
		{"bad query escape", "/v1/recipients/alice@example.com/events?limit=%zz"},
	} {
		status, body, ctype := e.get(t, tt.path)
		wantError(t, tt.name, status, body, ctype, http.StatusBadRequest)
		if strings.Contains(string(body), "etc") || strings.Contains(string(body), "Injected") {
			t.Errorf("%s: error echoes the input: %s", tt.name, body)
		}
	}

	after, err := e.store.Stats(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("stats changed by bad requests: %+v -> %+v", before, after)
	}
	// The longest address allowed is served.
	ok := "/v1/recipients/" + strings.Repeat("a", 320-len("@example.com")) + "@example.com/events"
	if status, body, _ := e.get(t, ok); status != http.StatusOK {
		t.Errorf("320-octet address: %d %s, want 200", status, body)
	}
}

func TestStats(t *testing.T) {
	e := start(t, nil)
	hour, day := time.Hour, 24*time.Hour
	e.write(t,
		[]store.Report{newReport("r1", now.Add(-2*hour)), newReport("r2", now.Add(-2*day)), newReport("r3", now.Add(-100*day))},
		[]store.Event{
			newEvent("r1", 0, "a@example.com", event.ClassHard, now.Add(-2*hour)),
			newEvent("r1", 1, "b@example.com", event.ClassGreylist, now.Add(-2*hour)),
			newEvent("r2", 0, "a@example.com", event.ClassComplaint, now.Add(-2*day)),
			newEvent("r3", 0, "a@example.com", event.ClassHard, now.Add(-100*day)),
		})

	type response struct {
		Window          string           `json:"window"`
		Since           time.Time        `json:"since"`
		ReportsReceived int64            `json:"reports_received"`
		EventsByClass   map[string]int64 `json:"events_by_class"`
	}
	counts := func(nonZero map[string]int64) map[string]int64 {
		m := map[string]int64{}
		for _, c := range event.Classes {
			m[string(c)] = nonZero[string(c)]
		}
		return m
	}
	for _, tt := range []struct {
		query   string
		window  string
		length  time.Duration
		reports int64
		classes map[string]int64
	}{
		{"", "24h", day, 1, map[string]int64{"hard": 1, "greylist": 1}},
		{"?window=1m", "1m", time.Minute, 0, nil},
		{"?window=1h", "1h", hour, 0, nil},
		{"?window=3h", "3h", 3 * hour, 1, map[string]int64{"hard": 1, "greylist": 1}},
		{"?window=72h&by=class", "72h", 3 * day, 2, map[string]int64{"hard": 1, "greylist": 1, "complaint": 1}},
		{"?window=2160h", "2160h", 90 * day, 2, map[string]int64{"hard": 1, "greylist": 1, "complaint": 1}},
		{"?window=4320m", "4320m", 3 * day, 2, map[string]int64{"hard": 1, "greylist": 1, "complaint": 1}},
	} {
		before := time.Now()
		status, body, ctype := e.get(t, "/v1/stats"+tt.query)
		if status != http.StatusOK || ctype != jsonType {
			t.Errorf("GET /v1/stats%s = %d %q %s", tt.query, status, ctype, body)
			continue
		}
		var got response
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("GET /v1/stats%s: %v: %s", tt.query, err, body)
		}
		if got.Window != tt.window {
			t.Errorf("%s: window = %q, want %q", tt.query, got.Window, tt.window)
		}
		if lo, hi := before.Add(-tt.length-time.Second), time.Now().Add(-tt.length); got.Since.Before(lo) || got.Since.After(hi) {
			t.Errorf("%s: since = %v, want within [%v, %v]", tt.query, got.Since, lo, hi)
		}
		if got.ReportsReceived != tt.reports {
			t.Errorf("%s: reports_received = %d, want %d", tt.query, got.ReportsReceived, tt.reports)
		}
		if want := counts(tt.classes); !reflect.DeepEqual(got.EventsByClass, want) {
			t.Errorf("%s: events_by_class = %v, want %v", tt.query, got.EventsByClass, want)
		}
	}

	for _, q := range []string{
		"?window=59s", "?window=0", "?window=-1h", "?window=2161h", "?window=91d", "?window=day",
		"?window=1e9h", "?window=24", "?window=%zz", "?by=domain", "?by=PROVIDER",
	} {
		status, body, ctype := e.get(t, "/v1/stats"+q)
		wantError(t, "/v1/stats"+q, status, body, ctype, http.StatusBadRequest)
	}
}

// TestStatsBy: by=provider and by=reason group the window's events by
// bounded provider label or reason, each group with every class.
func TestStatsBy(t *testing.T) {
	e := start(t, nil)
	at := now.Add(-time.Hour)
	ev := func(report string, i int, class event.Class, reason event.Reason, provider string) store.Event {
		x := newEvent(report, i, "a@example.com", class, at)
		x.Reason, x.Provider = reason, provider
		return x
	}
	e.write(t, []store.Report{newReport("r1", at)}, []store.Event{
		ev("r1", 0, event.ClassHard, event.ReasonUserUnknown, "gmail"),
		ev("r1", 1, event.ClassSoft, event.ReasonMailboxFull, "gmail"),
		ev("r1", 2, event.ClassHard, event.ReasonUserUnknown, "mx.tiny-isp.example"), // not a known provider: "other"
		ev("r1", 3, event.ClassGreylist, event.ReasonGreylisting, ""),
	})
	classes := func(nonZero map[string]int64) map[string]int64 {
		m := map[string]int64{}
		for _, c := range event.Classes {
			m[string(c)] = nonZero[string(c)]
		}
		return m
	}
	for _, tt := range []struct {
		by   string
		want map[string]map[string]int64
	}{
		{"provider", map[string]map[string]int64{
			"gmail": classes(map[string]int64{"hard": 1, "soft": 1}),
			"other": classes(map[string]int64{"hard": 1, "greylist": 1}),
		}},
		{"reason", map[string]map[string]int64{
			"userunknown": classes(map[string]int64{"hard": 2}),
			"mailboxfull": classes(map[string]int64{"soft": 1}),
			"greylisting": classes(map[string]int64{"greylist": 1}),
		}},
	} {
		status, body, _ := e.get(t, "/v1/stats?window=2h&by="+tt.by)
		if status != http.StatusOK {
			t.Fatalf("by=%s: %d %s", tt.by, status, body)
		}
		var got struct {
			By            string                      `json:"by"`
			EventsByClass map[string]int64            `json:"events_by_class"`
			EventsByGroup map[string]map[string]int64 `json:"events_by_group"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if got.By != tt.by || !reflect.DeepEqual(got.EventsByGroup, tt.want) {
			t.Errorf("by=%s: by %q, groups %v; want %v", tt.by, got.By, got.EventsByGroup, tt.want)
		}
		if want := classes(map[string]int64{"hard": 2, "soft": 1, "greylist": 1}); !reflect.DeepEqual(got.EventsByClass, want) {
			t.Errorf("by=%s: events_by_class %v, want %v", tt.by, got.EventsByClass, want)
		}
	}
}
