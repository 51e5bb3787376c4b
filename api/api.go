// Package api serves bouncer's HTTP API (DESIGN.md "HTTP API"): recipient
// history and stats as JSON under /v1/, Prometheus metrics, and the
// liveness and readiness probes.
//
// The handler does no I/O of its own beyond the store; timeouts, TLS and
// listening are the caller's (cmd/bouncer's http.Server).
package api

import (
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bouncer-mail/bouncer/store"
)

// Config configures the API handler.
type Config struct {
	Store    store.Store
	Logger   *slog.Logger
	Gatherer prometheus.Gatherer // served on /metrics
	// Ready reports whether the process is ready for traffic beyond the
	// store (NATS connected, listener bound, ...); nil means always.
	Ready func() error
	// ReadTokens and AdminTokens are the bearer tokens accepted on /v1/
	// (an admin token reads too). With none at all, /v1/ answers loopback
	// clients only.
	ReadTokens, AdminTokens []string
}

// Validate reports the first missing field.
func (c Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("api: Config.Store is required")
	case c.Logger == nil:
		return errors.New("api: Config.Logger is required")
	case c.Gatherer == nil:
		return errors.New("api: Config.Gatherer is required")
	}
	return nil
}

// server holds what the handlers share.
type server struct {
	store  store.Store
	log    *slog.Logger
	ready  func() error
	readyM sync.Mutex
	unfit  string // the last readiness failure logged, "" when ready

	readTokens, adminTokens [][]byte
}

// access is what a route requires of its caller.
type access int

const (
	accessPublic access = iota // probes and metrics: no token, ever
	accessRead                 // history and stats: a read token
	// accessAdmin comes with suppressions: PUT, DELETE, import.
)

// New returns the API handler:
//
//	GET /healthz                          200 "ok" while the process runs
//	GET /readyz                           200 when Ready and Store.Ping succeed, else 503
//	GET /metrics                          Prometheus exposition of cfg.Gatherer
//	GET /v1/recipients/{address}/events   a recipient's events, newest first (?limit=1..1000, default 100)
//	GET /v1/stats                         reports received and events by class (?window=1m..2160h, default 24h)
//
// Errors are JSON {"error":"..."} with a short reason; internal details go
// to the log only. A wrong method is answered 405 by http.ServeMux.
func New(cfg Config) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &server{store: cfg.Store, log: cfg.Logger, ready: cfg.Ready}
	for _, t := range cfg.ReadTokens {
		if t = strings.TrimSpace(t); t != "" {
			s.readTokens = append(s.readTokens, []byte(t))
		}
	}
	for _, t := range cfg.AdminTokens {
		if t = strings.TrimSpace(t); t != "" {
			s.adminTokens = append(s.adminTokens, []byte(t))
		}
	}
	if len(s.readTokens)+len(s.adminTokens) == 0 {
		s.log.Warn("no API tokens configured: /v1/ answers loopback clients only")
	}
	mux := http.NewServeMux()
	route := func(pattern string, a access, h http.HandlerFunc) {
		mux.Handle(pattern, s.guard(a, h))
	}
	route("GET /healthz", accessPublic, s.healthz)
	route("GET /readyz", accessPublic, s.readyz)
	route("GET /metrics", accessPublic, promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelError),
		ErrorHandling: promhttp.ContinueOnError,
	}).ServeHTTP)
	route("GET /v1/recipients/{address}/events", accessRead, s.recipientEvents)
	route("GET /v1/recipients/{address}/outcomes", accessRead, s.recipientOutcomes)
	route("GET /v1/stats", accessRead, s.stats)
	return mux, nil
}

// guard wraps a handler with the access check its route needs: public
// routes are open; the others need a bearer token of the right kind, or,
// when no token is configured at all, a loopback client.
//
// TODO(auth): accessAdmin routes arrive with suppressions; they will need
// an admin token.
func (s *server) guard(a access, h http.HandlerFunc) http.Handler {
	if a == accessPublic {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(s.readTokens)+len(s.adminTokens) == 0 {
			if !loopback(r.RemoteAddr) {
				s.writeError(w, r, http.StatusForbidden, "no API token is configured: only loopback clients are served")
				return
			}
			h(w, r)
			return
		}
		tok, ok := bearer(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="bouncer"`)
			s.writeError(w, r, http.StatusUnauthorized, "a bearer token is required")
			return
		}
		if !matchAny(tok, s.adminTokens) && (a != accessRead || !matchAny(tok, s.readTokens)) {
			s.writeError(w, r, http.StatusForbidden, "the token does not grant this")
			return
		}
		h(w, r)
	})
}

func bearer(r *http.Request) ([]byte, bool) {
	v := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(v) <= len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return nil, false
	}
	return []byte(strings.TrimSpace(v[len(prefix):])), true
}

// matchAny compares tok with every token in constant time each, so timing
// tells nothing about how much of a token matched.
func matchAny(tok []byte, tokens [][]byte) bool {
	found := 0
	for _, t := range tokens {
		found |= subtle.ConstantTimeCompare(tok, t)
	}
	return found == 1
}

func loopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
