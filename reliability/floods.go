package reliability

// The connection and command flood scenarios: many well-behaved senders at
// once (connections-10k), floods of harmless and of bad commands
// (command-flood), and pipelining abuse (pipelining-abuse). Each runs the
// real all-in-one bouncer with its default connection limits (1,000
// connections, 50 per address) and checks the listener's promise on every
// report answered 250, plus the reply codes the abusers get.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func init() {
	Scenarios = append(Scenarios,
		Scenario{"connections-10k", "well-behaved senders at once (default 10,000, -attack), one report each from many loopback addresses, default connection limits; refused ones retry", runConnections},
		Scenario{"command-flood", "floods of NOOP/RSET/VRFY/HELP, of MAIL before EHLO and of unknown commands under load, default connection limits", runCommandFlood},
		Scenario{"pipelining-abuse", "transactions pipelined with their bodies before the 354, many per write; 150 RCPTs per message; a refused RCPT followed by pipelined DATA and body; under load", runPipeliningAbuse},
	)
}

// floodsRSSBound is the resident set the all-in-one may reach under these
// scenarios, in KiB: 1,000 connections at a few tens of KiB each, the
// embedded NATS and SQLite. Above it the scenario fails.
const floodsRSSBound = 1 << 20 // 1 GiB

// raiseNoFile raises this process's soft limit on open files to the hard
// limit, so want sockets fit; the bouncer child inherits it. It returns
// the limit in force.
func raiseNoFile(want int) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, err
		}
	}
	if l.Cur < uint64(want) {
		return l.Cur, fmt.Errorf("open-file limit %d (hard) is below the %d sockets the scenario needs", l.Cur, want)
	}
	return l.Cur, nil
}

// loopback is source address i of a group: perIPAttack addresses share
// one of 127.group.x.y.
func loopback(group byte, i int) net.IP {
	return net.IPv4(127, group, byte(i/perIPAttack/250), byte(i/perIPAttack%250+1))
}

// dialFrom connects to addr from ip.
func dialFrom(ctx context.Context, addr string, ip net.IP) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 30 * time.Second}
	return d.DialContext(ctx, "tcp", addr)
}

// rssPeak samples a process's resident set until stopped.
type rssPeak struct {
	peak   atomic.Int64
	cancel context.CancelFunc
	done   chan struct{}
}

func watchRSS(pid int) *rssPeak {
	ctx, cancel := context.WithCancel(context.Background())
	p := &rssPeak{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for ctx.Err() == nil {
			if v := vmRSS(pid); v > p.peak.Load() {
				p.peak.Store(v)
			}
			sleep(ctx, 250*time.Millisecond)
		}
	}()
	return p
}

// stop ends the sampling and returns the peak in KiB.
func (p *rssPeak) stop() int64 {
	p.cancel()
	<-p.done
	return p.peak.Load()
}

// record folds one transaction's result into e as Load's senders do and
// reports whether e is final (250 or 5xx).
func (l *Ledger) record(e *entry, res sendResult) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if res.transaction {
		e.attempts++
	} else if res.err != nil {
		l.conn++
	}
	e.temp += res.temp
	switch {
	case res.code == 250 && res.dataSent:
		e.acked = true
		return true
	case res.code >= 500:
		e.perm = res.reply
		return true
	case res.err != nil && res.dataSent:
		e.inDoubt++
	}
	return false
}

// tally counts reply lines by code and enhanced code ("421 4.7.0"), and
// keeps one full line of each.
type tally struct {
	mu     sync.Mutex
	n      map[string]int
	sample map[string]string
}

func newTally() *tally { return &tally{n: map[string]int{}, sample: map[string]string{}} }

func (t *tally) add(line string) {
	k := line
	if c := atoiCode(line); c >= 200 && c < 600 || line == "" {
		k = replyKey(line)
	}
	t.mu.Lock()
	t.n[k]++
	if _, ok := t.sample[k]; !ok {
		t.sample[k] = line
	}
	t.mu.Unlock()
}

