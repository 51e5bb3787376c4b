package dsn

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file reads the fields of message/delivery-status (RFC 3464 section 2,
// RFC 6533 section 6) and message/feedback-report (RFC 5965 section 3.1).

// ParseStatus parses an enhanced status code, RFC 3463 section 2:
// class "." subject "." detail, with class 2, 4 or 5 and subject and detail
// of one to three digits. Comments, a leading "#" (qmail) and text after the
// code ("5.1.1 User unknown") are ignored. ok is false for anything else.
func ParseStatus(s string) (st Status, ok bool) {
	s = trimWS(stripComment(s))
	if s != "" && s[0] == '#' {
		s = trimWS(s[1:])
	}
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		s = s[:i]
	}
	if len(s) < 5 || s[1] != '.' {
		return Status{}, false
	}
	switch s[0] {
	case '2', '4', '5':
	default:
		return Status{}, false
	}
	subject, rest, ok := statusNumber(s[2:])
	if !ok || rest == "" || rest[0] != '.' {
		return Status{}, false
	}
	detail, rest, ok := statusNumber(rest[1:])
	if !ok || rest != "" {
		return Status{}, false
	}
	return Status{Class: int(s[0] - '0'), Subject: subject, Detail: detail}, true
}

// statusNumber reads one to three digits at the start of s.
func statusNumber(s string) (n int, rest string, ok bool) {
	i := 0
	for i < len(s) && i < 4 && '0' <= s[i] && s[i] <= '9' {
		n = n*10 + int(s[i]-'0')
		i++
	}
	if i == 0 || i > 3 {
		return 0, s, false
	}
	return n, s[i:], true
}

// ParseAction parses an Action field, RFC 3464 section 2.3.3: case is
// ignored and comments removed. An unknown value is returned as written
// (trimmed) with ok false.
func ParseAction(s string) (Action, bool) {
	v := Action(strings.ToLower(trimWS(stripComment(s))))
	switch v {
	case ActionFailed, ActionDelayed, ActionDelivered, ActionRelayed, ActionExpanded:
		return v, true
	}
	return Action(trimWS(s)), false
}

// fieldID names the fields of RFC 3464 sections 2.2 and 2.3.
type fieldID uint8

const (
	fUnknown fieldID = iota
	// Per-message fields, section 2.2.
	fOriginalEnvelopeID
	fReportingMTA
	fDSNGateway
	fReceivedFromMTA
	fArrivalDate
	// Per-recipient fields, section 2.3.
	fOriginalRecipient
	fFinalRecipient
	fAction
	fStatus
	fRemoteMTA
	fDiagnosticCode
	fLastAttemptDate
	fFinalLogID
	fWillRetryUntil
)

var dsnFields = [...]struct {
	name string
	id   fieldID
}{
	{"Final-Recipient", fFinalRecipient},
	{"Action", fAction},
	{"Status", fStatus},
	{"Diagnostic-Code", fDiagnosticCode},
	{"Remote-MTA", fRemoteMTA},
	{"Original-Recipient", fOriginalRecipient},
	{"Last-Attempt-Date", fLastAttemptDate},
	{"Reporting-MTA", fReportingMTA},
	{"Arrival-Date", fArrivalDate},
	{"Received-From-MTA", fReceivedFromMTA},
	{"Original-Envelope-Id", fOriginalEnvelopeID},
	{"DSN-Gateway", fDSNGateway},
	{"Final-Log-Id", fFinalLogID},
	{"Will-Retry-Until", fWillRetryUntil},
}

func lookupDSNField(name string) fieldID {
	for _, f := range dsnFields {
		if equalFold(name, f.name) {
			return f.id
		}
	}
	return fUnknown
}

