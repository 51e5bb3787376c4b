package synclog

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// postfixResults maps a delivery line's status= to a result. "expired"
// appears with a recipient only in bounce(8)-style lines; qmgr's
// "status=expired, returned to sender" names none and is not an attempt.
var postfixResults = map[string]Result{
	"sent":          ResultDelivered,
	"deferred":      ResultDeferred,
	"bounced":       ResultBounced,
	"expired":       ResultExpired,
	"undeliverable": ResultBounced, // address verification probe
	"deliverable":   ResultDelivered,
}

// parsePostfix reads one Postfix delivery agent line:
//
//	2026-11-25T10:00:00.123456+00:00 mail postfix/smtp[123]: 4ABCD: to=<a@example.com>,
//	relay=mx.example.com[192.0.2.1]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=5.1.1,
//	status=bounced (host mx.example.com[192.0.2.1] said: 550 5.1.1 <a@example.com>:
//	Recipient address rejected: User unknown (in reply to RCPT TO command))
//
// with a syslog ("Nov 25 10:00:00 host") or RFC 3339 prefix, or none.
func parsePostfix(line string) ([]Attempt, error) {
	if strings.ContainsAny(line, "\n\r") {
		return nil, fmt.Errorf("%w: a Postfix record is one line", ErrMalformed)
	}
	prog := strings.Index(line, "postfix")
	if prog < 0 {
		return nil, fmt.Errorf("%w: no postfix program name", ErrUnknownFormat)
	}
	// "postfix/smtp[123]: QUEUEID: to=<...>, ..."
	rest := line[prog:]
	colon := strings.Index(rest, ": ")
	if colon < 0 {
		return nil, fmt.Errorf("%w: Postfix line without a message part", ErrMalformed)
	}
	program := rest[:colon]
	rest = rest[colon+2:]
	colon = strings.Index(rest, ": ")
	if colon < 0 {
		return nil, fmt.Errorf("%w: Postfix %s line without a queue id", ErrNotAttempt, program)
	}
	queueID, fields := rest[:colon], rest[colon+2:]
	if !isQueueID(queueID) {
		return nil, fmt.Errorf("%w: Postfix line: %q is not a queue id", ErrNotAttempt, queueID)
	}
	kv, text := postfixFields(fields)
	status, ok := kv["status"]
	if !ok {
		return nil, fmt.Errorf("%w: Postfix %s line without status=", ErrNotAttempt, program)
	}
	result, ok := postfixResults[status]
	if !ok {
		return nil, fmt.Errorf("%w: Postfix status=%q", ErrMalformed, status)
	}
	rcpt := normAddr(kv["to"])
	if rcpt == "" {
		return nil, fmt.Errorf("%w: Postfix status=%s line without to=", ErrNotAttempt, status)
	}
	if !strings.Contains(rcpt, "@") {
		return nil, fmt.Errorf("%w: Postfix to=%q is not an address", ErrMalformed, kv["to"])
	}
	ts, err := postfixTime(line[:prog], time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: Postfix time: %v", ErrMalformed, err)
	}
	a := Attempt{
		Time: ts, Format: FormatPostfix, Result: result, QueueID: queueID,
		Recipient: rcpt, MX: relayHost(kv["relay"]), Status: kv["dsn"], Reply: text,
		ReplyCode: saidCode(text), Command: inReplyTo(text),
	}
	if a.Command == "" && strings.HasPrefix(text, "connect to ") {
		a.Command = "CONN"
	}
	if result == ResultDelivered && a.ReplyCode == 0 {
		a.ReplyCode, _ = strconv.Atoi(firstWord(text))
	}
	a.ID = recordID(FormatPostfix, []byte(line[prog:]), rcpt)
	return []Attempt{a}, nil
}

// postfixFields splits "to=<a>, relay=x, dsn=5.1.1, status=bounced (text)"
// into its key=value pairs and the parenthesised text after status=.
func postfixFields(s string) (map[string]string, string) {
	kv := map[string]string{}
	text := ""
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			break
		}
		key := strings.TrimSpace(s[:eq])
		s = s[eq+1:]
		var val string
		if key == "status" {
			// "bounced (text with, commas and (parens))" runs to the end.
			if sp := strings.IndexByte(s, ' '); sp >= 0 {
				val, text = s[:sp], strings.TrimSpace(s[sp+1:])
				text = strings.TrimSuffix(strings.TrimPrefix(text, "("), ")")
			} else {
				val = strings.TrimSuffix(s, ",")
			}
			kv[key] = strings.TrimSuffix(val, ",")
			break
		}
		if strings.HasPrefix(s, "<") {
			if end := strings.IndexByte(s, '>'); end >= 0 {
				val, s = s[:end+1], s[end+1:]
				s = strings.TrimPrefix(s, ",")
				kv[key] = val
				s = strings.TrimSpace(s)
				continue
			}
		}
		if comma := strings.Index(s, ", "); comma >= 0 {
			val, s = s[:comma], s[comma+2:]
		} else {
			val, s = s, ""
		}
		kv[key] = val
	}
	return kv, text
}

func isQueueID(s string) bool {
	if len(s) < 5 || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// relayHost returns the host of "mx.example.com[192.0.2.1]:25".
func relayHost(r string) string {
	if i := strings.IndexByte(r, '['); i >= 0 {
		r = r[:i]
	}
	if r == "none" {
		return ""
	}
	return strings.TrimSuffix(r, ".")
}

// saidCode returns the reply code after "said: ".
func saidCode(text string) int {
	i := strings.Index(text, " said: ")
	if i < 0 {
		return 0
	}
	c, err := strconv.Atoi(firstWord(text[i+7:]))
	if err != nil || c < 200 || c > 599 {
		return 0
	}
	return c
}

func firstWord(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, " -"); i >= 0 {
		return s[:i]
	}
	return s
}

// inReplyTo returns the command of "(in reply to RCPT TO command)".
func inReplyTo(text string) string {
	i := strings.LastIndex(text, "(in reply to ")
	if i < 0 {
		return ""
	}
	c := strings.ToUpper(text[i+len("(in reply to "):])
	switch {
	case strings.HasPrefix(c, "RCPT"):
		return "RCPT"
	case strings.HasPrefix(c, "MAIL"):
		return "MAIL"
	case strings.HasPrefix(c, "END OF DATA"), strings.HasPrefix(c, "DATA"):
		return "DATA"
	case strings.HasPrefix(c, "EHLO"):
		return "EHLO"
	case strings.HasPrefix(c, "HELO"):
		return "HELO"
	case strings.HasPrefix(c, "INITIAL"):
		return "CONN"
	}
	return ""
}

// postfixTime reads the time of a line's prefix: RFC 3339 ("2026-11-25T10:00:00.1+00:00 host ")
// or syslog ("Nov 25 10:00:00 host ", no year: the year that puts it not
// more than a day ahead of now). An empty prefix is now.
func postfixTime(prefix string, now time.Time) (time.Time, error) {
	f := strings.Fields(prefix)
	if len(f) == 0 {
		return now.UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, f[0]); err == nil {
		return t.UTC(), nil
	}
	if len(f) >= 3 {
		t, err := time.Parse("Jan 2 15:04:05", f[0]+" "+f[1]+" "+f[2])
		if err == nil {
			t = t.AddDate(now.Year(), 0, 0)
			if t.After(now.Add(24 * time.Hour)) {
				t = t.AddDate(-1, 0, 0)
			}
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("no RFC 3339 or syslog time in %q", prefix)
}
