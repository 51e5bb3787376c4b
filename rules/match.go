package rules

import (
	"encoding/binary"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Header is what format recognition reads of a message's own header.
type Header interface {
	Get(name string) string
}

// Match is the reason rule that decided, as the classifier reports it.
type Match struct {
	Rule      string // rule name
	Reason    string
	Scope     string // "" means the reason's default scope
	AfterData string // the reason instead when the reply came after DATA
}

// Reply is the evidence a reason rule is matched against.
type Reply struct {
	Text     string // reply or diagnostic text, lower-cased by the caller (LowerASCII)
	Status   string // enhanced status, "5.1.1", or ""
	Code     int    // basic reply code, or 0
	Provider string
}

// Reason returns the first reason rule matching r, or false.
func (s *Set) Reason(r Reply) (Match, bool) {
	if r.Text == "" {
		return Match{}, false
	}
	// One pass over the text finds every rule with a phrase in it; the
	// rules are then tried in order as written, each's regexps only when
	// its conditions hold and none of its phrases occurs.
	var buf [4]uint64
	found := buf[:]
	if n := (len(s.reasons) + 63) / 64; n > len(buf) {
		found = make([]uint64, n)
	}
	s.reasonPhrases.scan(r.Text, found)
	for i := range s.reasons {
		rr := &s.reasons[i]
		if !rr.conditionsHold(r) {
			continue
		}
		if found[i>>6]&(1<<(i&63)) != 0 || rr.regexpMatches(r.Text) {
			return Match{Rule: rr.Name, Reason: rr.Reason, Scope: rr.Scope, AfterData: rr.AfterData}, true
		}
	}
	return Match{}, false
}

func (rr *ReasonRule) conditionsHold(r Reply) bool {
	if len(rr.Status) > 0 {
		ok := false
		for _, p := range rr.Status {
			if r.Status != "" && strings.HasPrefix(r.Status, p) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(rr.Codes) > 0 {
		class := r.Code / 100
		if class == 0 && r.Status != "" {
			class = int(r.Status[0] - '0')
		}
		ok := false
		for _, c := range rr.Codes {
			if (c < 10 && c == class) || (c >= 100 && c == r.Code) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(rr.Provider) > 0 {
		ok := false
		for _, p := range rr.Provider {
			if p == r.Provider {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// regexpMatches reports whether any of the rule's regexps matches text.
func (rr *ReasonRule) regexpMatches(text string) bool {
	for i, re := range rr.re {
		if rr.need[i].index(text) >= 0 && re.MatchString(text) {
			return true
		}
	}
	return false
}

// Command returns the SMTP command the first command rule matching
// lowerText (lower-cased by the caller) names, or "".
func (s *Set) Command(lowerText string) string {
	if lowerText == "" {
		return ""
	}
	for i := range s.commands {
		if containsAny(lowerText, s.commands[i].phrases) {
			return s.commands[i].Command
		}
	}
	return ""
}

// Provider names the provider of a recipient domain or of any of the MTA
// host names given, or "" when none is known. The domain is tried first.
func (s *Set) Provider(domain string, hosts ...string) string {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if domain != "" {
		if p, ok := s.domains[domain]; ok {
			return p
		}
		for _, p := range s.providers {
			for _, d := range p.Domains {
				if strings.HasPrefix(d, "*.") && hasDomainSuffix(domain, d[2:]) {
					return p.Name
				}
			}
		}
	}
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), "."))
		if h == "" {
			continue
		}
		for _, p := range s.providers {
			for _, suffix := range p.Hosts {
				if hasDomainSuffix(h, suffix) {
					return p.Name
				}
			}
		}
	}
	return ""
}

// hasDomainSuffix reports whether host is suffix or a subdomain of it.
func hasDomainSuffix(host, suffix string) bool {
	if !strings.HasSuffix(host, suffix) {
		return false
	}
	return len(host) == len(suffix) || host[len(host)-len(suffix)-1] == '.'
}

// Formats returns the number of formats, for reports.
func (s *Set) Formats() int { return len(s.formats) }

// DetectFormat returns the first format whose match conditions hold for a
// message with header h and lower-cased text lowerText, or nil.
func (s *Set) DetectFormat(h Header, lowerText string) *Format {
	from := LowerASCII(h.Get("From"))
	subject := LowerASCII(h.Get("Subject"))
	for i := range s.formats {
		f := &s.formats[i]
		for _, c := range f.Match {
			if c.holds(h, from, subject, lowerText) {
				return f
			}
		}
	}
	return nil
}

// IsAutoreply reports whether a message with header h and lower-cased text
// lowerText is an auto-reply.
func (s *Set) IsAutoreply(h Header, lowerText string) bool {
	return !anyHolds(s.daemon, h, lowerText) && anyHolds(s.autoreply, h, lowerText)
}

// IsDelayed reports whether a non-DSN bounce is a delay warning.
func (s *Set) IsDelayed(h Header, lowerText string) bool {
	return anyHolds(s.delayed, h, lowerText)
}

// anyHolds reports whether any of conds holds for a message.
func anyHolds(conds []Cond, h Header, lowerText string) bool {
	if len(conds) == 0 {
		return false
	}
	from := LowerASCII(h.Get("From"))
	subject := LowerASCII(h.Get("Subject"))
	for i := range conds {
		if conds[i].holds(h, from, subject, lowerText) {
			return true
		}
	}
	return false
}

func (c *Cond) holds(h Header, from, subject, lowerText string) bool {
	if len(c.from) > 0 && !containsAny(from, c.from) {
		return false
	}
	if len(c.subject) > 0 && !containsAny(subject, c.subject) {
		return false
	}
	if c.Header != "" {
		v := h.Get(c.Header)
		if v == "" {
			return false
		}
		if len(c.value) > 0 && !containsAny(LowerASCII(v), c.value) {
			return false
		}
	}
	if len(c.body) > 0 && !containsAny(lowerText, c.body) {
		return false
	}
	return true
}

// Found is one recipient read out of a bounce's text.
type Found struct {
	Recipient  string // as written, without angle brackets
	Diagnostic string // reply lines joined by single spaces
}

// Limits of Extract, so a hostile text cannot make it work without end.
const (
	maxFound          = 200  // recipients per message
	maxDiagnosticLen  = 2048 // bytes of reply text per recipient
	maxDiagnosticRows = 24   // lines of reply text per recipient
)

// looseAddress and lineAddress are the recipient patterns of a format that
// gives none. Before any recipient was found, a line naming an address
// anywhere ("Unable to deliver message to: <a@b>") starts one; while a
// recipient's reply is being read, only a line that begins with an address
// does, so an address further into a reply line (a URL's query, "after
// MAIL FROM:<...>") stays reply text.
var looseAddress = regexp.MustCompile(`<?(?P<rcpt>[^\s<>@"():;,\[\]=]+@[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2,})>?`)

var lineAddress = regexp.MustCompile(`^[\s"'(]*<?(?P<rcpt>[^\s<>@"():;,\[\]]+@[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2,})>?(?:[\s:,;.>)]|$)`)

// Extract reads the recipients and their replies out of text (as decoded,
// not lower-cased) following f's description. lowerText is LowerASCII(text).
func (f *Format) Extract(text, lowerText string) []Found {
	block, lowerBlock := f.errorBlock(text, lowerText)
	if block == "" {
		return nil
	}
	patterns := f.recipient
	loose, anchored := []*regexp.Regexp{looseAddress}, []*regexp.Regexp{lineAddress}
	var out []Found
	var cur *Found
	rows := 0
	flush := func() {
		if cur == nil {
			return
		}
		cur.Diagnostic = strings.TrimSpace(cur.Diagnostic)
		// A recipient named again further down ("Unable to deliver message
		// to <a@b>" after its transcript) is the same recipient.
		for i := range out {
			if strings.EqualFold(out[i].Recipient, cur.Recipient) {
				if cur.Diagnostic != "" && len(out[i].Diagnostic) < maxDiagnosticLen {
					out[i].Diagnostic = clipDiagnostic(strings.TrimSpace(out[i].Diagnostic + " " + cur.Diagnostic))
				}
				cur = nil
				return
			}
		}
		out = append(out, *cur)
		cur = nil
	}
	lines := strings.Split(block, "\n")
	offset := 0
	for _, line := range lines {
		lowerLine := lowerBlock[offset : offset+len(line)]
		offset += len(line) + 1
		trimmed := strings.TrimSpace(line)
		pats := patterns
		if len(pats) == 0 {
			pats = loose
			if cur != nil {
				pats = anchored
			}
		}
		if rcpt, diag, ok := matchRecipient(pats, line, lowerLine); ok {
			if cur != nil && strings.EqualFold(rcpt, cur.Recipient) {
				cur.add(trimmed, &rows)
				continue
			}
			if len(out) >= maxFound {
				break
			}
			flush()
			cur = &Found{Recipient: rcpt}
			rows = 0
			if diag != "" {
				cur.add(diag, &rows)
			}
			continue
		}
		if cur == nil {
			continue
		}
		if trimmed == "" {
			if cur.Diagnostic != "" && !f.Multiline {
				flush()
			}
			continue
		}
		cur.add(trimmed, &rows)
	}
	flush()
	if len(f.diagnostic) > 0 {
		for i := range out {
			if out[i].Diagnostic != "" {
				continue
			}
			for _, re := range f.diagnostic {
				if m := re.FindStringSubmatch(block); m != nil {
					// The format's own pattern may match any length of
					// text: bounded like the lines read above (a fuzzed
					// "notes" format gave 2,715 bytes).
					out[i].Diagnostic = clipDiagnostic(collapseSpace(m[re.SubexpIndex("diag")]))
					break
				}
			}
		}
	}
	return out
}

func (fd *Found) add(s string, rows *int) {
	if *rows >= maxDiagnosticRows || len(fd.Diagnostic) >= maxDiagnosticLen {
		return
	}
	*rows++
	sep := ""
	if fd.Diagnostic != "" {
		sep = " "
	}
	fd.Diagnostic = clipDiagnostic(fd.Diagnostic + sep + collapseSpace(s))
}

// clipDiagnostic cuts s to at most maxDiagnosticLen bytes, at the start
// of a UTF-8 sequence so no character is cut in two.
func clipDiagnostic(s string) string {
	if len(s) <= maxDiagnosticLen {
		return s
	}
	end := maxDiagnosticLen
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end]
}

func matchRecipient(patterns []*regexp.Regexp, line, lowerLine string) (rcpt, diag string, ok bool) {
	if !strings.Contains(line, "@") {
		return "", "", false
	}
	for _, re := range patterns {
		// One run of re gives the groups and the match's place, which
		// isContact, restOfLine and angleAddr read.
		m := re.FindStringSubmatchIndex(line)
		if m == nil {
			continue
		}
		loc := m[:2]
		rcpt = strings.Trim(group(line, m, re.SubexpIndex("rcpt")), "<>\"' ")
		if !strings.Contains(rcpt, "@") {
			continue
		}
		if (re == looseAddress || re == lineAddress) && isContact(lowerLine, loc) {
			continue
		}
		if i := re.SubexpIndex("diag"); i >= 0 {
			diag = strings.TrimSpace(group(line, m, i))
		} else if re == looseAddress || re == lineAddress {
			// "a@example.com: 421 4.7.0 ... deferred" (OpenSMTPD,
			// many others): the reply follows the address on its line.
			diag = restOfLine(line, loc)
			rcpt = angleAddr(line, loc, rcpt)
		}
		return rcpt, diag, true
	}
	return "", "", false
}

// group returns the text of group i of a match m of s, as the i-th string
// of FindStringSubmatch: "" when the group took no part.
func group(s string, m []int, i int) string {
	if m[2*i] < 0 {
		return ""
	}
	return s[m[2*i]:m[2*i+1]]
}

// isContact reports whether the address on line, matched at loc, is
// offered as a contact ("For further assistance, please contact
// <support@example.net>") or named as the sender, not as a recipient.
func isContact(lowerLine string, loc []int) bool {
	before := lowerLine[:loc[0]]
	// An envelope or header sender ("MAIL FROM:<...>", "From: ...") is
	// not a recipient either.
	for _, p := range []string{"contact", "send mail to", "write to", "questions to", "reply to", "from:"} {
		if strings.Contains(before, p) {
			return true
		}
	}
	return false
}

// angleAddr returns the angle-bracketed address that directly follows an
// address-looking display name matched at loc ("a@example.com
// <b@example.net>": RFC 5322 section 3.4, the address is the one in
// brackets), else rcpt.
func angleAddr(line string, loc []int, rcpt string) string {
	if strings.HasSuffix(line[loc[0]:loc[1]], ">") {
		return rcpt
	}
	rest := strings.TrimLeft(line[loc[1]:], " \t")
	if !strings.HasPrefix(rest, "<") {
		return rcpt
	}
	end := strings.IndexByte(rest, '>')
	if end < 0 {
		return rcpt
	}
	if a := rest[1:end]; strings.Contains(a, "@") && !strings.ContainsAny(a, " \t<") {
		return a
	}
	return rcpt
}

// restOfLine returns what follows the address matched at loc in line,
// when it reads as a reply: more than punctuation, and not another
// address.
func restOfLine(line string, loc []int) string {
	rest := strings.TrimSpace(strings.TrimLeft(line[loc[1]:], ":;,.>)] \t"))
	if len(rest) < 3 || strings.Contains(rest, "@") && len(strings.Fields(rest)) < 3 {
		return ""
	}
	if strings.TrimSpace(strings.Trim(line[:loc[0]], "<(\"' \t")) != "" {
		// "550 5.1.1 <a@example.com>... User unknown": the address
		// sits inside its reply.
		return strings.TrimSpace(line)
	}
	return rest
}

// Block returns the error block of text: the part between the format's
// Start and End phrases, where its recipients and replies are.
func (f *Format) Block(text, lowerText string) string {
	b, _ := f.errorBlock(text, lowerText)
	return b
}

// errorBlock cuts text to the part between the format's Start and End
// phrases.
func (f *Format) errorBlock(text, lowerText string) (string, string) {
	start := 0
	if len(f.start) > 0 {
		start = -1
		for _, p := range f.start {
			if i := p.index(lowerText); i >= 0 && (start < 0 || i < start) {
				start = i
			}
		}
		if start < 0 {
			return "", ""
		}
		// Begin at the line after the one holding the start phrase, so the
		// phrase's own line (often "... to the following addresses:") is
		// not read as a recipient.
		if nl := strings.IndexByte(lowerText[start:], '\n'); nl >= 0 {
			start += nl + 1
		} else {
			start = len(lowerText)
		}
	}
	end := len(lowerText)
	for _, p := range f.end {
		if i := p.index(lowerText[start:]); i >= 0 && start+i < end {
			end = start + i
		}
	}
	return text[start:end], lowerText[start:end]
}

// LowerASCII lower-cases the ASCII letters of s and leaves every other byte
// in place, so byte offsets in the result are offsets in s.
func LowerASCII(s string) string {
	i := 0
	for i < len(s) && !('A' <= s[i] && s[i] <= 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	// Lowered through a small buffer into a Builder: one allocation of
	// the result, where a []byte made and then converted to a string
	// costs a zeroed buffer and a copy of it (the classifier lowers every
	// message's text).
	var sb strings.Builder
	sb.Grow(len(s))
	sb.WriteString(s[:i])
	var buf [512]byte
	for i < len(s) {
		n := copy(buf[:], s[i:])
		k := 0
		for ; k+8 <= n; k += 8 {
			w := binary.LittleEndian.Uint64(buf[k:])
			binary.LittleEndian.PutUint64(buf[k:], lowerWord(w))
		}
		for ; k < n; k++ {
			if c := buf[k]; 'A' <= c && c <= 'Z' {
				buf[k] = c + 'a' - 'A'
			}
		}
		sb.Write(buf[:n])
		i += n
	}
	return sb.String()
}

// lowerWord lower-cases the ASCII letters among the 8 bytes of w at once:
// a byte's high bit, after adding to its low 7 bits, says whether they
// reach 'A', or pass 'Z' (no sum carries into the next byte); a byte
// between the two, its own high bit clear, gets 0x20 added.
func lowerWord(w uint64) uint64 {
	const (
		low7  = 0x7f7f7f7f7f7f7f7f
		high  = 0x8080808080808080
		fromA = 0x3f3f3f3f3f3f3f3f // 0x80 - 'A'
		pastZ = 0x2525252525252525 // 0x80 - ('Z' + 1)
	)
	h := w & low7
	upper := (h + fromA) &^ (h + pastZ) &^ w & high
	return w | upper>>2
}

// collapseSpace returns the fields of s (strings.Fields) joined by single
// spaces.
func collapseSpace(s string) string {
	// An ASCII line, the usual reply, is collapsed in one pass and not
	// copied at all when already collapsed; strings.Fields would make a
	// slice of its fields and Join a new string each time.
	collapsed := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			// Fields splits on Unicode's spaces (U+0085, U+00A0, ...)
			// too.
			return strings.Join(strings.Fields(s), " ")
		}
		if isASCIISpace(c) && (c != ' ' || i == 0 || i == len(s)-1 || isASCIISpace(s[i+1])) {
			collapsed = false
		}
	}
	if collapsed {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		for i < len(s) && isASCIISpace(s[i]) {
			i++
		}
		j := i
		for j < len(s) && !isASCIISpace(s[j]) {
			j++
		}
		if j > i {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(s[i:j])
		}
		i = j
	}
	return b.String()
}

// isASCIISpace reports whether c is one of the ASCII bytes strings.Fields
// splits on.
func isASCIISpace(c byte) bool {
	return c == ' ' || '\t' <= c && c <= '\r'
}
