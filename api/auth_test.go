package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer-mail/bouncer/api"
	"github.com/bouncer-mail/bouncer/store/sqlite"
)

func authHandler(t *testing.T, read, admin []string) http.Handler {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "bouncer.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h, err := api.New(api.Config{Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Gatherer: prometheus.NewRegistry(), ReadTokens: read, AdminTokens: admin})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestAuth(t *testing.T) {
	tokens := authHandler(t, []string{"read-token-1"}, []string{"admin-token-1"})
	none := authHandler(t, nil, nil)
	tests := []struct {
		name   string
		h      http.Handler
		remote string
		path   string
		auth   string
		want   int
	}{
		{"probe needs nothing", tokens, "192.0.2.1:4000", "/healthz", "", 200},
		{"metrics need nothing", tokens, "192.0.2.1:4000", "/metrics", "", 200},
		{"no token", tokens, "127.0.0.1:4000", "/v1/stats", "", 401},
		{"wrong token", tokens, "127.0.0.1:4000", "/v1/stats", "Bearer nope", 403},
		{"token of another scheme", tokens, "127.0.0.1:4000", "/v1/stats", "Basic cmVhZC10b2tlbi0x", 401},
		{"read token", tokens, "192.0.2.1:4000", "/v1/stats", "Bearer read-token-1", 200},
		{"admin token reads", tokens, "192.0.2.1:4000", "/v1/recipients/a@example.com/events", "bearer admin-token-1", 200},
		{"prefix of a token", tokens, "127.0.0.1:4000", "/v1/stats", "Bearer read-token", 403},
		{"no tokens: loopback served", none, "127.0.0.1:4000", "/v1/stats", "", 200},
		{"no tokens: IPv6 loopback served", none, "[::1]:4000", "/v1/stats", "", 200},
		{"no tokens: remote refused", none, "192.0.2.1:4000", "/v1/stats", "", 403},
		{"no tokens: remote probes served", none, "192.0.2.1:4000", "/readyz", "", 200},
		{"no tokens: localhost by name served", none, "127.0.0.1:4000", "//localhost:8025/v1/stats", "", 200},
		// DNS rebinding: a hostile page's name resolving to 127.0.0.1.
		{"no tokens: loopback client asking for another host refused", none, "127.0.0.1:4000", "//evil.example:8025/v1/stats", "", 403},
		{"tokens: any host name with a token", tokens, "127.0.0.1:4000", "//bouncer.example.com/v1/stats", "Bearer read-token-1", 200},
	}
	for _, tt := range tests {
		target := tt.path
		if strings.HasPrefix(target, "//") {
			target = "http:" + target // the request's Host is the URL's
		} else {
			target = "http://127.0.0.1:8025" + target
		}
		r := httptest.NewRequest("GET", target, nil)
		r.RemoteAddr = tt.remote
		if tt.auth != "" {
			r.Header.Set("Authorization", tt.auth)
		}
		w := httptest.NewRecorder()
		tt.h.ServeHTTP(w, r)
		if w.Code != tt.want {
			t.Errorf("%s: GET %s from %s: %d, want %d (%s)", tt.name, tt.path, tt.remote, w.Code, tt.want, w.Body.String())
		}
		if w.Code == 401 && w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tt.name)
		}
	}
}
