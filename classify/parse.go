package classify

import (
	"strconv"
	"strings"

	"github.com/bouncer-mail/bouncer/rules"
)

// ReplyCode returns the first basic SMTP reply code (RFC 5321 section 4.2:
// 2yz, 4yz or 5yz) written as a word in text, preferring a failure code, or
// 0. "550-5.1.1" and "550 5.1.1" both give 550; digits inside IP addresses,
// dates or longer numbers are not codes.
func ReplyCode(text string) int {
	first := 0
	for i := 0; i+3 <= len(text); i++ {
		c := text[i]
		if c != '2' && c != '4' && c != '5' {
			continue
		}
		if i > 0 && !codeBoundaryBefore(text[i-1]) {
			continue
		}
		if !isDigit(text[i+1]) || !isDigit(text[i+2]) || text[i+1] > '5' {
			continue
		}
		if i+3 < len(text) && !codeBoundaryAfter(text[i+3]) {
			continue
		}
		code := int(c-'0')*100 + int(text[i+1]-'0')*10 + int(text[i+2]-'0')
		if c != '2' {
			return code
		}
		if first == 0 {
			first = code
		}
		i += 2
	}
	return first
}

func codeBoundaryBefore(b byte) bool {
	switch b {
	case ' ', '\t', '\n', ';', ':', '(', '[', '"', '\'', '<', '#', '=':
		return true
	}
	return false
}

