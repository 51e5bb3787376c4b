package api_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/store"
)

// TestSuppressionExportBusy: an export holds one of the store's read
// connections for as long as its client takes to read it (SQLite has 4),
// so two may run at once; while two are held by clients that stopped
// reading (over real TCP, their receive buffers full), a third is
// answered 503 with Retry-After at once, and a check before a send is
// still answered. Found by the reliability scenario http-abuse: 50
// concurrent exports took every read connection and checks waited up to
// 9.9 s.
func TestSuppressionExportBusy(t *testing.T) {
	e := startSup(t, nil, nil)
	// About 8.5 MB of CSV: more than a loopback socket's buffers hold
	// (4 MiB of send buffer at most here, and the readers' 4 KiB), so
	// an export whose client does not read stays in progress.
	note := strings.Repeat("n", store.MaxSuppressionField-24)
	var rows []store.Suppression
	since := time.Now().Add(-time.Hour).UTC()
	for i := range 8000 {
		rows = append(rows, store.Suppression{Address: fmt.Sprintf("user%d@example.com", i), Source: store.SourceManual,
			Since: since, Actor: "test", Note: note})
	}
	if err := e.st.PutSuppressions(context.Background(), rows); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	const export = "/v1/suppressions?all_streams=true&format=csv"
	// hold starts an export and reads its status line only.
	hold := func() net.Conn {
		d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			return serr
		}}
		c, err := d.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", export, u.Host, readToken)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		status, err := bufio.NewReaderSize(c, 64).ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
			t.Fatalf("held export: %q, %v", status, err)
		}
		return c
	}
	held := []net.Conn{hold(), hold()}

	// Both handlers are blocked writing now or soon; a probe export that
	// still gets a slot reads the whole list and leaves it. The loop
	// waits for that state; it asserts nothing about time.
	var r reply
	for deadline := time.Now().Add(30 * time.Second); ; {
		r = e.call(t, http.MethodGet, export, readToken, nil)
		if r.status == http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
		if r.status != http.StatusOK {
			t.Fatalf("a probe export while two are held: HTTP %d (%d bytes)", r.status, len(r.body))
		}
	}
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("a third export at once: HTTP %d (%d bytes), want 503", r.status, len(r.body))
	}
	wantError(t, "a third export at once", r.status, r.body, r.header.Get("Content-Type"), http.StatusServiceUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Error("503 to an export without Retry-After")
	}
	// The check a sending app makes, and a page, are not held up.
	if r := e.call(t, http.MethodGet, "/v1/suppressions/user7@example.com", readToken, nil); r.status != http.StatusOK || !strings.Contains(string(r.body), `"suppressed":true`) {
		t.Errorf("a check while two exports are held: HTTP %d %s", r.status, r.body)
	}
	if r := e.call(t, http.MethodGet, "/v1/suppressions?all_streams=true&limit=10", readToken, nil); r.status != http.StatusOK {
		t.Errorf("a page while two exports are held: HTTP %d %s", r.status, r.body)
	}
	for _, c := range held {
		c.Close()
	}
	// Once their clients are gone the slots come back.
	for deadline := time.Now().Add(30 * time.Second); ; {
		r = e.call(t, http.MethodGet, export, readToken, nil)
		if r.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.status != http.StatusOK || strings.Count(string(r.body), "\n") != 8001 {
		t.Errorf("an export after the held ones ended: HTTP %d, %d lines, want 200 and 8,001", r.status, strings.Count(string(r.body), "\n"))
	}
}
