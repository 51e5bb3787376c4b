package reliability

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Message is one report of the load: an RFC 3464 delivery status
// notification of a 550 5.1.1 rejection, unique by its recipient.
type Message struct {
	Recipient string // Final-Recipient, lower-case, unique within a run
	MessageID string // Message-ID of the returned original
	Raw       []byte // CRLF lines, none starting with a dot: bouncer hashes exactly these bytes; nil once a load's message was answered for good
	Sum       string // hex SHA-256 of Raw: the report id bouncer stores
	Size      int    // len(Raw), kept when Raw is dropped
}

// RecipientDomain is the domain of every failed recipient of the load.
const RecipientDomain = "dest.example"

// NewReport builds message n of worker w of run, about size bytes long.
func NewReport(run string, w, n, size int) *Message {
	rcpt := fmt.Sprintf("r-%s-%d-%d@%s", run, w, n, RecipientDomain)
	orig := fmt.Sprintf("<orig.%s.%d.%d@sender.example>", run, w, n)
	var head, tail strings.Builder
	fmt.Fprintf(&head, "From: Mail Delivery System <MAILER-DAEMON@mta.sender.example>\r\n")
	fmt.Fprintf(&head, "To: <bounce@%s>\r\n", BounceDomain)
	fmt.Fprintf(&head, "Subject: Undelivered Mail Returned to Sender\r\n")
	fmt.Fprintf(&head, "Message-ID: <dsn.%s.%d.%d@mta.sender.example>\r\n", run, w, n)
	fmt.Fprintf(&head, "Date: %s\r\n", time.Now().UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&head, "MIME-Version: 1.0\r\n")
	fmt.Fprintf(&head, "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b-%s\"\r\n\r\n", run)
	fmt.Fprintf(&head, "--b-%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", run)
	fmt.Fprintf(&head, "This is the mail system at host mta.sender.example.\r\n\r\n<%s>: host mx.%s said:\r\n    550 5.1.1 User unknown\r\n\r\n", rcpt, RecipientDomain)

	fmt.Fprintf(&tail, "\r\n--b-%s\r\nContent-Type: message/delivery-status\r\n\r\n", run)
	fmt.Fprintf(&tail, "Reporting-MTA: dns; mta.sender.example\r\n\r\n")
	fmt.Fprintf(&tail, "Final-Recipient: rfc822; %s\r\nOriginal-Recipient: rfc822;%s\r\nAction: failed\r\nStatus: 5.1.1\r\n", rcpt, rcpt)
	fmt.Fprintf(&tail, "Remote-MTA: dns; mx.%s\r\nDiagnostic-Code: smtp; 550 5.1.1 <%s>: Recipient address rejected: User unknown in local recipient table\r\n\r\n", RecipientDomain, rcpt)
	fmt.Fprintf(&tail, "--b-%s\r\nContent-Type: text/rfc822-headers\r\n\r\n", run)
	fmt.Fprintf(&tail, "From: <news@sender.example>\r\nTo: <%s>\r\nSubject: newsletter\r\nMessage-ID: %s\r\n\r\n", rcpt, orig)
	fmt.Fprintf(&tail, "--b-%s--\r\n", run)

	// Padding to size, between the human-readable text and the report.
	b := &head
	line := strings.Repeat("x", 76) + "\r\n"
	for b.Len()+tail.Len() < size {
		b.WriteString(line)
	}
	b.WriteString(tail.String())
	raw := []byte(b.String())
	sum := sha256.Sum256(raw)
	return &Message{Recipient: rcpt, MessageID: orig, Raw: raw, Sum: hex.EncodeToString(sum[:]), Size: len(raw)}
}

// entry is the fate of one message of the load.
type entry struct {
	msg      *Message
	attempts int    // transactions that reached MAIL FROM
	temp     int    // 4xx replies
	inDoubt  int    // DATA sent, then the connection was lost without a reply
	acked    bool   // answered 250 to the end of DATA
	perm     string // a 5xx reply: given up
	next     time.Time
}

