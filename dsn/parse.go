package dsn

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Parse reads one message from r, at most MaxSize+1 bytes, and parses it
// like ParseBytes.
func Parse(r io.Reader) (*Message, error) {
	max := MaxSize
	if l, ok := r.(interface{ Len() int }); ok && int64(l.Len()) > max {
		return nil, fmt.Errorf("dsn: reading message: more than %d bytes: %w", max, ErrTooLarge)
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("dsn: reading message: %w", err)
	}
	if n > max {
		return nil, fmt.Errorf("dsn: reading message: more than %d bytes: %w", max, ErrTooLarge)
	}
	return parse(normalizeEOL(buf.Bytes()))
}

// ParseBytes parses a message: its header, every delivery-status (RFC 3464,
// RFC 6533) and feedback (RFC 5965) part at any depth, its human-readable
// text and the returned original. Line endings may be LF, CRLF or CR.
//
// It returns an error only when there is no message at all (ErrEmpty,
// ErrNoHeader, ErrTooLarge); every other problem is recorded in
// Message.Anomalies and what could be read is returned. b is not retained.
func ParseBytes(b []byte) (*Message, error) {
	if int64(len(b)) > MaxSize {
		return nil, fmt.Errorf("dsn: more than %d bytes: %w", MaxSize, ErrTooLarge)
	}
	return parse(normalizeEOL(b))
}

// normalizeEOL returns b as a string with "\n" line endings. CRLF becomes
// LF; lone CRs become LF too when the first line ends with a lone CR (a
// CR-only file), otherwise they are kept.
func normalizeEOL(b []byte) string {
	cr := bytes.IndexByte(b, '\r')
	if cr < 0 {
		return string(b)
	}
	lf := bytes.IndexByte(b[:cr], '\n')
	crOnly := lf < 0 && (cr+1 == len(b) || b[cr+1] != '\n')
	var sb strings.Builder
	sb.Grow(len(b))
	for {
		sb.Write(b[:cr])
		if cr+1 < len(b) && b[cr+1] == '\n' {
			sb.WriteByte('\n')
			b = b[cr+2:]
		} else {
			if crOnly {
				sb.WriteByte('\n')
			} else {
				sb.WriteByte('\r')
			}
			b = b[cr+1:]
		}
		if cr = bytes.IndexByte(b, '\r'); cr < 0 {
			sb.Write(b)
			return sb.String()
		}
	}
}

// detachSize is the input size above which the result is copied out of the
// input, so that a large message is not kept alive by a few short strings.
const detachSize = 64 << 10

// parser holds the state of one Parse call.
type parser struct {
	m *Message

	maxDepth, maxParts, maxText, maxHeader, maxOrigHeaders, maxAnomalies, maxRecipients int

	parts, recipients  int
	depthHit, partsHit bool
	recipientsHit      bool
	reportTypeSet      bool
	feedbackSeen       bool
	text               []byte
	textFull           bool
	droppedAnomalies   int
}

func parse(s string) (*Message, error) {
	if isBlankLine(strings.TrimLeft(s, " \t\r\n")) {
		return nil, fmt.Errorf("dsn: %w", ErrEmpty)
	}
	p := &parser{
		m:              &Message{},
		maxDepth:       MaxDepth,
		maxParts:       MaxParts,
		maxText:        MaxText,
		maxHeader:      MaxHeaderBytes,
		maxOrigHeaders: MaxOriginalHeaders,
		maxAnomalies:   MaxAnomalies,
		maxRecipients:  MaxRecipients,
	}
	in := s
	// An mbox "From " postmark line, RFC 4155.
	if strings.HasPrefix(s, "From ") {
		_, next := nextLine(s, 0)
		s = s[next:]
	}
	if t := skipBlankLines(s); len(t) != len(s) {
		p.anomaly("blank lines before the header")
		s = t
	}
	h, body, problems := readHeader(s, p.maxHeader)
	if problems&hdrNoHeader != 0 {
		line, _ := nextLine(s, 0)
		return nil, fmt.Errorf("dsn: %w: first line %s", ErrNoHeader, short(line))
	}
	p.headerProblems("message header", problems)
	p.entity(h, body, walkCtx{top: true})
	// After the walk, which needs the raw values (a Content-Type parameter
	// may look like an encoded word).
	p.m.Header = p.decodeFields(h)
	p.finish()
	if len(in) > detachSize {
		detach(p.m)
	}
	return p.m, nil
}

