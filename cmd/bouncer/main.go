// Command bouncer receives, reads and classifies the bounces of outgoing
// mail. Without a subcommand it serves everything in one process; the
// subcommands are tools over the same code:
//
//	bouncer [flags]                                  serve (listener, NATS, ingest, store, API)
//	bouncer classify [--rules FILE] [FILE|DIR|-]...
//	bouncer verp sign|verify ...
//	bouncer reclassify --since DURATION [--rules FILE] [--clickhouse-dsn DSN | --data-dir DIR] [--dry-run]
//	bouncer suppressions export|import ...           over the HTTP API (--api URL)
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
	"strings"
	"syscall"

	"github.com/bouncer-mail/bouncer/internal/memlimit"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `usage: bouncer [flags]                 run the service (bouncer -h lists the flags)
       bouncer <command> [flags] [args]

commands:
  classify [--rules FILE] [FILE|DIR|-]...   classify bounce messages, one JSON line per message
  verp sign|verify ...                      make or check a VERP return path
  reclassify --since DURATION [--dry-run]   classify stored reports again with the current rules
  suppressions export|import ...            export or import suppressions over the HTTP API
  recount-stats --clickhouse-dsn DSN        rebuild ClickHouse's Stats rollup from the stored rows
`

// run dispatches a command line and returns the process exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "--help" {
		return runServe(args, stderr)
	}
	switch args[0] {
	case "classify":
		return runClassify(args[1:], stdin, stdout, stderr)
	case "verp":
		return runVerp(args[1:], stdout, stderr)
	case "reclassify":
		return runReclassify(args[1:], stdout, stderr)
	case "suppressions":
		return runSuppressions(args[1:], stdin, stdout, stderr)
	case "recount-stats":
		return runRecountStats(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		// The service's flags, as the usage line says -h lists them.
		if _, fl, _ := parseOptions(nil, func(string) string { return "" }); fl != nil {
			fmt.Fprint(stdout, "\nflags of the service:\n")
			fl.SetOutput(stdout)
			fl.PrintDefaults()
		}
		return 0
	default:
		fmt.Fprintf(stderr, "bouncer: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// runServe runs the all-in-one service until SIGINT or SIGTERM.
func runServe(args []string, stderr io.Writer) int {
	opts, _, err := parseOptions(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "bouncer: %v\n", err)
		return 2
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(opts.LogLevel))
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	limit, source, err := memoryLimit(opts.MemoryLimit, opts.MaxInflightBytes, opts.outsideGoHeap(), os.Getenv("GOMEMLIMIT"), memlimit.CgroupMax())
	if err != nil {
		fmt.Fprintf(stderr, "bouncer: %v\n", err)
		return 2
	}
	memlimit.Apply(limit, source, log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	svc, err := Start(ctx, opts, log, newRegistry())
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	status := 0
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-svc.Err():
		log.Error("stopped", "err", err)
		status = 1
	}
	if err := svc.Stop(context.Background()); err != nil {
		log.Error("shutdown", "err", err)
		status = 1
	}
	return status
}
