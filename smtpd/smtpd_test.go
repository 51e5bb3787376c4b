package smtpd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/verp"
)

const testDomain = "bounces.example.com"

var testKeys = "test-key-for-the-listener-0001"

// harness is a listener with a real embedded NATS JetStream behind it.
type harness struct {
	t      testing.TB
	srv    *Server
	addr   string
	js     jetstream.JetStream
	nats   *server.Server
	nc     *nats.Conn
	dir    string
	signer *verp.Signer
	reg    *prometheus.Registry
}

func newHarness(t testing.TB, mod func(*Config)) *harness {
	t.Helper()
	return newHarnessOn(t, mod, nil)
}

// newHarnessOn is newHarness with the listener's socket listener wrapped
// by wrap (nil: not wrapped).
func newHarnessOn(t testing.TB, mod func(*Config), wrap func(net.Listener) net.Listener) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), reg: prometheus.NewRegistry()}
	h.startNATS(-1)
	keys, err := verp.ParseKeys(testKeys)
	if err != nil {
		t.Fatal(err)
	}
	h.signer = &verp.Signer{Keys: keys}
	pub := &broker.Publisher{JS: h.js, Timeout: 2 * time.Second}
	t.Cleanup(pub.Close)
	cfg := Config{
		Hostname:   "bouncer.test",
		Domains:    []string{testDomain},
		Signer:     h.signer,
		Publisher:  pub,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registerer: h.reg,
	}
	if mod != nil {
		mod(&cfg)
	}
	h.srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = l.Addr().String()
	if wrap != nil {
		l = wrap(l)
	}
	go h.srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.srv.Shutdown(ctx)
		h.nc.Close()
		if h.nats != nil {
			h.nats.Shutdown()
		}
	})
	return h
}

// startNATS starts (or restarts, on the same port and store) the embedded
// server and connects to it.
func (h *harness) startNATS(port int) {
	h.t.Helper()
	listen := "127.0.0.1:" + strconv.Itoa(port)
	s, err := broker.StartEmbedded(broker.EmbeddedConfig{Listen: listen, StoreDir: h.dir + "/nats", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		h.t.Fatal(err)
	}
	h.nats = s
	if h.nc == nil {
		h.nc, err = nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			h.t.Fatal(err)
		}
		h.js, err = jetstream.New(h.nc)
		if err != nil {
			h.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := broker.EnsureStreams(ctx, h.js, 1); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) natsPort() int {
	return h.nats.Addr().(*net.TCPAddr).Port
}

// stored returns how many reports the stream holds.
func (h *harness) stored() uint64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := h.js.Stream(ctx, broker.StreamReports)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.Msgs
}

func (h *harness) sign(rcpt string) string {
	a, err := h.signer.Sign(testDomain, rcpt, "<m1@example.org>")
	if err != nil {
		h.t.Fatal(err)
	}
	return a
}

// client speaks raw SMTP lines, so a test sees every code.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func (h *harness) dial() *client {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	cl := &client{t: h.t, conn: c, r: bufio.NewReader(c)}
	if code, line := cl.read(); code != 220 {
		h.t.Fatalf("greeting %q", line)
	}
	return cl
}

// read returns the code and last line of one (multi-line) reply.
func (c *client) read() (int, string) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return 0, err.Error()
		}
		if len(line) >= 4 && line[3] == '-' {
			continue
		}
		code, _ := strconv.Atoi(line[:3])
		return code, strings.TrimSpace(line)
	}
}

// ehlo sends EHLO and returns the whole multi-line reply.
func (c *client) ehlo(name string) string {
	c.t.Helper()
	fmt.Fprintf(c.conn, "EHLO %s\r\n", name)
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatal(err)
		}
		b.WriteString(line)
		if len(line) < 4 || line[3] == ' ' {
			return b.String()
		}
	}
}

func (c *client) cmd(format string, args ...any) (int, string) {
	c.t.Helper()
	fmt.Fprintf(c.conn, format+"\r\n", args...)
	return c.read()
}

func (c *client) expect(want int, format string, args ...any) string {
	c.t.Helper()
	code, line := c.cmd(format, args...)
	if code != want {
		c.t.Fatalf("%s: got %q, want %d", fmt.Sprintf(format, args...), line, want)
	}
	return line
}

// send runs one whole transaction and returns the final reply.
func (c *client) send(rcpt, body string) (int, string) {
	c.t.Helper()
	c.expect(250, "MAIL FROM:<>")
	c.expect(250, "RCPT TO:<%s>", rcpt)
	c.expect(354, "DATA")
	io.WriteString(c.conn, strings.ReplaceAll(body, "\n", "\r\n")+"\r\n.\r\n")
	return c.read()
}

