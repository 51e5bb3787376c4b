package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
)

// lagMsg is one report of the paced load and what happened to it.
type lagMsg struct {
	rcpt     string // the recipient its event is stored under
	data     []byte // DATA payload: dot-stuffed, ending in CRLF . CRLF
	due      time.Time
	started  time.Time // a connection took it
	replied  time.Time // the reply to the end of DATA arrived
	reply    string
	err      error
	seen     atomic.Int64 // UnixNano of the first poll that found its event, 0 before
	apiSeen  time.Time    // the same through the HTTP API, sampled reports only
	accepted bool
}

// lagSchedule is when the paced load began (UnixNano, 0 before) and the
// interval between reports: report i is due at start + i*interval.
type lagSchedule struct {
	start    atomic.Int64
	interval time.Duration
}

type lagResult struct {
	store                string
	round, rate          int
	target, sent         int
	accepted, refused    int
	failed               int
	window               time.Duration // first due to last 250
	slip50, slip99       time.Duration // due → a connection took it
	reply50, reply99     time.Duration // DATA sent → 250
	lag50, lag95, lag99  time.Duration
	lagMax               time.Duration
	missing              int
	api50, api99, apiMax time.Duration
	apiN                 int
	cpu                  time.Duration // bouncer's CPU during the load
	clickhouseCPU        time.Duration
}

func lag(c config) error {
	stores := c.storesOr("sqlite")
	co, err := loadCorpus(c.ndrDir, "")
	if err != nil {
		return err
	}
	co = co.withEvents()
	fmt.Printf("\n== lag: bouncer loaded over SMTP at %v reports/s for %s, %d connections; reports from %d samples of %s; store polled every %s\n",
		c.rates, c.duration, c.conns, len(co.samples), c.ndrDir, c.poll)
	if c.bouncer == "" {
		c.bouncer = filepath.Join(c.workDir, "bouncer")
		fmt.Println("building ./cmd/bouncer ...")
		cmd := exec.Command("go", "build", "-o", c.bouncer, "./cmd/bouncer")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/bouncer (run from the repository root): %w", err)
		}
	}
	var results []lagResult
	for r := 0; r < c.rounds; r++ {
		for _, rate := range c.rates {
			for _, st := range stores {
				co.prefix = runPrefix() + st[:1] + fmt.Sprint(r)
				res, err := lagRun(c, co, st, rate, r)
				if err != nil {
					return fmt.Errorf("%s round %d: %w", st, r+1, err)
				}
				results = append(results, res)
				fmt.Printf("round %d %-10s %d/s: %d accepted at %.0f/s, lag p50 %s p99 %s, %d not queryable (load %s)\n", r+1, st, rate,
					res.accepted, perSec(res.accepted, res.window), ms(res.lag50), ms(res.lag99), res.missing, loadAvg())
			}
		}
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "\nstore\tround\ttarget/s\t250s\trefused\tfailed\tachieved/s\tslip p99\t250 p50\t250 p99\tlag p50\tlag p95\tlag p99\tlag max\tnot found\tAPI lag p50\tAPI p99 (n)\tbouncer CPU\t\n")
	for _, r := range results {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s (%d)\t%.0f%%\t\n", r.store, r.round, r.rate,
			r.accepted, r.refused, r.failed, perSec(r.accepted, r.window), ms(r.slip99), ms(r.reply50), ms(r.reply99),
			ms(r.lag50), ms(r.lag95), ms(r.lag99), ms(r.lagMax), r.missing, ms(r.api50), ms(r.api99), r.apiN,
			100*r.cpu.Seconds()/r.window.Seconds())
	}
	w.Flush()
	fmt.Println("lag: the 250 to the end of DATA → the first store poll that finds the report's event (resolution: -poll);")
	fmt.Println("slip: how late a connection took a report against the schedule; goal: p99 lag < 2 s at 1,000/s")
	return nil
}

