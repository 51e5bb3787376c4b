package reliability

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bouncer-mail/bouncer/smtpd"
)

// pipelined is the pipelining abusers of pipelining-abuse: they write
// whole transactions, bodies included, without waiting for a reply
// (RFC 2920 allows pipelining MAIL and RCPT, not the body before the 354).
type pipelined struct {
	addr   string
	run    string
	size   int
	ledger *Ledger // the load's: every report answered 250 must be stored

	batch       *tally // replies to the batched transactions
	rcpts       *tally // many-RCPT messages: "N accepted, M refused 452 4.5.3, then <final>"
	refused     *tally // refused-RCPT sessions: the replies in order
	refusedMsgs sync.Map
	sessions    atomic.Int64

	stopNew  atomic.Bool
	deadline time.Time
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// pipelinedPerWrite is how many transactions a batch abuser writes at once.
const pipelinedPerWrite = 5

// manyRcpts is the RCPTs of a many-recipient message: over the default
// limit of 100 (go-smtp answers 452 4.5.3 beyond).
const manyRcpts = 150

func startPipelined(addr, run string, size, n int, ledger *Ledger) *pipelined {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pipelined{addr: addr, run: run, size: size, ledger: ledger, batch: newTally(), rcpts: newTally(), refused: newTally(), cancel: cancel}
	for i := range n {
		p.wg.Add(3)
		go func() { defer p.wg.Done(); p.batchSender(ctx, i) }()
		go func() { defer p.wg.Done(); p.manyRcptSender(ctx, i) }()
		go func() { defer p.wg.Done(); p.refusedRcptSender(ctx, i) }()
	}
	return p
}

// finish stops new messages and waits, up to wait, for the resends of the
// ones not answered 250 or 5xx yet.
func (p *pipelined) finish(wait time.Duration) {
	p.deadline = time.Now().Add(wait)
	p.stopNew.Store(true)
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
	}
	p.cancel()
	<-done
}

// txnLines is one transaction, body included, as written at once.
func txnLines(rcpts []string, raw []byte) string {
	var b strings.Builder
	b.WriteString("MAIL FROM:<>\r\n")
	for _, r := range rcpts {
		fmt.Fprintf(&b, "RCPT TO:<%s>\r\n", r)
	}
	b.WriteString("DATA\r\n")
	b.Write(raw)
	b.WriteString(".\r\n")
	return b.String()
}

// open connects from ip, reads the greeting and says EHLO.
func (p *pipelined) open(ctx context.Context, ip net.IP) (net.Conn, *bufio.Reader, error) {
	conn, err := dialFrom(ctx, p.addr, ip)
	if err != nil {
		return nil, nil, err
	}
	conn.SetDeadline(time.Now().Add(smtpTimeout))
	br := bufio.NewReaderSize(conn, 4096)
	if line, err := readReply(br); err != nil || !strings.HasPrefix(line, "220") {
		conn.Close()
		return nil, nil, fmt.Errorf("greeting %q: %v", line, err)
	}
	if line, err := (&smtpClient{conn: conn, r: br}).cmd("EHLO pipeliner.example"); err != nil || !strings.HasPrefix(line, "250") {
		conn.Close()
		return nil, nil, fmt.Errorf("EHLO: %q: %v", line, err)
	}
	return conn, br, nil
}

func (p *pipelined) done(ctx context.Context, pending int) bool {
	return ctx.Err() != nil || (p.stopNew.Load() && pending == 0)
}

// batchSender writes pipelinedPerWrite transactions per write, bodies
// before their 354, and reads the replies after; a report not answered
// 250 or 5xx is sent again in a later batch, as an MTA's queue would.
func (p *pipelined) batchSender(ctx context.Context, g int) {
	ip := loopback(6, g)
	var pending []*entry
	n := 0
	for !p.done(ctx, len(pending)) {
		for !p.stopNew.Load() && len(pending) < pipelinedPerWrite {
			pending = append(pending, p.ledger.add(NewReport(p.run, 100000+g, n, p.size)))
			n++
		}
		conn, br, err := p.open(ctx, ip)
		if err != nil {
			sleep(ctx, retryDelay)
			continue
		}
		p.sessions.Add(1)
		var out strings.Builder
		for _, e := range pending {
			out.WriteString(txnLines([]string{"bounce@" + BounceDomain}, e.msg.Raw))
		}
		conn.Write([]byte(out.String()))
		var left []*entry
		broken := false
		for _, e := range pending {
			res := sendResult{transaction: true, dataSent: true}
			if broken {
				// Its bytes went out after a transaction whose replies
				// were not the expected ones: it may or may not have
				// been read as a message. In doubt: resend.
				res.err = errors.New("after a broken transaction")
				p.ledger.record(e, res)
				left = append(left, e)
				continue
			}
			for i, want := range []int{250, 250, 354, 0} {
				line, err := readReply(br)
				p.batch.add(line)
				res.reply, res.err, res.code = line, err, atoiCode(line)
				if res.code >= 400 && res.code < 500 {
					res.temp = 1
				}
				if err != nil || (want != 0 && res.code != want) {
					broken = true
					res.dataSent = i == 3 // only the final reply was missing
					if i < 3 && err == nil {
						res.err = nil // refused before DATA: not in doubt
					}
					break
				}
			}
			if !p.ledger.record(e, res) {
				left = append(left, e)
			}
		}
		conn.Close()
		pending = left
		if len(pending) > 0 {
			sleep(ctx, retryDelay)
		}
	}
}