func codeBoundaryAfter(b byte) bool {
	switch b {
	case ' ', '\t', '\n', '-', ')', ']', '"', '\'', ',', ';', ':':
		return true
	}
	return false
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// EnhancedStatus returns the first enhanced status code (RFC 3463,
// class.subject.detail with class 2, 4 or 5 and up to three digits each) in
// text, preferring a failure status, or "". Version numbers and IPv4
// addresses (four dotted parts) are not statuses.
func EnhancedStatus(text string) string {
	first := ""
	for i := 0; i+5 <= len(text); i++ {
		c := text[i]
		if c != '2' && c != '4' && c != '5' {
			continue
		}
		if i > 0 && (isDigit(text[i-1]) || text[i-1] == '.') {
			continue
		}
		if text[i+1] != '.' {
			continue
		}
		j := i + 2
		n := digits(text, j)
		if n == 0 || n > 3 || j+n >= len(text) || text[j+n] != '.' {
			continue
		}
		k := j + n + 1
		m := digits(text, k)
		if m == 0 || m > 3 {
			continue
		}
		end := k + m
		if end < len(text) && (text[end] == '.' && end+1 < len(text) && isDigit(text[end+1]) || isDigit(text[end])) {
			continue
		}
		s := text[i:end]
		if c != '2' {
			return s
		}
		if first == "" {
			first = s
		}
	}
	return first
}

func digits(s string, i int) int {
	n := 0
	for i+n < len(s) && isDigit(s[i+n]) {
		n++
	}
	return n
}

// smtpCommands maps phrases MTAs use to say which command drew the reply
// (Postfix "in reply to RCPT TO command", Sendmail ">>> DATA", qmail "RCPT TO
// response", Exim "after RCPT TO:") to the command. Checked in order, on
// lower-cased text.
var smtpCommands = []struct {
	phrase  string
	command string
}{
	{"in reply to rcpt to", "RCPT"},
	{"in reply to end of data", "DATA"},
	{"in reply to data", "DATA"},
	{"in reply to mail from", "MAIL"},
	{"in reply to ehlo", "EHLO"},
	{"in reply to helo", "HELO"},
	{"in reply to starttls", "STARTTLS"},
	{"while talking to", ""}, // Sendmail: the command follows as ">>> CMD"
	{">>> rcpt to", "RCPT"},
	{">>> data", "DATA"},
	{">>> mail from", "MAIL"},
	{">>> ehlo", "EHLO"},
	{">>> helo", "HELO"},
	{"after rcpt to", "RCPT"},
	{"after end of data", "DATA"},
	{"after data", "DATA"},
	{"after mail from", "MAIL"},
	{"after ehlo", "EHLO"},
	{"after helo", "HELO"},
	{"after initial connection", "CONN"},
	{"after pipelined", ""},
	{"rcpt to response", "RCPT"},
	{"data response", "DATA"},
	{"mail from response", "MAIL"},
	{"-------smtp command\ndata", "DATA"}, // m-FILTER: "-------SMTP command" then the command
	{"-------smtp command\nrcpt", "RCPT"},
	{"-------smtp command\nmail", "MAIL"},
	{"sent <<< rcpt to", "RCPT"}, // InterScan's transcript
	{"sent <<< data", "DATA"},
	{"sent <<< mail from", "MAIL"},
}

// transcriptPhrases are the phrases of smtpCommands that name a command,
// in order, looked for in one pass over a whole message;
// transcriptCommands[i] is the command phrase i names.
var transcriptPhrases, transcriptCommands = func() (*rules.Phrases, []string) {
	var phrases, commands []string
	for _, c := range smtpCommands {
		if c.command != "" {
			phrases = append(phrases, c.phrase)
			commands = append(commands, c.command)
		}
	}
	return rules.NewPhrases(phrases...), commands
}()

// weakCommands are phrases that name a command only inside one
// recipient's own reply; over a whole message they may be prose.
var weakCommands = []struct {
	phrase  string
	command string
}{
	{"rcpt to:", "RCPT"},
	{"rcpt to command", "RCPT"},
	{"rcpt command", "RCPT"},
	{"mail from:", "MAIL"},
	{"end of data", "DATA"},
	{"data command", "DATA"},
	{"connection greeting", "CONN"},
	{"smtp greeting", "CONN"},
	{"connect to ", "CONN"}, // Postfix: "connect to mx.example.com[...]:25: Connection timed out"
}

// SMTPCommand returns the SMTP command a diagnostic says drew the reply, or "".
func SMTPCommand(lowerText string) string {
	if c := transcriptCommand(lowerText); c != "" {
		return pipelined(c, lowerText)
	}
	for _, c := range weakCommands {
		if strings.Contains(lowerText, c.phrase) {
			return c.command
		}
	}
	return ""
}

// command returns the SMTP command a reply's own words say drew it: an
// MTA's transcript phrasing (SMTPCommand), else a phrase the rules tie to
// one command ("Recipient address rejected" is a refusal at RCPT).
func (c *Classifier) command(lowerText string) string {
	if cmd := SMTPCommand(lowerText); cmd != "" {
		return cmd
	}
	return c.rules.Command(lowerText)
}

// pipelined corrects DATA to RCPT for a pipelined transcript in which the
// recipient was refused at RCPT and the server then refused DATA for want
// of recipients (Sendmail: ">>> DATA", "<<< 550 5.1.1 ... User unknown",
// "<<< 503 5.0.0 Need RCPT (recipient)").
func pipelined(command, lowerText string) string {
	if command == "DATA" && (strings.Contains(lowerText, "need rcpt") || strings.Contains(lowerText, "no valid recipients") || strings.Contains(lowerText, "503 5.5.1")) {
		return "RCPT"
	}
	return command
}

// refusedAllAtRcpt reports whether a Sendmail transcript holds one session
// whose DATA the server refused for want of recipients (">>> DATA", then
// "503 5.0.0 Need RCPT (recipient)"): the client pipelined its commands,
// no RCPT was accepted, so every recipient of the session was refused at
// RCPT, whichever of them a DSN lists.
func refusedAllAtRcpt(lowerText string) bool {
	return strings.Count(lowerText, "while talking to ") == 1 &&
		strings.Contains(lowerText, ">>> data") && pipelined("DATA", lowerText) == "RCPT"
}

// transcriptCommand returns the command named by an MTA's fixed transcript
// phrasing ("in reply to RCPT TO command", ">>> DATA"), which can be looked
// for in a whole message, not only in one reply.
func transcriptCommand(lowerText string) string {
	if i := transcriptPhrases.First(lowerText); i >= 0 {
		return pipelined(transcriptCommands[i], lowerText)
	}
	if greetingRefused(lowerText) {
		return "CONN"
	}
	return ""
}

// greetingRefused reports whether a Sendmail transcript shows a reply read
// right after connecting, before any command was sent ("... while talking
// to mx.example.com.:" then "<<< 554 ..." with no ">>>" line between): the
// server's greeting (RFC 5321 section 3.1).
func greetingRefused(lowerText string) bool {
	const marker = "while talking to "
	i := strings.Index(lowerText, marker)
	if i < 0 || strings.Contains(lowerText, ">>> ") {
		return false
	}
	rest := lowerText[i+len(marker):]
	nl := strings.IndexByte(rest, '\n')
	if nl < 0 {
		return false
	}
	return strings.HasPrefix(strings.TrimLeft(rest[nl+1:], " \t\r"), "<<< ")
}

// RemoteMTA returns the host an MTA's text says answered: Postfix "host
// mx.example.com[192.0.2.1] said:", qmail "remote host 192.0.2.1 said:",
// Exim "host mx.example.com [192.0.2.1]:", Sendmail "while talking to
// mx.example.com.:". "" when none is named.
func RemoteMTA(text string) string {
	lower := rules.LowerASCII(text)
	for _, marker := range []string{"while talking to ", "remote host ", "host "} {
		i := strings.Index(lower, marker)
		for i >= 0 {
			rest := text[i+len(marker):]
			name := hostToken(rest)
			if looksLikeHost(name) {
				return name
			}
			next := strings.Index(lower[i+len(marker):], marker)
			if next < 0 {
				break
			}
			i += len(marker) + next
		}
	}
	return ""
}

func hostToken(s string) string {
	end := 0
	for end < len(s) {
		c := s[end]
		if c == ' ' || c == '[' || c == ']' || c == ':' || c == '(' || c == ',' || c == '\n' || c == '\t' || c == '>' || c == '<' {
			break
		}
		end++
	}
	return strings.TrimSuffix(s[:end], ".")
}

func looksLikeHost(s string) bool {
	if len(s) < 3 || !strings.Contains(s, ".") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isDigit(c) || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// JoinContinuations rewrites a multi-line SMTP reply that was joined into
// one line (RFC 5321 section 4.2.1: every line but the last is "code-text",
// the last "code text", and each may repeat the enhanced status, RFC 2034)
// as one reply: "550-5.7.1 Messages with multiple 550 5.7.1 addresses"
// becomes "550 5.7.1 Messages with multiple addresses". Only the prefixes of
// the first continued reply are dropped; other text is returned unchanged.
func JoinContinuations(text string) string {
	code := ReplyCode(text)
	if code == 0 {
		return text
	}
	c := strconv.Itoa(code)
	first := strings.Index(text, c+"-")
	if first < 0 || (first > 0 && !codeBoundaryBefore(text[first-1])) {
		return text
	}
	status := ""
	if after := text[first+len(c)+1:]; len(after) > 0 {
		if st := EnhancedStatus(after); st != "" && strings.HasPrefix(after, st) {
			status = st
		}
	}
	prefixes := []string{c + "-", c + " "}
	if status != "" {
		prefixes = []string{c + "-" + status + " ", c + " " + status + " ", c + "-" + status, c + " " + status}
	}
	var b strings.Builder
	b.Grow(len(text))
	b.WriteString(text[:first])
	b.WriteString(c + " ")
	if status != "" {
		b.WriteString(status + " ")
	}
	// Skip "code-" and the status after it; the space that follows may be
	// missing at the end of the text.
	rest := strings.TrimLeft(text[first+len(c)+1+len(status):], " ")
	for {
		at, n := -1, 0
		for _, p := range prefixes {
			for off := 0; ; {
				i := strings.Index(rest[off:], p)
				if i < 0 {
					break
				}
				i += off
				if i > 0 && rest[i-1] == ' ' && (at < 0 || i < at) {
					at, n = i, len(p)
					break
				}
				off = i + 1
			}
		}
		if at < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:at])
		rest = strings.TrimLeft(rest[at+n:], " ")
	}
	return strings.TrimSpace(b.String())
}