// scanFields calls fn for every field of s, a block of header-style fields
// in groups separated by blank lines, with the group's index (groups without
// fields are not counted). Continuation lines are unfolded. It returns the
// number of lines that were no fields and the first of them.
func scanFields(s string, fn func(group int, name, value string)) (bad, folded int, badLine string) {
	group, inGroup := 0, false
	name := ""
	vStart, vEnd := -1, -1
	flush := func() {
		if vStart >= 0 {
			fn(group, name, unfold(s[vStart:vEnd]))
			vStart = -1
		}
	}
	for pos := 0; pos < len(s); {
		line, next := nextLine(s, pos)
		switch {
		case isBlankLine(line):
			flush()
			if inGroup {
				group++
				inGroup = false
			}
		case isWSP(line[0]) && vStart >= 0:
			vEnd = pos + len(line)
		case len(line) > 2 && line[0] == '-' && line[1] == '-' && !isWSP(line[2]):
			// A MIME boundary: the part ended without one (a broken
			// multipart). Nothing after it is a delivery-status field.
			flush()
			if bad == 0 {
				badLine = trimWS(line)
			}
			return bad + 1, folded, badLine
		default:
			// Indented fields are accepted when they continue nothing.
			off := 0
			for off < len(line) && isWSP(line[off]) {
				off++
			}
			if n, voff, ok := fieldLine(line[off:]); ok {
				flush()
				name, vStart, vEnd = n, pos+off+voff, pos+len(line)
				inGroup = true
			} else if vStart >= 0 {
				// A value folded without indentation (multi-line SMTP
				// replies pasted as they came).
				vEnd = pos + len(line)
				folded++
			} else {
				if bad == 0 {
					badLine = trimWS(line)
				}
				bad++
			}
		}
		pos = next
	}
	flush()
	return bad, folded, badLine
}

// typedValue splits "type; value", RFC 3464 section 2.1.2. ok is false when
// there is no type: no ";" or something before it that is not an atom.
func typedValue(v string) (typ, val string, ok bool) {
	i := strings.IndexByte(v, ';')
	if i < 0 {
		return "", trimWS(v), false
	}
	t := trimWS(v[:i])
	if t == "" || len(t) > 40 {
		return "", trimWS(v), false
	}
	for j := 0; j < len(t); j++ {
		if c := t[j]; !isKeyByte(c) || c == '<' || c == '@' || c == ',' || c == '"' {
			return "", trimWS(v), false
		}
	}
	return strings.ToLower(t), trimWS(v[i+1:]), true
}

// bareAddress strips angle brackets and white space from an address,
// keeping its case: "<User@Example.com>" becomes "User@Example.com".
func bareAddress(v string) string {
	v = trimWS(v)
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i+1:], '>'); j >= 0 {
			v = v[i+1 : i+1+j]
		} else {
			v = v[i+1:]
		}
	}
	v = strings.Trim(v, "<> \t")
	if strings.IndexAny(v, " \t") >= 0 {
		// "|/usr/bin/procmail user@example.com": keep the one word with an
		// "@" when there is exactly one.
		at := ""
		for _, w := range strings.Fields(v) {
			if strings.IndexByte(w, '@') >= 0 {
				if at != "" {
					at = ""
					break
				}
				at = w
			}
		}
		if at != "" && strings.IndexByte(at, '@') > 0 {
			return at
		}
		v = strings.Map(func(r rune) rune {
			if r == ' ' || r == '\t' {
				return -1
			}
			return r
		}, v)
	}
	return v
}