// manyRcptSender sends messages to manyRcpts recipients, all RCPTs, DATA
// and the body in one write.
func (p *pipelined) manyRcptSender(ctx context.Context, g int) {
	ip := loopback(7, g)
	rcpts := make([]string, manyRcpts)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf("bounce+%d@%s", i, BounceDomain)
	}
	var e *entry
	n := 0
	for !p.done(ctx, btoi(e != nil)) {
		if e == nil {
			e = p.ledger.add(NewReport(p.run, 200000+g, n, p.size))
			n++
		}
		conn, br, err := p.open(ctx, ip)
		if err != nil {
			sleep(ctx, retryDelay)
			continue
		}
		p.sessions.Add(1)
		conn.Write([]byte(txnLines(rcpts, e.msg.Raw)))
		res := sendResult{transaction: true}
		accepted, over := 0, 0
		line, err := readReply(br) // MAIL
		for i := 0; i < manyRcpts && err == nil; i++ {
			line, err = readReply(br)
			switch replyKey(line) {
			case "250 2.0.0":
				accepted++
			case "452 4.5.3":
				over++
			}
		}
		if err == nil {
			line, err = readReply(br) // DATA: 354
			if err == nil && atoiCode(line) == 354 {
				res.dataSent = true
				line, err = readReply(br)
			}
		}
		res.reply, res.err, res.code = line, err, atoiCode(line)
		if res.code >= 400 && res.code < 500 {
			res.temp = 1
		}
		if ctx.Err() == nil {
			p.rcpts.add(fmt.Sprintf("RCPT: %d accepted, %d refused 452 4.5.3; then %s", accepted, over, replyKey(line)))
		}
		if p.ledger.record(e, res) {
			e = nil
		}
		conn.Close()
		if e != nil {
			sleep(ctx, retryDelay)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// refusedRcptSender pipelines MAIL, a RCPT outside the bounce domain, DATA
// and a report body: the RCPT and DATA are refused, and the body's lines
// then arrive as commands. None of these reports may be stored.
func (p *pipelined) refusedRcptSender(ctx context.Context, g int) {
	ip := loopback(8, g)
	for n := 0; !p.done(ctx, 0); n++ {
		m := NewReport(p.run, 300000+g, n, p.size)
		conn, br, err := p.open(ctx, ip)
		if err != nil {
			sleep(ctx, retryDelay)
			continue
		}
		p.refusedMsgs.Store(m.Sum, m)
		p.sessions.Add(1)
		conn.Write([]byte(txnLines([]string{"someone@not-a-bounce-domain.example"}, m.Raw)))
		var seq []string
		for {
			line, err := readReply(br)
			if err != nil {
				break
			}
			// Runs of one code are folded: "500 5.5.2 ×4".
			k := replyKey(line)
			if l := len(seq); l > 0 && strings.HasPrefix(seq[l-1], k+" ×") {
				var c int
				fmt.Sscanf(seq[l-1][len(k)+3:], "%d", &c)
				seq[l-1] = fmt.Sprintf("%s ×%d", k, c+1)
			} else {
				seq = append(seq, k+" ×1")
			}
		}
		conn.Close()
		if ctx.Err() == nil {
			p.refused.add("replies: " + strings.Join(seq, ", "))
		}
	}
}

func runPipeliningAbuse(ctx context.Context, e *Env, c Config) (Result, error) {
	const perKind = 10
	r := Result{Scenario: "pipelining-abuse", Injected: fmt.Sprintf("%d connections each of: %d transactions per write with bodies before the 354; %d RCPTs, DATA and body in one write; MAIL, a refused RCPT, DATA and body in one write; under load, default limits", perKind, pipelinedPerWrite, manyRcpts)}
	b, err := e.startBouncer("pipelining-abuse", BouncerOptions{Args: []string{"--max-connections-per-ip", "50"}})
	if err != nil {
		return r, err
	}
	defer b.Kill()
	rssBefore := vmRSS(b.Pid())
	rss := watchRSS(b.Pid())
	run := newRun()
	load := c.startLoad(b.SMTPAddr, run)
	var p *pipelined
	inject := func() error {
		p = startPipelined(b.SMTPAddr, run, c.Size, perKind, load.Ledger)
		return nil
	}
	recover := func() error {
		p.finish(c.DrainWait)
		if !b.Running() {
			return errors.New("bouncer died under the abuse: " + lastLines(b.LogPath, 3))
		}
		return nil
	}
	if err := drive(ctx, e, c, &r, load, fault{"the abuse", inject, recover}); err != nil {
		return r, err
	}
	peak := rss.stop()
	var refusedStored, refusedSent int
	read := func(ctx context.Context) (StoreView, error) {
		v, err := ReadSQLite(ctx, b.DataDir, prefix(run))
		p.refusedMsgs.Range(func(k, _ any) bool {
			refusedSent++
			if v.Reports[k.(string)] > 0 {
				refusedStored++
			}
			return true
		})
		return v, err
	}
	r.Notes = append(r.Notes,
		fmt.Sprintf("%d abusive sessions", p.sessions.Load()),
		"replies to the batched transactions: "+p.batch.String(),
		fmt.Sprintf("%d-RCPT messages: %s", manyRcpts, p.rcpts),
		"refused-RCPT sessions, replies in order: "+p.refused.String(),
		fmt.Sprintf("RSS %d MiB before, peak %d MiB (bound %d MiB)", rssBefore>>10, peak>>10, floodsRSSBound>>10))
	var errs []error
	for _, k := range p.batch.others("250 2.0.0", "354", "451 4.3.0", "421 4.3.2", "421 4.7.0") {
		if !strings.Contains(k, `"4`) { // a 5xx or anything else: a wrong code
			errs = append(errs, fmt.Errorf("pipelining-abuse: a batched transaction got %s", k))
		}
	}
	wantRcpt := fmt.Sprintf("RCPT: %d accepted, %d refused 452 4.5.3; then 250 2.0.0", smtpd.DefaultMaxRecipients, manyRcpts-smtpd.DefaultMaxRecipients)
	if p.rcpts.get(wantRcpt) == 0 {
		errs = append(errs, fmt.Errorf("pipelining-abuse: no %d-RCPT message got %s: %s", manyRcpts, wantRcpt, p.rcpts))
	}
	for _, k := range p.rcpts.others(wantRcpt) {
		if !strings.Contains(k, `then 4`) { // a temporary failure is resent
			errs = append(errs, fmt.Errorf("pipelining-abuse: a %d-RCPT message got %s, want %s", manyRcpts, k, wantRcpt))
		}
	}
	// 250 to MAIL, 550 5.7.1 to the RCPT, 502 5.5.1 to DATA; the body's
	// lines are then commands, none of which go-smtp can parse ("From:
	// ..." has no verb of four letters): four 501 5.5.2, and 500 5.5.1
	// "Too many errors" closes.
	wantRefused := "replies: 250 2.0.0 ×1, 550 5.7.1 ×1, 502 5.5.1 ×1, 501 5.5.2 ×4, 500 5.5.1 ×1"
	if bad := p.refused.others(wantRefused); len(bad) > 0 || p.refused.get(wantRefused) == 0 {
		errs = append(errs, fmt.Errorf("pipelining-abuse: refused-RCPT sessions: %s, want %s", p.refused, wantRefused))
	}
	if peak > floodsRSSBound {
		errs = append(errs, fmt.Errorf("pipelining-abuse: RSS peaked at %d MiB, over %d MiB", peak>>10, floodsRSSBound>>10))
	}
	if r.Pending > 0 {
		errs = append(errs, fmt.Errorf("pipelining-abuse: %d messages not answered 250 or 5xx", r.Pending))
	}
	errs = append(errs, check(ctx, c, &r, b, b.NATSURL, load, read, nil))
	r.Notes = append(r.Notes, fmt.Sprintf("of the %d reports sent after a refused RCPT, %d stored", refusedSent, refusedStored))
	if refusedStored > 0 {
		errs = append(errs, fmt.Errorf("pipelining-abuse: %d reports sent after a refused RCPT were stored", refusedStored))
	}
	return r, errors.Join(append(errs, b.Stop())...)
}
