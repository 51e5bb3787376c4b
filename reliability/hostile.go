package reliability

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// perIPAttack is how many attack connections come from one source
// address: the default --max-connections-per-ip, so the per-IP limit alone
// does not stop them and the global limit is what is tested.
const perIPAttack = 50

// slowlorisEvery is how often an attack connection sends its next byte.
const slowlorisEvery = 2 * time.Second

// attack is c.Attack slowloris connections: each greeted connection sends
// "EHLO aaa..." one byte every slowlorisEvery and never ends the line, from many loopback source addresses (127.1.x.y), perIPAttack
// connections each; a refused one tries again.
type attack struct {
	greeted, refused, dialFailed, closedByServer atomic.Int64
	cancel                                       context.CancelFunc
	wg                                           sync.WaitGroup
}

func startAttack(addr string, n int) *attack {
	ctx, cancel := context.WithCancel(context.Background())
	a := &attack{cancel: cancel}
	for i := range n {
		ip := net.IPv4(127, 1, byte(i/perIPAttack/250), byte(i/perIPAttack%250+1))
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.conn(ctx, addr, ip)
		}()
	}
	return a
}

// conn keeps one attack connection open: a refused or closed connection
// is opened again after a moment, as a determined attacker would.
func (a *attack) conn(ctx context.Context, addr string, ip net.IP) {
	for ctx.Err() == nil {
		a.once(ctx, addr, ip)
		sleep(ctx, 100*time.Millisecond)
	}
}

func (a *attack) once(ctx context.Context, addr string, ip net.IP) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() == nil {
			a.dialFailed.Add(1)
		}
		return
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	switch {
	case strings.HasPrefix(line, "220"):
		a.greeted.Add(1)
	case strings.HasPrefix(line, "4"):
		a.refused.Add(1)
		return
	default:
		if ctx.Err() == nil {
			a.dialFailed.Add(1)
		}
		return
	}
	// "EHLO aaaa..." that never ends: at a byte every 2 s the 2 KiB
	// line limit takes over an hour to end it.
	for i := 0; ctx.Err() == nil; i++ {
		sleep(ctx, slowlorisEvery)
		if ctx.Err() != nil {
			return
		}
		b := byte('a')
		if i < 5 {
			b = "EHLO "[i]
		}
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte{b}); err != nil {
			a.closedByServer.Add(1)
			return
		}
	}
}

func (a *attack) stop() {
	a.cancel()
	a.wg.Wait()
}

func runSlowloris(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "slowloris", Injected: fmt.Sprintf("%d slowloris connections (a byte every %s) from %d loopback addresses under load, default connection limits",
		c.Attack, slowlorisEvery, (c.Attack+perIPAttack-1)/perIPAttack)}
	// The default limits: 1,000 connections, 50 per address. The load
	// comes from 127.0.0.1 with c.Sessions connections.
	b, err := e.startBouncer("slowloris", BouncerOptions{Args: []string{"--max-connections-per-ip", "50"}})
	if err != nil {
		return r, err
	}
	defer b.Kill()
	rssBefore := vmRSS(b.Pid())
	var a *attack
	run := newRun()
	// A new connection per message, as an MTA without a connection
	// cache: every one competes with the attack for a slot.
	load := StartLoad(LoadConfig{Addr: b.SMTPAddr, Sessions: c.Sessions, Size: c.Size, Run: run, Rate: c.Rate, Reconnect: true, Pipelining: c.Pipelining})
	inject := func() error {
		a = startAttack(b.SMTPAddr, c.Attack)
		return nil
	}
	recover := func() error {
		active, _ := b.Metric(ctx, "bouncer_smtp_active_connections")
		rss := vmRSS(b.Pid())
		a.stop()
		r.Notes = append(r.Notes, fmt.Sprintf("attack: %d connections greeted 220, %d refused 4xx, %d failed to connect, %d closed by bouncer while trickling; at its end bouncer held %v connections, RSS %d MiB (%d MiB before)",
			a.greeted.Load(), a.refused.Load(), a.dialFailed.Load(), a.closedByServer.Load(), active, rss>>10, rssBefore>>10))
		if !b.Running() {
			return errors.New("bouncer died under the attack: " + lastLines(b.LogPath, 3))
		}
		return nil
	}
	if err := drive(ctx, e, c, &r, load, fault{"the attack", inject, recover}); err != nil {
		return r, err
	}
	drainErr := check(ctx, c, &r, b, b.NATSURL, load, sqliteReader(b.DataDir, run), nil)
	return r, errors.Join(drainErr, b.Stop())
}

// vmRSS is a process's resident set in KiB, 0 when unknown.
func vmRSS(pid int) int64 { return procStatusKiB(pid, "VmRSS:") }

// vmHWM is the peak of a process's resident set since it started, in
// KiB (the kernel's high-water mark), 0 when unknown: a spike between
// two samples of VmRSS still shows in it.
func vmHWM(pid int) int64 { return procStatusKiB(pid, "VmHWM:") }

// procStatusKiB is the value of a "kB" field of /proc/PID/status.
func procStatusKiB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