// replyKey is "421 4.7.0" of "421 4.7.0 Too many connections", the code
// alone without an enhanced code, "EOF" for an empty line.
func replyKey(line string) string {
	f := strings.Fields(line)
	switch {
	case len(f) == 0:
		return "EOF"
	case len(f) > 1 && enhancedCode(f[1]) && !strings.Contains(f[0], "-"):
		return f[0] + " " + f[1]
	}
	code, _, _ := strings.Cut(f[0], "-")
	return code
}

// enhancedCode reports whether s is an RFC 3463 status code, "4.7.0".
func enhancedCode(s string) bool {
	p := strings.Split(s, ".")
	if len(p) != 3 || len(p[0]) != 1 || !strings.Contains("245", p[0]) {
		return false
	}
	for _, n := range p[1:] {
		if _, err := strconv.Atoi(n); err != nil || len(n) > 3 {
			return false
		}
	}
	return true
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make([]string, 0, len(t.n))
	for k := range t.n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d × %q", t.n[k], t.sample[k])
	}
	return b.String()
}

// get is the count of key.
func (t *tally) get(key string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n[key]
}

// others returns the keys not in allowed, with their counts.
func (t *tally) others(allowed ...string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for k, n := range t.n {
		ok := false
		for _, a := range allowed {
			if k == a {
				ok = true
			}
		}
		if !ok {
			out = append(out, fmt.Sprintf("%d × %q", n, t.sample[k]))
		}
	}
	sort.Strings(out)
	return out
}

// percentile of sorted durations, p in [0,1].
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(p * float64(len(d)-1))
	return d[i]
}

// connections-10k

// connStats is what the benign senders of connections-10k saw.
type connStats struct {
	greetings   *tally // first line of every connection
	failures    *tally // after a 220: the reply (or "EOF") that ended a transaction without 250
	dialFailed  atomic.Int64
	mu          sync.Mutex
	acceptDelay []time.Duration // dial start to 220, of connections greeted 220
}

