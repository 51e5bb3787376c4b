package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/bouncer-mail/bouncer/store"
)

// errorBody is every error response: a short reason a client can show,
// never an internal error's text.
type errorBody struct {
	Error string `json:"error"`
}

// writeJSON encodes v whole before writing, so an encoding failure is
// still a clean 500. Like `bouncer classify`, it does not escape <, >
// and & (message ids are in angle brackets); the content type and nosniff
// keep browsers from reading it as HTML.
func (s *server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		s.log.ErrorContext(r.Context(), "api: encoding response", "path", r.URL.Path, "err", err)
		buf.Reset()
		buf.WriteString(`{"error":"internal error"}` + "\n")
		status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func (s *server) writeError(w http.ResponseWriter, r *http.Request, status int, reason string) {
	s.writeJSON(w, r, status, errorBody{Error: reason})
}

// storeError answers a failed store call: 503 when the store is closed or
// busy (with Retry-After) or the client gave up, 500 otherwise; the error itself goes to the log.
func (s *server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, store.ErrClosed):
		s.log.WarnContext(r.Context(), "api: store closed", "path", r.URL.Path)
		s.writeError(w, r, http.StatusServiceUnavailable, "store unavailable")
	case errors.Is(err, store.ErrBusy):
		// Overload, answered at once: a retry shortly is the remedy.
		// Not logged per request: it comes in floods.
		w.Header().Set("Retry-After", "1")
		s.writeError(w, r, http.StatusServiceUnavailable, "store busy, retry")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		s.log.DebugContext(r.Context(), "api: request canceled", "path", r.URL.Path)
		s.writeError(w, r, http.StatusServiceUnavailable, "request canceled")
	default:
		s.log.ErrorContext(r.Context(), "api: store", "path", r.URL.Path, "err", err)
		s.writeError(w, r, http.StatusInternalServerError, "internal error")
	}
}
