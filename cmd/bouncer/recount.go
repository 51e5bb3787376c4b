package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bouncer-mail/bouncer/store/clickhouse"
)

// runRecountStats is `bouncer recount-stats`: rebuild ClickHouse's
// per-second and per-minute Stats rollup from the stored rows
// (clickhouse.Store RecountStats), after writers older than migration 7
// ran against the database, or after a Write failed midway and was never
// retried (store/clickhouse doc.go, "Query plans"). SQLite keeps its
// rollup in each write's transaction and has nothing to recount.
func runRecountStats(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("recount-stats", flag.ContinueOnError)
	fl.SetOutput(stderr)
	dsn := fl.String("clickhouse-dsn", os.Getenv("BOUNCER_CLICKHOUSE_DSN"), "ClickHouse `dsn` (env BOUNCER_CLICKHOUSE_DSN); required")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: bouncer recount-stats --clickhouse-dsn DSN")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fl.NArg() > 0 {
		fl.Usage()
		return 2
	}
	if *dsn == "" {
		fmt.Fprintln(stderr, "bouncer recount-stats: --clickhouse-dsn is required: only ClickHouse's Stats rollup can be recounted (SQLite keeps its own in each write's transaction)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, err := clickhouse.Open(ctx, *dsn, clickhouse.Options{})
	if err != nil {
		fmt.Fprintf(stderr, "bouncer recount-stats: %v\n", err)
		return 1
	}
	defer st.Close()
	began := time.Now()
	if err := st.RecountStats(ctx); err != nil {
		fmt.Fprintf(stderr, "bouncer recount-stats: %v (running it again is harmless)\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Stats rollup recounted from the stored rows in %.1f s\n", time.Since(began).Seconds())
	return 0
}
