package smtpd

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// trickle writes s one byte every interval to c until a write fails or stop
// is closed, and never more than s.
func trickle(c net.Conn, s string, every time.Duration, stop <-chan struct{}) {
	for i := 0; i < len(s); i++ {
		select {
		case <-stop:
			return
		case <-time.After(every):
		}
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte{s[i]}); err != nil {
			return
		}
	}
}

// closedWith reads what the server sends until it closes c, and returns
// the last line and how long that took. It fails the test if c is still
// open after limit.
func closedWith(t *testing.T, r *bufio.Reader, c net.Conn, limit time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	var last string
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			last = strings.TrimSpace(line)
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection still open after %s (last line %q)", limit, last)
			}
			return last, time.Since(start)
		}
	}
}

// TestSlowlorisCommandLine: real TCP clients that trickle "EHLO aaa..." a
// byte every 100 ms and never end the line hold every slot of the listener;
// the command deadline closes each of them with a 421 that says why, though
// bytes keep coming and go-smtp's own read timeout is far away, and a
// normal sender gets in afterwards.
func TestSlowlorisCommandLine(t *testing.T) {
	const slots = 3
	h := newHarness(t, func(c *Config) {
		c.MaxConnections = slots
		c.CommandTimeout = time.Second
		c.EvictIdleAfter = time.Hour // the command deadline alone; evict_test.go tests eviction
		c.ReadTimeout = time.Minute  // not what ends the attack
	})
	stop := make(chan struct{})
	defer close(stop)
	type attacker struct {
		conn  net.Conn
		r     *bufio.Reader
		start time.Time
	}
	var attackers []attacker
	for range slots {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "220 ") {
			t.Fatalf("attack connection greeted %q", line)
		}
		attackers = append(attackers, attacker{c, r, time.Now()})
		go trickle(c, "EHLO "+strings.Repeat("a", 1000), 100*time.Millisecond, stop)
	}
	// Every slot is taken: a sender is turned away.
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.HasPrefix(line, "421 4.7.0") {
		t.Fatalf("a sender during the attack got %q, want 421 4.7.0 (all slots held)", line)
	}
	for i, a := range attackers {
		last, _ := closedWith(t, a.r, a.conn, 30*time.Second)
		if !strings.HasPrefix(last, "421 4.4.2 bouncer.test Command line not completed within 1s") {
			t.Errorf("attack connection %d closed after %q, want the command deadline's 421", i, last)
		}
		// The deadline runs from the first byte, sent 100 ms after the
		// greeting: it cannot have ended the connection sooner.
		if took := time.Since(a.start); took < time.Second {
			t.Errorf("attack connection %d closed %s after its greeting, before the 1s deadline", i, took)
		}
	}
	if got := metric(t, h.reg, "bouncer_smtp_timeouts_total", "deadline", "command"); got != slots {
		t.Errorf("bouncer_smtp_timeouts_total{deadline=command} = %v, want %d", got, slots)
	}
	// The slots are free again: a normal sender delivers. (A slot is
	// released just after its socket closes, so the first dial may still
	// find it taken.)
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		cl := &client{t: t, conn: d, r: bufio.NewReader(d)}
		code, line := cl.read()
		if code == 220 {
			defer d.Close()
			cl.expect(250, "EHLO mx.example.net")
			if code, line := cl.send(h.sign("nobody@example.net"), ndr); code != 250 {
				t.Fatalf("a sender after the attack: DATA %q", line)
			}
			break
		}
		d.Close()
		if time.Now().After(deadline) {
			t.Fatalf("after the attack connections were closed, senders still get %q", line)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCommandDeadlineSparesSlowSenders: whole command lines that come
// slowly, and a DATA body that takes longer than the command deadline, are
// not cut by it.
func TestCommandDeadlineSparesSlowSenders(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.CommandTimeout = 300 * time.Millisecond
		c.EnvelopeTimeout = time.Minute
	})
	c := h.dial()
	time.Sleep(500 * time.Millisecond) // idle between commands is go-smtp's ReadTimeout's business
	c.expect(250, "EHLO mx.example.net")
	c.expect(250, "MAIL FROM:<>")
	c.expect(250, "RCPT TO:<%s>", h.sign("nobody@example.net"))
	c.expect(354, "DATA")
	body := strings.ReplaceAll(ndr, "\n", "\r\n") + "\r\n.\r\n"
	half := len(body) / 2
	io.WriteString(c.conn, body[:half])
	time.Sleep(500 * time.Millisecond) // a body line open longer than the command deadline
	io.WriteString(c.conn, body[half:])
	if code, line := c.read(); code != 250 {
		t.Fatalf("slow DATA body: %q, want 250", line)
	}
	c.expect(250, "NOOP")
}

// TestEnvelopeDeadline: a client that sends whole commands, each in time,
// but never comes to DATA is closed with a 421 that says why; after a
// message the deadline starts again.
func TestEnvelopeDeadline(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.EnvelopeTimeout = 2 * time.Second
	})
	// A sender that delivers, then lingers with NOOPs.
	c := h.dial()
	c.expect(250, "EHLO mx.example.net")
	if code, line := c.send(h.sign("nobody@example.net"), ndr); code != 250 {
		t.Fatalf("DATA: %q", line)
	}
	start := time.Now()
	for {
		fmt.Fprintf(c.conn, "NOOP\r\n")
		code, line := c.read()
		if code == 250 {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if !strings.HasPrefix(line, "421 4.4.2 bouncer.test No message within 2s") {
			t.Fatalf("lingering client got %q, want the envelope deadline's 421", line)
		}
		break
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("closed %s after its message, before the 2s deadline", took)
	}
	if code, line := c.read(); code != 0 {
		t.Errorf("after the 421: %q, want the connection closed", line)
	}
	if got := metric(t, h.reg, "bouncer_smtp_timeouts_total", "deadline", "envelope"); got != 1 {
		t.Errorf("bouncer_smtp_timeouts_total{deadline=envelope} = %v, want 1", got)
	}
}

// TestCommandDeadlineOverTLS: after STARTTLS the listener cannot write its
// own 421 into the TLS stream; go-smtp answers 421 4.4.2 through it and
// the connection is closed all the same.
func TestCommandDeadlineOverTLS(t *testing.T) {
	cert := selfSigned(t)
	h := newHarness(t, func(c *Config) {
		c.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		c.CommandTimeout = time.Second
	})
	c := h.dial()
	c.ehlo("mx.example.net")
	c.expect(220, "STARTTLS")
	tc := tls.Client(c.conn, &tls.Config{ServerName: "bouncer.test", InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go trickle(tc, "EHLO "+strings.Repeat("a", 1000), 100*time.Millisecond, stop)
	last, _ := closedWith(t, bufio.NewReader(tc), tc, 30*time.Second)
	if !strings.HasPrefix(last, "421 4.4.2") {
		t.Errorf("TLS connection closed after %q, want 421 4.4.2", last)
	}
}

// metric returns the value of the counter name{label=value} in reg.
func metric(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no metric %s{%s=%q}", name, label, value)
	return 0
}
