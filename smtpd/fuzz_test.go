package smtpd

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// FuzzSession drives whole SMTP sessions over loopback TCP against the
// real listener and a real embedded JetStream. Whatever the client sends,
// the listener must not panic, must answer, and must end the session.
//
// The client sends the input, then half-closes the connection, as a
// sender that has nothing more to say: the listener reads to the end and
// hangs up without any wait on either side, so an exec costs what the
// session costs. (Over net.Pipe, with no half-close, an input that left
// the session waiting for more cost a fixed wait, and the fuzzer ran at
// about one exec a second.)
func FuzzSession(f *testing.F) {
	f.Add("EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<b@bounces.example.com>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
	f.Add("HELO a\r\nRCPT TO:<x>\r\nDATA\r\n.\r\n")
	f.Add("MAIL FROM:<a@b> SIZE=99999999999\r\nRCPT TO:<b+zz@bounces.example.com> NOTIFY=NEVER\r\n")
	f.Add("EHLO a\r\nMAIL FROM:<> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<ü@bounces.example.com>\r\nBDAT 5 LAST\r\nhello")
	f.Add("STARTTLS\r\nAUTH PLAIN AGFiAGM=\r\nRSET\r\nVRFY a\r\nNOOP\r\n" + strings.Repeat("A", 3000) + "\r\n")
	f.Add("\x00\xff\r\n\r\n.\r\n")
	h := newHarness(f, nil)
	f.Fuzz(func(t *testing.T, input string) {
		if len(input) > 64<<10 {
			return
		}
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn := c.(*net.TCPConn)
		defer conn.Close()
		// Bounds, not waits: a session that outlives them is the failure.
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		readDone := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, conn)
			readDone <- err
		}()
		io.WriteString(conn, input)
		io.WriteString(conn, "\r\n.\r\nQUIT\r\n")
		conn.CloseWrite()
		if err := <-readDone; err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("reading the replies: %v (the session did not end after the client's EOF)", err)
		}
		// The server hung up: its connection slot must be released.
		deadline := time.Now().Add(5 * time.Second)
		for !connectionsReleased(h.srv) {
			if time.Now().After(deadline) {
				t.Fatal("the session's connection slot was not released")
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
