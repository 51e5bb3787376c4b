package smtpd

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer-mail/bouncer/broker"
)

// TestInflightBudget: with the budget held by one message being received,
// a second message cannot have room, waits, and gets 451 4.3.1; once the
// first is done, the second goes through on a retry. Over loopback TCP to
// the real listener and a real embedded JetStream.
func TestInflightBudget(t *testing.T) {
	const limit = 1 << 20
	h := newHarness(t, func(c *Config) {
		c.MaxMessageBytes = limit
		c.MaxInflightBytes = limit + 2*budgetChunk
	})
	h.srv.budgetWait = 300 * time.Millisecond

	line := strings.Repeat("x", 998) + "\r\n"
	body := func(n int, tag string) string {
		return "Subject: " + tag + "\r\n\r\n" + strings.Repeat(line, n/len(line))
	}
	// a: a message of 900 KiB sent but not ended; it holds most of the
	// budget while the listener reads it.
	a := h.dial()
	a.expect(250, "EHLO mx.example.net")
	a.expect(250, "MAIL FROM:<>")
	a.expect(250, "RCPT TO:<%s>", h.sign("a@example.net"))
	a.expect(354, "DATA")
	io.WriteString(a.conn, body(900<<10, "a"))
	waitHeld(t, h, 800<<10)

	// b: a 300 KiB message finds no room.
	b := h.dial()
	b.expect(250, "EHLO mx.example.net")
	b.expect(250, "MAIL FROM:<>")
	b.expect(250, "RCPT TO:<%s>", h.sign("b@example.net"))
	b.expect(354, "DATA")
	io.WriteString(b.conn, body(300<<10, "b")+".\r\n")
	code, reply := b.read()
	if code != 451 || !strings.Contains(reply, "4.3.1") {
		t.Fatalf("second message while the budget is held: %q, want 451 4.3.1", reply)
	}
	if got := counterValue(t, h.reg, "bouncer_smtp_inflight_refusals_total"); got != 1 {
		t.Errorf("bouncer_smtp_inflight_refusals_total = %v, want 1", got)
	}

	// a ends: stored, and the budget is free again.
	io.WriteString(a.conn, ".\r\n")
	if code, reply := a.read(); code != 250 {
		t.Fatalf("first message: %q, want 250", reply)
	}
	if held := h.srv.inflight.held(h.srv.cfg.MaxInflightBytes); held != 0 {
		t.Errorf("%d bytes still held after both messages", held)
	}
	// b's sender retries, as a 451 asks.
	if code, reply := b.send(h.sign("b@example.net"), body(300<<10, "b")); code != 250 {
		t.Fatalf("retried message: %q, want 250", reply)
	}
	if n := h.stored(); n != 2 {
		t.Errorf("stream holds %d reports, want 2", n)
	}
}

// TestGoAheadWhileBudgetWaits: a message that must wait for room in the
// in-flight budget still gets its 354 at once (coalesce.go holds replies
// until the session reads, and this one waits for budget before it
// reads): its sender is not left without an answer for the wait. The 354
// must come while the budget is still taken, before anything frees it.
func TestGoAheadWhileBudgetWaits(t *testing.T) {
	const limit = 1 << 20
	h := newHarness(t, func(c *Config) {
		c.MaxMessageBytes = limit
		c.MaxInflightBytes = limit + 2*budgetChunk
	})
	h.srv.budgetWait = time.Minute // longer than the client's read deadline

	line := strings.Repeat("x", 998) + "\r\n"
	body := func(n int, tag string) string {
		return "Subject: " + tag + "\r\n\r\n" + strings.Repeat(line, n/len(line))
	}
	// a and c take the whole budget: messages sent but not ended.
	open := func(rcpt string, size int) *client {
		c := h.dial()
		c.expect(250, "EHLO mx.example.net")
		c.expect(250, "MAIL FROM:<>")
		c.expect(250, "RCPT TO:<%s>", h.sign(rcpt))
		c.expect(354, "DATA")
		io.WriteString(c.conn, body(size, rcpt))
		return c
	}
	a := open("a@example.net", limit-budgetChunk)
	waitHeld(t, h, limit-budgetChunk)
	c := open("c@example.net", 2*budgetChunk+budgetChunk/2) // a holds 15 chunks, c the 3 left
	waitHeld(t, h, limit+2*budgetChunk)

	// b finds no room and waits for it, but is told to go ahead now.
	b := h.dial()
	b.expect(250, "EHLO mx.example.net")
	b.expect(250, "MAIL FROM:<>")
	b.expect(250, "RCPT TO:<%s>", h.sign("b@example.net"))
	b.expect(354, "DATA")

	// c ends: its room goes to b, whose message then goes through.
	io.WriteString(c.conn, ".\r\n")
	if code, reply := c.read(); code != 250 {
		t.Fatalf("c: %q, want 250", reply)
	}
	io.WriteString(b.conn, body(10<<10, "b")+".\r\n")
	if code, reply := b.read(); code != 250 {
		t.Fatalf("b: %q, want 250", reply)
	}
	io.WriteString(a.conn, ".\r\n")
	if code, reply := a.read(); code != 250 {
		t.Fatalf("a: %q, want 250", reply)
	}
	if n := h.stored(); n != 3 {
		t.Errorf("stream holds %d reports, want 3", n)
	}
}