// walkCtx describes where an entity sits in the MIME tree.
type walkCtx struct {
	depth  int
	top    bool // the message itself, or a forwarded report treated as one
	noText bool // an alternative to a text/plain part: its text is not used
}

// anomaly records a problem, at most maxAnomalies of them.
func (p *parser) anomaly(msg string) {
	if len(p.m.Anomalies) < p.maxAnomalies {
		for _, a := range p.m.Anomalies {
			if a == msg {
				return
			}
		}
		p.m.Anomalies = append(p.m.Anomalies, msg)
		return
	}
	p.droppedAnomalies++
}

func (p *parser) headerProblems(where string, problems int) {
	if problems&hdrTooBig != 0 {
		p.anomaly(where + " longer than " + strconv.Itoa(p.maxHeader) + " bytes; rest dropped")
	}
	if problems&hdrStrayLine != 0 {
		p.anomaly(where + ": lines that are no fields skipped")
	}
	if problems&hdrNoBlank != 0 {
		p.anomaly(where + " not ended by a blank line")
	}
}

// decodeFields decodes the RFC 2047 encoded words of h's values in place;
// an undecodable value is kept raw with an anomaly. h must not be used for
// its raw values afterwards.
func (p *parser) decodeFields(h []Field) []Field {
	for i := range h {
		v, ok := decodeHeaderValue(h[i].Value)
		if !ok {
			p.anomaly("header " + short(h[i].Name) + ": undecodable encoded word; kept raw")
		}
		h[i].Value = v
	}
	return h
}

// takePart counts an entity against MaxParts.
func (p *parser) takePart() bool {
	if p.parts >= p.maxParts {
		if !p.partsHit {
			p.partsHit = true
			p.anomaly("more than " + strconv.Itoa(p.maxParts) + " MIME parts; the rest not read")
		}
		return false
	}
	p.parts++
	return true
}

// takeRecipient counts a recipient against MaxRecipients.
func (p *parser) takeRecipient() bool {
	if p.recipients >= p.maxRecipients {
		if !p.recipientsHit {
			p.recipientsHit = true
			p.anomaly("more than " + strconv.Itoa(p.maxRecipients) + " recipients; the rest dropped")
		}
		return false
	}
	p.recipients++
	return true
}

// deeper reports whether an entity at depth d may be read.
func (p *parser) deeper(d int) bool {
	if d > p.maxDepth {
		if !p.depthHit {
			p.depthHit = true
			p.anomaly("MIME nesting deeper than " + strconv.Itoa(p.maxDepth) + "; not read")
		}
		return false
	}
	return true
}

