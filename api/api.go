// Package api serves bouncer's HTTP API (DESIGN.md "HTTP API"): recipient
// history, stats and suppressions as JSON (and CSV) under /v1/, the OpenAPI
// document that describes them, Prometheus metrics, and the liveness and
// readiness probes.
//
// The handler does no I/O of its own beyond the store; timeouts, TLS and
// listening are the caller's (cmd/bouncer's http.Server).
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/suppress"
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
	// (an admin token reads too; changing suppressions needs one). With
	// none at all, /v1/ answers loopback clients only.
	ReadTokens, AdminTokens []string
	// Normalize is how suppression addresses are keyed: the suppression
	// policy's (suppress.Policy.Normalize), so the API finds what the
	// policy stored. The zero value lower-cases only.
	Normalize suppress.Normalization
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

	norm   suppress.Normalization
	routes []string // every pattern New registered, in order

	imports chan struct{} // a slot per import in progress (maxImportsAtOnce)
	exports chan struct{} // a slot per unpaged export in progress (maxExportsAtOnce)
}

// access is what a route requires of its caller.
type access int

const (
	accessPublic access = iota // probes and metrics: no token, ever
	accessRead                 // history, stats, suppression reads: a read token
	accessAdmin                // suppression changes (PUT, DELETE, import): an admin token
)

// New returns the API handler:
//
//	GET /healthz                          200 "ok" while the process runs
//	GET /readyz                           200 when Ready and Store.Ping succeed, else 503
//	GET /metrics                          Prometheus exposition of cfg.Gatherer
//	GET /openapi.json                     the OpenAPI document of every route here
//	GET /v1/recipients/{address}/events   a recipient's events, newest first (?limit=1..1000, default 100)
//	GET /v1/recipients/{address}/history  a recipient's suppressions in force and their audit trail
//	GET /v1/stats                         reports received and events by class (?window=1m..2160h, default 24h)
//	GET /v1/suppressions                  suppressions in force, JSON or CSV, streamed, paged by cursor
//	GET /v1/suppressions/{address}        whether an address is suppressed: the check before a send
//	PUT /v1/suppressions/{address}        add a manual suppression (admin token)
//	DELETE /v1/suppressions/{address}     lift one, with a note (admin token)
//	POST /v1/suppressions:import          CSV import (admin token)
//	GET /v1/suppressions:stats            suppressions in force by source, class and stream
//
// api/openapi.json documents each route's parameters and answers. Errors
// are JSON {"error":"..."} with a short reason; internal details go to the
// log only. A wrong method is answered 405 by http.ServeMux.
func New(cfg Config) (http.Handler, error) {
	_, mux, err := newServer(cfg)
	if err != nil {
		return nil, err
	}
	return mux, nil
}

// newServer builds the handler's state and its routes; New serves the mux.
func newServer(cfg Config) (*server, *http.ServeMux, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	s := &server{store: cfg.Store, log: cfg.Logger, ready: cfg.Ready, norm: cfg.Normalize, imports: make(chan struct{}, maxImportsAtOnce), exports: make(chan struct{}, maxExportsAtOnce)}
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
		s.routes = append(s.routes, pattern)
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
	route("GET /openapi.json", accessPublic, s.openAPI)
	route("GET /v1/suppressions", accessRead, s.listSuppressions)
	route("GET /v1/suppressions/{address}", accessRead, s.addressSuppressions)
	route("PUT /v1/suppressions/{address}", accessAdmin, s.putSuppression)
	route("DELETE /v1/suppressions/{address}", accessAdmin, s.deleteSuppression)
	route("POST /v1/suppressions:import", accessAdmin, s.importSuppressions)
	route("GET /v1/suppressions:stats", accessRead, s.suppressionStats)
	route("GET /v1/recipients/{address}/history", accessRead, s.recipientHistory)
	s.webRoutes(mux)
	return s, mux, nil
}

// guard wraps a handler with the access check its route needs: public
// routes are open; read routes need a read or an admin token, admin routes
// an admin token; when no token is configured at all, a loopback client
// may do everything. The handler finds who called in actor(r).
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
			// A loopback client that asked for another host name is a
			// browser on this machine fooled by DNS rebinding into
			// sending a hostile page's requests here.
			if !loopbackHost(r.Host) {
				s.writeError(w, r, http.StatusForbidden, "no API token is configured: only requests to localhost, 127.0.0.1 or [::1] are served")
				return
			}
			h(w, r.WithContext(context.WithValue(r.Context(), actorKey{}, actorLoopback)))
			return
		}
		tok, ok := bearer(r)
		if !ok {
			tok, ok = sessionToken(r) // the web page's login cookie (web.go)
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="bouncer"`)
			s.writeError(w, r, http.StatusUnauthorized, "a bearer token is required")
			return
		}
		admin, read := matchAny(tok, s.adminTokens), matchAny(tok, s.readTokens)
		switch {
		case admin, a == accessRead && read:
		case a == accessAdmin && read:
			s.writeError(w, r, http.StatusForbidden, "this needs an admin token")
			return
		default:
			s.writeError(w, r, http.StatusForbidden, "the token does not grant this")
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), actorKey{}, tokenActor(tok))))
	})
}

// actorKey is the context key of the caller's name for the audit trail.
type actorKey struct{}

// actorLoopback names a caller served without a token (no token configured).
const actorLoopback = "loopback"

// tokenActor names a token's holder in the audit trail without revealing
// the token: "token:" and the first 8 hex digits of its SHA-256.
func tokenActor(tok []byte) string {
	sum := sha256.Sum256(tok)
	return "token:" + hex.EncodeToString(sum[:4])
}

// actor returns who made a request that passed guard.
func actor(r *http.Request) string {
	if a, ok := r.Context().Value(actorKey{}).(string); ok {
		return a
	}
	return actorLoopback
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
