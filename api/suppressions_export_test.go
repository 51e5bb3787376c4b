package api_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/sqlite"
)

// readCounter is a store that counts the suppression reads the API makes
// and can fail EachSuppression after some rows.
type readCounter struct {
	store.Store
	each, pages, checks, addresses atomic.Int64
	failAfter                      int // EachSuppression fails after this many rows; -1 never
}

var errStoreDown = errors.New("store down")

func (c *readCounter) EachSuppression(ctx context.Context, q store.SuppressionQuery, fn func(store.Suppression) error) error {
	c.each.Add(1)
	n := 0
	return c.Store.EachSuppression(ctx, q, func(s store.Suppression) error {
		if n == c.failAfter {
			return errStoreDown
		}
		n++
		return fn(s)
	})
}

func (c *readCounter) Suppressions(ctx context.Context, q store.SuppressionQuery) ([]store.Suppression, error) {
	c.pages.Add(1)
	return c.Store.Suppressions(ctx, q)
}

func (c *readCounter) CheckSuppressions(ctx context.Context, address string, now time.Time) ([]store.Suppression, error) {
	c.checks.Add(1)
	return c.Store.CheckSuppressions(ctx, address, now)
}

func (c *readCounter) AddressSuppressions(ctx context.Context, address string, now time.Time) ([]store.Suppression, error) {
	c.addresses.Add(1)
	return c.Store.AddressSuppressions(ctx, address, now)
}

func newReadCounter(t *testing.T) *readCounter {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "bouncer.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &readCounter{Store: s, failAfter: -1}
}

// A listing without a limit is one store read, EachSuppression, also
// from a cursor; with a limit it is pages. The check before a send is
// CheckSuppressions, the only read that may answer from a filter.
func TestSuppressionExportOneRead(t *testing.T) {
	c := newReadCounter(t)
	e := startSup(t, c, nil)
	rows, _ := manyRows(2600)
	e.putRows(t, rows)
	all := filter(rows, func(store.Suppression) bool { return true })

	r := e.call(t, http.MethodGet, "/v1/suppressions?all_streams=true&format=csv", readToken, nil)
	recs, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if r.status != http.StatusOK || err != nil || !reflect.DeepEqual(recs[1:], all) {
		t.Fatalf("CSV export: %d, %v, %d rows; want 200 and %d rows", r.status, err, len(recs)-1, len(all))
	}
	if each, pages := c.each.Load(), c.pages.Load(); each != 1 || pages != 0 {
		t.Errorf("an export made %d EachSuppression and %d Suppressions calls, want 1 and 0", each, pages)
	}

	// From a cursor, without a limit: the rest, in one read.
	cursor := pageCursor(t, e, 1000)
	r = e.call(t, http.MethodGet, "/v1/suppressions?all_streams=true&format=csv&cursor="+cursor, readToken, nil)
	recs, err = csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if r.status != http.StatusOK || err != nil || !reflect.DeepEqual(recs[1:], all[1000:]) {
		t.Errorf("export after a cursor: %d, %v, %d rows; want 200 and %d rows", r.status, err, len(recs)-1, len(all)-1000)
	}
	if each := c.each.Load(); each != 2 {
		t.Errorf("the export after a cursor made %d EachSuppression calls in all, want 2", each)
	}

	// JSON without a limit: the same object as before, whole.
	var l wireList
	decode(t, "JSON export", e.call(t, http.MethodGet, "/v1/suppressions?all_streams=true", readToken, nil), http.StatusOK, &l)
	if len(l.Suppressions) != len(all) || l.NextCursor != "" {
		t.Errorf("JSON export: %d rows, cursor %q; want %d, none", len(l.Suppressions), l.NextCursor, len(all))
	}
	// Empty: the CSV header alone, an empty JSON list.
	r = e.call(t, http.MethodGet, "/v1/suppressions?stream=x&since=2100-01-01T00:00:00Z&format=csv", readToken, nil)
	if r.status != http.StatusOK || string(r.body) != "address,stream,source,class,reason,rule,since,until,actor,note\n" {
		t.Errorf("empty CSV export: %d %q", r.status, r.body)
	}
	r = e.call(t, http.MethodGet, "/v1/suppressions?since=2100-01-01T00:00:00Z", readToken, nil)
	if r.status != http.StatusOK || string(r.body) != "{\"suppressions\":[\n]}\n" {
		t.Errorf("empty JSON export: %d %q", r.status, r.body)
	}

	// The check before a send.
	c.addresses.Store(0)
	var got struct {
		Address      string `json:"address"`
		Suppressed   bool   `json:"suppressed"`
		Suppressions []wire `json:"suppressions"`
	}
	decode(t, "check", e.call(t, http.MethodGet, "/v1/suppressions/"+url.PathEscape(rows[0].Address), readToken, nil), http.StatusOK, &got)
	if !got.Suppressed || len(got.Suppressions) == 0 {
		t.Errorf("check of %s: %+v, want suppressed", rows[0].Address, got)
	}
	if checks, addresses := c.checks.Load(), c.addresses.Load(); checks != 1 || addresses != 0 {
		t.Errorf("a check made %d CheckSuppressions and %d AddressSuppressions calls, want 1 and 0", checks, addresses)
	}
}

// pageCursor returns the cursor after the first n rows of every stream.
func pageCursor(t *testing.T, e *supEnv, n int) string {
	t.Helper()
	var l wireList
	decode(t, "page", e.call(t, http.MethodGet, fmt.Sprintf("/v1/suppressions?all_streams=true&limit=%d", n), readToken, nil), http.StatusOK, &l)
	if l.NextCursor == "" {
		t.Fatal("no next_cursor")
	}
	return l.NextCursor
}

// A store that fails before the first chunk gets an error status; one
// that fails later cuts the connection, so the client sees a failed
// transfer, never a short list that looks whole.
func TestSuppressionExportStoreFails(t *testing.T) {
	c := newReadCounter(t)
	e := startSup(t, c, nil)
	rows, _ := manyRows(3000)
	e.putRows(t, rows)

	c.failAfter = 10
	for _, format := range []string{"csv", "json"} {
		r := e.call(t, http.MethodGet, "/v1/suppressions?all_streams=true&format="+format, readToken, nil)
		if r.status != http.StatusInternalServerError || !bytes.Contains(r.body, []byte(`"error"`)) {
			t.Errorf("%s: store failing at row 10: %d %s; want 500 with an error", format, r.status, r.body)
		}
	}

	c.failAfter = 2500
	for _, format := range []string{"csv", "json"} {
		req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/suppressions?all_streams=true&format="+format, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+readToken)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err == nil {
			t.Errorf("%s: store failing at row 2500: status %d, read %d bytes, error %v; want 200 and a cut transfer",
				format, resp.StatusCode, len(body), err)
		}
	}
}

// busyStore is a store whose check is refused as overloaded. A fake: the
// real refusal (store/clickhouse's TestCheckSuppressionsBusy) needs every
// read slot of a ClickHouse store taken, which this package's tests do
// not run; here only the API's answer to it is checked.
type busyStore struct{ store.Store }

func (b busyStore) CheckSuppressions(ctx context.Context, address string, now time.Time) ([]store.Suppression, error) {
	return nil, fmt.Errorf("engine: 8 reads in progress: %w", store.ErrBusy)
}

// An overloaded store is a 503 with Retry-After, at once, not a 500.
func TestSuppressionCheckBusy(t *testing.T) {
	e := startSup(t, busyStore{newReadCounter(t)}, nil)
	r := e.call(t, http.MethodGet, "/v1/suppressions/"+url.PathEscape("a@example.com"), readToken, nil)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" || !strings.Contains(string(r.body), "busy") {
		t.Errorf("check on a busy store = %d, Retry-After %q, %s; want 503, 1, store busy", r.status, r.header.Get("Retry-After"), r.body)
	}
}