const ndr = `From: MAILER-DAEMON@mx.example.net
To: bounce@example.org
Subject: Undelivered Mail Returned to Sender
Message-ID: <ndr-1@mx.example.net>

<nobody@example.net>: host mx.example.net said: 550 5.1.1 User unknown`

func TestSignedNDRAccepted(t *testing.T) {
	h := newHarness(t, nil)
	c := h.dial()
	c.expect(250, "EHLO mx.example.net")
	if code, line := c.send(h.sign("nobody@example.net"), ndr); code != 250 {
		t.Fatalf("DATA: %q, want 250", line)
	}
	if n := h.stored(); n != 1 {
		t.Errorf("stream holds %d reports, want 1", n)
	}
}

func TestRecipientsRefused(t *testing.T) {
	h := newHarness(t, nil)
	expired := &verp.Signer{Keys: h.signer.Keys, Now: func() time.Time { return time.Now().Add(-60 * 24 * time.Hour) }}
	old, err := expired.Sign(testDomain, "a@example.net", "<m@example.org>")
	if err != nil {
		t.Fatal(err)
	}
	good := h.sign("a@example.net")
	forged := strings.Replace(good, "+", "+x", 1)
	otherKeys, _ := verp.ParseKeys("another-key-nobody-has-00001")
	foreign, _ := (&verp.Signer{Keys: otherKeys}).Sign(testDomain, "a@example.net", "<m@example.org>")
	tests := []struct {
		name, rcpt string
		want       string
	}{
		{"foreign domain", "b+abc@relay.example.org", "550 5.7.1"},
		{"forged token", forged, "550 5.7.1"},
		{"other key", foreign, "550 5.7.1"},
		{"expired", old, "550 5.7.1"},
		{"unsigned", "bounces@" + testDomain, "550 5.7.1"},
		{"not an address", "nobody", "5"},
	}
	c := h.dial()
	c.expect(250, "HELO mx.example.net")
	c.expect(250, "MAIL FROM:<>")
	for _, tt := range tests {
		code, line := c.cmd("RCPT TO:<%s>", tt.rcpt)
		if !strings.HasPrefix(line, tt.want) || code == 250 {
			t.Errorf("%s: RCPT %s: %q, want %s", tt.name, tt.rcpt, line, tt.want)
		}
	}
	c.expect(250, "RCPT TO:<%s>", good)
}

func TestAcceptUnsigned(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AcceptUnsigned = true })
	c := h.dial()
	c.expect(250, "HELO mx.example.net")
	c.expect(250, "MAIL FROM:<>")
	c.expect(250, "RCPT TO:<bounces@%s>", testDomain)
	good := h.sign("a@example.net")
	c.expect(550, "RCPT TO:<%s>", strings.Replace(good, "+", "+x", 1)) // forged is refused even so
}

func TestOversizeMessage(t *testing.T) {
	h := newHarness(t, nil)
	c := h.dial()
	c.expect(250, "EHLO mx.example.net")
	c.expect(250, "MAIL FROM:<>")
	c.expect(250, "RCPT TO:<%s>", h.sign("a@example.net"))
	c.expect(354, "DATA")
	line := strings.Repeat("x", 998) + "\r\n"
	w := bufio.NewWriterSize(c.conn, 64<<10)
	go func() {
		for sent := 0; sent < 16<<20; sent += len(line) {
			if _, err := w.WriteString(line); err != nil {
				return
			}
		}
		w.WriteString(".\r\n")
		w.Flush()
	}()
	code, reply := c.read()
	if code != 552 || !strings.Contains(reply, "5.3.4") {
		t.Fatalf("16 MiB message: %q, want 552 5.3.4", reply)
	}
	if n := h.stored(); n != 0 {
		t.Errorf("stream holds %d reports after a refused one", n)
	}
}

func TestSameNDRTwiceStoredOnce(t *testing.T) {
	h := newHarness(t, nil)
	rcpt := h.sign("nobody@example.net")
	for i := 0; i < 2; i++ {
		c := h.dial()
		c.expect(250, "HELO mx.example.net")
		if code, line := c.send(rcpt, ndr); code != 250 {
			t.Fatalf("send %d: %q", i, line)
		}
	}
	if n := h.stored(); n != 1 {
		t.Errorf("stream holds %d reports, want 1", n)
	}
}