// decodeUTF8Addr decodes the escapes of an RFC 6533 utf-8 address:
// unitext "\x{HEX}" (section 3) and xtext "+HH" (RFC 3461 section 4).
func decodeUTF8Addr(s string) string {
	if strings.IndexByte(s, '\\') < 0 && strings.IndexByte(s, '+') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && strings.HasPrefix(s[i:], `\x{`):
			w := s[i:]
			if len(w) > 10 {
				w = w[:10] // `\x{10FFFF}`
			}
			end := strings.IndexByte(w, '}')
			if end < 4 || end > 9 {
				b = append(b, c)
				continue
			}
			v, ok := 0, true
			for _, h := range []byte(s[i+3 : i+end]) {
				d, isHex := unhex(h)
				if !isHex {
					ok = false
					break
				}
				v = v<<4 | int(d)
			}
			if !ok || v > 0x10FFFF {
				b = append(b, c)
				continue
			}
			b = utf8.AppendRune(b, rune(v))
			i += end
		case c == '+' && i+2 < len(s) && isUpperHex(s[i+1]) && isUpperHex(s[i+2]):
			h, _ := unhex(s[i+1])
			l, _ := unhex(s[i+2])
			b = append(b, h<<4|l)
			i += 2
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }

// recipientAddress reads an Original-Recipient or Final-Recipient value.
func (p *parser) recipientAddress(field, v string) (typ, addr string) {
	v = stripComment(v)
	typ, val, ok := typedValue(v)
	if !ok {
		p.anomaly(field + " without address type: " + short(v))
		return "", bareAddress(val)
	}
	addr = bareAddress(val)
	if typ == "utf-8" {
		addr = decodeUTF8Addr(addr)
	}
	return typ, addr
}

// mtaName reads a Reporting-MTA, Remote-MTA, Received-From-MTA or
// DSN-Gateway value: the name without its "dns;" type and comments.
func (p *parser) mtaName(field, v string) string {
	v = trimWS(stripComment(v))
	if _, val, ok := typedValue(v); ok {
		return val
	}
	p.anomaly(field + " without name type: " + short(v))
	return v
}

// collapseSpace replaces every run of white space with one space.
func collapseSpace(s string) string {
	s = trimWS(s)
	need := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\t' || c == '\r' || c == '\n' || (c == ' ' && i+1 < len(s) && s[i+1] == ' ') {
			need = true
			break
		}
	}
	if !need {
		return s
	}
	b := make([]byte, 0, len(s))
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			space = true
			continue
		}
		if space && len(b) > 0 {
			b = append(b, ' ')
		}
		space = false
		b = append(b, c)
	}
	return string(b)
}

// parseDeliveryStatus reads the fields of a delivery-status body, RFC 3464
// section 2.1: one per-message group, then per-recipient groups separated by
// blank lines. It is lenient: per-recipient fields without a blank line
// before them start a recipient, a repeated per-recipient field starts the
// next one, and unknown fields go to Extra.
func (p *parser) parseDeliveryStatus(body string, global bool) Report {
	r := Report{Global: global, Recipients: []Recipient{}}
	var cur *Recipient
	curGroup := -1
	seen := 0 // per-recipient fields already set in cur, a bit per fieldID
	bad, folded, badLine := scanFields(body, func(group int, name, value string) {
		id := lookupDSNField(name)
		if id >= fOriginalRecipient {
			newRecipient := cur == nil || group != curGroup || seen&(1<<id) != 0
			if newRecipient && cur != nil && group == curGroup &&
				(id == fOriginalRecipient || id == fFinalRecipient || id == fAction || id == fStatus) {
				p.anomaly("per-recipient groups without a blank line between them")
			}
			if newRecipient {
				if !p.takeRecipient() {
					cur = nil
					return
				}
				r.Recipients = append(r.Recipients, Recipient{})
				cur = &r.Recipients[len(r.Recipients)-1]
				curGroup, seen = group, 0
			}
			seen |= 1 << id
			p.setRecipientField(cur, id, name, value)
			return
		}
		if cur != nil && group != curGroup {
			cur = nil // a new group starts; its recipient fields open a new recipient
		}
		switch id {
		case fOriginalEnvelopeID:
			if r.OriginalEnvelopeID == "" {
				r.OriginalEnvelopeID = trimWS(value)
				return
			}
		case fReportingMTA:
			if r.ReportingMTA == "" {
				r.ReportingMTA = p.mtaName(name, value)
				return
			}
		case fDSNGateway:
			if r.DSNGateway == "" {
				r.DSNGateway = p.mtaName(name, value)
				return
			}
		case fReceivedFromMTA:
			if r.ReceivedFromMTA == "" {
				r.ReceivedFromMTA = p.mtaName(name, value)
				return
			}
		case fArrivalDate:
			if r.ArrivalDate == "" {
				r.ArrivalDate = trimWS(value)
				return
			}
		}
		f := Field{Name: name, Value: value}
		if cur != nil {
			if len(cur.Extra) < maxExtra {
				cur.Extra = append(cur.Extra, f)
			}
		} else if len(r.Extra) < maxExtra {
			r.Extra = append(r.Extra, f)
		}
	})
	if bad > 0 {
		p.anomaly("delivery-status: " + strconv.Itoa(bad) + " lines that are no fields, first " + short(badLine))
	}
	if folded > 0 {
		p.anomaly("delivery-status: field values folded without indentation")
	}
	for i := range r.Recipients {
		rc := &r.Recipients[i]
		if rc.FinalRecipient == "" {
			if rc.OriginalRecipient != "" {
				rc.FinalRecipient = rc.OriginalRecipient
				if rc.FinalRecipientType == "" {
					rc.FinalRecipientType = rc.OriginalRecipientType
				}
				p.anomaly("recipient without Final-Recipient; Original-Recipient used")
			} else {
				p.anomaly("recipient without Final-Recipient or Original-Recipient")
			}
		}
	}
	return r
}

