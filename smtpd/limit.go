package smtpd

import (
	"net"
	"sync"
	"time"
)

// limitListener refuses connections over a total and a per-IP limit with
// "421 4.7.0" and keeps accepting. go-smtp has no such limits of its own.
// It also knows which connections hold a mail transaction, so Shutdown can
// close the others at once and wait for these.
type limitListener struct {
	net.Listener
	max, perIP int
	m          *metrics
	deadlines  deadlines

	mu       sync.Mutex
	total    int
	byIP     map[string]int
	conns    map[*limitConn]struct{}
	inTxn    int           // connections between MAIL FROM and the end of their transaction
	draining bool          // Shutdown began: no new transaction, idle connections closed
	drained  chan struct{} // closed once draining and inTxn is 0
}

func newLimitListener(l net.Listener, max, perIP int, d deadlines, m *metrics) *limitListener {
	return &limitListener{Listener: l, max: max, perIP: perIP, deadlines: d, m: m,
		byIP: map[string]int{}, conns: map[*limitConn]struct{}{}, drained: make(chan struct{})}
}

const (
	busyReply  = "421 4.7.0 Too many connections, try again later\r\n"
	perIPReply = "421 4.7.0 Too many connections from your address, try again later\r\n"
)

// Accept returns the next connection within the limits; refused ones are
// answered and closed here.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		l.mu.Lock()
		if l.draining {
			// Accepted just before Shutdown closed the listener.
			l.mu.Unlock()
			c.Close()
			continue
		}
		full := l.total >= l.max
		if full && l.byIP[ip] < l.perIP {
			// The slowloris defence (evict.go): free the slot of the
			// oldest connection that never sent a complete line.
			if victim := l.oldestIdleLocked(time.Now(), ip); victim != nil {
				l.mu.Unlock()
				victim.evict()
				l.mu.Lock()
				full = l.total >= l.max
			}
		}
		var refuse string
		switch {
		case full:
			refuse = busyReply
			l.m.connections.WithLabelValues("refused_total").Inc()
		case l.byIP[ip] >= l.perIP:
			refuse = perIPReply
			l.m.connections.WithLabelValues("refused_per_ip").Inc()
		default:
			l.total++
			l.byIP[ip]++
		}
		var lc *limitConn
		if refuse == "" {
			lc = newLimitConn(c, l, ip)
			l.conns[lc] = struct{}{}
		}
		l.mu.Unlock()
		if refuse != "" {
			go func() {
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte(refuse))
				c.Close()
			}()
			continue
		}
		l.m.connections.WithLabelValues("accepted").Inc()
		l.m.active.Inc()
		return lc, nil
	}
}

// drain starts a graceful shutdown: it closes every connection that holds
// no mail transaction and refuses new transactions (beginTxn). The channel
// it returns is closed once the connections that held one have ended it
// (their final reply written); each of them is closed as it does.
func (l *limitListener) drain() <-chan struct{} {
	l.mu.Lock()
	var idle []*limitConn
	if !l.draining {
		l.draining = true
		for c := range l.conns {
			if !c.inTxn {
				idle = append(idle, c)
			}
		}
		if l.inTxn == 0 {
			close(l.drained)
		}
	}
	l.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
	return l.drained
}

// beginTxn marks c as holding a mail transaction (MAIL FROM accepted). It
// returns false once the listener is draining: the transaction must be
// refused with 421.
func (l *limitListener) beginTxn(c *limitConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.draining {
		return false
	}
	if !c.inTxn {
		c.inTxn = true
		l.inTxn++
	}
	return true
}

// endTxn marks c's transaction as ended: its final reply, if any, is
// written. While draining, c is closed now, the last thing it waited for.
func (l *limitListener) endTxn(c *limitConn) {
	l.mu.Lock()
	if !c.inTxn {
		l.mu.Unlock()
		return
	}
	c.inTxn = false
	l.inTxn--
	closeIt := l.draining
	if l.draining && l.inTxn == 0 {
		close(l.drained)
	}
	l.mu.Unlock()
	if closeIt {
		// Not smtp.Conn.Close: go-smtp calls endTxn (through Reset) with
		// that connection's lock held. Closing the socket makes its read
		// loop end the connection.
		c.Conn.Close()
	}
}

// closeAll closes every connection open now.
func (l *limitListener) closeAll() {
	l.mu.Lock()
	conns := make([]*limitConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (l *limitListener) release(c *limitConn) {
	ip := c.ip
	l.mu.Lock()
	delete(l.conns, c)
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
	l.mu.Unlock()
	l.m.active.Dec()
	l.endTxn(c)
}

func remoteIP(c net.Conn) string {
	addr := c.RemoteAddr()
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	if host, _, err := net.SplitHostPort(addr.String()); err == nil {
		return host
	}
	return addr.String()
}