func runConnections(ctx context.Context, e *Env, c Config) (Result, error) {
	n := c.Attack
	r := Result{Scenario: "connections-10k", Injected: fmt.Sprintf("%d well-behaved senders at once from %d loopback addresses (%d each), one report each, default limits (1,000 connections, 50 per address); refused ones retry",
		n, (n+perIPAttack-1)/perIPAttack, perIPAttack)}
	lim, err := raiseNoFile(n + 1000)
	if err != nil {
		return r, err
	}
	r.Notes = append(r.Notes, fmt.Sprintf("harness open-file limit raised to %d (setrlimit; bouncer inherits it)", lim))
	b, err := e.startBouncer("connections-10k", BouncerOptions{Args: []string{"--max-connections-per-ip", "50"}})
	if err != nil {
		return r, err
	}
	defer b.Kill()
	rssBefore := vmRSS(b.Pid())
	rss := watchRSS(b.Pid())
	run := newRun()
	ledger := &Ledger{}
	st := &connStats{greetings: newTally(), failures: newTally()}
	// Every sender must be done within DrainWait: a sender still retrying
	// then is a message neither answered 250 nor 5xx.
	sctx, cancel := context.WithTimeout(ctx, c.DrainWait)
	defer cancel()
	start := time.Now()
	var peakActive atomic.Int64
	mctx, mcancel := context.WithCancel(ctx)
	go func() {
		for mctx.Err() == nil {
			if v, err := b.Metric(mctx, "bouncer_smtp_active_connections"); err == nil && int64(v) > peakActive.Load() {
				peakActive.Store(int64(v))
			}
			sleep(mctx, 500*time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			benignSender(sctx, b.SMTPAddr, loopback(2, i), ledger.add(NewReport(run, i, 0, c.Size)), ledger, st)
		}()
	}
	wg.Wait()
	mcancel()
	elapsed := time.Since(start)
	peak := rss.stop()
	r.Counts = ledger.Counts()
	sort.Slice(st.acceptDelay, func(i, j int) bool { return st.acceptDelay[i] < st.acceptDelay[j] })
	accepted, _ := b.Metric(ctx, `bouncer_smtp_connections_total{result="accepted"}`)
	refTotal, _ := b.Metric(ctx, `bouncer_smtp_connections_total{result="refused_total"}`)
	refIP, _ := b.Metric(ctx, `bouncer_smtp_connections_total{result="refused_per_ip"}`)
	r.Notes = append(r.Notes,
		fmt.Sprintf("all %d senders done in %s; greetings: %s; %d connects failed", n, elapsed.Round(time.Second), st.greetings, st.dialFailed.Load()),
		"after a 220, transactions ended without 250 by: "+st.failures.String(),
		fmt.Sprintf("bouncer's counters: %.0f connections accepted, %.0f refused over the total, %.0f over the per-address limit; at most %d open at once (sampled)", accepted, refTotal, refIP, peakActive.Load()),
		fmt.Sprintf("connect to 220 of the %d connections greeted: p50 %s, p99 %s, max %s", len(st.acceptDelay),
			percentile(st.acceptDelay, 0.5).Round(time.Millisecond), percentile(st.acceptDelay, 0.99).Round(time.Millisecond), percentile(st.acceptDelay, 1).Round(time.Millisecond)),
		fmt.Sprintf("RSS %d MiB before, peak %d MiB (bound %d MiB)", rssBefore>>10, peak>>10, floodsRSSBound>>10))
	var errs []error
	if bad := st.greetings.others("220", "421 4.7.0"); len(bad) > 0 {
		errs = append(errs, fmt.Errorf("connections-10k: greetings other than 220 and 421 4.7.0: %s", strings.Join(bad, ", ")))
	}
	for _, k := range st.failures.others() {
		if strings.Contains(k, `"5`) {
			errs = append(errs, fmt.Errorf("connections-10k: a well-behaved sender got %s", k))
		}
	}
	if st.greetings.get("421 4.7.0") == 0 {
		errs = append(errs, errors.New("connections-10k: no connection was refused: the limit was not reached"))
	}
	if peak > floodsRSSBound {
		errs = append(errs, fmt.Errorf("connections-10k: RSS peaked at %d MiB, over %d MiB", peak>>10, floodsRSSBound>>10))
	}
	if !b.Running() {
		return r, errors.Join(append(errs, errors.New("bouncer died: "+lastLines(b.LogPath, 3)))...)
	}
	if r.Pending > 0 {
		errs = append(errs, fmt.Errorf("connections-10k: %d messages not answered 250 or 5xx within %s", r.Pending, c.DrainWait))
	}
	errs = append(errs, check(ctx, c, &r, b, b.NATSURL, &Load{Ledger: ledger}, sqliteReader(b.DataDir, run), nil))
	return r, errors.Join(append(errs, b.Stop())...)
}

// benignSender delivers m as an MTA would: connect, and on a 4xx or a
// failed connection wait and try again, until 250 or 5xx or ctx ends.
func benignSender(ctx context.Context, addr string, ip net.IP, m *entry, l *Ledger, st *connStats) {
	for ctx.Err() == nil {
		t0 := time.Now()
		conn, err := dialFrom(ctx, addr, ip)
		if err != nil {
			if ctx.Err() == nil {
				st.dialFailed.Add(1)
				l.record(m, sendResult{err: err})
			}
			sleep(ctx, retryDelay+rand.N(time.Second))
			continue
		}
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		conn.SetDeadline(time.Now().Add(smtpTimeout))
		br := bufio.NewReaderSize(conn, 4096)
		greet, err := readReply(br)
		st.greetings.add(greet)
		if !strings.HasPrefix(greet, "220") {
			res := sendResult{reply: greet, err: err}
			if strings.HasPrefix(greet, "4") {
				res.temp = 1
			} else if err == nil {
				res.err = fmt.Errorf("greeting %q", greet)
			}
			l.record(m, res)
			stop()
			conn.Close()
			sleep(ctx, retryDelay+rand.N(time.Second))
			continue
		}
		st.mu.Lock()
		st.acceptDelay = append(st.acceptDelay, time.Since(t0))
		st.mu.Unlock()
		cl := &smtpClient{addr: addr, conn: conn, r: br}
		var res sendResult
		if line, err := cl.cmd("EHLO " + strings.ReplaceAll(ip.String(), ".", "-") + ".sender.example"); err != nil || !strings.HasPrefix(line, "250") {
			res = sendResult{reply: line, err: err}
			if strings.HasPrefix(line, "4") {
				res.temp = 1
			}
		} else {
			res = cl.send("", "bounce@"+BounceDomain, m.msg.Raw)
		}
		if res.code != 250 || !res.dataSent {
			st.failures.add(res.reply)
		}
		final := l.record(m, res)
		if res.err == nil {
			cl.cmd("QUIT")
		}
		stop()
		cl.close()
		if final {
			return
		}
		sleep(ctx, retryDelay+rand.N(time.Second))
	}
}

// command-flood

// floodEnvelopeTimeout is the --envelope-timeout of command-flood, shorter
// than the fault so the cut of a session that never reaches DATA is seen
// within it (the default is 60 s).
func floodEnvelopeTimeout(c Config) time.Duration {
	return max(c.Fault/3, time.Second)
}

// flooders is a group of abusive connections, each run by fn in a loop
// (reconnecting) until stopped.
type flooders struct {
	cancel   context.CancelFunc
	stopping atomic.Bool
	wg       sync.WaitGroup
}

// startFlooders runs n copies of fn from loopback addresses of group, each
// again after it ends until stop.
func startFlooders(n int, group byte, fn func(ctx context.Context, ip net.IP)) *flooders {
	ctx, cancel := context.WithCancel(context.Background())
	f := &flooders{cancel: cancel}
	for i := range n {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for ctx.Err() == nil && !f.stopping.Load() {
				fn(ctx, loopback(group, i))
			}
		}()
	}
	return f
}

