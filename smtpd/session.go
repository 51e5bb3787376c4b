package smtpd

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bouncer-mail/bouncer/event"
)

// backend creates a session per connection.
type backend struct {
	s *Server
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ip := remoteIP(c.Conn())
	return &session{b: b, conn: c, lc: listenerConn(c.Conn()), ip: ip, log: b.s.log.With("remote_ip", ip)}, nil
}

// listenerConn returns the listener's connection under nc (a *tls.Conn
// after STARTTLS), nil if nc did not come from a limitListener.
func listenerConn(nc net.Conn) *limitConn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	lc, _ := nc.(*limitConn)
	return lc
}

// session is one SMTP connection's transaction state.
type session struct {
	b    *backend
	conn *smtp.Conn
	lc   *limitConn // nil when not served through Serve's listener
	ip   string
	log  *slog.Logger

	mailAt     time.Time
	returnPath string
	recipients []string
}

// reply counts and returns the reply for err (nil: 250).
func (s *session) reply(err error) error {
	se := replyFor(err, "")
	if se != nil && se.Code == 451 {
		ref := newRef()
		se = replyFor(err, ref)
		s.log.Error("report not accepted", "ref", ref, "err", err)
	}
	code := 250
	if se != nil {
		code = se.Code
	}
	s.b.s.m.replies.WithLabelValues(strconv.Itoa(code)).Inc()
	if se == nil {
		return nil
	}
	return se
}

// recovered turns a panic in a session method into a counted, logged 451.
func (s *session) recovered(err *error) {
	if r := recover(); r != nil {
		s.b.s.m.panics.Inc()
		*err = s.reply(fmt.Errorf("panic: %v", r))
	}
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	// From here to the end of the transaction (Reset) a graceful Shutdown
	// waits for this connection; once it began, no transaction starts.
	if s.lc != nil && !s.lc.l.beginTxn(s.lc) {
		return s.reply(errShuttingDown)
	}
	// Every sender is accepted: NDRs come from the null sender, ARF reports
	// and auto-replies from ordinary ones.
	s.mailAt = time.Now()
	s.returnPath = from
	s.recipients = s.recipients[:0]
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) (err error) {
	defer s.recovered(&err)
	addr := strings.ToLower(strings.TrimSpace(to))
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return s.reply(errBadAddress)
	}
	if !s.b.s.ourDomain(addr[at+1:]) {
		return s.reply(errNotOurDomain)
	}
	if err := s.b.s.verify(to); err != nil {
		s.log.Info("recipient refused", "rcpt", to, "why", err)
		return s.reply(err)
	}
	s.recipients = append(s.recipients, to)
	return nil
}

func (s *session) Data(r io.Reader) (err error) {
	s.lc.enterData()
	defer s.recovered(&err)
	start := s.mailAt
	defer func() {
		if !start.IsZero() {
			s.b.s.m.latency.Observe(time.Since(start).Seconds())
		}
	}()
	raw, taken, err := readBudgeted(s.b.s.inflight, r, s.b.s.budgetWait)
	if errors.Is(err, errBudget) {
		s.b.s.m.budgetRefused.Inc()
		return s.reply(errBusy)
	}
	if err != nil {
		// The size limit (552 5.3.4) or a broken connection. go-smtp needs
		// r consumed; it discards what is left itself after an error.
		return s.reply(err)
	}
	defer s.b.s.inflight.give(taken)
	if len(s.recipients) == 0 {
		return s.reply(errNoRecipients)
	}
	sum := sha256.Sum256(raw)
	env := event.Envelope{
		ID:         hex.EncodeToString(sum[:]),
		ReturnPath: s.returnPath,
		Recipients: append([]string(nil), s.recipients...),
		ClientIP:   s.ip,
		Helo:       s.conn.Hostname(),
		Received:   time.Now().UTC(),
		TLS:        tlsVersion(s.conn),
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.b.s.cfg.PublishTimeout)
	defer cancel()
	if err := s.b.s.cfg.Publisher.Publish(ctx, env, raw); err != nil {
		return s.reply(err)
	}
	s.b.s.m.bytes.Add(float64(len(raw)))
	s.log.Debug("report accepted", "id", env.ID, "bytes", len(raw), "rcpt", env.Recipients)
	return s.reply(nil)
}

// Reset ends the transaction: go-smtp calls it on RSET, EHLO and after the
// final reply to DATA has been written.
func (s *session) Reset() {
	s.returnPath = ""
	s.recipients = s.recipients[:0]
	s.mailAt = time.Time{}
	s.endTxn()
}

func (s *session) Logout() error {
	s.endTxn()
	return nil
}

func (s *session) endTxn() {
	if s.lc == nil {
		return
	}
	s.lc.leaveData()
	s.lc.l.endTxn(s.lc)
}

func tlsVersion(c *smtp.Conn) string {
	st, ok := c.TLSConnectionState()
	if !ok {
		return ""
	}
	return tls.VersionName(st.Version)
}
