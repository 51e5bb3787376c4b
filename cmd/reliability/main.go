// Command reliability runs bouncer's end-to-end fault scenarios (package
// reliability) against real processes — the bouncer and bouncer-ingest
// binaries built from this checkout, Postfix, ClickHouse — and prints for
// each what was sent, acknowledged, temp-failed, stored, lost and
// duplicated. It exits 1 when a report answered 250 was lost or stored
// twice, or a scenario could not run.
//
//	go run ./cmd/reliability -scenario all -short   # CI-sized, about 2 minutes
//	go run ./cmd/reliability -scenario kill9,disk-full -load 30s -fault 20s
//
// Run it as root from the repository (Postfix instances and the tmpfs of
// the disk-full scenario need root). docs/reliability.md holds the
// figures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bouncer-mail/bouncer/reliability"
)

func main() {
	os.Exit(run())
}

func run() int {
	short := flag.Bool("short", false, "CI-sized runs: a few seconds of load and 300 Postfix messages per scenario")
	scenarios := flag.String("scenario", "all", "comma-separated scenarios, or all: "+names())
	c := reliability.DefaultConfig()
	if hasShort(os.Args[1:]) {
		c = reliability.ShortConfig()
	}
	flag.IntVar(&c.Sessions, "sessions", c.Sessions, "parallel SMTP sessions of the load")
	flag.IntVar(&c.Size, "size", c.Size, "bytes per report, about")
	flag.Float64Var(&c.Rate, "rate", c.Rate, "new reports per second over all sessions; 0: as fast as answered")
	flag.DurationVar(&c.Load, "load", c.Load, "load before the fault; the soaks: all of their load")
	flag.DurationVar(&c.Fault, "fault", c.Fault, "how long the fault lasts")
	flag.DurationVar(&c.After, "after", c.After, "load after the recovery")
	flag.IntVar(&c.Messages, "messages", c.Messages, "messages relayed through Postfix in the postfix scenarios")
	flag.DurationVar(&c.DrainWait, "drain-wait", c.DrainWait, "bound on waiting for resends, Postfix's queue and ingest")
	flag.DurationVar(&c.RecoverWait, "recover-wait", c.RecoverWait, "disk-full: how long to wait for 250s after space is freed before restarting bouncer")
	flag.DurationVar(&c.FaultEvery, "fault-every", c.FaultEvery, "soak-faults: load between two faults (0: a quarter of -load)")
	flag.IntVar(&c.Attack, "attack", c.Attack, "connections of the slowloris scenario")
	flag.StringVar(&c.DiskSize, "disk-size", c.DiskSize, "size of the disk-full scenario's tmpfs (mount -o size=)")
	flag.BoolVar(&c.Pipelining, "pipelining", c.Pipelining, "the load's senders pipeline MAIL, RCPT and DATA (RFC 2920), as MTAs do")
	bouncerBin := flag.String("bouncer", "", "bouncer `binary` to test instead of ./cmd/bouncer built from this checkout")
	ingestBin := flag.String("ingest", "", "bouncer-ingest `binary` to test instead of ./cmd/ingest built from this checkout")
	keep := flag.Bool("keep", false, "keep the work directory (data dirs, logs, Postfix configs)")
	markdown := flag.Bool("markdown", false, "also print docs/reliability.md table rows")
	flag.Parse()
	_ = short

	var list []reliability.Scenario
	if *scenarios == "all" {
		list = reliability.Scenarios
	} else {
		for _, n := range strings.Split(*scenarios, ",") {
			s, ok := reliability.Lookup(strings.TrimSpace(n))
			if !ok {
				fmt.Fprintf(os.Stderr, "reliability: unknown scenario %q; known: %s\n", n, names())
				return 2
			}
			list = append(list, s)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "bouncer-reliability-")
	if err == nil {
		err = os.Chmod(dir, 0o755) // Postfix and ClickHouse run as their own users below it
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		return 1
	}
	root, err := reliability.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		return 1
	}
	fmt.Println("building ./cmd/bouncer, ./cmd/ingest and nats-server ...")
	bin, err := reliability.Build(ctx, root, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		return 1
	}
	bin.Bouncer, bin.Ingest = orDefault(*bouncerBin, bin.Bouncer), orDefault(*ingestBin, bin.Ingest)
	e := &reliability.Env{Dir: dir, Binaries: bin, Out: os.Stdout}
	host, _ := os.Hostname()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("host %s, load %s, config %+v\nwork dir %s\n", host, strings.Join(strings.Fields(string(load))[:3], " "), c, dir)

	var results []reliability.Result
	var errs []error
	failed := false
	for _, s := range list {
		fmt.Printf("\n== %s: %s\n", s.Name, s.Injected)
		start := time.Now()
		r, err := s.Run(ctx, e, c)
		if err == nil {
			err = r.Err()
		}
		if r.Scenario == "" {
			r.Scenario = s.Name
		}
		if err != nil {
			failed = true
			if errors.Is(err, reliability.ErrPeerMissing) || errors.Is(err, reliability.ErrNeedsRoot) {
				err = fmt.Errorf("not run: %w", err)
			}
		}
		fmt.Printf("%s: %s in %.1fs\n", s.Name, verdict(err), time.Since(start).Seconds())
		results = append(results, r)
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	fmt.Println()
	reliability.WriteTable(os.Stdout, results, errs)
	if *markdown {
		fmt.Println()
		for _, r := range results {
			fmt.Println(reliability.MarkdownRow(r, command(r.Scenario)))
		}
	}
	if *keep || failed {
		fmt.Printf("\nwork dir kept: %s (logs: %s)\n", dir, filepath.Join(dir, "*.log"))
	} else {
		os.RemoveAll(dir)
	}
	if failed {
		return 1
	}
	return 0
}

// command is the command line that reproduces one scenario of this run:
// the flags given, with -scenario naming it and without -markdown and -keep.
func command(scenario string) string {
	args := []string{"go", "run", "./cmd/reliability", "-scenario", scenario}
	flag.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "scenario", "markdown", "keep", "bouncer", "ingest":
		case "short":
			args = append(args, "-short")
		default:
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				// "-pipelining true" would end the flags at "true".
				args = append(args, "-"+f.Name+"="+f.Value.String())
				break
			}
			args = append(args, "-"+f.Name, f.Value.String())
		}
	})
	return strings.Join(args, " ")
}

// hasShort tells whether -short is among args, before flag parsing: it
// picks the defaults the other flags then override.
func hasShort(args []string) bool {
	for _, a := range args {
		if a == "-short" || a == "--short" || a == "-short=true" || a == "--short=true" {
			return true
		}
	}
	return false
}

func names() string {
	var n []string
	for _, s := range reliability.Scenarios {
		n = append(n, s.Name)
	}
	return strings.Join(n, ", ")
}

func orDefault(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

func verdict(err error) string {
	if err != nil {
		return "FAIL: " + err.Error()
	}
	return "ok"
}