func lagRun(c config, co *corpus, kind string, rate, round int) (lagResult, error) {
	res := lagResult{store: kind, round: round + 1, rate: rate, target: int(float64(rate) * c.duration.Seconds())}
	dir := filepath.Join(c.workDir, fmt.Sprintf("lag-%s-%d-%d", kind, rate, round+1))
	var (
		chs   *chServer
		chDSN string
		err   error
	)
	if kind == "clickhouse" {
		if chs, err = startClickHouse(dir + "-clickhouse"); err != nil {
			return res, err
		}
		defer chs.Stop()
		chDSN = chs.DSN("bench_lag")
	}
	bouncerDSN := chDSN
	if bouncerDSN != "" {
		// log_queries: the statements bouncer sends, for the breakdown
		// after the run.
		bouncerDSN += "&log_queries=1"
	}
	b, err := startBouncer(c.bouncer, dir, bouncerDSN)
	if err != nil {
		return res, err
	}
	defer b.stop()

	msgs := make([]*lagMsg, res.target)
	want := make(map[string]*lagMsg, len(msgs))
	for i := range msgs {
		r := co.report(i)
		m := &lagMsg{rcpt: r.rcpts[0], data: dotStuff(r.raw)}
		msgs[i] = m
		want[m.rcpt] = m
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	interval := time.Second / time.Duration(rate)
	sched := lagSchedule{interval: interval}
	var pollWG sync.WaitGroup
	var pollErr error
	pollWG.Go(func() {
		switch kind {
		case "sqlite":
			pollErr = pollSQLite(ctx, filepath.Join(dir, "bouncer.db"), c.poll, want)
		case "clickhouse":
			pollErr = pollClickHouse(ctx, chDSN, c.poll, want, msgs, &sched)
		}
	})

	var apiWG sync.WaitGroup
	jobs := make(chan int, len(msgs))
	var workers sync.WaitGroup
	cpu0 := procCPU(b.cmd.Process.Pid)
	var srv0 time.Duration
	if chs != nil {
		srv0 = chs.cpu()
	}
	start := time.Now()
	sched.start.Store(start.UnixNano())
	for w := range c.conns {
		workers.Go(func() {
			cl := &smtpClient{addr: b.smtpAddr, helo: fmt.Sprintf("w%d.bench.example.net", w)}
			defer cl.close()
			for i := range jobs {
				m := msgs[i]
				m.started = time.Now()
				m.reply, m.err = cl.send(fmt.Sprintf("bounce+%d@%s", i, bounceDomain), m.data)
				m.replied = time.Now()
				if m.err != nil {
					cl.close()
					continue
				}
				if strings.HasPrefix(m.reply, "250") {
					m.accepted = true
					if c.apiSample > 0 && i%c.apiSample == 0 {
						apiWG.Go(func() { m.apiSeen = pollAPI(ctx, b.httpAddr, m.rcpt, c.apiPoll, c.drainWait) })
					}
				}
			}
		})
	}
	for i, m := range msgs {
		m.due = start.Add(time.Duration(i) * interval)
		if d := time.Until(m.due); d > 0 {
			time.Sleep(d)
		}
		jobs <- i
	}
	close(jobs)
	workers.Wait()
	res.cpu = procCPU(b.cmd.Process.Pid) - cpu0
	if chs != nil {
		res.clickhouseCPU = chs.cpu() - srv0
	}

	// Wait for the last events.
	deadline := time.Now().Add(c.drainWait)
	for time.Now().Before(deadline) {
		n := 0
		for _, m := range msgs {
			if m.accepted && m.seen.Load() == 0 {
				n++
			}
		}
		if n == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	pollWG.Wait()
	apiWG.Wait()
	if pollErr != nil {
		return res, pollErr
	}
	if chs != nil {
		if err := printStatements(chs, start); err != nil {
			return res, err
		}
	}

	var slips, replies, lags, apiLags []time.Duration
	var last time.Time
	for _, m := range msgs {
		res.sent++
		switch {
		case m.err != nil:
			res.failed++
			continue
		case !m.accepted:
			res.refused++
			continue
		}
		res.accepted++
		if m.replied.After(last) {
			last = m.replied
		}
		slips = append(slips, m.started.Sub(m.due))
		replies = append(replies, m.replied.Sub(m.started))
		seen := m.seen.Load()
		if seen == 0 {
			res.missing++
			continue
		}
		lags = append(lags, time.Unix(0, seen).Sub(m.replied))
		if !m.apiSeen.IsZero() {
			apiLags = append(apiLags, m.apiSeen.Sub(m.replied))
		}
	}
	res.window = last.Sub(start)
	for _, d := range [][]time.Duration{slips, replies, lags, apiLags} {
		sortDurations(d)
	}
	res.slip50, res.slip99 = percentile(slips, 0.5), percentile(slips, 0.99)
	res.reply50, res.reply99 = percentile(replies, 0.5), percentile(replies, 0.99)
	res.lag50, res.lag95, res.lag99 = percentile(lags, 0.5), percentile(lags, 0.95), percentile(lags, 0.99)
	res.lagMax = percentile(lags, 1)
	res.api50, res.api99, res.apiMax, res.apiN = percentile(apiLags, 0.5), percentile(apiLags, 0.99), percentile(apiLags, 1), len(apiLags)
	if res.failed > 0 || res.refused > 0 {
		for _, m := range msgs {
			if m.err != nil || !m.accepted {
				fmt.Printf("   first failure: reply %q, error %v\n", m.reply, m.err)
				break
			}
		}
	}
	return res, nil
}

// pollSQLite reads the events bouncer's SQLite store committed, by rowid,
// every interval, and stamps each wanted recipient with the start of the
// first poll that found it.
func pollSQLite(ctx context.Context, path string, every time.Duration, want map[string]*lagMsg) error {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var lastRowid int64
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		at := time.Now().UnixNano()
		rows, err := db.QueryContext(ctx, "SELECT rowid, recipient FROM events WHERE rowid > ? ORDER BY rowid", lastRowid)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("polling %s: %w", path, err)
		}
		for rows.Next() {
			var rcpt string
			if err := rows.Scan(&lastRowid, &rcpt); err != nil {
				rows.Close()
				return err
			}
			if m := want[rcpt]; m != nil {
				m.seen.CompareAndSwap(0, at)
			}
		}
		rows.Close()
	}
}