// finish lets every session in progress end by itself, by within bound;
// then it cuts the rest and reports whether all ended by themselves.
func (f *flooders) finish(bound time.Duration) bool {
	f.stopping.Store(true)
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-done:
		f.cancel()
		return true
	case <-t.C:
	}
	f.cancel()
	<-done
	return false
}

// floodStats are the replies of one kind of flood and how its sessions
// ended.
type floodStats struct {
	replies *tally // every reply line
	ends    *tally // the last line of each session
	errsCut *tally // unknown-command sessions: errors answered before the cut, "N errors"
}

func newFloodStats() *floodStats {
	return &floodStats{replies: newTally(), ends: newTally(), errsCut: newTally()}
}

// floodSession greets, optionally says EHLO, then sends batches of lines
// (pipelined, a batch per write) reading a reply per line until the server
// ends the session. Every reply goes to st.replies, the last line to
// st.ends. It returns the replies read.
func floodSession(ctx context.Context, addr string, ip net.IP, ehlo bool, batch func(i int) []string, st *floodStats) []string {
	conn, err := dialFrom(ctx, addr, ip)
	if err != nil {
		sleep(ctx, retryDelay)
		return nil
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	br := bufio.NewReader(conn)
	conn.SetDeadline(time.Now().Add(smtpTimeout))
	greet, err := readReply(br)
	if !strings.HasPrefix(greet, "220") {
		if ctx.Err() == nil && err == nil {
			st.ends.add(greet) // 421 over a limit
		}
		sleep(ctx, retryDelay)
		return nil
	}
	if ehlo {
		if line, err := (&smtpClient{conn: conn, r: br}).cmd("EHLO flood.example"); err != nil || !strings.HasPrefix(line, "250") {
			if ctx.Err() == nil {
				st.ends.add(line)
			}
			return nil
		}
	}
	var got []string
	for i := 0; ; i++ {
		lines := batch(i)
		conn.SetDeadline(time.Now().Add(smtpTimeout))
		// The write may fail once the server closed; the replies it
		// sent before are still read below.
		conn.Write([]byte(strings.Join(lines, "\r\n") + "\r\n"))
		for range lines {
			line, err := readReply(br)
			if err != nil {
				if ctx.Err() == nil {
					if line != "" {
						st.replies.add(line)
						got = append(got, line)
					}
					last := "EOF"
					if len(got) > 0 {
						last = got[len(got)-1]
					}
					st.ends.add(last)
				}
				return got
			}
			st.replies.add(line)
			got = append(got, line)
		}
		if last := got[len(got)-1]; strings.HasPrefix(last, "421") || strings.Contains(last, "Too many errors") {
			// A closing reply: read the end of the stream, send nothing.
			if line, err := readReply(br); err == nil && ctx.Err() == nil {
				st.replies.add(line)
				got = append(got, line)
				last = line
			}
			if ctx.Err() == nil {
				st.ends.add(last)
			}
			return got
		}
	}
}

func runCommandFlood(ctx context.Context, e *Env, c Config) (Result, error) {
	envTimeout := floodEnvelopeTimeout(c)
	const perKind = 40
	r := Result{Scenario: "command-flood", Injected: fmt.Sprintf("%d connections each of: NOOP/RSET/VRFY/HELP floods (50 a write), MAIL before EHLO, unknown commands; under load; envelope timeout %s, other limits default", perKind, envTimeout)}
	b, err := e.startBouncer("command-flood", BouncerOptions{Args: []string{"--max-connections-per-ip", "50", "--envelope-timeout", envTimeout.String()}})
	if err != nil {
		return r, err
	}
	defer b.Kill()
	rssBefore := vmRSS(b.Pid())
	rss := watchRSS(b.Pid())
	run := newRun()
	// The valid load: persistent connections from 127.0.0.1, whose limit
	// the harness raises to 1,000.
	load := c.startLoad(b.SMTPAddr, run)
	noop, prehelo, unknown := newFloodStats(), newFloodStats(), newFloodStats()
	var fs []*flooders
	var finishedAlone bool
	inject := func() error {
		harmless := []string{"NOOP", "RSET", "VRFY <postmaster@" + BounceDomain + ">", "HELP"}
		fs = append(fs,
			startFlooders(perKind, 3, func(ctx context.Context, ip net.IP) {
				floodSession(ctx, b.SMTPAddr, ip, true, func(i int) []string {
					out := make([]string, 50)
					for j := range out {
						out[j] = harmless[(i*50+j)%len(harmless)]
					}
					return out
				}, noop)
			}),
			startFlooders(perKind, 4, func(ctx context.Context, ip net.IP) {
				floodSession(ctx, b.SMTPAddr, ip, false, func(int) []string {
					return []string{"MAIL FROM:<>", "NOOP", "MAIL FROM:<>", "RCPT TO:<bounce@" + BounceDomain + ">"}
				}, prehelo)
			}),
			startFlooders(perKind, 5, func(ctx context.Context, ip net.IP) {
				// An unknown verb (500 5.5.2) and a line go-smtp cannot
				// parse as a command (501 5.5.2): both count as errors.
				got := floodSession(ctx, b.SMTPAddr, ip, true, func(int) []string { return []string{"XYZW", "XYZZY"} }, unknown)
				if len(got) > 0 && ctx.Err() == nil {
					n := 0
					for _, l := range got {
						if k := replyKey(l); k == "500 5.5.2" || k == "501 5.5.2" {
							n++
						}
					}
					unknown.errsCut.add(fmt.Sprintf("errors %d, then %s", n, replyKey(got[len(got)-1])))
				}
			}),
		)
		return nil
	}
	recover := func() error {
		// The NOOP and pre-EHLO sessions never reach DATA: the envelope
		// timeout must end each of them by itself.
		finishedAlone = true
		for _, f := range fs {
			if !f.finish(envTimeout + 30*time.Second) {
				finishedAlone = false
			}
		}
		if !b.Running() {
			return errors.New("bouncer died under the flood: " + lastLines(b.LogPath, 3))
		}
		return nil
	}
	if err := drive(ctx, e, c, &r, load, fault{"the floods", inject, recover}); err != nil {
		return r, err
	}
	peak := rss.stop()
	cut, _ := b.Metric(ctx, `bouncer_smtp_timeouts_total{deadline="envelope"}`)
	r.Notes = append(r.Notes,
		"NOOP/RSET/VRFY/HELP flood replies: "+noop.replies.String(),
		"NOOP/RSET/VRFY/HELP flood sessions ended with: "+noop.ends.String(),
		"MAIL-before-EHLO flood replies: "+prehelo.replies.String(),
		"MAIL-before-EHLO flood sessions ended with: "+prehelo.ends.String(),
		"unknown-command flood replies: "+unknown.replies.String(),
		"unknown-command sessions: "+unknown.errsCut.String(),
		fmt.Sprintf("bouncer's envelope-timeout cuts: %.0f; RSS %d MiB before, peak %d MiB (bound %d MiB)", cut, rssBefore>>10, peak>>10, floodsRSSBound>>10))
	var errs []error
	// The codes each flood may get: go-smtp's answers, the listener's 421
	// of the envelope deadline, and 421 4.7.0 over the per-address limit
	// while a cut session's slot is not released yet.
	if bad := noop.replies.others("250 2.0.0", "252 2.5.0", "502 5.5.1", "421 4.4.2"); len(bad) > 0 {
		errs = append(errs, fmt.Errorf("command-flood: unexpected replies to NOOP/RSET/VRFY/HELP: %s", strings.Join(bad, ", ")))
	}
	if bad := noop.ends.others("421 4.4.2", "421 4.7.0"); len(bad) > 0 || noop.ends.get("421 4.4.2") == 0 {
		errs = append(errs, fmt.Errorf("command-flood: NOOP flood sessions not ended by the envelope deadline's 421 4.4.2: %s", noop.ends))
	}
	if bad := prehelo.replies.others("502 5.5.1", "250 2.0.0", "421 4.4.2"); len(bad) > 0 {
		errs = append(errs, fmt.Errorf("command-flood: unexpected replies to MAIL before EHLO: %s", strings.Join(bad, ", ")))
	}
	if bad := prehelo.ends.others("421 4.4.2", "421 4.7.0"); len(bad) > 0 || prehelo.ends.get("421 4.4.2") == 0 {
		errs = append(errs, fmt.Errorf("command-flood: MAIL-before-EHLO sessions not ended by 421 4.4.2: %s", prehelo.ends))
	}
	// go-smtp answers four bad commands 500 or 501 5.5.2, then 500
	// 5.5.1 "Too many errors" and closes (or the session was refused at
	// the greeting over the per-address limit).
	// The envelope deadline may come first on a loaded host: 421 4.4.2
	// after fewer errors is right too.
	const cutAfter4 = "errors 4, then 500 5.5.1"
	if bad := unknown.errsCut.others(cutAfter4, "errors 0, then 421 4.7.0",
		"errors 0, then 421 4.4.2", "errors 1, then 421 4.4.2", "errors 2, then 421 4.4.2", "errors 3, then 421 4.4.2"); len(bad) > 0 || unknown.errsCut.get(cutAfter4) == 0 {
		errs = append(errs, fmt.Errorf("command-flood: unknown-command sessions not cut after 4 errors with 500 5.5.1: %s", unknown.errsCut))
	}
	if !finishedAlone {
		errs = append(errs, fmt.Errorf("command-flood: some flood sessions were still open %s after the flood stopped", envTimeout+30*time.Second))
	}
	if peak > floodsRSSBound {
		errs = append(errs, fmt.Errorf("command-flood: RSS peaked at %d MiB, over %d MiB", peak>>10, floodsRSSBound>>10))
	}
	errs = append(errs, check(ctx, c, &r, b, b.NATSURL, load, sqliteReader(b.DataDir, run), nil))
	return r, errors.Join(append(errs, b.Stop())...)
}

// atoiCode is the reply code of line, 0 if none.
func atoiCode(line string) int {
	if len(line) < 3 {
		return 0
	}
	n, _ := strconv.Atoi(line[:3])
	return n
}
