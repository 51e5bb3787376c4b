package api

import (
	"context"
	"net/http"
	"time"
)

// pingTimeout bounds the store check of /readyz, below the usual probe
// timeouts (Kubernetes: 1s by default, often raised).
const pingTimeout = 900 * time.Millisecond

// healthz answers while the process serves HTTP at all.
func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.Write([]byte("ok\n"))
}

type readyBody struct {
	Status string `json:"status"`
}

// readyz answers 200 when the process says it is ready and the store
// answers a ping, 503 with a short reason otherwise.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.ready != nil {
		if err := s.ready(); err != nil {
			s.noteReadiness(r, "not ready", err)
			s.writeError(w, r, http.StatusServiceUnavailable, "not ready")
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), pingTimeout)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.noteReadiness(r, "store unavailable", err)
		s.writeError(w, r, http.StatusServiceUnavailable, "store unavailable")
		return
	}
	s.noteReadiness(r, "", nil)
	s.writeJSON(w, r, http.StatusOK, readyBody{Status: "ready"})
}

// noteReadiness logs a change of readiness once, not on every probe. The
// body of a failed probe says only reason, so as not to show internal
// addresses to whoever probes; the log has the cause, and a new cause
// under the same reason (the store failing after NATS did) is a change.
func (s *server) noteReadiness(r *http.Request, reason string, err error) {
	state := reason
	if err != nil {
		state += ": " + err.Error()
	}
	s.readyM.Lock()
	changed := s.unfit != state
	s.unfit = state
	s.readyM.Unlock()
	if !changed {
		return
	}
	if reason == "" {
		s.log.InfoContext(r.Context(), "api: ready again")
		return
	}
	s.log.WarnContext(r.Context(), "api: not ready", "reason", reason, "err", err)
}
