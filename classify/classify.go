// Package classify turns parsed reports (dsn.Message) and synchronous SMTP
// replies into events: who failed, how (class), why (reason) and whose
// problem it is (scope). It is pure: no I/O beyond the reader it is handed.
package classify

import (
	"bytes"
	"io"
	"strings"

	"github.com/bouncer-mail/bouncer/dsn"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/rules"
)

// Classifier classifies reports with one rule set. It is safe for
// concurrent use.
type Classifier struct {
	rules *rules.Set
}

// New returns a Classifier using rs.
func New(rs *rules.Set) *Classifier {
	return &Classifier{rules: rs}
}

// Parse reads one message from r and classifies it. The error is dsn.Parse's:
// the message could not be read at all. The events hold no reference to
// the message read (detach).
func (c *Classifier) Parse(r io.Reader) ([]event.Event, error) {
	m, err := dsn.Parse(r)
	if err != nil {
		return nil, err
	}
	return detach(c.Message(m)), nil
}

// Bytes is Parse over a byte slice.
func (c *Classifier) Bytes(b []byte) ([]event.Event, error) {
	if int64(len(b)) > dsn.MaxSize {
		// Parse's own error text: it is stored as the report's
		// ParseError.
		return c.Parse(bytes.NewReader(b))
	}
	// Parse would copy b into a buffer grown from 512 bytes by doubling
	// (37% of the bytes BenchmarkClassify allocated), then parse that
	// copy as ParseBytes parses b.
	m, err := dsn.ParseBytes(b)
	if err != nil {
		return nil, err
	}
	return detach(c.Message(m)), nil
}

// detach gives the strings of each event read from the message one
// allocation of their own. The DSN parser works on a normalised copy of
// the raw bytes and returns substrings of it, so an event holding one
// would keep the whole copy, about the message's size, alive for as long
// as the event lives: ingest holds a batch's events until the batch is
// written and re-folded, behind a backlog every report twice. The
// provider, parser and rule names come from the rules, not the message.
func detach(evs []event.Event) []event.Event {
	for i := range evs {
		e := &evs[i]
		fields := [...]*string{&e.Recipient, &e.Status, &e.Action, &e.Diagnostic, &e.RemoteMTA, &e.ReportingMTA, &e.SMTPCommand, &e.MessageID}
		n := 0
		for _, f := range fields {
			n += len(*f)
		}
		var b strings.Builder
		b.Grow(n)
		for _, f := range fields {
			b.WriteString(*f)
		}
		all := b.String()
		for _, f := range fields {
			*f, all = all[:len(*f)], all[len(*f):]
		}
	}
	return evs
}

// Message classifies a parsed message. It returns no events when the message
// holds no report it can read (an ordinary email, say).
func (c *Classifier) Message(m *dsn.Message) []event.Event {
	x := newExam(c, m)
	if evs := x.feedback(); evs != nil {
		return evs
	}
	if evs := x.dsn(); len(evs) > 0 {
		return evs
	}
	if evs := x.ses(); len(evs) > 0 {
		return evs
	}
	if evs := x.format(false); len(evs) > 0 {
		return evs
	}
	if evs := x.autoreply(); evs != nil {
		return evs
	}
	return x.format(true)
}

// exam is the state of classifying one message.
type exam struct {
	c         *Classifier
	m         *dsn.Message
	lowerText string
	messageID string

	formatDone bool
	fmt        *rules.Format // the detected format, once formatDone
}

// detected returns the message's format (nil when none), detecting it once:
// the DSN path, the format path and the fallback all ask.
func (x *exam) detected() *rules.Format {
	if !x.formatDone {
		x.fmt, x.formatDone = x.c.rules.DetectFormat(x.m, x.lowerText), true
	}
	return x.fmt
}

func newExam(c *Classifier, m *dsn.Message) *exam {
	x := &exam{c: c, m: m, lowerText: rules.LowerASCII(m.Text)}
	if m.Original != nil && m.Original.MessageID != "" {
		x.messageID = "<" + strings.Trim(m.Original.MessageID, "<> ") + ">"
	}
	return x
}

