package smtpd

import (
	"net"
	"sync"
	"time"
)

// limitListener refuses connections over a total and a per-IP limit with
// "421 4.7.0" and keeps accepting. go-smtp has no such limits of its own.
type limitListener struct {
	net.Listener
	max, perIP int
	m          *metrics

	mu    sync.Mutex
	total int
	byIP  map[string]int
	conns map[*limitConn]struct{}
}

func newLimitListener(l net.Listener, max, perIP int, m *metrics) *limitListener {
	return &limitListener{Listener: l, max: max, perIP: perIP, m: m, byIP: map[string]int{}, conns: map[*limitConn]struct{}{}}
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
		var refuse string
		switch {
		case l.total >= l.max:
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
			lc = &limitConn{Conn: c, l: l, ip: ip}
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
}

type limitConn struct {
	net.Conn
	l    *limitListener
	ip   string
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
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
