// Command suppressions measures the two suppression goals against a real
// bouncer binary, on SQLite and on a throwaway ClickHouse:
//
//   - check: GET /v1/suppressions/{address}, the call a sending
//     application makes before each send, as an open-loop load paced at
//     -rate requests/s for -duration, a mix of -hit-ratio suppressed
//     addresses and addresses never suppressed (interleaved with them in
//     key order, so a miss is not answered from the index's edge). Every
//     answer is checked (suppressed true for a hit, false for a miss);
//     latency runs from the request's scheduled time to the end of its
//     body, so a stall counts against every request it delays. Goal: p99
//     below 2 ms at 1,000 requests/s with 1,000,000 suppressions.
//
//   - export: curl -o FILE .../v1/suppressions?all_streams=true&format=csv,
//     every suppression in force (the unpaged export: one store read),
//     timed; every row read back and checked (each loaded key once, in
//     key order, with its stream, source and class); bouncer's peak RSS
//     (VmHWM, reset before the export) and its RSS sampled every 20 ms
//     during it. Goal: 1,000,000 rows in under 5 s with flat memory.
//
// The suppressions are loaded before bouncer starts, into its database
// (SQLite under its data dir, or the ClickHouse database its DSN names).
// -load store (the default) puts them through the store's own write
// path, PutSuppressions in batches of 50,000 rows as the import API
// does, audit trail included, then puts every 100th key again (a newer
// version: in ClickHouse a second version in another part until a merge
// collapses them). -load sql writes the same rows by bulk SQL (a
// recursive SELECT into SQLite, INSERT ... SELECT FROM numbers() into
// ClickHouse) after the store's Open made the schema: seconds instead of
// tens of seconds, no audit trail.
//
// bouncer is the real binary (go build ./cmd/bouncer, or -bouncer), run
// as its own process on free loopback ports with no API token (the API
// then answers loopback clients), and stopped with SIGTERM at the end;
// the ClickHouse is a throwaway clickhouse-server (Debian's 18.16) in the
// work dir, run as the clickhouse user and killed at the end.
//
// From the repository root:
//
//	go run ./bench/suppressions -engine sqlite -mode check
//	go run ./bench/suppressions -engine clickhouse -mode export
//	go run ./bench/suppressions                      # both engines, both modes
//
// See bench/suppressions/README.md for the figures on the project's machines.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

type config struct {
	engines      []string
	modes        []string
	bouncer      string
	suppressions int
	rate         int
	duration     time.Duration
	warmup       time.Duration
	hitRatio     float64
	rounds       int
	keep         bool
	workDir      string
	exportLimit  time.Duration
	load         string
	settle       time.Duration
	floor        int
	idleShare    float64
	idleLimit    time.Duration
	loadOffset   time.Duration
	churnEvery   time.Duration
	began        time.Time // the tool's start: its wall clock and monotonic reading
	loadNow      time.Time // the time the rows were stamped with
}

