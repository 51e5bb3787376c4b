package main

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
)

// countingHandler counts the pipeline's log records by level and message
// instead of printing them: under load a batch that misses its write
// timeout logs one line per report, thousands per round.
type countingHandler struct {
	mu     sync.Mutex
	counts map[string]int
	first  map[string]string // one example's attributes per message
}

func newCountingHandler() *countingHandler {
	return &countingHandler{counts: map[string]int{}, first: map[string]string{}}
}

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	key := r.Level.String() + " " + r.Message
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.counts[key] == 0 {
		var attrs string
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				attrs = a.Value.String()
			}
			return true
		})
		h.first[key] = attrs
	}
	h.counts[key]++
	return nil
}

func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// print writes one line per distinct message, most frequent first.
func (h *countingHandler) print() {
	h.mu.Lock()
	defer h.mu.Unlock()
	keys := make([]string, 0, len(h.counts))
	for k := range h.counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return h.counts[keys[i]] > h.counts[keys[j]] })
	for _, k := range keys {
		fmt.Printf("   ingest logged %d × %s (first error: %s)\n", h.counts[k], k, h.first[k])
	}
}
