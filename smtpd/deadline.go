package smtpd

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// deadlines are the listener's own bounds on slow clients, on top of
// go-smtp's ReadTimeout. go-smtp sets the read deadline once before each
// command line (and the DATA body is read under the DATA command's), so a
// client trickling a byte at a time keeps a slot for a whole ReadTimeout
// per command, and one sending whole commands slowly keeps it for ever.
type deadlines struct {
	// command: a command line must be complete within this long of its
	// first byte (0: no bound beyond ReadTimeout).
	command time.Duration
	// envelope: the DATA (or BDAT) command must come within this long of
	// connecting or of the end of the previous message (0: no bound).
	envelope time.Duration
	// evictAfter: the least age of a connection evicted for a new one
	// when the listener is full (evict.go).
	evictAfter time.Duration
	hostname   string
}

// Reasons a connection was closed by one of the listener's deadlines; the
// label values of bouncer_smtp_timeouts_total.
const (
	timeoutCommand  = "command"
	timeoutEnvelope = "envelope"
)

// limitConn is an accepted connection: it counts against the listener's
// limits until closed, and it enforces the deadlines. go-smtp (and
// crypto/tls after STARTTLS) read through it and set its read deadline;
// the effective deadline is the earliest of go-smtp's and the listener's.
type limitConn struct {
	net.Conn
	l    *limitListener
	ip   string
	once sync.Once

	inTxn bool // guarded by l.mu

	greetedAt atomic.Int64 // unix nanoseconds of the first write (the greeting); 0: not greeted, never evicted (evict.go)
	sawLine   atomic.Bool  // a complete line (a command) was read: never evicted (evict.go)

	mu         sync.Mutex // guards the fields below; BDAT calls Data on its own goroutine
	want       time.Time  // the read deadline go-smtp asked for
	cmdStart   bool       // a command read began (go-smtp set the deadline); its first byte is not read yet
	commandBy  time.Time  // the current command line must be complete by then; zero: none
	envelopeBy time.Time  // DATA must come by then; zero: in DATA
	inData     bool       // a DATA or BDAT body is being read: command deadlines are off
	wrote      bool       // the greeting is written
	tls        bool       // STARTTLS was answered: the listener must not write plaintext any more
	expired    string     // the listener deadline that ended the connection, "" while none did

	wmu  sync.Mutex // guards the output held to be written at once (coalesce.go)
	wbuf []byte
	werr error // the error of the last write to the socket; it sticks
}

func newLimitConn(c net.Conn, l *limitListener, ip string) *limitConn {
	lc := &limitConn{Conn: c, l: l, ip: ip}
	if d := l.deadlines.envelope; d > 0 {
		lc.envelopeBy = time.Now().Add(d)
		lc.applyLocked()
	}
	return lc
}

func (c *limitConn) Close() error {
	c.flushBeforeClose()
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
}

// SetReadDeadline records go-smtp's deadline; go-smtp calls it before
// reading each command line, which starts the command deadline at the
// next byte read.
func (c *limitConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.want = t
	c.cmdStart = true
	c.commandBy = time.Time{}
	return c.applyLocked()
}