// Ledger records every message of a load and what the server answered.
type Ledger struct {
	mu      sync.Mutex
	entries []*entry
	conn    int // connection attempts that failed before MAIL FROM
}

func (l *Ledger) add(m *Message) *entry {
	e := &entry{msg: m}
	l.mu.Lock()
	l.entries = append(l.entries, e)
	l.mu.Unlock()
	return e
}

// Counts sums a ledger.
type Counts struct {
	Sent        int // distinct messages offered
	Attempts    int // transactions (MAIL FROM sent), resends included
	Acked       int // distinct messages answered 250
	TempFailed  int // distinct messages that got at least one 4xx
	TempReplies int // 4xx replies in all (greeting, MAIL, RCPT, DATA)
	InDoubt     int // transfers that lost the connection after DATA
	Rejected    int // distinct messages refused with 5xx (given up)
	Pending     int // neither acknowledged nor refused when the load ended
	ConnFailed  int // connections that failed before a transaction
}

// Counts returns the ledger's sums now.
func (l *Ledger) Counts() Counts {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := Counts{Sent: len(l.entries), ConnFailed: l.conn}
	for _, e := range l.entries {
		c.Attempts += e.attempts
		c.TempReplies += e.temp
		c.InDoubt += e.inDoubt
		if e.temp > 0 {
			c.TempFailed++
		}
		switch {
		case e.acked:
			c.Acked++
		case e.perm != "":
			c.Rejected++
		default:
			c.Pending++
		}
	}
	return c
}

// Acked returns the messages answered 250, by report id (SHA-256).
func (l *Ledger) Acked() map[string]*Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := map[string]*Message{}
	for _, e := range l.entries {
		if e.acked {
			m[e.msg.Sum] = e.msg
		}
	}
	return m
}

// All returns every message offered, by report id.
func (l *Ledger) All() map[string]*Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[string]*Message, len(l.entries))
	for _, e := range l.entries {
		m[e.msg.Sum] = e.msg
	}
	return m
}

// Rejections returns up to n distinct 5xx replies, for a failure message.
func (l *Ledger) Rejections(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, e := range l.entries {
		if e.perm != "" && !seen[e.perm] && len(out) < n {
			seen[e.perm] = true
			out = append(out, e.perm)
		}
	}
	return out
}

// LoadConfig configures a Load.
type LoadConfig struct {
	Addr     string  // bouncer's SMTP address
	Sessions int     // parallel SMTP sessions, each on a persistent connection
	Size     int     // bytes per report, about
	Run      string  // run id, unique per load: part of every recipient
	Rate     float64 // new messages per second over all sessions; 0: as fast as answered
	// Reconnect closes the connection after every message, as an MTA
	// without a connection cache does; otherwise connections persist.
	Reconnect bool
	// Pipelining sends MAIL FROM, RCPT TO and DATA in one write when the
	// server advertises PIPELINING (RFC 2920), as Postfix and the other
	// MTAs that send bounces do; otherwise each command waits for the
	// reply to the one before.
	Pipelining bool
}

// retryDelay is how long a session waits before resending a message that
// got a 4xx or lost its connection, and before reconnecting after a failed
// connection. A real MTA waits minutes; the harness compresses that.
const retryDelay = 200 * time.Millisecond

// Load is a running load: Sessions senders that each make new reports and,
// like an MTA's queue, resend the same bytes of any report not answered 250
// or 5xx.
type Load struct {
	cfg     LoadConfig
	Ledger  *Ledger
	stopNew chan struct{}
	stopped sync.Once
	cancel  context.CancelFunc
	done    chan struct{}
}

// StartLoad starts the senders.
func StartLoad(cfg LoadConfig) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{cfg: cfg, Ledger: &Ledger{}, stopNew: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	var pace *pacer
	if cfg.Rate > 0 {
		pace = newPacer(cfg.Rate, time.Now())
	}
	var wg sync.WaitGroup
	for w := range cfg.Sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.session(ctx, w, pace)
		}()
	}
	go func() {
		wg.Wait()
		close(l.done)
	}()
	return l
}

