package smtpd

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// pipeListener hands the server the ends of net.Pipe connections.
type pipeListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// FuzzSession drives whole SMTP sessions over net.Pipe against the real
// listener and a real embedded JetStream. Whatever the client sends, the
// listener must not panic, must answer, and must end the session.
func FuzzSession(f *testing.F) {
	f.Add("EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<b@bounces.example.com>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
	f.Add("HELO a\r\nRCPT TO:<x>\r\nDATA\r\n.\r\n")
	f.Add("MAIL FROM:<a@b> SIZE=99999999999\r\nRCPT TO:<b+zz@bounces.example.com> NOTIFY=NEVER\r\n")
	f.Add("EHLO a\r\nMAIL FROM:<> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<ü@bounces.example.com>\r\nBDAT 5 LAST\r\nhello")
	f.Add("STARTTLS\r\nAUTH PLAIN AGFiAGM=\r\nRSET\r\nVRFY a\r\nNOOP\r\n" + strings.Repeat("A", 3000) + "\r\n")
	f.Add("\x00\xff\r\n\r\n.\r\n")
	h := newHarness(f, nil)
	pl := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	go h.srv.Serve(pl)
	defer pl.Close()
	f.Fuzz(func(t *testing.T, input string) {
		if len(input) > 64<<10 {
			return
		}
		client, server := net.Pipe()
		pl.conns <- server
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			io.Copy(io.Discard, client)
		}()
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(client, input)
		io.WriteString(client, "\r\n.\r\nQUIT\r\n")
		// The input may leave the session waiting for more (a BDAT chunk
		// that swallowed the QUIT): hang up, as a real client would.
		select {
		case <-readDone:
		case <-time.After(time.Second):
		}
		client.Close()
		<-readDone
		// Once the client is gone the session must end: its connection
		// slot is released.
		deadline := time.Now().Add(5 * time.Second)
		for !connectionsReleased(h.srv) {
			if time.Now().After(deadline) {
				t.Fatal("the session did not end after the client hung up")
			}
			time.Sleep(time.Millisecond)
		}
		var m dto.Metric
		if err := h.srv.m.panics.Write(&m); err != nil {
			t.Fatal(err)
		}
		if n := m.GetCounter().GetValue(); n != 0 {
			t.Fatalf("%v panics recovered", n)
		}
	})
}

func connectionsReleased(s *Server) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		l.mu.Lock()
		n := l.total
		l.mu.Unlock()
		if n != 0 {
			return false
		}
	}
	return true
}
