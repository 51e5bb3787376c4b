package reliability

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

// peer is an SMTP server for the client's tests: go-smtp's server (the
// one bouncer's listener is built on) over loopback, refusing what a test
// says, and recording what it read from the socket, one entry per read.
type peer struct {
	mailErr, rcptErr error
	mu               sync.Mutex
	reads            []string
	messages         []string
}

func (p *peer) NewSession(*smtp.Conn) (smtp.Session, error) { return &peerSession{p: p}, nil }

type peerSession struct{ p *peer }

func (s *peerSession) Mail(string, *smtp.MailOptions) error {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	return s.p.mailErr
}

func (s *peerSession) Rcpt(string, *smtp.RcptOptions) error {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	return s.p.rcptErr
}

func (s *peerSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.p.mu.Lock()
	s.p.messages = append(s.p.messages, string(b))
	s.p.mu.Unlock()
	return nil
}
func (s *peerSession) Reset()        {}
func (s *peerSession) Logout() error { return nil }

type readLog struct {
	net.Listener
	p *peer
}

func (l readLog) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	return readConn{c, l.p}, err
}

type readConn struct {
	net.Conn
	p *peer
}

func (c readConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.p.mu.Lock()
	c.p.reads = append(c.p.reads, string(b[:n]))
	c.p.mu.Unlock()
	return n, err
}

// TestClientPipelining checks the load's SMTP client with and without
// pipelining: MAIL, RCPT and DATA reach the server in one read when it
// pipelines, the message is sent only when all three were accepted, and a
// refusal is the result whichever command of the group it answered.
func TestClientPipelining(t *testing.T) {
	raw := []byte("Subject: test\r\n\r\nbody\r\n")
	tests := []struct {
		name       string
		pipelining bool
		mailErr    error
		rcptErr    error
		wantCode   int
		wantTemp   int
	}{
		{"pipelined, accepted", true, nil, nil, 250, 0},
		{"pipelined, RCPT refused", true, nil, &smtp.SMTPError{Code: 550, Message: "no such user"}, 550, 0},
		{"pipelined, MAIL deferred", true, &smtp.SMTPError{Code: 451, Message: "try later"}, nil, 451, 1},
		{"one at a time, accepted", false, nil, nil, 250, 0},
		{"one at a time, RCPT refused", false, nil, &smtp.SMTPError{Code: 550, Message: "no such user"}, 550, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &peer{mailErr: tt.mailErr, rcptErr: tt.rcptErr}
			srv := smtp.NewServer(p)
			srv.Domain = "peer.test"
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(readLog{l, p})
			t.Cleanup(func() { srv.Close() })

			c := &smtpClient{addr: l.Addr().String(), helo: "mta.test", pipelining: tt.pipelining}
			defer c.close()
			res := c.send("", "bounce@"+BounceDomain, raw)
			if res.err != nil {
				t.Fatalf("send: %v", res.err)
			}
			if res.code != tt.wantCode || res.temp != tt.wantTemp {
				t.Errorf("got code %d (%q), temp %d; want %d, temp %d", res.code, res.reply, res.temp, tt.wantCode, tt.wantTemp)
			}
			if got := res.dataSent; got != (tt.wantCode == 250) {
				t.Errorf("dataSent %v with a %d", got, res.code)
			}
			if c.pipeline != tt.pipelining {
				t.Errorf("pipelining on the connection: %v, want %v (go-smtp advertises it)", c.pipeline, tt.pipelining)
			}
			p.mu.Lock()
			group := false
			for _, r := range p.reads {
				if strings.Contains(r, "MAIL FROM:") && strings.Contains(r, "RCPT TO:") && strings.Contains(r, "DATA\r\n") {
					group = true
				}
			}
			if group != tt.pipelining {
				t.Errorf("MAIL, RCPT and DATA in one read: %v, want %v; reads %q", group, tt.pipelining, p.reads)
			}
			want := 0
			if tt.wantCode == 250 {
				want = 1
			}
			if len(p.messages) != want || (want == 1 && p.messages[0] != string(raw)) {
				t.Errorf("server received %q, want %d message(s) of %q", p.messages, want, raw)
			}
			p.mailErr, p.rcptErr = nil, nil
			p.mu.Unlock()
			// The connection is still usable after a refusal: the next
			// transaction starts where the last one's replies ended.
			if tt.wantCode != 250 {
				if res := c.send("", "bounce@"+BounceDomain, raw); res.code != 250 {
					t.Errorf("the next transaction on the connection got %d %q (%v)", res.code, res.reply, res.err)
				}
			}
		})
	}
}