// maxStatuses bounds the enhanced statuses read out of one text.
const maxStatuses = 16

// Statuses returns the enhanced status codes written in text, in order, at
// most maxStatuses.
func Statuses(text string) []string {
	var out []string
	for off := 0; off < len(text) && len(out) < maxStatuses; {
		st, at := nextStatus(text, off)
		if st == "" {
			break
		}
		out = append(out, st)
		off = at + len(st)
	}
	return out
}

// nextStatus is EnhancedStatus's scan from off, without its preference for
// failures: the first status at or after off and where it starts.
func nextStatus(text string, off int) (string, int) {
	for i := off; i+5 <= len(text); i++ {
		c := text[i]
		if c != '2' && c != '4' && c != '5' {
			continue
		}
		if st := EnhancedStatus(text[i:min(i+12, len(text))]); st != "" && strings.HasPrefix(text[i:], st) && (i == 0 || !isDigit(text[i-1]) && text[i-1] != '.') {
			return st, i
		}
	}
	return "", -1
}

// refineStatus returns a more telling status than a report's own when its
// diagnostic holds one: a status that names only its subject (X.Y.0, "other
// address status") or says only that the message expired (X.4.7) yields to
// the first specific status of the same class the remote server gave
// ("5.1.0 - Unknown address error '5.2.2 ... Mailbox Full'", "4.4.7 ...
// <421 4.4.2 Connection timed out>").
func refineStatus(status, diag string) string {
	if len(status) < 5 || !(strings.HasSuffix(status, ".0") && !strings.HasSuffix(status, ".0.0") || strings.HasSuffix(status, ".4.7")) {
		return status
	}
	for _, st := range Statuses(diag) {
		if st != status && st[0] == status[0] && !strings.HasSuffix(st, ".0") && !strings.HasSuffix(st, ".4.7") {
			return st
		}
	}
	return status
}