// feedback turns an ARF report (RFC 5965) into one complaint per reported
// recipient.
func (x *exam) feedback() []event.Event {
	f := x.m.Feedback
	jmrp := x.jmrpRecipient()
	if f == nil && !strings.EqualFold(x.m.ReportType, "feedback-report") && jmrp == "" {
		return nil
	}
	var rcpts []string
	if f != nil {
		rcpts = append(rcpts, f.OriginalRcptTo...)
	}
	if len(rcpts) == 0 && jmrp != "" {
		rcpts = append(rcpts, jmrp)
	}
	if len(rcpts) == 0 && x.m.Original != nil && x.m.Original.To != "" {
		rcpts = addresses(x.m.Original.To)
	}
	reporting := ""
	if f != nil {
		reporting = f.ReportingMTA
	}
	var evs []event.Event
	for _, r := range rcpts {
		rcpt := normalizeAddress(r)
		if rcpt == "" {
			continue
		}
		evs = append(evs, event.Event{
			Recipient:    rcpt,
			Class:        event.ClassComplaint,
			Reason:       event.ReasonFeedback,
			Diagnostic:   feedbackDiagnostic(f),
			ReportingMTA: reporting,
			Provider:     x.c.rules.Provider(domainOf(rcpt)),
			Parser:       "arf",
			Rule:         "arf",
			MessageID:    x.messageID,
		})
	}
	if evs == nil {
		evs = []event.Event{}
	}
	return evs
}

// jmrpRecipient returns the complaining recipient of a Microsoft JMRP
// complaint sent without an ARF part: the returned original carries it in
// Microsoft's X-HmXmrOriginalRecipient header. "" when there is none.
func (x *exam) jmrpRecipient() string {
	if x.m.Original == nil {
		return ""
	}
	for _, fd := range x.m.Original.Headers {
		if strings.EqualFold(fd.Name, "X-HmXmrOriginalRecipient") {
			return normalizeAddress(fd.Value)
		}
	}
	return ""
}

func feedbackDiagnostic(f *dsn.Feedback) string {
	if f == nil {
		return ""
	}
	s := "feedback-type: " + f.FeedbackType
	if f.UserAgent != "" {
		s += "; user-agent: " + f.UserAgent
	}
	return s
}

