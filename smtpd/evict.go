package smtpd

import (
	"time"
)

// Slowloris defence of a full listener. A client holding a slot without
// having sent one complete command line is either slow to start or an
// attacker trickling bytes (or nothing); the command and envelope
// deadlines end it eventually, but an attacker reconnecting at once keeps
// every slot taken. So when every slot is taken, a new connection takes
// the slot of the oldest one that has not sent a complete line yet and is
// older than Config.EvictIdleAfter, which is closed with evictReply. A
// sender that has said EHLO is never evicted, and one that connected
// within EvictIdleAfter is not either, so each eviction costs an attacker
// at least that long of its slot while a legitimate client, which speaks
// at once, gets in. A newcomer whose own address already holds
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
// the oldest of those older than deadlines.evictAfter that have sent no
// complete line and hold no transaction; nil when there is none, or when
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
		if now.Sub(c.accepted) < l.deadlines.evictAfter {
			continue
		}
		if victim == nil || c.accepted.Before(victim.accepted) {
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
	c.Conn.Write([]byte(evictReply))
	c.Close()
}