// pollClickHouse does what pollSQLite does on a ClickHouse store: the
// recipients of every event received since the load began.
func pollClickHouse(ctx context.Context, dsn string, every time.Duration, want map[string]*lagMsg, msgs []*lagMsg, sched *lagSchedule) error {
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		return err
	}
	conn, err := ch.Open(opts)
	if err != nil {
		return err
	}
	defer conn.Close()
	since := uint32(time.Now().Add(-time.Minute).Unix())
	first := 0 // msgs before it were found
	var failingSince time.Time
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// Only the window that can hold a report not found yet: from the
		// due time of the first one not found (its event's time, the
		// listener's receipt, is after it), less two seconds for clock
		// granularity. Reading every event since the start, 50 times a
		// second, cost ClickHouse more CPU than ingest's own statements
		// as the table grew, and measured the poller.
		for first < len(msgs) && msgs[first].seen.Load() != 0 {
			first++
		}
		if st := sched.start.Load(); st != 0 && first < len(msgs) {
			due := time.Unix(0, st).Add(time.Duration(first) * sched.interval)
			since = max(since, uint32(due.Add(-2*time.Second).Unix()))
		}
		at := time.Now().UnixNano()
		rows, err := conn.Query(ctx, "SELECT recipient FROM events WHERE time >= toDateTime(?)", since)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// A poll that fails is retried (the pool reconnects); only a
			// server gone for good ends the run.
			if failingSince.IsZero() {
				failingSince = time.Now()
				fmt.Printf("   polling ClickHouse failed, retrying: %v\n", err)
			}
			if time.Since(failingSince) > 30*time.Second {
				return fmt.Errorf("polling ClickHouse: %w", err)
			}
			continue
		}
		failingSince = time.Time{}
		for rows.Next() {
			var rcpt string
			if err := rows.Scan(&rcpt); err != nil {
				rows.Close()
				return err
			}
			if m := want[rcpt]; m != nil {
				m.seen.CompareAndSwap(0, at)
			}
		}
		rows.Close()
	}
}

// pollAPI asks GET /v1/recipients/{rcpt}/events every interval until it
// lists an event, and returns when the first such request was sent;
// zero when none did within timeout.
func pollAPI(ctx context.Context, httpAddr, rcpt string, every, timeout time.Duration) time.Time {
	u := "http://" + httpAddr + "/v1/recipients/" + url.PathEscape(rcpt) + "/events?limit=1"
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		at := time.Now()
		resp, err := http.Get(u)
		if err == nil {
			var body struct {
				Events []json.RawMessage `json:"events"`
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err == nil && len(body.Events) > 0 {
				return at
			}
		}
		time.Sleep(every)
	}
	return time.Time{}
}