// dsn turns the recipients of RFC 3464 reports into events.
func (x *exam) dsn() []event.Event {
	var evs []event.Event
	var found []rules.Found
	foundDone := false
	for _, rep := range x.m.Reports {
		for _, r := range rep.Recipients {
			rcpt := normalizeAddress(r.FinalRecipient)
			if rcpt == "" {
				rcpt = normalizeAddress(r.OriginalRecipient)
			}
			if rcpt == "" {
				continue
			}
			diag := r.DiagnosticCode
			command := x.c.command(rules.LowerASCII(diag))
			if diag == "" || command == "" {
				// Many MTAs leave Diagnostic-Code out, or the command that
				// drew it ("in reply to RCPT TO command"), and say it in
				// the human-readable part: read it there.
				if !foundDone {
					found, foundDone = x.extract(), true
				}
				text := diagnosticFor(found, rcpt)
				if diag == "" {
					diag = text
				}
				if command == "" {
					command = x.c.command(rules.LowerASCII(text))
				}
			}
			if command == "" && x.single() {
				command = transcriptCommand(x.lowerText)
			} else if command == "" && refusedAllAtRcpt(x.lowerText) {
				command = "RCPT"
			}
			diag = JoinContinuations(diag)
			code := ReplyCode(diag)
			status := r.Status.String()
			if st := EnhancedStatus(diag); st != "" && (status == "" || genericStatus(status) && !genericStatus(st) && st[0] == status[0]) {
				status = st
			}
			status = refineStatus(status, diag)
			remote := r.RemoteMTA
			if remote == "" {
				remote = RemoteMTA(diag)
			}
			provider := x.c.rules.Provider(domainOf(rcpt), remote)
			v := x.c.Reply(Reply{Code: code, Status: status, Text: diag, Action: string(r.Action), Command: command, Provider: provider})
			if v.Rule == "none" && x.single() {
				// The one recipient's diagnostic names no cause: the
				// human-readable part may ("pipe to |/usr/bin/x ...",
				// "Could not be delivered because of ...").
				if f := x.detected(); f != nil {
					if w := x.c.Reply(Reply{Code: code, Status: status, Text: f.Block(x.m.Text, x.lowerText), Action: string(r.Action), Command: command, Provider: provider}); !weakRule(w.Rule) {
						v = w
					}
				}
			}
			if r.DiagnosticType == "x-unix" && genericVerdict(v) {
				// "Diagnostic-Code: X-Unix; 71", "x-unix; temporary
				// failure": a local delivery program (a pipe, procmail,
				// a sysexits code) reported the failure, and its words
				// name no cause of their own.
				// The program's own output may be in the transcript
				// ("maildrop: maildir over quota"): a cause read there
				// wins.
				w := Verdict{Rule: "none"}
				if f := x.detected(); f != nil && x.single() {
					w = x.c.Reply(Reply{Code: code, Status: status, Text: f.Block(x.m.Text, x.lowerText), Action: string(r.Action), Command: command, Provider: provider})
				}
				if !weakRule(w.Rule) && !genericVerdict(w) {
					v = w
				} else {
					v.Reason, v.Scope, v.Rule = event.ReasonMailerError, event.ReasonMailerError.DefaultScope(), "diagnostic-type-x-unix"
				}
			}
			evs = append(evs, x.event(rcpt, v, code, string(r.Action), command, diag, remote, rep.ReportingMTA, provider, "rfc3464"))
		}
	}
	return evs
}

// genericVerdict reports whether a failure verdict names no cause of its
// own: no rule, only the DSN action or status, or a catch-all wording
// ("temporary failure", "rejected").
func genericVerdict(v Verdict) bool {
	switch v.Rule {
	case "none", "dsn-action-delayed", "systemerror", "rejected-generic":
		return v.Class == event.ClassSoft || v.Rule == "none"
	}
	return strings.HasPrefix(v.Rule, "status-") && v.Class == event.ClassSoft
}

// genericStatus reports whether a status names no specific cause (x.0.0).
func genericStatus(s string) bool {
	return strings.HasSuffix(s, ".0.0") || s == ""
}

func diagnosticFor(found []rules.Found, rcpt string) string {
	for _, f := range found {
		if strings.EqualFold(f.Recipient, rcpt) {
			return f.Diagnostic
		}
	}
	if len(found) == 1 {
		return found[0].Diagnostic
	}
	return ""
}

// extract reads recipients out of the text with the detected format, or
// with the generic one.
func (x *exam) extract() []rules.Found {
	f := x.detected()
	if f == nil {
		return nil
	}
	return f.Extract(x.m.Text, x.lowerText)
}

