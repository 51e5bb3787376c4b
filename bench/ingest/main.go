// Command ingest measures the three goals of the ingest and store work
// against real peers:
//
//   - throughput: unique reports made from testdata/ndr/*.eml are
//     published to an embedded JetStream, then ingest.Pipeline drains them
//     into a store (SQLite, a throwaway ClickHouse, or both); in the same
//     run the very rows the pipeline stored are bulk-loaded into a fresh
//     database by the engine's own fastest path (clickhouse-client with
//     TabSeparated, or one SQLite transaction with a prepared statement),
//     and the tool prints both rates and their ratio. Goal: ingest at
//     least 50% of the engine's rate.
//
//   - lag: a bouncer binary is loaded over SMTP at a paced rate with
//     unique reports of known recipients; every 250 is timed, and the
//     store is polled to find when each report's event became queryable.
//     Goal: p99 below 2 s at 1,000 reports/s.
//
//   - query: 10 million generated events in a throwaway ClickHouse with
//     the project's schema; the store's own queries (recipient history,
//     Stats) timed for random recipients and windows, with the rows and
//     bytes each read from system.query_log. Goal: below 100 ms.
//
// From the repository root:
//
//	go run ./bench/ingest -mode throughput
//	go run ./bench/ingest -mode lag -rate 1000 -duration 30s
//	go run ./bench/ingest -mode query -events 10000000
//
// See bench/README.md for the figures on the project's machines.
package main

import (
	"flag"
	"fmt"
	"github.com/bouncer-mail/bouncer/broker"
	"math"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

type config struct {
	batch      int // throughput: ingest.Config.BatchSize, 0 for the default
	partitions int // throughput: reports partitions
	mode       string
	stores     []string // "sqlite", "clickhouse"
	rounds     int
	keep       bool
	workDir    string
	ndrDir     string

	// throughput
	reports   int
	chReports int

	// lag
	bouncer   string
	rates     []int
	duration  time.Duration
	conns     int
	poll      time.Duration
	apiSample int
	apiPoll   time.Duration
	drainWait time.Duration

	// query
	events     int
	addresses  int
	days       int
	iterations int
	chFormat   string
	skipFix    bool
	cpuProfile string
	chAddr     string
	reuse      bool
}

func main() {
	var c config
	var stores string
	flag.StringVar(&c.mode, "mode", "all", "throughput, lag, query or all")
	flag.StringVar(&stores, "store", "", "sqlite, clickhouse or both (default: both for throughput, sqlite for lag)")
	flag.IntVar(&c.rounds, "rounds", 2, "times each measurement runs; every round is printed")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory (databases, logs)")
	flag.StringVar(&c.ndrDir, "ndr", "testdata/ndr", "`directory` of the NDR samples (*.eml) the reports are made from")
	flag.IntVar(&c.reports, "reports", 20000, "throughput: reports published, then ingested, on SQLite")
	flag.IntVar(&c.chReports, "ch-reports", 2000, "throughput: the same on ClickHouse (a smaller default: its bulk load and throwaway server take longer)")
	flag.IntVar(&c.batch, "batch", 0, "throughput: ingest's BatchSize (0: its default for the store, 8,000)")
	flag.IntVar(&c.partitions, "partitions", broker.DefaultReportPartitions, "throughput: reports partitions the backlog is published over, as the listener does")
	flag.StringVar(&c.chFormat, "ch-format", "TabSeparated", "throughput: clickhouse-client's bulk format, TabSeparated or Native")
	flag.StringVar(&c.bouncer, "bouncer", "", "lag: bouncer `binary`; empty: go build ./cmd/bouncer into the work dir")
	rates := flag.String("rate", "1000", "lag: reports per second sent over SMTP; a comma-separated list runs each")
	flag.DurationVar(&c.duration, "duration", 30*time.Second, "lag: how long the paced load runs")
	flag.IntVar(&c.conns, "conns", 50, "lag: SMTP connections, each kept open across messages")
	flag.DurationVar(&c.poll, "poll", 20*time.Millisecond, "lag: interval of the store polls (the lag's resolution)")
	flag.DurationVar(&c.apiPoll, "api-poll", 250*time.Millisecond, "lag: interval of each sampled report's API poll (at 20ms, a hundred sampled reports in a backlog each asked 50 times a second, which on ClickHouse cost more than ingest)")
	flag.IntVar(&c.apiSample, "api-sample", 200, "lag: also poll GET /v1/recipients/{address}/events for 1 report in this many (0: never)")
	flag.DurationVar(&c.drainWait, "drain-wait", 2*time.Minute, "lag: how long to wait after the load for the last events")
	flag.IntVar(&c.events, "events", 10_000_000, "query: events generated")
	flag.IntVar(&c.addresses, "addresses", 1_000_000, "query: distinct recipients among them")
	flag.IntVar(&c.days, "days", 30, "query: days the events are spread over, ending now")
	flag.IntVar(&c.iterations, "iterations", 200, "query: runs of each query")
	flag.BoolVar(&c.skipFix, "no-fix", false, "query: skip the alternative layouts measured after the project's own")
	flag.StringVar(&c.chAddr, "clickhouse", "", "query: `host:port` (native) of a running ClickHouse to use instead of a throwaway one")
	flag.BoolVar(&c.reuse, "reuse", false, "query: keep the events already generated in -clickhouse's "+queryDB+" database")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "throughput: write a CPU profile of the last drain to `file`")
	flag.Parse()
	for _, f := range strings.Split(*rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: -rate %q: want positive numbers\n", *rates)
			os.Exit(2)
		}
		c.rates = append(c.rates, n)
	}
	switch stores {
	case "":
	case "both":
		c.stores = []string{"sqlite", "clickhouse"}
	case "sqlite", "clickhouse":
		c.stores = []string{stores}
	default:
		fmt.Fprintf(os.Stderr, "bench: -store %q: want sqlite, clickhouse or both\n", stores)
		os.Exit(2)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	var err error
	c.workDir, err = os.MkdirTemp("", "bouncer-bench-ingest-")
	if err != nil {
		return err
	}
	// The ClickHouse server runs as the clickhouse user and needs to
	// reach its directory below this one.
	if err := os.Chmod(c.workDir, 0o755); err != nil {
		return err
	}
	if c.keep {
		fmt.Println("work dir:", c.workDir)
	} else {
		defer os.RemoveAll(c.workDir)
	}
	host, _ := os.Hostname()
	fmt.Printf("host %s, %d CPUs, load %s, %s\n", host, runtime.NumCPU(), loadAvg(), runtime.Version())

	modes := []string{c.mode}
	if c.mode == "all" {
		modes = []string{"throughput", "lag", "query"}
	}
	var failed []string
	for _, m := range modes {
		var err error
		switch m {
		case "throughput":
			err = throughput(c)
		case "lag":
			err = lag(c)
		case "query":
			err = queries(c)
		default:
			return fmt.Errorf("unknown -mode %q", m)
		}
		if err != nil {
			fmt.Printf("\n%s: FAIL: %v\n", m, err)
			failed = append(failed, m)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// storesOr is c.stores, or def when -store was not given.
func (c config) storesOr(def ...string) []string {
	if len(c.stores) > 0 {
		return c.stores
	}
	return def
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

// percentile is the q-quantile (0..1) of sorted, by the nearest rank.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func sortDurations(d []time.Duration) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// perSec is n per d.
func perSec(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }
