package smtpd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bouncer-mail/bouncer/event"
)

// backend creates a session per connection and tracks the sessions that are
// inside a DATA transfer, so a graceful shutdown can wait for them.
type backend struct {
	s *Server

	mu     sync.Mutex
	inData int
	idle   *sync.Cond
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ip := remoteIP(c.Conn())
	return &session{b: b, conn: c, ip: ip, log: b.s.log.With("remote_ip", ip)}, nil
}

func (b *backend) enterData() {
	b.mu.Lock()
	b.inData++
	b.mu.Unlock()
}

func (b *backend) leaveData() {
	b.mu.Lock()
	b.inData--
	if b.inData == 0 {
		b.idle.Broadcast()
	}
	b.mu.Unlock()
}

// session is one SMTP connection's transaction state.
type session struct {
	b    *backend
	conn *smtp.Conn
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
	s.b.enterData()
	defer s.b.leaveData()
	defer s.recovered(&err)
	start := s.mailAt
	defer func() {
		if !start.IsZero() {
			s.b.s.m.latency.Observe(time.Since(start).Seconds())
		}
	}()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		// The size limit (552 5.3.4) or a broken connection. go-smtp needs
		// r consumed; it discards what is left itself after an error.
		return s.reply(err)
	}
	if len(s.recipients) == 0 {
		return s.reply(errNoRecipients)
	}
	raw := buf.Bytes()
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

func (s *session) Reset() {
	s.returnPath = ""
	s.recipients = s.recipients[:0]
	s.mailAt = time.Time{}
}

func (s *session) Logout() error { return nil }

func tlsVersion(c *smtp.Conn) string {
	st, ok := c.TLSConnectionState()
	if !ok {
		return ""
	}
	return tls.VersionName(st.Version)
}