// entity handles one MIME entity, RFC 2045: h is its header, body its
// undecoded body.
func (p *parser) entity(h []Field, body string, c walkCtx) {
	ct := parseContentType(getField(h, "Content-Type"))
	switch t := ct.typ; {
	case strings.HasPrefix(t, "multipart/"):
		p.multipart(h, ct, body, c)
	case t == "message/rfc822" || t == "message/global":
		p.embedded(h, body, c)
	case t == "message/partial":
		// The first fragment of a returned original, RFC 2046 section 5.2.2.
		if ih, _, problems := readHeader(skipBlankLines(body), p.maxHeader); problems&hdrNoHeader == 0 {
			p.setOriginal(ih)
		}
	case (t == "" || t == "text/plain") && !c.top && isMessageHeader(h):
		// A message put into a multipart without its own part header.
		p.anomaly("message header fields in a part header; read as an embedded message")
		if isReport(h, body) {
			p.entity(h, body, walkCtx{depth: c.depth, top: true, noText: c.noText})
			return
		}
		p.setOriginal(h)
	case t == "message/delivery-status" || t == "message/global-delivery-status":
		p.deliveryStatus(h, ct, body, t == "message/global-delivery-status", "")
	case t == "message/feedback-report":
		p.feedback(h, ct, body, "")
	case t == "text/rfc822-headers" || t == "message/rfc822-headers" || t == "text/rfc822-header" || t == "message/global-headers":
		p.headersOnly(h, ct, body)
	case t == "text/html":
		if c.noText {
			return
		}
		text := p.decodeText(h, ct, body, t)
		p.addText(stripHTML(text))
	case t == "" || strings.HasPrefix(t, "text/") || strings.HasSuffix(t, "/plain") || c.top:
		text := p.decodeText(h, ct, body, t)
		if p.sniff(h, text, t) {
			return
		}
		if !c.noText {
			p.addText(text)
		}
	case t == "application/octet-stream" || strings.Contains(t, "delivery-status") ||
		strings.Contains(t, "feedback-report") ||
		strings.HasPrefix(t, "message/") && t != "message/disposition-notification" && t != "message/partial" && t != "message/external-body":
		// Some MTAs label delivery-status fields oddly.
		dec, _ := decodeTransfer(contentTransferEncoding(h), body)
		p.sniff(h, dec, t)
	}
}

// sniff parses text as a delivery-status or feedback report when it clearly
// is one despite its content type, and reports whether it did.
func (p *parser) sniff(h []Field, text, typ string) bool {
	if typ == "" {
		typ = "untyped"
	}
	switch {
	case looksLikeDeliveryStatus(text):
		p.anomaly("delivery-status fields in a " + typ + " part")
		p.deliveryStatus(nil, mediaType{}, text, false, typ)
		return true
	case looksLikeFeedback(text) && hasFieldLine(text, "user-agent:"):
		p.anomaly("feedback-report fields in a " + typ + " part")
		p.feedback(nil, mediaType{}, text, typ)
		return true
	}
	return false
}

// decodeText decodes a text body: transfer encoding, then charset.
func (p *parser) decodeText(h []Field, ct mediaType, body, typ string) string {
	text, problem := decodeTransfer(contentTransferEncoding(h), body)
	if problem != "" {
		p.anomaly(partName(typ) + ": " + problem)
	}
	if cs := normCharset(ct.param("charset")); cs != "us-ascii" && cs != "utf-8" {
		limit := 4*len(text) + 64
		if limit > 4*p.maxText {
			limit = 4 * p.maxText
		}
		var problem string
		text, problem = convertCharset(cs, text, limit)
		if problem != "" {
			p.anomaly(partName(typ) + ": " + problem)
		}
	}
	return cleanText(text)
}

func partName(typ string) string {
	if typ == "" {
		return "untyped part"
	}
	return typ + " part"
}

// addText appends a decoded text part to Message.Text, bounded by MaxText.
func (p *parser) addText(s string) {
	if p.textFull {
		return
	}
	s = skipBlankLines(strings.TrimRight(s, " \t\n"))
	if s == "" {
		return
	}
	if room := p.maxText - len(p.text); len(s)+1 > room {
		if room > 0 {
			p.text = append(p.text, cutRunes(s, room)...)
		}
		p.textFull = true
		p.anomaly("text longer than " + strconv.Itoa(p.maxText) + " bytes; cut")
		return
	}
	p.text = append(p.text, s...)
	p.text = append(p.text, '\n')
}