// StopNew ends the making of new reports; resends go on until Finish.
func (l *Load) StopNew() { l.stopped.Do(func() { close(l.stopNew) }) }

// Finish stops new reports and waits up to timeout, or until ctx is done,
// for every resend to be answered 250 or 5xx; then it stops the senders.
// It reports an error when some messages were still pending.
func (l *Load) Finish(ctx context.Context, timeout time.Duration) error {
	l.StopNew()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-l.done:
		l.cancel()
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	l.cancel()
	<-l.done
	return fmt.Errorf("%d messages still not answered 250 or 5xx %s after the load ended", l.Ledger.Counts().Pending, timeout)
}

func (l *Load) session(ctx context.Context, w int, pace *pacer) {
	cl := &smtpClient{addr: l.cfg.Addr, helo: fmt.Sprintf("mta%d.sender.example", w), pipelining: l.cfg.Pipelining}
	defer cl.close()
	var retry []*entry
	n := 0
	for ctx.Err() == nil {
		var e *entry
		now := time.Now()
		newOK := true
		select {
		case <-l.stopNew:
			newOK = false
		default:
		}
		switch {
		case len(retry) > 0 && !retry[0].next.After(now):
			e, retry = retry[0], retry[1:]
		case newOK:
			if pace != nil {
				t := time.NewTimer(time.Until(pace.next(time.Now())))
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return
				case <-l.stopNew:
					t.Stop()
					continue
				}
			}
			e = l.Ledger.add(NewReport(l.cfg.Run, w, n, l.cfg.Size))
			n++
		case len(retry) == 0:
			return
		default:
			sleep(ctx, time.Until(retry[0].next))
			continue
		}
		res := cl.send("", "bounce@"+BounceDomain, e.msg.Raw)
		l.Ledger.mu.Lock()
		if res.transaction {
			e.attempts++
		} else if res.err != nil {
			l.Ledger.conn++
		}
		e.temp += res.temp
		final := false
		switch {
		case res.code == 250:
			e.acked, final = true, true
		case res.code >= 500:
			e.perm, final = res.reply, true
		case res.err != nil && res.dataSent:
			e.inDoubt++
		}
		l.Ledger.mu.Unlock()
		if final {
			// Answered for good: the checks need the id (Sum) and the
			// recipient, not the bytes, which a long soak cannot keep
			// (an hour at 1,600 reports/s of 4 KB is 24 GB: the harness
			// took the machine's memory, and with it the page cache
			// bouncer's store was read through).
			e.msg.Raw = nil
		} else {
			e.next = time.Now().Add(retryDelay)
			retry = append(retry, e)
		}
		if res.err != nil || res.code != 250 || l.cfg.Reconnect {
			cl.close()
			if !res.transaction {
				sleep(ctx, retryDelay) // server down or refusing: do not spin
			}
		}
	}
}

// pacer hands out the send times of a paced load: one every 1/rate
// seconds, to whichever session asks next. A slot whose time has passed
// is taken at once, so sessions delayed by slow answers catch up and the
// load holds its rate as long as the sessions can; a time.Ticker shared
// by the sessions dropped the ticks that came while every session was
// busy, and ran ~30% below the rate asked of it. The catch-up is bounded
// (pacerSlack): after a stall the load does not burst to make up more
// than that.
type pacer struct {
	mu       sync.Mutex
	interval time.Duration
	due      time.Time // the next slot
}

// pacerSlack is how far behind the schedule a pacer lets the load fall
// and still make up for it.
const pacerSlack = time.Second

func newPacer(rate float64, start time.Time) *pacer {
	return &pacer{interval: time.Duration(float64(time.Second) / rate), due: start}
}

// next takes the next slot and returns its time: now or earlier means
// send at once.
func (p *pacer) next(now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if late := now.Sub(p.due); late > pacerSlack {
		p.due = now.Add(-pacerSlack)
	}
	t := p.due
	p.due = p.due.Add(p.interval)
	return t
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
