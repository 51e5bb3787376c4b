// Command listener measures the bouncer listener against real peers:
// Postfix's smtp-source loads both smtp-sink (a listener that stores
// nothing) and a bouncer binary (every 250 fsynced by JetStream) in the same
// run, and the tool prints both rates, their ratio, bouncer's accept
// latency and peak RSS, and checks that every report answered 250 was
// stored. Two more modes: 1,000 idle connections held open (RSS before and
// after), and kill -9 under load followed by a restart on the same data
// dir, which must have stored every report that got 250.
//
//	go run ./bench/listener                 # every mode
//	go run ./bench/listener -mode throughput -rounds 3
//
// See bench/README.md for the figures on the project's machines.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// rcpt is the recipient every load uses: a bounce domain, unsigned (the
// bouncer under test has no VERP keys, so it accepts unsigned addresses).
const (
	domain = "bounces.example.com"
	rcpt   = "rcpt@" + domain
)

type config struct {
	partitions  int    // bouncer --report-partitions, 0 for its default
	ingest      string // inprocess, worker or after (throughputRound.worker)
	ingestBin   string // bouncer-ingest, for -ingest worker and after
	bouncer     string
	mode        string
	messages    int
	sessions    int
	size        int
	rounds      int
	idleConns   int
	killAfter   time.Duration
	keep        bool
	smtpSource  string
	smtpSink    string
	workDir     string
	drainWait   time.Duration
	startupWait time.Duration
	loadTime    time.Duration // sink-harness: how long the load runs
	pipelining  bool          // sink-harness: the load pipelines MAIL, RCPT and DATA
}

func main() {
	var c config
	flag.StringVar(&c.bouncer, "bouncer", "", "bouncer `binary` to test; empty: go build ./cmd/bouncer into a temp dir")
	flag.StringVar(&c.mode, "mode", "all", "throughput, idle, kill9, sink-harness or all (the first three)")
	flag.IntVar(&c.messages, "messages", 20000, "messages per smtp-source run (-m)")
	flag.IntVar(&c.sessions, "sessions", 50, "parallel SMTP sessions (-s)")
	flag.IntVar(&c.size, "size", 8000, "message payload bytes (-l)")
	flag.IntVar(&c.rounds, "rounds", 1, "throughput rounds, smtp-sink and bouncer alternating; the median is reported")
	flag.IntVar(&c.idleConns, "idle-conns", 1000, "connections held open in the idle mode")
	flag.DurationVar(&c.killAfter, "kill-after", 4*time.Second, "load time before kill -9 in the kill9 mode")
	flag.DurationVar(&c.drainWait, "drain-wait", 90*time.Second, "how long to wait for ingest to store every accepted report")
	flag.StringVar(&c.ingest, "ingest", "inprocess", "throughput: who stores the reports: inprocess (bouncer's own ingest), worker (bouncer --ingest=false and a bouncer-ingest process beside it during the load) or after (bouncer --ingest=false, bouncer-ingest started once the load is over: the listener alone is measured)")
	flag.StringVar(&c.ingestBin, "ingest-bin", "", "bouncer-ingest `binary` for -ingest worker|after; empty: go build ./cmd/ingest into the work dir")
	flag.IntVar(&c.partitions, "partitions", 0, "bouncer's --report-partitions; 0: its default")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory (data dirs, logs)")
	flag.DurationVar(&c.loadTime, "load-time", time.Minute, "sink-harness: how long the harness's load runs against smtp-sink")
	flag.BoolVar(&c.pipelining, "pipelining", false, "sink-harness: the load pipelines MAIL, RCPT and DATA")
	flag.Parse()
	c.startupWait = 20 * time.Second
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	var err error
	if c.smtpSource, err = findPeer("smtp-source"); err != nil {
		return err
	}
	if c.smtpSink, err = findPeer("smtp-sink"); err != nil {
		return err
	}
	c.workDir, err = os.MkdirTemp("", "bouncer-bench-")
	if err != nil {
		return err
	}
	if c.keep {
		fmt.Println("work dir:", c.workDir)
	} else {
		defer os.RemoveAll(c.workDir)
	}
	if c.bouncer == "" && c.mode != "sink-harness" { // sink-harness runs no bouncer
		c.bouncer = filepath.Join(c.workDir, "bouncer")
		if err := goBuild(c.bouncer, "./cmd/bouncer"); err != nil {
			return err
		}
	}
	switch c.ingest {
	case "inprocess":
	case "worker", "after":
		if c.ingestBin == "" {
			c.ingestBin = filepath.Join(c.workDir, "bouncer-ingest")
			if err := goBuild(c.ingestBin, "./cmd/ingest"); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("-ingest %q: want inprocess, worker or after", c.ingest)
	}
	host, _ := os.Hostname()
	fmt.Printf("host %s, %d CPUs, load %s\n", host, numCPU(), loadAvg())

	modes := []string{c.mode}
	if c.mode == "all" {
		modes = []string{"throughput", "idle", "kill9"}
	}
	var failed []string
	for _, m := range modes {
		var err error
		switch m {
		case "throughput":
			err = throughput(c)
		case "idle":
			err = idle(c)
		case "kill9":
			err = kill9(c)
		case "sink-harness":
			err = sinkHarness(c)
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

// goBuild builds the package pkg (./cmd/...) into the binary out.
func goBuild(out, pkg string) error {
	fmt.Printf("building %s ...\n", pkg)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s (run from the repository root): %w", pkg, err)
	}
	return nil
}

// findPeer locates a Postfix test program, also in /usr/sbin.
func findPeer(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/" + name); err == nil {
		return "/usr/sbin/" + name, nil
	}
	return "", fmt.Errorf("%s not found: apt-get install -y postfix", name)
}

// sourceArgs is the smtp-source command line of a load on addr.
func (c config) sourceArgs(addr string) []string {
	return []string{"-l", fmt.Sprint(c.size), "-m", fmt.Sprint(c.messages), "-s", fmt.Sprint(c.sessions), "-f", "", "-t", rcpt, addr}
}

// load runs smtp-source against addr and returns how long it took. It
// exits non-zero on any reply that is not 2xx, so success means every
// message got 250. It is given 5 minutes and a millisecond a message: a
// run of a million messages at 3,000/s takes more than 5 minutes.
func (c config) load(addr string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute+time.Duration(c.messages)*time.Millisecond)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, c.smtpSource, c.sourceArgs(addr)...).CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("smtp-source %s: %v: %s", strings.Join(c.sourceArgs(addr), " "), err, strings.TrimSpace(string(out)))
	}
	return d, nil
}