// multipart walks the parts of a multipart entity, RFC 2046 section 5.1.
func (p *parser) multipart(h []Field, ct mediaType, body string, c walkCtx) {
	if !p.deeper(c.depth + 1) {
		return
	}
	if ct.typ == "multipart/report" && !p.reportTypeSet {
		p.reportTypeSet = true
		p.m.ReportType = strings.ToLower(ct.param("report-type"))
	}
	boundary := ct.param("boundary")
	if boundary == "" {
		boundary = guessBoundary(body)
		if boundary == "" {
			p.anomaly(ct.typ + " without boundary; body read as text")
			if !c.noText {
				p.addText(cleanText(body))
			}
			return
		}
		p.anomaly(ct.typ + " without boundary parameter; guessed " + short(boundary))
	}
	type part struct {
		h    []Field
		body string
		typ  string
	}
	var parts []part
	hasPlain := false
	mp := newMultipart(body, boundary)
	if mp.pos < 0 && !mp.closed {
		// The declared boundary is nowhere in the body; some MTAs declare
		// one and use another.
		if g := guessBoundary(body); g != "" && g != boundary {
			p.anomaly(ct.typ + ": boundary " + short(boundary) + " not found; used " + short(g) + " found in the body")
			boundary = g
			mp = newMultipart(body, boundary)
		}
	}
	for {
		s, ok := mp.next()
		if !ok || !p.takePart() {
			break
		}
		ph, pbody, problems := readHeader(s, p.maxHeader)
		p.headerProblems("part header", problems&^(hdrNoHeader|hdrNoBlank))
		typ := parseContentType(getField(ph, "Content-Type")).typ
		if typ == "" || typ == "text/plain" {
			hasPlain = true
		}
		parts = append(parts, part{ph, pbody, typ})
	}
	if mp.truncated {
		if len(parts) == 0 {
			p.anomaly(ct.typ + ": boundary " + short(boundary) + " not found; body read as text")
			if !c.noText {
				p.addText(cleanText(body))
			}
			return
		}
		p.anomaly(ct.typ + ": closing boundary missing (truncated message?)")
	}
	alternative := ct.typ == "multipart/alternative"
	for _, pt := range parts {
		cc := walkCtx{depth: c.depth + 1, noText: c.noText}
		if alternative && hasPlain && pt.typ != "" && pt.typ != "text/plain" {
			cc.noText = true
		}
		p.entity(pt.h, pt.body, cc)
	}
}

// embedded handles a message/rfc822 or message/global part: the returned
// original, or a forwarded report that is walked as if it were the message.
func (p *parser) embedded(h []Field, body string, c walkCtx) {
	if !p.deeper(c.depth + 1) {
		return
	}
	// message/* must not be encoded (RFC 2046 section 5.2.1), but some are.
	if dec, problem := decodeTransfer(contentTransferEncoding(h), body); problem == "" {
		body = dec
	} else {
		p.anomaly("message/rfc822 part: " + problem)
	}
	body = skipBlankLines(body)
	ih, ibody, problems := readHeader(body, p.maxHeader)
	if problems&hdrNoHeader != 0 {
		p.anomaly("message/rfc822 part without header")
		return
	}
	p.headerProblems("embedded message header", problems)
	if isReport(ih, ibody) {
		p.entity(ih, ibody, walkCtx{depth: c.depth + 1, top: true, noText: c.noText})
		return
	}
	p.setOriginal(ih)
}

// isReport reports whether an embedded message is itself a bounce or a
// feedback report (a forwarded report), not a returned original.
func isReport(h []Field, body string) bool {
	ct := parseContentType(getField(h, "Content-Type"))
	if ct.typ == "multipart/report" {
		return true
	}
	if strings.HasPrefix(ct.typ, "multipart/") &&
		(indexFold(body, "message/delivery-status") >= 0 ||
			indexFold(body, "message/global-delivery-status") >= 0 ||
			indexFold(body, "message/feedback-report") >= 0) {
		return true
	}
	from := getField(h, "From")
	if indexFold(from, "mailer-daemon") >= 0 {
		return true
	}
	subject := getField(h, "Subject")
	bounceSubject := false
	for _, w := range bounceSubjects {
		if indexFold(subject, w) >= 0 {
			bounceSubject = true
			break
		}
	}
	return bounceSubject && (indexFold(from, "postmaster") >= 0 ||
		getField(h, "X-Failed-Recipients") != "" || getField(h, "Auto-Submitted") != "")
}