// waitHeld waits until the listener holds at least n bytes of budget.
func waitHeld(t *testing.T, h *harness, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.srv.inflight.held(h.srv.cfg.MaxInflightBytes) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the listener holds %d bytes of budget, want %d", h.srv.inflight.held(h.srv.cfg.MaxInflightBytes), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestInflightBudgetConfig: a budget too small for one message is a
// configuration error, not a listener that refuses every large message.
func TestInflightBudgetConfig(t *testing.T) {
	tests := []struct {
		msg, inflight int64
		ok            bool
	}{
		{0, 0, true},
		{1 << 20, 0, true},
		{1 << 20, 1<<20 + 2*budgetChunk, true},
		{1 << 20, 1 << 20, false},
		{0, DefaultMaxMessageBytes, false},
		{0, -1, false},
	}
	for _, tt := range tests {
		// Validate only: the publisher is never called.
		err := (Config{Publisher: &broker.Publisher{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(),
			MaxMessageBytes: tt.msg, MaxInflightBytes: tt.inflight}).Validate()
		if (err == nil) != tt.ok {
			t.Errorf("MaxMessageBytes %d, MaxInflightBytes %d: %v, want ok %v", tt.msg, tt.inflight, err, tt.ok)
		}
	}
}

// counterValue is the value of the unlabelled counter name in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestReadBudgeted reads messages around the chunk size, twice each so
// that the second read takes chunks the first gave back to the pool: the
// bytes come back whole, in a slice of their own size (not a chunk's,
// which kept 64 KiB alive for a 4 KB report), with a chunk of budget per
// chunk read; a read that fails gives all of it back.
func TestReadBudgeted(t *testing.T) {
	tests := []struct {
		size, chunks int
	}{
		{0, 1},
		{1, 1},
		{4000, 1},
		{budgetChunk - 1, 1},
		{budgetChunk, 2}, // ReadFull cannot tell a full chunk from the end
		{budgetChunk + 1, 2},
		{3*budgetChunk + 17, 4},
	}
	const capacity = 8 * budgetChunk
	b := newBudget(capacity)
	for _, tt := range tests {
		for round := range 2 {
			msg := make([]byte, tt.size)
			for i := range msg {
				msg[i] = byte(i*7 + round)
			}
			raw, taken, err := readBudgeted(b, bytes.NewReader(msg), time.Second)
			if err != nil {
				t.Fatalf("size %d, round %d: %v", tt.size, round, err)
			}
			if !bytes.Equal(raw, msg) {
				t.Errorf("size %d, round %d: read %d bytes, not the message", tt.size, round, len(raw))
			}
			if cap(raw) != tt.size {
				t.Errorf("size %d, round %d: cap %d, want the message's size", tt.size, round, cap(raw))
			}
			if want := int64(tt.chunks * budgetChunk); taken != want {
				t.Errorf("size %d, round %d: took %d, want %d", tt.size, round, taken, want)
			}
			if held := b.held(capacity); held != taken {
				t.Errorf("size %d, round %d: budget holds %d, want %d", tt.size, round, held, taken)
			}
			b.give(taken)
		}
	}

	broken := io.MultiReader(bytes.NewReader(make([]byte, 2*budgetChunk+5)), iotest.ErrReader(errors.New("connection reset")))
	if _, taken, err := readBudgeted(b, broken, time.Second); err == nil || taken != 0 {
		t.Errorf("broken reader: taken %d, err %v; want 0 and the error", taken, err)
	}
	if held := b.held(capacity); held != 0 {
		t.Errorf("after a broken read the budget holds %d, want 0", held)
	}
}

// BenchmarkReadBudgeted reads a report of a typical size (4 KB): the
// bytes allocated per message are what the listener's garbage is made of.
func BenchmarkReadBudgeted(b *testing.B) {
	msg := bytes.Repeat([]byte("x"), 4000)
	bud := newBudget(1 << 30)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		raw, taken, err := readBudgeted(bud, bytes.NewReader(msg), time.Second)
		if err != nil || len(raw) != len(msg) {
			b.Fatalf("read %d bytes: %v", len(raw), err)
		}
		bud.give(taken)
	}
}
