package dsn

import (
	"strconv"
	"strings"
)

// This file extracts the returned original message (RFC 3462 section 2,
// RFC 6522 section 3) from its header fields, and finds the header block that
// non-DSN bounces paste into their text.

// setOriginal sets Message.Original from the header of the returned message,
// unless an original was already found.
func (p *parser) setOriginal(h []Field) {
	if p.m.Original != nil || len(h) == 0 {
		return
	}
	n := len(h)
	if n > p.maxOrigHeaders {
		n = p.maxOrigHeaders
		p.anomaly("returned original has more than " + strconv.Itoa(n) + " header fields; the rest dropped")
	}
	// A copy: h may be a part's header that the walk still reads.
	o := &Original{Headers: p.decodeFields(append([]Field(nil), h[:n]...))}
	for i, f := range h {
		v := f.Value
		if i < n {
			v = o.Headers[i].Value
		} else if dv, ok := decodeHeaderValue(v); ok {
			v = dv
		}
		switch {
		case equalFold(f.Name, "Message-Id"):
			setOnce(&o.MessageID, messageID(v))
		case equalFold(f.Name, "From"):
			setOnce(&o.From, v)
		case equalFold(f.Name, "To"):
			setOnce(&o.To, v)
		case equalFold(f.Name, "Subject"):
			setOnce(&o.Subject, v)
		case equalFold(f.Name, "Date"):
			setOnce(&o.Date, v)
		case equalFold(f.Name, "Return-Path"):
			setOnce(&o.ReturnPath, bareAddress(v))
		case equalFold(f.Name, "X-Envelope-Id"), equalFold(f.Name, "Envelope-Id"):
			setOnce(&o.EnvelopeID, trimWS(v))
		}
	}
	p.m.Original = o
}

func setOnce(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

// messageID returns the msg-id of a Message-ID value without its angle
// brackets, RFC 5322 section 3.6.4.
func messageID(v string) string {
	v = trimWS(v)
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return trimWS(v[i+1 : i+j])
		}
		return trimWS(v[i+1:])
	}
	if i := strings.IndexAny(v, " \t"); i >= 0 {
		v = v[:i]
	}
	return v
}

// maxInlineLines bounds the lines read on each side of the Message-ID line
// of an inline header block.
const maxInlineLines = 100

// inlineHeaders finds the header block of a returned original pasted into a
// bounce's text ("--- Below this line is a copy of the message."): the
// block around the first line "Message-ID: <...>". Lines may be indented
// or quoted with ">", as long as the whole block is. It returns nil when
// there is none.
func inlineHeaders(text string) []Field {
	pos := -1
	var indent string
	// Prefer the header block after a pasted "Content-Type: message/rfc822"
	// (a bounce pasted into a bounce), else the first one.
	from := indexFieldLine(text, "content-type: message/rfc822", "content-type: text/rfc822-headers")
	if from < 0 {
		from = 0
	}
	for off := from; off < len(text); {
		i := indexFold(text[off:], "message-id:")
		if i < 0 {
			return nil
		}
		at := off + i
		off = at + 1
		// Only white space and ">" may precede it on its line; scanning
		// back over just those keeps this linear.
		ls := at
		for ls > 0 && (isWSP(text[ls-1]) || text[ls-1] == '>') {
			ls--
		}
		if ls > 0 && text[ls-1] != '\n' {
			continue // "Message-ID:" inside a line of prose
		}
		prefix := text[ls:at]
		line, _ := nextLine(text, at)
		if messageID(line[len("message-id:"):]) == "" {
			continue
		}
		pos, indent = ls, prefix
		break
	}
	if pos < 0 {
		return nil
	}
	// Back to the start of the block.
	start := pos
	for n := 0; n < maxInlineLines && start > 0; n++ {
		ps := strings.LastIndexByte(text[:start-1], '\n') + 1
		if !blockLine(text[ps:start-1], indent) {
			break
		}
		start = ps
	}
	// Forward to its end.
	end := pos
	for n := 0; n < 2*maxInlineLines && end < len(text); n++ {
		line, next := nextLine(text, end)
		if n > 0 && !blockLine(line, indent) {
			break
		}
		end = next
	}
	var b strings.Builder
	b.Grow(end - start)
	for off := start; off < end; {
		line, next := nextLine(text, off)
		b.WriteString(line[len(indent):])
		b.WriteByte('\n')
		off = next
	}
	h, _, problems := readHeader(b.String(), MaxHeaderBytes)
	if problems&hdrNoHeader != 0 {
		return nil
	}
	return h
}

// blockLine reports whether line belongs to an inline header block whose
// lines start with indent: a field or a continuation line.
func blockLine(line, indent string) bool {
	if !strings.HasPrefix(line, indent) {
		return false
	}
	line = line[len(indent):]
	if line == "" || isBlankLine(line) {
		return false
	}
	if isWSP(line[0]) {
		return true
	}
	_, _, ok := fieldLine(line)
	return ok
}

// detach copies every string of m, so that m no longer shares memory with
// the (large) input it was parsed from.
func detach(m *Message) {
	c := strings.Clone
	fields := func(fs []Field) {
		for i := range fs {
			fs[i].Name, fs[i].Value = c(fs[i].Name), c(fs[i].Value)
		}
	}
	fields(m.Header)
	for i := range m.Reports {
		r := &m.Reports[i]
		r.OriginalEnvelopeID, r.ReportingMTA, r.DSNGateway = c(r.OriginalEnvelopeID), c(r.ReportingMTA), c(r.DSNGateway)
		r.ReceivedFromMTA, r.ArrivalDate = c(r.ReceivedFromMTA), c(r.ArrivalDate)
		fields(r.Extra)
		for j := range r.Recipients {
			rc := &r.Recipients[j]
			rc.OriginalRecipient, rc.FinalRecipient, rc.FinalRecipientType = c(rc.OriginalRecipient), c(rc.FinalRecipient), c(rc.FinalRecipientType)
			rc.OriginalRecipientType, rc.RawStatus, rc.RemoteMTA = c(rc.OriginalRecipientType), c(rc.RawStatus), c(rc.RemoteMTA)
			rc.DiagnosticType, rc.DiagnosticCode, rc.LastAttemptDate = c(rc.DiagnosticType), c(rc.DiagnosticCode), c(rc.LastAttemptDate)
			rc.FinalLogID, rc.WillRetryUntil = c(rc.FinalLogID), c(rc.WillRetryUntil)
			rc.Action = Action(c(string(rc.Action)))
			fields(rc.Extra)
		}
	}
	if f := m.Feedback; f != nil {
		f.FeedbackType, f.UserAgent, f.Version, f.OriginalMailFrom = c(f.FeedbackType), c(f.UserAgent), c(f.Version), c(f.OriginalMailFrom)
		f.ArrivalDate, f.SourceIP, f.ReportedDomain, f.ReportingMTA = c(f.ArrivalDate), c(f.SourceIP), c(f.ReportedDomain), c(f.ReportingMTA)
		for i := range f.OriginalRcptTo {
			f.OriginalRcptTo[i] = c(f.OriginalRcptTo[i])
		}
		fields(f.Extra)
	}
	if o := m.Original; o != nil {
		o.MessageID, o.From, o.To, o.Subject = c(o.MessageID), c(o.From), c(o.To), c(o.Subject)
		o.Date, o.ReturnPath, o.EnvelopeID = c(o.Date), c(o.ReturnPath), c(o.EnvelopeID)
		fields(o.Headers)
	}
	// Text and Anomalies are built, not sliced from the input.
}
