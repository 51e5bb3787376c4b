package smtpd

import (
	"time"
)

// Slowloris defence of a full listener. A client holding a slot without
// having sent one complete command line is either slow to start or an
// attacker trickling bytes (or nothing); the command and envelope
// deadlines end it eventually, but an attacker reconnecting at once keeps
// every slot taken. So when every slot is taken, a new connection takes
// the slot of the connection greeted longest ago, at least
// Config.EvictIdleAfter ago, that has not sent a complete line since,
// which is closed with evictReply. A sender that has said EHLO is never
// evicted; nor is one not greeted yet, or greeted within EvictIdleAfter:
// age counts from the greeting, not from the accept, because on an
// overloaded host the greeting itself can take seconds (the
// connections-10k scenario saw well-behaved senders evicted when it
// counted from the accept). Each eviction costs an attacker at least
// EvictIdleAfter of its slot while a legitimate client, which answers the
// greeting at once, gets in. A newcomer whose own address already holds
// evictMaxOwnIdle idle connections evicts nobody: otherwise an attacker
// reconnecting from a few hundred addresses arrives far more often than
// real senders and takes every slot that falls free (measured with the
// slowloris scenario: 10,000 connections from 200 addresses).
//
// TODO: the oldest is found by a scan of the open connections, done only
// when the listener is full; fine for a few thousand slots.

// evictMaxOwnIdle is how many idle connections a newcomer's address may
// hold and still evict one: an MTA opening several connections at once
// may have one or two between the greeting and its EHLO.
const evictMaxOwnIdle = 2

const evictReply = "421 4.7.0 Too many connections, closing an idle one; try again later\r\n"

// evictWriteTimeout bounds writing evictReply: the accept loop waits for it.
const evictWriteTimeout = 100 * time.Millisecond

// oldestIdleLocked returns the connection to evict for a new one from ip:
// the one greeted longest ago, at least deadlines.evictAfter ago, of
// those that have sent no complete line and hold no transaction; nil when there is none, or when
// ip itself holds evictMaxOwnIdle idle connections.
func (l *limitListener) oldestIdleLocked(now time.Time, ip string) *limitConn {
	var victim *limitConn
	own := 0
	for c := range l.conns {
		if c.inTxn || c.sawLine.Load() {
			continue
		}
		if c.ip == ip {
			own++
		}
		greeted := c.greetedAt.Load()
		if greeted == 0 || now.UnixNano()-greeted < int64(l.deadlines.evictAfter) {
			continue
		}
		if victim == nil || greeted < victim.greetedAt.Load() {
			victim = c
		}
	}
	if own >= evictMaxOwnIdle {
		return nil
	}
	return victim
}

// evict tells c why and closes it, which frees its slot.
func (c *limitConn) evict() {
	c.l.m.connections.WithLabelValues("evicted_idle").Inc()
	c.Conn.SetWriteDeadline(time.Now().Add(evictWriteTimeout))
	c.holdWrite([]byte(evictReply)) // after the greeting if it is still held
	c.flush()
	c.Close()
}
