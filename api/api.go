// Package api serves bouncer's HTTP API (DESIGN.md "HTTP API"): recipient
// history and stats as JSON under /v1/, Prometheus metrics, and the
// liveness and readiness probes.
//
// The handler does no I/O of its own beyond the store; timeouts, TLS and
// listening are the caller's (cmd/bouncer's http.Server).
package api

import (
	"errors"
	"log/slog"
	"net/http"
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
	route("GET /v1/stats", accessRead, s.stats)
	return mux, nil
}

// guard wraps a handler with the access check its route needs.
//
// TODO(auth): bearer tokens (DESIGN.md "HTTP API"): read and admin tokens
// from env or a file, compared in constant time; with no token configured,
// answer loopback clients only and say so in the log at start. The check
// belongs here, keyed on a, so every route already declares what it needs;
// until then every route is open, and cmd/bouncer binds the API to
// 127.0.0.1 by default.
func (s *server) guard(a access, h http.HandlerFunc) http.Handler {
	return h
}