// maxExtra bounds the Extra fields kept per report, recipient or feedback.
const maxExtra = 100

func (p *parser) setRecipientField(rc *Recipient, id fieldID, name, value string) {
	switch id {
	case fOriginalRecipient:
		rc.OriginalRecipientType, rc.OriginalRecipient = p.recipientAddress(name, value)
	case fFinalRecipient:
		rc.FinalRecipientType, rc.FinalRecipient = p.recipientAddress(name, value)
	case fAction:
		a, ok := ParseAction(value)
		if !ok {
			p.anomaly("unknown Action " + short(value))
		}
		rc.Action = a
	case fStatus:
		rc.RawStatus = trimWS(value)
		st, ok := ParseStatus(value)
		if !ok {
			p.anomaly("unparsable Status " + short(value))
		}
		rc.Status = st
	case fRemoteMTA:
		rc.RemoteMTA = p.mtaName(name, value)
	case fDiagnosticCode:
		typ, text, ok := typedValue(value)
		if !ok {
			p.anomaly("Diagnostic-Code without diagnostic type")
		}
		rc.DiagnosticType, rc.DiagnosticCode = typ, collapseSpace(text)
	case fLastAttemptDate:
		rc.LastAttemptDate = trimWS(value)
	case fFinalLogID:
		rc.FinalLogID = trimWS(value)
	case fWillRetryUntil:
		rc.WillRetryUntil = trimWS(value)
	}
}

// looksLikeDeliveryStatus reports whether a body that is not labelled
// message/delivery-status clearly holds delivery-status fields: it starts
// with a DSN field and has a recipient with an Action or a Status.
func looksLikeDeliveryStatus(s string) bool {
	s = skipBlankLines(s)
	line, _ := nextLine(s, 0)
	name, _, ok := fieldLine(line)
	if !ok {
		return false
	}
	switch lookupDSNField(name) {
	case fReportingMTA, fFinalRecipient, fOriginalRecipient, fOriginalEnvelopeID,
		fReceivedFromMTA, fDSNGateway, fArrivalDate:
	default:
		return false
	}
	return (hasFieldLine(s, "final-recipient:") || hasFieldLine(s, "original-recipient:")) &&
		(hasFieldLine(s, "action:") || hasFieldLine(s, "status:")) &&
		!hasFieldLine(s, "disposition:") // RFC 8098 read receipts share field names
}

// hasFieldLine reports whether a line of s starts with name (lower-case).
func hasFieldLine(s, name string) bool { return indexFieldLine(s, name) >= 0 }