// format reads a non-DSN bounce with the rules' formats. Without fallback
// only formats recognised by their own marks apply; with it, a message that
// merely looks like a bounce is read generically.
func (x *exam) format(fallback bool) []event.Event {
	f := x.detected()
	if f == nil || f.Fallback != fallback {
		return nil
	}
	found := f.Extract(x.m.Text, x.lowerText)
	noReply := false
	if len(found) == 0 && (!f.Fallback || len(x.m.Reports) > 0 || x.m.Get("X-Failed-Recipients") != "") {
		// A recognised format, an empty delivery-status part or an
		// X-Failed-Recipients header: this is a bounce, whoever it names.
		found, noReply = x.fromOriginal(f), true
	}
	reporting := reportingHost(x.m)
	// A non-DSN bounce gives up unless it says it will retry: a 4xx in a
	// final bounce is the last answer of a message that expired.
	delayed := x.c.rules.IsDelayed(x.m, x.lowerText)
	var evs []event.Event
	seen := map[string]bool{}
	cands := found[:0:0]
	for _, fd := range found {
		rcpt := normalizeAddress(fd.Recipient)
		if rcpt == "" || seen[rcpt] || x.isOwnAddress(rcpt, f.Fallback) {
			continue
		}
		seen[rcpt] = true
		fd.Recipient = rcpt
		cands = append(cands, fd)
	}
	for _, fd := range cands {
		rcpt := fd.Recipient
		diag := JoinContinuations(fd.Diagnostic)
		code := ReplyCode(diag)
		status := EnhancedStatus(diag)
		if status == "" && code != 0 && len(cands) == 1 {
			// "(reason: 550 Host unknown)" above a transcript that says
			// "550 5.1.2 ... Host unknown": the one recipient's status.
			status = statusOfClass(Statuses(f.Block(x.m.Text, x.lowerText)), code/100)
		}
		remote := RemoteMTA(diag)
		provider := x.c.rules.Provider(domainOf(rcpt), remote)
		if provider == "" {
			provider = f.Provider
		}
		action := "failed"
		if delayed {
			action = "delayed"
		}
		command := x.c.command(rules.LowerASCII(diag))
		if command == "" && len(cands) == 1 {
			command = transcriptCommand(x.lowerText)
		}
		v := x.c.Reply(Reply{Code: code, Status: status, Text: diag, Action: action, Command: command, Provider: provider, Local: f.Local})
		if weakRule(v.Rule) && len(cands) == 1 {
			// The reply names no cause, or only a bare refusal;
			// human-written bounces often give it before the address
			// ("reject reason: Mailbox full" then "target mail address:
			// ...") or in a paragraph of its own (Gmail's "The error that
			// the other server returned was:"): read the whole error block.
			block := f.Block(x.m.Text, x.lowerText)
			bcode, bstatus := code, status
			if bcode == 0 && bstatus == "" {
				bcode, bstatus = ReplyCode(block), EnhancedStatus(block)
			}
			if w := x.c.Reply(Reply{Code: bcode, Status: bstatus, Text: block, Action: action, Command: command, Provider: provider, Local: f.Local}); !weakRule(w.Rule) {
				v, code = w, bcode
			}
		}
		if v.Rule == "none" && action == "failed" && (code/100 == 4 || code == 0 && strings.HasPrefix(status, "4.")) {
			// A final bounce whose last answer was temporary: the MTA
			// kept retrying and gave up, the message expired.
			v.Reason, v.Scope, v.Class, v.Rule = event.ReasonExpired, event.ReasonExpired.DefaultScope(), event.ClassSoft, "final-after-4xx"
		}
		if v.Rule == "none" && f.Reason != "" {
			v.Reason = event.Reason(f.Reason)
			v.Scope = v.Reason.DefaultScope()
			v.Class = classOf(v.Reason, action == "delayed", action == "failed")
			v.Rule = "format-" + f.Name
		}
		if v.Rule == "none" && noReply {
			// The text read was the bounce's own boilerplate, not a
			// reply for this recipient: there was nothing to read.
			v.Reason = event.ReasonUndefined
		}
		evs = append(evs, x.event(rcpt, v, code, action, command, diag, remote, reporting, provider, f.Name))
	}
	return evs
}

// statusOfClass returns the first of statuses of the given class (4 or
// 5), or "".
func statusOfClass(statuses []string, class int) string {
	for _, st := range statuses {
		if int(st[0]-'0') == class {
			return st
		}
	}
	return ""
}

// weakRule reports whether a verdict's rule names no cause: no rule at all,
// or a bare refusal ("rejected", "denied") a more specific text may explain.
func weakRule(rule string) bool {
	return rule == "none" || rule == "rejected-generic"
}

// single reports whether the message's reports name exactly one recipient,
// so whatever its text says applies to that one.
func (x *exam) single() bool {
	n := 0
	for _, rep := range x.m.Reports {
		n += len(rep.Recipients)
	}
	return n == 1
}