func TestNATSDownGives451(t *testing.T) {
	h := newHarness(t, nil)
	port := h.natsPort()
	c := h.dial()
	c.expect(250, "HELO mx.example.net")
	c.expect(250, "MAIL FROM:<>")
	c.expect(250, "RCPT TO:<%s>", h.sign("nobody@example.net"))
	h.nats.Shutdown() // NATS goes away mid-session
	h.nats.WaitForShutdown()
	c.expect(354, "DATA")
	io.WriteString(c.conn, strings.ReplaceAll(ndr, "\n", "\r\n")+"\r\n.\r\n")
	code, line := c.read()
	if code != 451 || !strings.Contains(line, "4.3.0") || !strings.Contains(line, "ref ") {
		t.Fatalf("NATS down: %q, want 451 4.3.0 with a reference", line)
	}
	for _, leak := range []string{"nats", "jetstream", "timeout", "deadline"} {
		if strings.Contains(strings.ToLower(line), leak) {
			t.Errorf("reply %q leaks %q", line, leak)
		}
	}
	// NATS is back: the sender retries and the report is stored once.
	h.startNATS(port)
	deadline := time.Now().Add(10 * time.Second)
	for h.nc.Status() != nats.CONNECTED && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	for i := 0; i < 2; i++ {
		c := h.dial()
		c.expect(250, "HELO mx.example.net")
		if code, line := c.send(h.sign("nobody@example.net"), ndr); code != 250 {
			t.Fatalf("retry %d after NATS came back: %q", i, line)
		}
	}
	if n := h.stored(); n != 1 {
		t.Errorf("stream holds %d reports, want 1", n)
	}
}

// shutdown starts h.srv.Shutdown and returns its result channel.
func (h *harness) shutdown(timeout time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		done <- h.srv.Shutdown(ctx)
	}()
	return done
}

// closed waits until the server closed c (a read ends in an error) and
// fails the test if it sends anything else first.
func (c *client) closed(what string) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, err := c.r.ReadString('\n')
	if err == nil {
		c.t.Fatalf("%s: got %q, want the connection closed", what, line)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.t.Fatalf("%s: still open 20s after Shutdown", what)
	}
}

// TestShutdownDuringData shuts down while a client that has its 354 is
// sending its message. Shutdown closes the connections without a
// transaction first; once they are closed it has seen the transfer, and it
// must wait for it: the transfer is answered 250, then closed. No sleep
// decides anything: the idle connections' closing is the signal that
// Shutdown has looked at the sessions.
func TestShutdownDuringData(t *testing.T) {
	h := newHarness(t, nil)
	c := h.dial()
	c.expect(250, "HELO mx.example.net")
	c.expect(250, "MAIL FROM:<>")
	c.expect(250, "RCPT TO:<%s>", h.sign("nobody@example.net"))
	c.expect(354, "DATA")
	idle := h.dial() // connected, greeted, nothing said
	greeted := h.dial()
	greeted.expect(250, "EHLO mx.example.net")
	done := h.shutdown(time.Minute)
	idle.closed("a connection with no session")
	greeted.closed("a connection with a session but no transaction")
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a DATA transfer was in flight", err)
	default:
	}
	io.WriteString(c.conn, "From: MAILER-DAEMON@mx.example.net\r\nSubject: failure notice\r\n\r\n")
	io.WriteString(c.conn, "<nobody@example.net>: 550 5.1.1 user unknown\r\n.\r\n")
	if code, line := c.read(); code != 250 {
		t.Fatalf("the transfer in flight got %q, want 250", line)
	}
	c.closed("the connection whose transfer ended")
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := h.stored(); n != 1 {
		t.Errorf("stream holds %d reports, want the one acknowledged", n)
	}
	if _, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		t.Error("the listener still accepts connections after Shutdown")
	}
}

// TestShutdownMidEnvelope shuts down after MAIL FROM was accepted: the
// sender may finish its transaction (RCPT, DATA) and gets its 250.
func TestShutdownMidEnvelope(t *testing.T) {
	h := newHarness(t, nil)
	c := h.dial()
	c.expect(250, "EHLO mx.example.net")
	c.expect(250, "MAIL FROM:<>")
	idle := h.dial()
	done := h.shutdown(time.Minute)
	idle.closed("an idle connection")
	c.expect(250, "RCPT TO:<%s>", h.sign("nobody@example.net"))
	c.expect(354, "DATA")
	io.WriteString(c.conn, strings.ReplaceAll(ndr, "\n", "\r\n")+"\r\n.\r\n")
	if code, line := c.read(); code != 250 {
		t.Fatalf("the transaction in progress got %q, want 250", line)
	}
	c.closed("the connection whose transaction ended")
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := h.stored(); n != 1 {
		t.Errorf("stream holds %d reports, want 1", n)
	}
}

