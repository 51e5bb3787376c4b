package reliability

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// smtpTimeout bounds each exchange of the client. It is generous: a reply
// delayed by a fault is an answer to wait for, not a failure.
const smtpTimeout = 90 * time.Second

// smtpClient is a minimal SMTP client that keeps its connection across
// transactions (a new MAIL FROM after each 250) and reconnects after any
// failure. Not safe for concurrent use.
type smtpClient struct {
	addr, helo string
	pipelining bool // pipeline when the server advertises PIPELINING
	conn       net.Conn
	r          *bufio.Reader
	pipeline   bool // this connection's server advertised PIPELINING
}

// sendResult is what one transaction came to.
type sendResult struct {
	code        int    // the last reply's code; 0 when none came
	reply       string // the last reply line
	temp        int    // 1 when the last reply was 4xx
	transaction bool   // MAIL FROM was sent
	dataSent    bool   // the message and its final dot were written
	err         error  // an I/O error: the connection is unusable
}

func (c *smtpClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// send runs one transaction: MAIL FROM:<from>, RCPT TO:<rcpt>, DATA, raw.
// raw must not hold a line starting with a dot.
func (c *smtpClient) send(from, rcpt string, raw []byte) sendResult {
	var res sendResult
	reply := func(line string, err error) bool {
		res.reply, res.err = line, err
		res.code = 0
		if len(line) >= 3 {
			res.code, _ = strconv.Atoi(line[:3])
		}
		if res.code >= 400 && res.code < 500 {
			res.temp = 1
		}
		return err == nil && res.code >= 200 && res.code < 400
	}
	if c.conn == nil {
		cn, err := net.DialTimeout("tcp", c.addr, 10*time.Second)
		if err != nil {
			res.err = err
			return res
		}
		c.conn, c.r = cn, bufio.NewReaderSize(cn, 4096)
		c.conn.SetDeadline(time.Now().Add(smtpTimeout))
		if !reply(readReply(c.r)) {
			return res
		}
		if _, err := fmt.Fprintf(c.conn, "EHLO %s\r\n", c.helo); err != nil {
			res.err = err
			return res
		}
		line, pipelining, err := readEHLO(c.r)
		if !reply(line, err) {
			return res
		}
		c.pipeline = c.pipelining && pipelining
	}
	c.conn.SetDeadline(time.Now().Add(smtpTimeout))
	res.transaction = true
	cmds := []string{"MAIL FROM:<" + from + ">", "RCPT TO:<" + rcpt + ">", "DATA"}
	if c.pipeline {
		// One write; then the three replies, the transaction going on
		// only if all three say so. A 354 after a refusal (not
		// bouncer's way) gets an empty message, as RFC 2920 asks.
		if _, err := io.WriteString(c.conn, strings.Join(cmds, "\r\n")+"\r\n"); err != nil {
			res.err = err
			return res
		}
		var failed *sendResult
		for range cmds {
			ok := reply(readReply(c.r))
			if res.err != nil {
				return res
			}
			if !ok && failed == nil {
				f := res
				failed = &f
			}
		}
		if failed != nil {
			if res.code == 354 {
				if _, err := io.WriteString(c.conn, ".\r\n"); err == nil {
					readReply(c.r)
				}
			}
			return *failed
		}
	} else {
		for _, cmd := range cmds {
			if !reply(c.cmd(cmd)) {
				return res
			}
		}
	}
	if _, err := c.conn.Write(append(raw, ".\r\n"...)); err != nil {
		res.err = err
		return res
	}
	res.dataSent = true
	reply(readReply(c.r))
	return res
}

func (c *smtpClient) cmd(line string) (string, error) {
	if _, err := fmt.Fprintf(c.conn, "%s\r\n", line); err != nil {
		return "", err
	}
	return readReply(c.r)
}

// readEHLO reads the reply to EHLO: its last line, and whether it
// advertises PIPELINING.
func readEHLO(r *bufio.Reader) (last string, pipelining bool, err error) {
	last, err = readReplyLines(r, func(line string) {
		if len(line) >= 4 && strings.EqualFold(strings.TrimSpace(line[4:]), "PIPELINING") {
			pipelining = true
		}
	})
	return last, pipelining, err
}

// readReply reads one SMTP reply, multi-line or not, and returns its last
// line.
func readReply(r *bufio.Reader) (string, error) { return readReplyLines(r, nil) }

// readReplyLines is readReply calling each, when not nil, with every line
// of the reply as read.
func readReplyLines(r *bufio.Reader, each func(line string)) (string, error) {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return strings.TrimSpace(line), err
		}
		if each != nil {
			each(line)
		}
		if len(line) < 4 || line[3] != '-' {
			return strings.TrimSpace(line), nil
		}
	}
}