// isMessageHeader reports whether a part header is really the header of a
// message: it has a Message-ID, or a From and a Received or Date field.
func isMessageHeader(h []Field) bool {
	var msgID, from, other bool
	for _, f := range h {
		switch {
		case equalFold(f.Name, "Message-Id"):
			msgID = true
		case equalFold(f.Name, "From"):
			from = true
		case equalFold(f.Name, "Received"), equalFold(f.Name, "Date"):
			other = true
		}
	}
	return msgID || from && other
}

// bounceSubjects are lower-case phrases of non-delivery report subjects.
var bounceSubjects = []string{
	"undeliver", "delivery status notification", "returned mail", "failure notice",
	"mail delivery failed", "delivery failure", "non-delivery", "nondeliverable",
	"could not be delivered", "mail system error", "delivery has failed",
}

// deliveryStatus reads a delivery-status part into a Report.
func (p *parser) deliveryStatus(h []Field, ct mediaType, body string, global bool, sniffed string) {
	if sniffed == "" {
		dec, problem := decodeTransfer(contentTransferEncoding(h), body)
		if problem != "" {
			p.anomaly("delivery-status part: " + problem)
		}
		body = dec
		if cs := normCharset(ct.param("charset")); cs != "us-ascii" && cs != "utf-8" {
			var problem string
			body, problem = convertCharset(cs, body, 4*len(body)+64)
			if problem != "" {
				p.anomaly("delivery-status part: " + problem)
			}
		}
		body = cleanText(body)
		// Fields right below Content-Type, without the blank line, were
		// read as the part's header.
		var extra []string
		for _, f := range h {
			if lookupDSNField(f.Name) != fUnknown {
				extra = append(extra, f.Name+": "+f.Value)
			}
		}
		if extra != nil {
			p.anomaly("delivery-status fields in the part header (blank line missing)")
			body = strings.Join(extra, "\n") + "\n" + body
		}
	}
	r := p.parseDeliveryStatus(body, global)
	if len(r.Recipients) == 0 {
		p.anomaly("delivery-status part without recipients")
	}
	p.m.Reports = append(p.m.Reports, r)
}

// feedback reads a message/feedback-report part, RFC 5965.
func (p *parser) feedback(h []Field, ct mediaType, body string, sniffed string) {
	if sniffed == "" {
		dec, problem := decodeTransfer(contentTransferEncoding(h), body)
		if problem != "" {
			p.anomaly("feedback-report part: " + problem)
		}
		body = cleanText(dec)
	}
	if p.feedbackSeen {
		p.anomaly("more than one feedback-report part; the first kept")
		return
	}
	p.feedbackSeen = true
	p.m.Feedback = p.parseFeedback(body)
}

// headersOnly reads a text/rfc822-headers part, RFC 6522 section 4.
func (p *parser) headersOnly(h []Field, ct mediaType, body string) {
	if p.m.Original != nil {
		return
	}
	text := p.decodeText(h, ct, body, ct.typ)
	text = skipBlankLines(text)
	ih, _, problems := readHeader(text, p.maxHeader)
	if problems&hdrNoHeader != 0 {
		p.anomaly(ct.typ + " part without header fields")
		return
	}
	p.headerProblems(ct.typ+" part", problems&^hdrNoBlank)
	p.setOriginal(ih)
}

// finish completes the Message after the walk.
func (p *parser) finish() {
	p.m.Text = string(p.text)
	if len(p.m.Reports) == 0 {
		// Delivery-status fields pasted into the text of a bounce that has
		// no (or broken) MIME structure.
		if block := textDeliveryStatus(p.m.Text); block != "" {
			p.anomaly("delivery-status fields found in the text")
			p.m.Reports = append(p.m.Reports, p.parseDeliveryStatus(block, false))
		}
	}
	if p.m.Original == nil {
		if h := inlineHeaders(p.m.Text); h != nil {
			p.setOriginal(h)
		}
	}
	if p.droppedAnomalies > 0 {
		p.m.Anomalies = append(p.m.Anomalies, strconv.Itoa(p.droppedAnomalies)+" more anomalies dropped")
	}
}
