package smtpd

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// TestEvictIdleWhenFull: over real loopback TCP, a full listener gives a
// new connection the slot of the oldest connection that has sent no
// complete command line (one silent, then one trickling half a command),
// with 421 4.7.0 to the evicted one; connections that said EHLO are never
// evicted, so with only those left a newcomer is refused as before; the
// senders let in deliver.
func TestEvictIdleWhenFull(t *testing.T) {
	const slots, grace = 3, 200 * time.Millisecond
	h := newHarness(t, func(c *Config) {
		c.MaxConnections = slots
		c.EvictIdleAfter = grace
	})
	talker := h.dial()
	talker.ehlo("talker.example.net")
	silent := h.dial()
	partial := h.dial()
	if _, err := partial.conn.Write([]byte("EHLO half")); err != nil {
		t.Fatal(err)
	}
	// Older than the grace: both may now be evicted. (A wait for a
	// precondition, not a timing assertion.)
	time.Sleep(2 * grace)

	evicted := func(name string, c *client) {
		t.Helper()
		last, _ := closedWith(t, c.r, c.conn, 10*time.Second)
		if !strings.HasPrefix(last, "421 4.7.0") || !strings.Contains(last, "idle") {
			t.Errorf("%s connection closed after %q, want the eviction's 421 4.7.0", name, last)
		}
	}
	// The first newcomer takes the silent one's slot (the oldest idle).
	first := h.dial()
	first.ehlo("first.example.net")
	evicted("silent", silent)
	// The next takes the trickling one's.
	second := h.dial()
	second.ehlo("second.example.net")
	evicted("partial", partial)

	// Every slot is held by a connection that sent a command: a newcomer
	// is refused, nobody is evicted.
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(line, "421 4.7.0 Too many connections, try again later") {
		t.Errorf("a newcomer with no idle connection to evict got %q, want the busy 421 4.7.0", line)
	}
	talker.expect(250, "NOOP")
	for i, cl := range []*client{first, second, talker} {
		if code, line := cl.send(h.sign("nobody@example.net"), ndr); code != 250 {
			t.Errorf("sender %d: DATA %q, want 250", i, line)
		}
	}
	if got := metric(t, h.reg, "bouncer_smtp_connections_total", "result", "evicted_idle"); got != 2 {
		t.Errorf(`bouncer_smtp_connections_total{result="evicted_idle"} = %v, want 2`, got)
	}
	if got := metric(t, h.reg, "bouncer_smtp_connections_total", "result", "refused_total"); got != 1 {
		t.Errorf(`bouncer_smtp_connections_total{result="refused_total"} = %v, want 1`, got)
	}
}
