package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	_ "modernc.org/sqlite" // reads bouncer's store after the kill -9 run
)

// idle opens c.idleConns SMTP connections, each greeted and past EHLO, and
// holds them: bouncer's RSS before and with them open. One more connection
// must be refused 421 at the default limit of 1,000.
func idle(c config) error {
	fmt.Printf("\n== idle: %d connections held open\n", c.idleConns)
	b, err := startBouncer(c, filepath.Join(c.workDir, "idle"))
	if err != nil {
		return err
	}
	defer b.stop()
	time.Sleep(time.Second)
	before := b.status("VmRSS")
	conns := make([]net.Conn, 0, c.idleConns)
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	start := time.Now()
	for i := 0; i < c.idleConns; i++ {
		cn, err := net.DialTimeout("tcp", b.smtpAddr, 5*time.Second)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i+1, err)
		}
		conns = append(conns, cn)
		cn.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(cn)
		if reply, err := readReply(r); err != nil || !strings.HasPrefix(reply, "220") {
			return fmt.Errorf("connection %d: greeting %q, %v", i+1, reply, err)
		}
		fmt.Fprintf(cn, "EHLO idle%d.example.net\r\n", i)
		if reply, err := readReply(r); err != nil || !strings.HasPrefix(reply, "250") {
			return fmt.Errorf("connection %d: EHLO %q, %v", i+1, reply, err)
		}
		cn.SetDeadline(time.Time{})
	}
	opened := time.Since(start)
	time.Sleep(2 * time.Second)
	m, err := b.metrics()
	if err != nil {
		return err
	}
	active := m.value("bouncer_smtp_active_connections")
	with := b.status("VmRSS")

	// One over the limit.
	refused := "none"
	if cn, err := net.DialTimeout("tcp", b.smtpAddr, 5*time.Second); err == nil {
		cn.SetDeadline(time.Now().Add(5 * time.Second))
		refused, _ = readReply(bufio.NewReader(cn))
		cn.Close()
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "connections open (greeted, EHLO done)\t%d in %.2fs\t\n", len(conns), opened.Seconds())
	fmt.Fprintf(w, "bouncer_smtp_active_connections\t%.0f\t\n", active)
	fmt.Fprintf(w, "bouncer RSS before\t%.1f MiB\t\n", float64(before)/1024)
	fmt.Fprintf(w, "bouncer RSS with them open\t%.1f MiB\t\n", float64(with)/1024)
	fmt.Fprintf(w, "RSS per idle connection\t%.1f KiB\t\n", float64(with-before)/float64(len(conns)))
	fmt.Fprintf(w, "connection %d gets\t%s\t\n", len(conns)+1, refused)
	w.Flush()
	if int(active) != len(conns) {
		return fmt.Errorf("bouncer counts %v active connections, want %d", active, len(conns))
	}
	if c.idleConns >= 1000 && !strings.HasPrefix(refused, "421") {
		return fmt.Errorf("connection %d over the limit got %q, want 421", len(conns)+1, refused)
	}
	return nil
}

// readReply reads one SMTP reply, multi-line or not, and returns its last line.
func readReply(r *bufio.Reader) (string, error) {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return strings.TrimSpace(line), err
		}
		if len(line) < 4 || line[3] != '-' {
			return strings.TrimSpace(line), nil
		}
	}
}

