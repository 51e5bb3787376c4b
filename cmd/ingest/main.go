// Command bouncer-ingest consumes raw reports and sync reply logs from NATS
// JetStream, classifies them and writes events to the store, as its own
// process for deployments that scale out (DESIGN.md "Data flow", step 2):
//
//	listeners (bouncer) ──► NATS cluster ──► ingest workers (this, M of them) ──► ClickHouse
//
// Every worker shares the durable consumer "ingest" with the others and
// with the in-process ingest of any all-in-one bouncer on the same NATS, so
// each report is stored by one of them. It never embeds NATS: --nats-url
// is required. Without --clickhouse-dsn it writes SQLite under --data-dir,
// which suits one worker only.
//
//	bouncer-ingest --nats-url nats://nats1:4222,nats://nats2:4222 --clickhouse-dsn clickhouse://ch:9000/bouncer
//
// It serves /healthz, /readyz and /metrics on --http-addr (127.0.0.1:8026).
// SIGINT or SIGTERM stops it after the batch in hand is stored and acked.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/bouncer-mail/bouncer/internal/memlimit"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

// run runs a worker until SIGINT or SIGTERM and returns the exit status.
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	opts, _, err := parseOptions(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		err = opts.Validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "bouncer-ingest: %v\n", err)
		return 2
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(opts.LogLevel))
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	limit, source, err := memoryLimit(opts.MemoryLimit, opts.outsideGoHeap(), getenv("GOMEMLIMIT"), memlimit.CgroupMax())
	if err != nil {
		fmt.Fprintf(stderr, "bouncer-ingest: %v\n", err)
		return 2
	}
	memlimit.Apply(limit, source, log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, opts, log, newRegistry()); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	return 0
}