func main() {
	var c config
	engine := flag.String("engine", "all", "sqlite, clickhouse or all")
	mode := flag.String("mode", "all", "check, export or all")
	flag.StringVar(&c.bouncer, "bouncer", "", "bouncer `binary` to test; empty: go build ./cmd/bouncer into the work dir")
	flag.IntVar(&c.suppressions, "suppressions", 1_000_000, "suppressions loaded (one per address, all in force)")
	flag.StringVar(&c.load, "load", "store", "how the suppressions are loaded: store (PutSuppressions, the import API's write) or sql (bulk SQL straight into the tables, seconds)")
	flag.DurationVar(&c.settle, "settle", 0, "wait this long after bouncer is ready before the first round (ClickHouse's check filter re-reads every key written in the last minute; see README.md)")
	flag.IntVar(&c.floor, "ch-floor", 0, "clickhouse: before bouncer starts, time this many SELECT 1 and as many point reads of suppressed addresses, one at a time (0: skip)")
	flag.IntVar(&c.rate, "rate", 1000, "check: requests per second, open loop")
	flag.DurationVar(&c.duration, "duration", 30*time.Second, "check: how long the measured load runs")
	flag.DurationVar(&c.warmup, "warmup", 3*time.Second, "check: load at the same rate before the measured part, not counted")
	flag.Float64Var(&c.hitRatio, "hit-ratio", 0.1, "check: share of requests for suppressed addresses")
	flag.IntVar(&c.rounds, "rounds", 2, "times each measurement runs on the same loaded data; every round is printed")
	flag.DurationVar(&c.exportLimit, "export-timeout", 10*time.Minute, "export: give up on one export after this long")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory (databases, logs, the exported file)")
	flag.Float64Var(&c.idleShare, "wait-idle", 0, "before each round, wait until the CPUs have been this share idle (0..1) for 5 s; 0: do not wait")
	flag.DurationVar(&c.idleLimit, "wait-idle-max", 30*time.Minute, "give up waiting for -wait-idle after this long and measure anyway")
	flag.DurationVar(&c.churnEvery, "churn-every", 0, "clickhouse check: during each round, every this long, insert newer versions of a twentieth of the keys and OPTIMIZE TABLE suppressions FINAL (0: never; see churn.go)")
	flag.DurationVar(&c.loadOffset, "load-clock-offset", 0, "stamp the loaded rows as a writer whose clock is this far ahead (negative: behind) of bouncer's would")
	flag.Parse()
	switch *engine {
	case "all":
		c.engines = []string{"sqlite", "clickhouse"}
	case "sqlite", "clickhouse":
		c.engines = []string{*engine}
	default:
		fmt.Fprintf(os.Stderr, "bench: -engine %q: want sqlite, clickhouse or all\n", *engine)
		os.Exit(2)
	}
	switch *mode {
	case "all":
		c.modes = []string{"check", "export"}
	case "check", "export":
		c.modes = []string{*mode}
	default:
		fmt.Fprintf(os.Stderr, "bench: -mode %q: want check, export or all\n", *mode)
		os.Exit(2)
	}
	if c.load != "store" && c.load != "sql" {
		fmt.Fprintf(os.Stderr, "bench: -load %q: want store or sql\n", c.load)
		os.Exit(2)
	}
	if c.hitRatio < 0 || c.hitRatio > 1 || c.rate < 1 || c.rounds < 1 || c.suppressions < 1 {
		fmt.Fprintln(os.Stderr, "bench: -hit-ratio must be 0..1; -rate, -rounds and -suppressions at least 1")
		os.Exit(2)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	c.began = time.Now()
	var err error
	c.workDir, err = os.MkdirTemp("", "bouncer-bench-suppressions-")
	if err != nil {
		return err
	}
	// clickhouse-server runs as its own user and must reach its
	// directory below this one.
	if err := os.Chmod(c.workDir, 0o755); err != nil {
		return err
	}
	if c.keep {
		fmt.Println("work dir:", c.workDir)
	} else {
		defer os.RemoveAll(c.workDir)
	}
	if c.bouncer == "" {
		c.bouncer = filepath.Join(c.workDir, "bouncer")
		fmt.Println("building ./cmd/bouncer ...")
		cmd := exec.Command("go", "build", "-o", c.bouncer, "./cmd/bouncer")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/bouncer (run from the repository root): %w", err)
		}
	}
	host, _ := os.Hostname()
	fmt.Printf("host %s, %d CPUs, load %s\n", host, runtime.NumCPU(), loadAvg())

	var failed []string
	for _, engine := range c.engines {
		if err := runEngine(c, engine); err != nil {
			fmt.Printf("\n%s: FAIL: %v\n", engine, err)
			failed = append(failed, engine)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// runEngine loads the suppressions into a fresh database of engine,
// starts bouncer on it and runs every mode, -rounds times each.
func runEngine(c config, engine string) error {
	dir := filepath.Join(c.workDir, engine)
	dataDir := filepath.Join(dir, "data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return err
	}
	var dsn string
	chPid := 0
	if engine == "clickhouse" {
		srv, err := startClickHouse(filepath.Join(dir, "clickhouse"))
		if err != nil {
			return err
		}
		defer srv.Stop()
		dsn, chPid = srv.DSN("bench"), srv.PID()
	}
	fmt.Printf("\n== %s: loading %d suppressions (-load %s)\n", engine, c.suppressions, c.load)
	start := time.Now()
	c.loadNow = start.Add(c.loadOffset)
	if c.loadOffset != 0 {
		fmt.Printf("the rows stamped %s off the clock (-load-clock-offset)\n", c.loadOffset)
	}
	printClockStep(c.began, "at the load")
	var err error
	switch {
	case c.load == "store":
		err = loadStore(engine, filepath.Join(dataDir, "bouncer.db"), dsn, c.suppressions, c.loadNow)
	case engine == "clickhouse":
		err = loadClickHouse(dsn, c.suppressions, c.loadNow)
	default:
		err = loadSQLite(filepath.Join(dataDir, "bouncer.db"), c.suppressions, c.loadNow)
	}
	if err != nil {
		return fmt.Errorf("loading: %w", err)
	}
	loaded := time.Now()
	fmt.Printf("loaded in %.1f s\n", loaded.Sub(start).Seconds())
	if engine == "clickhouse" && c.floor > 0 {
		if err := chFloor(dsn, c.suppressions, c.floor); err != nil {
			return fmt.Errorf("floor: %w", err)
		}
	}

	b, err := startBouncer(c.bouncer, dataDir, dsn)
	if err != nil {
		return err
	}
	defer b.stop()
	fmt.Printf("bouncer ready %.1f s after start, RSS %.1f MiB\n", b.readyAfter.Seconds(), float64(b.status("VmRSS"))/1024)
	if c.settle > 0 {
		fmt.Printf("settling for %s\n", c.settle)
		time.Sleep(c.settle)
	}
	var failed []string
	for _, mode := range c.modes {
		for r := 1; r <= c.rounds; r++ {
			waitIdle(c.idleShare, c.idleLimit)
			fmt.Printf("\n-- %s %s, round %d of %d (load %s; %.0f s after the load ended)\n",
				engine, mode, r, c.rounds, loadAvg(), time.Since(loaded).Seconds())
			printClockStep(c.began, "at the round's start")
			var err error
			switch mode {
			case "check":
				err = checkChurning(c, b, chPid, dsn)
			case "export":
				err = export(c, b, filepath.Join(dir, fmt.Sprintf("export-%d.csv", r)))
			}
			printClockStep(c.began, "at the round's end")
			if err != nil {
				fmt.Printf("FAIL: %v\n", err)
				failed = append(failed, fmt.Sprintf("%s round %d", mode, r))
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed: %s (bouncer's log: %s)", strings.Join(failed, ", "), b.log)
	}
	return nil
}

// freePort returns a TCP port free on loopback now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// clockStep is how far the host's wall clock has been stepped since
// ref (settimeofday, an NTP step): the wall time elapsed less the
// monotonic time elapsed. The answers are judged against the wall clock,
// bouncer's and the load's (since, until), so a step moves the truth.
func clockStep(ref time.Time) time.Duration {
	return time.Now().Round(0).Sub(ref.Round(0)) - time.Since(ref)
}

// printClockStep says so when the host's clock has been stepped by more
// than a second since ref.
func printClockStep(ref time.Time, when string) {
	if d := clockStep(ref); d > time.Second || d < -time.Second {
		fmt.Printf("NOTE: the host's wall clock is %s off the monotonic clock since the tool started (%s): it was stepped\n", d.Round(time.Millisecond), when)
	}
}

// checkChurning is check, with churn running beside it on ClickHouse
// when -churn-every asks for it.
func checkChurning(c config, b *bouncerProc, chPid int, dsn string) error {
	if c.churnEvery <= 0 || dsn == "" {
		return check(c, b, chPid)
	}
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		parts, merges int
		err           error
	}
	done := make(chan result, 1)
	go func() {
		p, m, err := churn(ctx, dsn, c.churnEvery)
		done <- result{p, m, err}
	}()
	err := check(c, b, chPid)
	cancel()
	r := <-done
	fmt.Printf("churn: %d parts of newer versions and %d OPTIMIZE FINAL during the round (warm-up included)\n", r.parts, r.merges)
	if r.err != nil {
		fmt.Printf("churn: %v\n", r.err)
		if err == nil {
			err = r.err
		}
	}
	return err
}