// kill9 loads bouncer with its own SMTP client (every message unique,
// every 250 recorded by the SHA-256 of the bytes sent), kills bouncer with
// SIGKILL in the middle, restarts it on the same data dir, lets ingest
// store what JetStream holds and checks the store has every report that
// got 250.
func kill9(c config) error {
	fmt.Printf("\n== kill9: %d sessions of unique %d B messages, kill -9 after %s, restart on the same data dir\n", c.sessions, c.size, c.killAfter)
	dataDir := filepath.Join(c.workDir, "kill9")
	b, err := startBouncer(c, dataDir)
	if err != nil {
		return err
	}
	var (
		mu      sync.Mutex
		acked   = map[string]bool{} // SHA-256 of reports answered 250
		inDoubt atomic.Int64        // DATA sent, no reply: lost with the process
		other   atomic.Int64        // any other final reply
		sent    atomic.Int64
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c.sessions; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &client{addr: b.smtpAddr, helo: fmt.Sprintf("w%d.example.net", w)}
			defer cl.close()
			for n := 0; ctx.Err() == nil; n++ {
				raw := uniqueMessage(w, n, c.size)
				sent.Add(1)
				reply, dataSent, err := cl.send(rcpt, raw)
				switch {
				case err == nil && strings.HasPrefix(reply, "250"):
					sum := sha256.Sum256(raw)
					mu.Lock()
					acked[hex.EncodeToString(sum[:])] = true
					mu.Unlock()
				case err != nil && dataSent:
					inDoubt.Add(1)
					cl.close()
				case err != nil:
					cl.close()
					if ctx.Err() == nil {
						time.Sleep(10 * time.Millisecond)
					}
				default:
					other.Add(1)
				}
			}
		}()
	}
	time.Sleep(c.killAfter)
	b.kill()
	killedAt := time.Since(start)
	mu.Lock()
	ackedAtKill := len(acked)
	mu.Unlock()
	cancel()
	wg.Wait()

	b2, err := startBouncer(c, dataDir)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	stored, err := b2.waitStored(int64(len(acked)), c.drainWait)
	if err != nil {
		b2.stop()
		return fmt.Errorf("after restart: %w", err)
	}
	b2.stop()
	ids, err := storedIDs(b2.dbPath())
	if err != nil {
		return err
	}
	missing := 0
	for id := range acked {
		if !ids[id] {
			missing++
		}
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "messages answered 250 before kill -9\t%d in %.1fs (%.0f/s, persistent connections)\t\n", ackedAtKill, killedAt.Seconds(), float64(ackedAtKill)/killedAt.Seconds())
	fmt.Fprintf(w, "DATA sent, no reply (killed in flight)\t%d\t\n", inDoubt.Load())
	fmt.Fprintf(w, "other replies\t%d\t\n", other.Load())
	fmt.Fprintf(w, "reports in the store after restart\t%d (reports_received %d)\t\n", len(ids), stored)
	fmt.Fprintf(w, "250'd reports missing from the store\t%d\t\n", missing)
	w.Flush()
	if len(acked) == 0 {
		return fmt.Errorf("no message was answered 250 before the kill")
	}
	if missing > 0 {
		return fmt.Errorf("%d reports answered 250 are not stored", missing)
	}
	if other.Load() > 0 {
		return fmt.Errorf("%d replies were neither 250 nor a dropped connection", other.Load())
	}
	return nil
}

// uniqueMessage is message n of worker w, size payload bytes, CRLF lines,
// no line starting with a dot: the bytes bouncer hashes are exactly these.
func uniqueMessage(w, n, size int) []byte {
	var sb strings.Builder
	fmt.Fprintf(&sb, "From: <>\r\nTo: <%s>\r\nSubject: kill9 load\r\nMessage-ID: <%d.%d.%d@bench.example.net>\r\n\r\n", rcpt, time.Now().UnixNano(), w, n)
	line := strings.Repeat("x", 78) + "\r\n"
	for sb.Len() < size {
		sb.WriteString(line)
	}
	return []byte(sb.String())
}

// storedIDs reads every report id from bouncer's SQLite store.
func storedIDs(path string) (map[string]bool, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.Query("SELECT id FROM reports")
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer rows.Close()
	ids := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids[id] = true
	}
	return ids, rows.Err()
}

// client is a minimal SMTP client that keeps its connection across
// messages (RSET-free: a new MAIL after each 250) and reconnects on error.
type client struct {
	addr, helo string
	conn       net.Conn
	r          *bufio.Reader
}

func (c *client) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// send delivers raw to rcpt and returns the reply to the end of data.
// dataSent tells whether the message was sent when an error occurred.
func (c *client) send(rcpt string, raw []byte) (reply string, dataSent bool, err error) {
	if c.conn == nil {
		cn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return "", false, err
		}
		c.conn, c.r = cn, bufio.NewReaderSize(cn, 4096)
		c.conn.SetDeadline(time.Now().Add(30 * time.Second))
		if reply, err := readReply(c.r); err != nil || !strings.HasPrefix(reply, "220") {
			return reply, false, fmt.Errorf("greeting %q: %v", reply, err)
		}
		if reply, err := c.cmd("EHLO " + c.helo); err != nil || !strings.HasPrefix(reply, "250") {
			return reply, false, fmt.Errorf("EHLO %q: %v", reply, err)
		}
	}
	c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	for _, cmd := range []string{"MAIL FROM:<>", "RCPT TO:<" + rcpt + ">", "DATA"} {
		reply, err := c.cmd(cmd)
		if err != nil {
			return reply, false, err
		}
		if reply[0] != '2' && reply[0] != '3' {
			return reply, false, nil
		}
	}
	if _, err := c.conn.Write(append(raw, ".\r\n"...)); err != nil {
		return "", true, err
	}
	reply, err = readReply(c.r)
	return reply, true, err
}

func (c *client) cmd(line string) (string, error) {
	if _, err := fmt.Fprintf(c.conn, "%s\r\n", line); err != nil {
		return "", err
	}
	return readReply(c.r)
}
