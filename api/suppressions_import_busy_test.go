package api_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/store"
)

// TestSuppressionImportBusy: each import holds its body in memory, so two
// may run at once; while two are in progress (their bodies still arriving
// over real HTTP) a third is answered 503 with Retry-After at once and
// changes nothing, and once they ended an import is served again. Found
// by the reliability scenario http-abuse: concurrent 60 MiB imports took
// about 125 MiB of RSS each, without a bound.
func TestSuppressionImportBusy(t *testing.T) {
	e := startSup(t, nil, nil)
	type slow struct {
		w    *io.PipeWriter
		done chan reply
	}
	var held []slow
	for range 2 {
		pr, pw := io.Pipe()
		s := slow{w: pw, done: make(chan reply, 1)}
		go func() { s.done <- e.call(t, http.MethodPost, "/v1/suppressions:import?note=n", adminToken, pr) }()
		if _, err := pw.Write([]byte("address\n")); err != nil {
			t.Fatal(err)
		}
		held = append(held, s)
	}
	// Wait until both hold their slot: a probe (whose body is bad, so it
	// changes nothing if it gets a slot) is then refused. The loop waits
	// for that state; it asserts nothing about time.
	var r reply
	for deadline := time.Now().Add(30 * time.Second); ; {
		r = e.call(t, http.MethodPost, "/v1/suppressions:import?note=n", adminToken, strings.NewReader("address\nnot an address\n"))
		if r.status == http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
		if r.status != http.StatusBadRequest {
			t.Fatalf("a probe import while two are in progress: HTTP %d %s", r.status, r.body)
		}
	}
	wantError(t, "a third import at once", r.status, r.body, r.header.Get("Content-Type"), http.StatusServiceUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Error("503 to an import without Retry-After")
	}
	// The held imports end with a bad line: 400, nothing written.
	for i, s := range held {
		s.w.Write([]byte("bad line@\n"))
		s.w.Close()
		if got := <-s.done; got.status != http.StatusBadRequest {
			t.Errorf("held import %d: HTTP %d %s, want 400", i, got.status, got.body)
		}
	}
	if rows, err := e.st.Suppressions(context.Background(), store.SuppressionQuery{AllStreams: true, Now: time.Now(), Limit: 1}); err != nil || len(rows) != 0 {
		t.Errorf("after refused imports the store holds %v, %v", rows, err)
	}
	if n := e.importCSV(t, "?note=n", "address\nok@example.com\n"); n != 1 {
		t.Errorf("an import after the others ended imported %d rows, want 1", n)
	}
}