func (c *limitConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// applyLocked sets the earliest of the deadlines on the socket.
func (c *limitConn) applyLocked() error {
	d := c.want
	for _, t := range []time.Time{c.commandBy, c.envelopeBy} {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	return c.Conn.SetReadDeadline(d)
}

// expiredLocked names the listener's deadline that ended a read at now,
// "" when it was go-smtp's own (or none).
func (c *limitConn) expiredLocked(now time.Time) string {
	early := func(t time.Time) bool {
		return !t.IsZero() && !now.Before(t) && (c.want.IsZero() || t.Before(c.want))
	}
	switch {
	case early(c.commandBy):
		return timeoutCommand
	case early(c.envelopeBy):
		return timeoutEnvelope
	}
	return ""
}

func (c *limitConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	expired, plain := c.expired, !c.tls
	c.mu.Unlock()
	if expired != "" {
		return 0, expiredErr(expired, plain)
	}
	// The session waits for the client now: send it what it is owed.
	if err := c.flush(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if n > 0 && !c.sawLine.Load() && bytes.IndexByte(p[:n], '\n') >= 0 {
		c.sawLine.Store(true)
	}
	if n > 0 {
		c.mu.Lock()
		if c.cmdStart && !c.inData && c.l.deadlines.command > 0 {
			c.cmdStart = false
			c.commandBy = time.Now().Add(c.l.deadlines.command)
			c.applyLocked()
		}
		c.mu.Unlock()
	}
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return n, err
	}
	c.mu.Lock()
	why := c.expiredLocked(time.Now())
	c.expired = why
	c.mu.Unlock()
	if why == "" {
		return n, err // go-smtp's ReadTimeout: it answers 421 itself
	}
	c.l.m.timeouts.WithLabelValues(why).Inc()
	// Every later read fails too: bufio hands go-smtp the partial line
	// read so far as if it were complete and drops this error, so go-smtp
	// may run that fragment as a command before it reads again.
	if plain {
		// Our 421, then no more output: the reply go-smtp may give the
		// fragment is not sent.
		c.Conn.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
		c.holdWrite([]byte(c.l.deadlines.reply(why)))
		c.flush()
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	return n, expiredErr(why, plain)
}

// expiredErr is what reads return once a listener deadline passed. In
// plaintext the listener wrote its own 421, and net.ErrClosed makes go-smtp
// end the connection without a reply of its own; over TLS only go-smtp may
// write, and a timeout makes it answer "421 4.4.2 Idle timeout" and close.
func expiredErr(why string, plain bool) error {
	if plain {
		return fmt.Errorf("smtpd: %s deadline passed: %w", why, net.ErrClosed)
	}
	return os.ErrDeadlineExceeded
}

// closeWriteTimeout bounds writing the 421 of a deadline.
const closeWriteTimeout = 5 * time.Second

// reply is the 421 for a passed deadline (RFC 5321 4.2.3 "421 <domain>
// Service not available, closing transmission channel").
func (d deadlines) reply(why string) string {
	switch why {
	case timeoutCommand:
		return fmt.Sprintf("421 4.4.2 %s Command line not completed within %s of its first byte, closing connection\r\n", d.hostname, d.command)
	default:
		return fmt.Sprintf("421 4.4.2 %s No message within %s of connecting or of the previous message, closing connection\r\n", d.hostname, d.envelope)
	}
}

// Write notes the greeting and the 220 of STARTTLS, after which everything
// on the socket is TLS, and holds p to be written with what follows it
// (coalesce.go).
func (c *limitConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.wrote && !c.tls && bytes.HasPrefix(p, []byte("220 ")) {
		c.tls = true
	}
	if !c.wrote {
		c.greetedAt.Store(time.Now().UnixNano())
	}
	c.wrote = true
	c.mu.Unlock()
	return c.holdWrite(p)
}

// enterData is called as a DATA or BDAT body starts: the command deadlines
// do not apply to it (go-smtp's ReadTimeout and the size limit do). The
// 354 the client waits for is written now, with the replies held before
// it, even if the body is waited for before it is read (the in-flight
// budget).
func (c *limitConn) enterData() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.inData = true
	c.cmdStart = false
	c.commandBy = time.Time{}
	c.envelopeBy = time.Time{}
	c.applyLocked()
	c.mu.Unlock()
	c.flush()
}

// leaveData is called when a transaction ends; after a message the
// envelope deadline starts again. The message's final reply (go-smtp
// ends the transaction after writing it) is written now: a 250 is not
// held while the session goes on with commands the client pipelined
// after the message.
func (c *limitConn) leaveData() {
	if c == nil {
		return
	}
	c.mu.Lock()
	if c.inData && c.l.deadlines.envelope > 0 {
		c.envelopeBy = time.Now().Add(c.l.deadlines.envelope)
	}
	c.inData = false
	c.applyLocked()
	c.mu.Unlock()
	c.flush()
}
