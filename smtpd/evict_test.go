package smtpd

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// dialFrom connects to the harness from a loopback source address and
// reads the greeting.
func (h *harness) dialFrom(ip string) (*client, string) {
	h.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	cl := &client{t: h.t, conn: c, r: bufio.NewReader(c)}
	_, line := cl.read()
	return cl, line
}

// TestEvictIdleWhenFull: over real loopback TCP, a full listener gives a
// new connection the slot of the oldest connection that has sent no
// complete command line (one silent, then one trickling half a command),
// with 421 4.7.0 to the evicted one; a newcomer from an address that
// itself holds two idle connections evicts nobody; connections that said
// EHLO are never evicted, so with only those left a newcomer is refused
// as before; the senders let in deliver.
func TestEvictIdleWhenFull(t *testing.T) {
	const slots, grace = 3, 200 * time.Millisecond
	h := newHarness(t, func(c *Config) {
		c.MaxConnections = slots
		c.EvictIdleAfter = grace
	})
	talker := h.dial()
	talker.ehlo("talker.example.net")
	greeted := func(what string, line string) {
		t.Helper()
		if !strings.HasPrefix(line, "220 ") {
			t.Fatalf("%s greeted %q, want 220", what, line)
		}
	}
	busy := func(what string, line string) {
		t.Helper()
		if !strings.HasPrefix(line, "421 4.7.0 Too many connections, try again later") {
			t.Errorf("%s got %q, want the busy 421 4.7.0", what, line)
		}
	}
	silent, line := h.dialFrom("127.0.0.2")
	greeted("silent", line)
	partial, line := h.dialFrom("127.0.0.2")
	greeted("partial", line)
	if _, err := partial.conn.Write([]byte("EHLO half")); err != nil {
		t.Fatal(err)
	}
	// Older than the grace: both may now be evicted. (A wait for a
	// precondition, not a timing assertion.)
	time.Sleep(2 * grace)

	// Their own address holds two idle connections: it evicts nobody.
	_, line = h.dialFrom("127.0.0.2")
	busy("a newcomer from the idle connections' address", line)

	evicted := func(name string, c *client) {
		t.Helper()
		last, _ := closedWith(t, c.r, c.conn, 10*time.Second)
		if !strings.HasPrefix(last, "421 4.7.0") || !strings.Contains(last, "idle") {
			t.Errorf("%s connection closed after %q, want the eviction's 421 4.7.0", name, last)
		}
	}
	// The first newcomer takes the silent one's slot (the oldest idle).
	first, line := h.dialFrom("127.0.0.1")
	greeted("first newcomer", line)
	first.ehlo("first.example.net")
	evicted("silent", silent)
	// The next takes the trickling one's.
	second, line := h.dialFrom("127.0.0.1")
	greeted("second newcomer", line)
	second.ehlo("second.example.net")
	evicted("partial", partial)

	// Every slot is held by a connection that sent a command: a newcomer
	// is refused, nobody is evicted.
	_, line = h.dialFrom("127.0.0.3")
	busy("a newcomer with no idle connection to evict", line)
	talker.expect(250, "NOOP")
	for i, cl := range []*client{first, second, talker} {
		if code, line := cl.send(h.sign("nobody@example.net"), ndr); code != 250 {
			t.Errorf("sender %d: DATA %q, want 250", i, line)
		}
	}
	if got := metric(t, h.reg, "bouncer_smtp_connections_total", "result", "evicted_idle"); got != 2 {
		t.Errorf(`bouncer_smtp_connections_total{result="evicted_idle"} = %v, want 2`, got)
	}
	if got := metric(t, h.reg, "bouncer_smtp_connections_total", "result", "refused_total"); got != 2 {
		t.Errorf(`bouncer_smtp_connections_total{result="refused_total"} = %v, want 2`, got)
	}
}