// dotStuff makes raw (CRLF lines) a DATA payload: a dot doubled at the
// start of a line, and the end-of-data line.
func dotStuff(raw []byte) []byte {
	var b bytes.Buffer
	if bytes.HasPrefix(raw, []byte(".")) {
		b.WriteByte('.')
	}
	b.Write(bytes.ReplaceAll(raw, []byte("\r\n."), []byte("\r\n..")))
	if !bytes.HasSuffix(raw, []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// smtpClient is a minimal SMTP client that keeps its connection across
// messages (a new MAIL after each reply) and reconnects after an error,
// as bench/listener's.
type smtpClient struct {
	addr, helo string
	conn       net.Conn
	r          *bufio.Reader
}

func (c *smtpClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// send delivers data (already dot-stuffed, with the end of data) from the
// null sender to rcpt and returns the reply to the end of data, or the
// first reply that was not 2xx or 3xx.
func (c *smtpClient) send(rcpt string, data []byte) (string, error) {
	if c.conn == nil {
		cn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return "", err
		}
		c.conn, c.r = cn, bufio.NewReaderSize(cn, 4096)
		c.conn.SetDeadline(time.Now().Add(30 * time.Second))
		if reply, err := readReply(c.r); err != nil || !strings.HasPrefix(reply, "220") {
			return reply, fmt.Errorf("greeting %q: %v", reply, err)
		}
		if reply, err := c.cmd("EHLO " + c.helo); err != nil || !strings.HasPrefix(reply, "250") {
			return reply, fmt.Errorf("EHLO %q: %v", reply, err)
		}
	}
	c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	for _, cmd := range []string{"MAIL FROM:<>", "RCPT TO:<" + rcpt + ">", "DATA"} {
		reply, err := c.cmd(cmd)
		if err != nil {
			return reply, err
		}
		if reply[0] != '2' && reply[0] != '3' {
			c.cmd("RSET")
			return reply, nil
		}
	}
	if _, err := c.conn.Write(data); err != nil {
		return "", err
	}
	return readReply(c.r)
}

func (c *smtpClient) cmd(line string) (string, error) {
	if _, err := fmt.Fprintf(c.conn, "%s\r\n", line); err != nil {
		return "", err
	}
	return readReply(c.r)
}

// readReply reads one SMTP reply, multi-line or not, and returns its last line.
func readReply(r *bufio.Reader) (string, error) {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return strings.TrimSpace(line), err
		}
		if len(line) < 4 || line[3] != '-' {
			return strings.TrimSpace(line), nil
		}
	}
}

// bouncerProc is a bouncer binary running as a separate process, as in
// bench/listener: its own data dir, no VERP keys (unsigned bounce
// addresses accepted), the per-IP connection limit lifted.
type bouncerProc struct {
	cmd                *exec.Cmd
	smtpAddr, httpAddr string
	exited             chan struct{}
}

func startBouncer(bin, dataDir, clickhouseDSN string) (*bouncerProc, error) {
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	b := &bouncerProc{
		smtpAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		httpAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		exited:   make(chan struct{}),
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(dataDir+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, err
	}
	args := []string{"--data-dir", dataDir, "--domain", bounceDomain, "--hostname", "bouncer.bench",
		"--smtp-addr", b.smtpAddr, "--http-addr", b.httpAddr, "--nats-listen", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"--max-connections-per-ip", "2000", "--log-level", "warn"}
	if clickhouseDSN != "" {
		args = append(args, "--clickhouse-dsn", clickhouseDSN)
	}
	b.cmd = exec.Command(bin, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BOUNCER_") {
			env = append(env, kv)
		}
	}
	b.cmd.Env = env
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		b.cmd.Wait()
		logf.Close()
		close(b.exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cn, err := net.DialTimeout("tcp", b.smtpAddr, time.Second)
		if err == nil {
			cn.SetDeadline(time.Now().Add(2 * time.Second))
			reply, _ := readReply(bufio.NewReader(cn))
			cn.Close()
			if strings.HasPrefix(reply, "220") {
				return b, nil
			}
		}
		select {
		case <-b.exited:
			return nil, fmt.Errorf("bouncer exited at start; see %s.log", dataDir)
		default:
		}
		if time.Now().After(deadline) {
			b.stop()
			return nil, fmt.Errorf("bouncer not greeting on %s after 30 s; see %s.log", b.smtpAddr, dataDir)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends bouncer with SIGTERM and waits, SIGKILL after 40 s.
func (b *bouncerProc) stop() {
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(40 * time.Second):
		b.cmd.Process.Kill()
		<-b.exited
	}
}