// TestShutdownIdle: with no transaction anywhere (one connection has just
// finished one) Shutdown closes everything and returns without waiting for
// any client.
func TestShutdownIdle(t *testing.T) {
	h := newHarness(t, nil)
	after := h.dial()
	after.expect(250, "EHLO mx.example.net")
	if code, line := after.send(h.sign("nobody@example.net"), ndr); code != 250 {
		t.Fatalf("DATA: %q", line)
	}
	after.expect(250, "RSET")
	idle := h.dial()
	if err := <-h.shutdown(time.Minute); err != nil {
		t.Fatalf("Shutdown with idle connections only: %v", err)
	}
	after.closed("a connection after its transaction")
	idle.closed("an idle connection")
}

// TestShutdownDeafClient: a client that pipelines commands and never
// reads the replies leaves the session blocked writing them (the replies
// coalesce.go holds are written as they fill a block). Shutdown closes
// that idle connection at once: Close does not wait behind the blocked
// write, which would hold it for the whole WriteTimeout (a minute).
func TestShutdownDeafClient(t *testing.T) {
	h := newHarness(t, nil)
	deaf := h.dial()
	deaf.expect(250, "EHLO mx.example.net")
	noops := []byte(strings.Repeat("NOOP\r\n", 10000))
	for i := 0; ; i++ {
		// Write until the listener stops reading: its session is blocked
		// writing replies nobody reads.
		deaf.conn.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := deaf.conn.Write(noops); err != nil {
			break
		}
		if i == 1000 {
			t.Fatal("the listener read 60 MB of NOOPs without blocking on its replies")
		}
	}
	done := h.shutdown(time.Minute)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown still waiting 20 s after it began: closing the deaf client's connection waited for its blocked write")
	}
}

// TestShutdownStalledTransaction: a sender that stops in the middle of its
// transaction holds Shutdown only until its context ends; then it is
// closed too.
func TestShutdownStalledTransaction(t *testing.T) {
	h := newHarness(t, nil)
	c := h.dial()
	c.expect(250, "EHLO mx.example.net")
	c.expect(250, "MAIL FROM:<>")
	if err := <-h.shutdown(200 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stalled transaction: %v, want context.DeadlineExceeded", err)
	}
	c.closed("the stalled transaction's connection")
}

func TestConnectionLimits(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxConnsPerIP = 2 })
	a, b := h.dial(), h.dial()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(line, "421 4.7.0") {
		t.Errorf("third connection from one IP: %q, want 421 4.7.0", line)
	}
	a.conn.Close()
	b.expect(250, "NOOP")
	// A slot freed: a new connection is served again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		l, _ := bufio.NewReader(d).ReadString('\n')
		d.Close()
		if strings.HasPrefix(l, "220") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a connection closed, new ones still get %q", l)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLimitsAdvertised(t *testing.T) {
	h := newHarness(t, nil)
	c := h.dial()
	ehlo := c.ehlo("mx.example.net")
	for _, want := range []string{"SIZE " + strconv.Itoa(DefaultMaxMessageBytes), "RCPTMAX=100", "SMTPUTF8"} {
		if !strings.Contains(ehlo, want) {
			t.Errorf("EHLO reply lacks %q:\n%s", want, ehlo)
		}
	}
	long := "NOOP " + strings.Repeat("x", DefaultMaxLineLength+10)
	if code, line := c.cmd("%s", long); code != 500 {
		t.Errorf("a %d-byte command line: %q, want 500", len(long), line)
	}
}

// TestLongLineRefused: go-smtp applies the command line limit to DATA
// lines too and hands the session smtp.ErrTooLongLine; the sender must get
// a permanent refusal saying why, not the 451 of a store failure (which
// had it resend the same bytes for days), and nothing is published.
func TestLongLineRefused(t *testing.T) {
	h := newHarness(t, nil)
	c := h.dial()
	c.expect(250, "EHLO mx.example.net")
	c.expect(250, "MAIL FROM:<>")
	c.expect(250, "RCPT TO:<%s>", h.sign("a@example.net"))
	c.expect(354, "DATA")
	go fmt.Fprintf(c.conn, "Subject: x\r\nX-Long: %s\r\n\r\nbody\r\n.\r\n", strings.Repeat("l", 2*DefaultMaxLineLength))
	code, reply := c.read()
	if code != 554 || !strings.Contains(reply, "5.6.0") || !strings.Contains(reply, "line") {
		t.Fatalf("a %d-byte line: %q, want 554 5.6.0 naming the line length", 2*DefaultMaxLineLength, reply)
	}
	if n := h.stored(); n != 0 {
		t.Errorf("stream holds %d reports after a refused one", n)
	}
}
