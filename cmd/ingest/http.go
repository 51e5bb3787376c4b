package main

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bouncer-mail/bouncer/store"
)

// pingTimeout bounds the store check of /readyz, below the usual probe
// timeouts (api uses the same).
const pingTimeout = 900 * time.Millisecond

// newHandler serves the worker's operational endpoints and nothing else:
//
//	GET /healthz   200 while the process runs
//	GET /readyz    200 when ready() and a store ping succeed, else 503
//	GET /metrics   Prometheus exposition of g
//
// Not api.New: that also serves the read API under /v1/, with its tokens
// and its loopback rule, and a worker is no API server. The API runs in
// the listeners (cmd/bouncer), which read the same store.
func newHandler(st store.Store, ready func() error, g prometheus.Gatherer, log *slog.Logger) http.Handler {
	var (
		mu   sync.Mutex
		last = "" // the readiness failure logged last, "" when ready
	)
	note := func(reason string, err error) {
		// A new cause under the same reason is a change too: the body
		// says only the reason, the log is where the cause shows.
		state := reason
		if err != nil {
			state += ": " + err.Error()
		}
		mu.Lock()
		changed := last != state
		last = state
		mu.Unlock()
		switch {
		case !changed:
		case reason == "":
			log.Info("ready again")
		default:
			log.Warn("not ready", "reason", reason, "err", err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if err := ready(); err != nil {
			note("ingest", err)
			http.Error(w, "not ready: ingest", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), pingTimeout)
		defer cancel()
		if err := st.Ping(ctx); err != nil {
			note("store", err)
			http.Error(w, "not ready: store unavailable", http.StatusServiceUnavailable)
			return
		}
		note("", nil)
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelError),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	return mux
}