// fromOriginal is the last resort of a bounce whose error block names no
// address (Exim's "save to xxxx", a bare local part, Postfix's "Delivery
// report unavailable"): the addresses of its X-Failed-Recipients header
// (Exim, Gmail), else the one addressee of the returned original (its To,
// else the "for" clause of its Received fields, RFC 5321 section 4.4), with
// the error block as the reply.
func (x *exam) fromOriginal(f *rules.Format) []rules.Found {
	to := addresses(x.m.Get("X-Failed-Recipients"))
	if len(to) == 0 && x.m.Original != nil {
		to = addresses(x.m.Original.To)
		if len(to) == 0 {
			to = receivedFor(x.m.Original.Headers)
		}
		if len(to) != 1 {
			return nil
		}
	}
	if len(to) == 0 || len(to) > maxHeaderRecipients {
		return nil
	}
	block := strings.Join(strings.Fields(f.Block(x.m.Text, x.lowerText)), " ")
	if len(block) > 1024 {
		block = block[:1024]
	}
	out := make([]rules.Found, 0, len(to))
	for _, a := range to {
		out = append(out, rules.Found{Recipient: a, Diagnostic: block})
	}
	return out
}

// maxHeaderRecipients bounds the recipients read from one header.
const maxHeaderRecipients = 100

// receivedFor returns the distinct addresses named by the "for" clauses of
// Received fields (RFC 5321 section 4.4: the envelope recipient).
func receivedFor(h []dsn.Field) []string {
	var out []string
	for _, fd := range h {
		if !strings.EqualFold(fd.Name, "Received") {
			continue
		}
		v := fd.Value
		i := strings.Index(rules.LowerASCII(v), " for ")
		if i < 0 {
			continue
		}
		rest := strings.TrimSpace(v[i+5:])
		if j := strings.IndexAny(rest, "; \t"); j >= 0 {
			rest = rest[:j]
		}
		a := normalizeAddress(rest)
		if a == "" {
			continue
		}
		dup := false
		for _, o := range out {
			dup = dup || o == a
		}
		if !dup {
			out = append(out, a)
		}
	}
	return out
}

// isOwnAddress reports whether addr must not be read as a recipient: a
// mailer-daemon, or, in a generic reading, the bounce's own sender or
// addressee or a postmaster (bounce texts name them as contacts). A
// format's own recipient pattern is trusted with the others.
func (x *exam) isOwnAddress(addr string, generic bool) bool {
	for _, h := range []string{"From", "To", "Return-Path", "Reply-To", "Sender"} {
		if !generic {
			break
		}
		for _, a := range addresses(x.m.Get(h)) {
			if normalizeAddress(a) == addr {
				return true
			}
		}
	}
	local := addr
	if i := strings.IndexByte(addr, '@'); i >= 0 {
		local = addr[:i]
	}
	return local == "mailer-daemon" || (generic && local == "postmaster")
}

func (x *exam) event(rcpt string, v Verdict, code int, action, command, diag, remote, reporting, provider, parser string) event.Event {
	return event.Event{
		Recipient:    rcpt,
		Class:        v.Class,
		Reason:       v.Reason,
		Scope:        v.Scope,
		Status:       v.Status,
		ReplyCode:    code,
		Action:       action,
		Diagnostic:   diag,
		RemoteMTA:    remote,
		ReportingMTA: reporting,
		SMTPCommand:  command,
		Provider:     provider,
		Parser:       parser,
		Rule:         v.Rule,
		MessageID:    x.messageID,
	}
}

// reportingHost guesses the reporting MTA of a non-DSN bounce from the
// domain of its From address (MAILER-DAEMON@host).
func reportingHost(m *dsn.Message) string {
	for _, a := range addresses(m.Get("From")) {
		if d := domainOf(normalizeAddress(a)); d != "" {
			return d
		}
	}
	return ""
}