// looksLikeFeedback reports whether s starts with an ARF Feedback-Type field.
func looksLikeFeedback(s string) bool {
	return hasPrefixFold(skipBlankLines(s), "feedback-type:")
}

// skipBlankLines drops the blank lines at the start of s.
func skipBlankLines(s string) string {
	for s != "" {
		line, next := nextLine(s, 0)
		if !isBlankLine(line) || next == 0 {
			return s
		}
		s = s[next:]
	}
	return s
}

// parseFeedback reads a message/feedback-report body, RFC 5965 section 3.1.
func (p *parser) parseFeedback(body string) *Feedback {
	f := &Feedback{}
	bad, _, badLine := scanFields(body, func(_ int, name, value string) {
		v := trimWS(value)
		switch {
		case equalFold(name, "Feedback-Type"):
			f.FeedbackType = strings.ToLower(trimWS(stripComment(v)))
		case equalFold(name, "User-Agent"):
			f.UserAgent = v
		case equalFold(name, "Version"):
			f.Version = v
		case equalFold(name, "Original-Mail-From"):
			f.OriginalMailFrom = bareAddress(stripComment(v))
		case equalFold(name, "Original-Rcpt-To"), equalFold(name, "Removal-Recipient"):
			if len(f.OriginalRcptTo) < maxExtra {
				f.OriginalRcptTo = append(f.OriginalRcptTo, bareAddress(stripComment(v)))
			}
		case equalFold(name, "Arrival-Date"), equalFold(name, "Received-Date"):
			if f.ArrivalDate == "" {
				f.ArrivalDate = v
			}
		case equalFold(name, "Source-IP"):
			f.SourceIP = trimWS(stripComment(v))
		case equalFold(name, "Reported-Domain"):
			f.ReportedDomain = v
		case equalFold(name, "Reporting-MTA"):
			f.ReportingMTA = p.mtaName(name, v)
		default:
			if len(f.Extra) < maxExtra {
				f.Extra = append(f.Extra, Field{Name: name, Value: value})
			}
		}
	})
	if bad > 0 {
		p.anomaly("feedback-report: " + strconv.Itoa(bad) + " lines that are no fields, first " + short(badLine))
	}
	if f.FeedbackType == "" {
		p.anomaly("feedback-report without Feedback-Type")
	}
	return f
}

// textDeliveryStatus returns the delivery-status fields pasted into text:
// from the first line starting with Reporting-MTA, Final-Recipient or
// Original-Recipient, every group of fields whose first field is a DSN field.
// It returns "" when there is none, or when it names no recipient.
func textDeliveryStatus(text string) string {
	start := indexFieldLine(text, "reporting-mta:", "final-recipient:", "original-recipient:")
	if start < 0 {
		return ""
	}
	end, groupStart := start, true
	for pos := start; pos < len(text); {
		line, next := nextLine(text, pos)
		switch {
		case isBlankLine(line):
			groupStart = true
		case isWSP(line[0]):
			if groupStart {
				return checkDSNBlock(text[start:end])
			}
		default:
			name, _, ok := fieldLine(line)
			if !ok || groupStart && lookupDSNField(name) == fUnknown {
				return checkDSNBlock(text[start:end])
			}
			groupStart = false
		}
		pos = next
		if !isBlankLine(line) {
			end = pos
		}
	}
	return checkDSNBlock(text[start:end])
}

func checkDSNBlock(b string) string {
	if looksLikeDeliveryStatus(b) {
		return b
	}
	return ""
}

// indexFieldLine returns the offset of the first line of s that starts with
// one of names (lower-case), or -1.
func indexFieldLine(s string, names ...string) int {
	for pos := 0; pos < len(s); {
		rest := s[pos:]
		for _, n := range names {
			if hasPrefixFold(rest, n) {
				return pos
			}
		}
		i := strings.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		pos += i + 1
	}
	return -1
}
