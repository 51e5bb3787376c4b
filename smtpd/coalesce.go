package smtpd

import (
	"time"
)

// Reply coalescing. go-smtp writes every reply line with its own write
// system call (net/textproto flushes after each line): a multi-line EHLO
// reply is a write per line, and a pipelined MAIL, RCPT, DATA group
// (RFC 2920) is three writes for one read. limitConn keeps what go-smtp
// writes and sends it in one write when the session is about to wait for
// the client: before a read from the socket, as a DATA body starts (the
// 354, which the client waits for), when the connection is closed, and
// before the listener's own 421s. A reply is never held while the session
// waits for the client, so a client that waits for each reply before it
// sends more sees no difference; nor is any held past the session's next
// read, so a 250 goes out no later than before, only fewer writes carry
// them. RFC 2920 (section 3.2) has servers keep the replies to a
// pipelined group in a buffer and send them as a unit.

// coalesceMax is how much output is held before it is written anyway: a
// client pipelining thousands of commands gets its replies in blocks of
// this size, not in one buffer that grows with them.
const coalesceMax = 4096

// closeFlushTimeout bounds writing what is held when the connection is
// closed: a client that stopped reading must not hold up Close (the
// shutdown's closeAll closes connections one after another).
const closeFlushTimeout = time.Second

// holdWrite keeps p to be written at the next flush, or writes everything
// held with it once coalesceMax is reached. A write error of an earlier
// flush is returned, and sticks: the connection is broken.
func (c *limitConn) holdWrite(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	c.wbuf = append(c.wbuf, p...)
	if len(c.wbuf) >= coalesceMax {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// flush writes what is held, if anything.
func (c *limitConn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

func (c *limitConn) flushLocked() error {
	if c.werr != nil {
		return c.werr
	}
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.wbuf)
	if cap(c.wbuf) > coalesceMax {
		c.wbuf = nil // do not keep a block grown by one large write
	} else {
		c.wbuf = c.wbuf[:0]
	}
	c.werr = err
	return err
}

// flushBeforeClose writes what is held within closeFlushTimeout. When a
// write is under way (the session's, blocked on a client that does not
// read), it gives up at once: Close is called from other goroutines too
// (the shutdown's drain and closeAll, one connection after another), and
// closing the socket ends that write.
func (c *limitConn) flushBeforeClose() {
	if !c.wmu.TryLock() {
		return
	}
	defer c.wmu.Unlock()
	if len(c.wbuf) == 0 || c.werr != nil {
		return
	}
	c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	c.flushLocked()
}
