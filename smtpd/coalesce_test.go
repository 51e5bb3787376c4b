package smtpd

import (
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
)

// writeLog records what the listener writes to each accepted socket, one
// entry per write system call. It wraps the real TCP listener: the writes
// still reach the client.
type writeLog struct {
	net.Listener
	mu     sync.Mutex
	writes [][]string // per accepted connection, the bytes of each write
}

func (w *writeLog) Accept() (net.Conn, error) {
	c, err := w.Listener.Accept()
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, nil)
	return &loggedConn{Conn: c, log: w, i: len(w.writes) - 1}, nil
}

// take returns the writes to the only connection accepted so far, and
// forgets them.
func (w *writeLog) take(t *testing.T) []string {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.writes) != 1 {
		t.Fatalf("%d connections accepted, want 1", len(w.writes))
	}
	got := w.writes[0]
	w.writes[0] = nil
	return got
}

type loggedConn struct {
	net.Conn
	log *writeLog
	i   int
}

func (c *loggedConn) Write(p []byte) (int, error) {
	c.log.mu.Lock()
	c.log.writes[c.i] = append(c.log.writes[c.i], string(p))
	c.log.mu.Unlock()
	return c.Conn.Write(p)
}

// TestRepliesCoalesced checks the write system calls behind the replies:
// a multi-line reply and the replies to a pipelined group go out in one
// write, a message's final reply is not held back for the commands
// pipelined after it, and a client that waits for each reply gets each
// one (its reads would time out otherwise).
func TestRepliesCoalesced(t *testing.T) {
	wl := &writeLog{}
	h := newHarnessOn(t, nil, func(l net.Listener) net.Listener {
		wl.Listener = l
		return wl
	})
	c := h.dial()
	if got := wl.take(t); len(got) != 1 || !strings.HasPrefix(got[0], "220 ") {
		t.Fatalf("greeting written as %q, want one write of a 220", got)
	}
	rcpt := h.sign("nobody@example.net")
	body := strings.ReplaceAll(ndr, "\n", "\r\n") + "\r\n.\r\n"

	tests := []struct {
		name string
		send string // written by the client in one write
		want []int  // the reply codes, in order
		// writes: the replies' lines each write held, in order.
		writes []int
	}{
		{"EHLO, a multi-line reply", "EHLO mx.example.net\r\n", []int{250}, []int{0}},
		{"MAIL, RCPT and DATA pipelined", "MAIL FROM:<>\r\nRCPT TO:<" + rcpt + ">\r\nDATA\r\n", []int{250, 250, 354}, []int{3}},
		{"the body and its dot", body, []int{250}, []int{1}},
		{"one command at a time", "MAIL FROM:<>\r\n", []int{250}, []int{1}},
		{"", "RCPT TO:<" + rcpt + ">\r\n", []int{250}, []int{1}},
		{"", "DATA\r\n", []int{354}, []int{1}},
		{"a transaction pipelined after the dot", strings.Replace(body, "ndr-1@", "ndr-2@", 1) + "MAIL FROM:<>\r\nRCPT TO:<" + rcpt + ">\r\n", []int{250, 250, 250}, []int{1, 2}},
		{"a refused RCPT in a group", "RSET\r\nMAIL FROM:<>\r\nRCPT TO:<someone@elsewhere.example>\r\nDATA\r\n", []int{250, 250, 550, 502}, []int{4}},
		{"QUIT", "QUIT\r\n", []int{221}, []int{1}},
	}
	for _, tt := range tests {
		if _, err := io.WriteString(c.conn, tt.send); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		for _, want := range tt.want {
			if code, line := c.read(); code != want {
				t.Fatalf("%s %q: got %q, want %d", tt.name, tt.send, line, want)
			}
		}
		got := wl.take(t)
		var lines []int
		for _, w := range got {
			lines = append(lines, strings.Count(w, "\r\n"))
		}
		if tt.writes[0] == 0 { // EHLO: the whole reply, however long, in one write
			if len(got) != 1 || strings.Count(got[0], "\r\n") < 5 {
				t.Errorf("%s: written as %q, want one write of the whole reply", tt.name, got)
			}
			continue
		}
		if !slices.Equal(lines, tt.writes) {
			t.Errorf("%s %q: replies written as %q (lines per write %v), want lines per write %v", tt.name, tt.send, got, lines, tt.writes)
		}
	}
	if n := h.stored(); n != 2 {
		t.Errorf("stream holds %d reports, want the 2 answered 250", n)
	}
}