// startSink starts smtp-sink on a free port; stop kills it.
func (c config) startSink() (addr string, args []string, stop func(), err error) {
	port, err := freePort()
	if err != nil {
		return "", nil, nil, err
	}
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	args = []string{addr, "1000"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...) // it refuses root otherwise
	}
	sink := exec.Command(c.smtpSink, args...)
	if err := sink.Start(); err != nil {
		return "", nil, nil, err
	}
	stop = func() {
		sink.Process.Kill()
		sink.Wait()
	}
	if err := waitSMTP(addr, 10*time.Second); err != nil {
		stop()
		return "", nil, nil, fmt.Errorf("smtp-sink: %w", err)
	}
	return addr, args, stop, nil
}

// sinkRun starts smtp-sink on a free port, loads it and stops it.
func (c config) sinkRun() (time.Duration, error) {
	addr, _, stop, err := c.startSink()
	if err != nil {
		return 0, err
	}
	defer stop()
	return c.load(addr)
}

type throughputRound struct {
	sink, bouncer time.Duration
	p50, p99      float64 // seconds, from the accept latency histogram
	hwm           int64   // kB
	rss           []int64 // kB, the highest VmRSS sampled in each fifth of the load
	cpu           time.Duration
	workerCPU     time.Duration // bouncer-ingest's, with -ingest worker
	replies250    float64
	stored        int64
	drain         time.Duration
}

