package api_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/store"
)

// TestSuppressionImportBusy: each import holds its body in memory, so two
// may run at once; while two are in progress (their bodies not yet sent)
// a third is answered 503 with Retry-After at once and changes nothing,
// and once they ended an import is served again. Found by the
// reliability scenario http-abuse: concurrent 60 MiB imports took about
// 125 MiB of RSS each, without a bound.
func TestSuppressionImportBusy(t *testing.T) {
	e := startSup(t, nil, nil)
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	const path = "/v1/suppressions:import?note=n"
	// The held imports' bodies end with a bad line: 400, nothing written.
	const body = "address\nbad line@\n"
	type held struct {
		c net.Conn
		r *bufio.Reader
	}
	// hold starts an import that asks for 100-continue over raw TCP. The
	// server sends "100 Continue" when the handler first reads the body,
	// which it does only once it holds an import slot: so after hold
	// returns, the slot is taken, whatever the scheduler did.
	hold := func() held {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n",
			path, u.Host, adminToken, len(body))
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		r := bufio.NewReader(c)
		status, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 100 ") {
			t.Fatalf("held import: %q, %v, want 100 Continue", status, err)
		}
		if blank, err := r.ReadString('\n'); err != nil || blank != "\r\n" {
			t.Fatalf("held import: after 100 Continue %q, %v", blank, err)
		}
		return held{c, r}
	}
	imports := []held{hold(), hold()}

	r := e.call(t, http.MethodPost, path, adminToken, strings.NewReader("address\nthird@example.com\n"))
	wantError(t, "a third import at once", r.status, r.body, r.header.Get("Content-Type"), http.StatusServiceUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Error("503 to an import without Retry-After")
	}
	for i, h := range imports {
		if _, err := h.c.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(h.r, nil)
		if err != nil {
			t.Fatalf("held import %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("held import %d: HTTP %d, want 400", i, resp.StatusCode)
		}
	}
	if rows, err := e.st.Suppressions(context.Background(), store.SuppressionQuery{AllStreams: true, Now: time.Now(), Limit: 1}); err != nil || len(rows) != 0 {
		t.Errorf("after refused imports the store holds %v, %v", rows, err)
	}
	// The slots are released once each handler returned, which may be a
	// moment after its answer was read: retry while the answer is 503.
	for deadline := time.Now().Add(30 * time.Second); ; {
		r = e.call(t, http.MethodPost, path, adminToken, strings.NewReader("address\nok@example.com\n"))
		if r.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var got struct {
		Imported int    `json:"imported"`
		Actor    string `json:"actor"`
	}
	decode(t, "an import after the others ended", r, http.StatusOK, &got)
	if got.Imported != 1 {
		t.Errorf("an import after the others ended imported %d rows, want 1", got.Imported)
	}
}