func throughput(c config) error {
	fmt.Printf("\n== throughput: smtp-source %s; ingest %s\n", strings.Join(c.sourceArgs("ADDR"), " "), c.ingest)
	var rounds []throughputRound
	for r := 0; r < c.rounds; r++ {
		var tr throughputRound
		var err error
		if tr.sink, err = c.sinkRun(); err != nil {
			return err
		}
		b, err := startBouncer(c, filepath.Join(c.workDir, fmt.Sprintf("throughput-%d", r)))
		if err != nil {
			return err
		}
		var w *bouncerProc
		if c.ingest == "worker" {
			if w, err = startWorker(c, b); err != nil {
				b.stop()
				return err
			}
		}
		cpu0, wcpu0 := b.cpuTime(), w.cpuTime()
		stopRSS := b.sampleRSS(2 * time.Second)
		tr.bouncer, err = c.load(b.smtpAddr)
		tr.rss = stopRSS()
		tr.cpu, tr.workerCPU = b.cpuTime()-cpu0, w.cpuTime()-wcpu0
		if err == nil && c.ingest == "after" {
			w, err = startWorker(c, b)
		}
		if err == nil {
			err = tr.collect(c, b)
		}
		if w != nil {
			w.stop()
		}
		b.stop()
		if err != nil {
			return err
		}
		rounds = append(rounds, tr)
		fmt.Printf("round %d: smtp-sink %.0f/s, bouncer %.0f/s, stored %d/%d (ingest drained %.1fs after the load); bouncer RSS by fifths of the load %s MiB\n",
			r+1, rate(c.messages, tr.sink), rate(c.messages, tr.bouncer), tr.stored, c.messages, tr.drain.Seconds(), mib(tr.rss))
	}
	sort.Slice(rounds, func(i, j int) bool { return rounds[i].bouncer < rounds[j].bouncer })
	med := rounds[len(rounds)/2]
	sinks := make([]time.Duration, len(rounds))
	for i, r := range rounds {
		sinks[i] = r.sink
	}
	sort.Slice(sinks, func(i, j int) bool { return sinks[i] < sinks[j] })
	sinkMed := sinks[len(sinks)/2]

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nmessages %d x %d B, %d sessions, median of %d round(s)\t\n", c.messages, c.size, c.sessions, len(rounds))
	fmt.Fprintf(w, "smtp-sink messages/s\t%.0f\t\n", rate(c.messages, sinkMed))
	fmt.Fprintf(w, "bouncer messages/s (every 250 fsynced)\t%.0f\t\n", rate(c.messages, med.bouncer))
	fmt.Fprintf(w, "ratio bouncer / smtp-sink\t%.0f%%\t\n", 100*rate(c.messages, med.bouncer)/rate(c.messages, sinkMed))
	fmt.Fprintf(w, "bouncer accept latency p50 / p99\t%.1f ms / %.1f ms\t\n", med.p50*1000, med.p99*1000)
	fmt.Fprintf(w, "bouncer CPU per message\t%.0f µs\t\n", float64(med.cpu.Microseconds())/float64(c.messages))
	if c.ingest == "worker" {
		fmt.Fprintf(w, "bouncer-ingest CPU per message during the load\t%.0f µs\t\n", float64(med.workerCPU.Microseconds())/float64(c.messages))
	}
	fmt.Fprintf(w, "bouncer peak RSS (VmHWM)\t%.1f MiB\t\n", float64(med.hwm)/1024)
	fmt.Fprintf(w, "250 replies / reports stored\t%.0f / %d\t\n", med.replies250, med.stored)
	w.Flush()
	for _, r := range rounds {
		if r.replies250 != float64(c.messages) || r.stored != int64(c.messages) {
			return fmt.Errorf("a round answered %v messages 250 and stored %d, want %d and %d", r.replies250, r.stored, c.messages, c.messages)
		}
	}
	return nil
}

// collect reads a finished load's figures from bouncer and waits for
// ingest to store every message: smtp-source's messages all differ (its
// Message-Id holds its pid, the socket and a falling counter), so
// reports_received must reach the number of 250 replies.
func (tr *throughputRound) collect(c config, b *bouncerProc) error {
	m, err := b.metrics()
	if err != nil {
		return err
	}
	tr.replies250 = m.value(`bouncer_smtp_replies_total{code="250"}`)
	buckets := m.histogram("bouncer_smtp_accept_latency_seconds")
	tr.p50, tr.p99 = quantile(0.5, buckets), quantile(0.99, buckets)
	tr.hwm = b.status("VmHWM")
	start := time.Now()
	tr.stored, err = b.waitStored(int64(tr.replies250), c.drainWait)
	tr.drain = time.Since(start)
	return err
}

func rate(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

// freePort returns a TCP port free on loopback now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitSMTP waits until addr greets with 220.
func waitSMTP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 512)
			n, _ := c.Read(buf)
			c.Close()
			if n >= 3 && string(buf[:3]) == "220" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("no 220 greeting")
			}
			return fmt.Errorf("%s not ready after %s: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func numCPU() int { return runtime.NumCPU() }

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// mib formats kB figures as MiB, separated by slashes.
func mib(kb []int64) string {
	f := make([]string, len(kb))
	for i, v := range kb {
		f[i] = "-" // no sample in that fifth: a load shorter than a few samples
		if v > 0 {
			f[i] = fmt.Sprintf("%.0f", float64(v)/1024)
		}
	}
	return strings.Join(f, " / ")
}
