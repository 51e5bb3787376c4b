package dsn

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// This file reads the MIME structure (RFC 2045, RFC 2046) of a message that is
// already in memory with "\n" line endings. Header blocks and multipart bodies
// are sliced out of the input string, never copied; only transfer-encoded or
// charset-converted bodies allocate (see decode.go).

// Problems found while reading a header block.
const (
	hdrNoHeader  = 1 << iota // the block does not start with a field
	hdrStrayLine             // a line that is no field was skipped
	hdrNoBlank               // the header ended without a blank line
	hdrTooBig                // MaxHeaderBytes was reached
)

// isKeyByte reports whether c may appear in a field name, RFC 5322 section 2.2.
func isKeyByte(c byte) bool { return c >= 33 && c <= 126 && c != ':' }

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

// fieldLine splits "Name: value" and returns the offset of the value, or
// ok=false when line is not a header field. White space between the name and
// the colon is tolerated; it is common in the wild.
func fieldLine(line string) (name string, valueOff int, ok bool) {
	i := strings.IndexByte(line, ':')
	if i <= 0 {
		return "", 0, false
	}
	n := i
	for n > 0 && isWSP(line[n-1]) {
		n--
	}
	if n == 0 {
		return "", 0, false
	}
	for j := 0; j < n; j++ {
		if !isKeyByte(line[j]) {
			return "", 0, false
		}
	}
	return line[:n], i + 1, true
}

// isBlankLine reports whether line holds only white space.
func isBlankLine(line string) bool {
	for i := 0; i < len(line); i++ {
		if c := line[i]; c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// nextLine returns the line starting at pos (without its "\n") and the
// offset of the following line.
func nextLine(s string, pos int) (line string, next int) {
	if i := strings.IndexByte(s[pos:], '\n'); i >= 0 {
		return s[pos : pos+i], pos + i + 1
	}
	return s[pos:], len(s)
}

// trimWS trims spaces, tabs and carriage returns.
func trimWS(s string) string {
	i, j := 0, len(s)
	for i < j && (isWSP(s[i]) || s[i] == '\r') {
		i++
	}
	for j > i && (isWSP(s[j-1]) || s[j-1] == '\r') {
		j--
	}
	return s[i:j]
}

// unfold joins the lines of a folded field value with single spaces, RFC 5322
// section 2.2.3, trimming the white space around each line break.
func unfold(raw string) string {
	if strings.IndexByte(raw, '\n') < 0 {
		return trimWS(raw)
	}
	var b strings.Builder
	b.Grow(len(raw))
	for raw != "" {
		var l string
		if i := strings.IndexByte(raw, '\n'); i >= 0 {
			l, raw = raw[:i], raw[i+1:]
		} else {
			l, raw = raw, ""
		}
		if l = trimWS(l); l == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(l)
	}
	return b.String()
}

// readHeader reads the header block at the start of s, RFC 5322 section 2.2,
// and returns its fields (unfolded, not decoded) and the body after it.
//
// It is lenient: a whitespace-only line ends the header; a line that is no
// field is skipped when a field follows it, otherwise the body starts there
// (the blank line was missing). When s does not start with a field, fields
// is empty, body is s and problems has hdrNoHeader.
func readHeader(s string, limit int) (fields []Field, body string, problems int) {
	// The fields are gathered in an array on the stack and copied out
	// once, at their number: a slice grown by append from 8 fields to the
	// 30 to 60 of a bounce's own header took four allocations and three
	// copies (7% of BenchmarkClassify's CPU).
	var stack [64]Field
	acc := stack[:0]
	done := func() []Field {
		if len(acc) == 0 {
			return nil
		}
		return slices.Clone(acc)
	}
	pos := 0
	name := ""
	vStart, vEnd := -1, -1
	flush := func() {
		if vStart >= 0 {
			if vEnd > limit {
				// One field longer than the whole block may be.
				vEnd = max(vStart, limit)
				problems |= hdrTooBig
			}
			acc = append(acc, Field{Name: name, Value: unfold(s[vStart:vEnd])})
			vStart = -1
		}
	}
	for pos < len(s) {
		if pos > limit {
			flush()
			problems |= hdrTooBig
			// Skip the rest of the block.
			if i := strings.Index(s[pos-1:], "\n\n"); i >= 0 {
				return done(), s[pos-1+i+2:], problems
			}
			return done(), "", problems
		}
		line, next := nextLine(s, pos)
		if isBlankLine(line) {
			flush()
			return done(), s[next:], problems
		}
		if isWSP(line[0]) && vStart >= 0 {
			vEnd = pos + len(line) // continuation line
			pos = next
			continue
		}
		if n, off, ok := fieldLine(line); ok {
			flush()
			name, vStart, vEnd = n, pos+off, pos+len(line)
			pos = next
			continue
		}
		if vStart < 0 && len(acc) == 0 {
			return nil, s, hdrNoHeader
		}
		// A stray line: a value folded without indentation when a field
		// follows within a few lines, else the start of the body (the blank
		// line is missing).
		if vStart >= 0 && (strings.IndexByte(line, '=') >= 0 && strings.HasSuffix(trimWS(s[vStart:vEnd]), ";") || fieldAhead(s, next)) {
			problems |= hdrStrayLine
			vEnd = pos + len(line)
			pos = next
			continue
		}
		flush()
		return done(), s[pos:], problems | hdrNoBlank
	}
	flush()
	return done(), "", problems
}

// strayLookahead is how many lines readHeader looks ahead for a field
// after a line that is no field.
const strayLookahead = 8

// fieldAhead reports whether a field line starts within strayLookahead lines
// from pos, before a blank line.
func fieldAhead(s string, pos int) bool {
	for n := 0; n < strayLookahead && pos < len(s); n++ {
		line, next := nextLine(s, pos)
		if isBlankLine(line) {
			return false
		}
		if !isWSP(line[0]) {
			if _, _, ok := fieldLine(line); ok {
				return true
			}
		}
		pos = next
	}
	return false
}

// getField returns the value of the first field named name, or "".
func getField(h []Field, name string) string {
	for i := range h {
		if equalFold(h[i].Name, name) {
			return h[i].Value
		}
	}
	return ""
}

// mediaType is a parsed Content-Type, RFC 2045 section 5.1.
type mediaType struct {
	typ    string  // "type/subtype", lower-cased; "" when absent
	params []Field // names lower-cased, values unquoted
}

func (m mediaType) param(name string) string {
	for _, p := range m.params {
		if p.Name == name {
			return p.Value
		}
	}
	return ""
}

// parseContentType parses a Content-Type value leniently: unquoted values
// with odd characters, stray semicolons and missing values are accepted.
// RFC 2231 parameters are decoded (rfc2231).
func parseContentType(v string) mediaType {
	var m mediaType
	i := strings.IndexByte(v, ';')
	if i < 0 {
		m.typ = strings.ToLower(trimWS(stripComment(v)))
		return m
	}
	m.typ = strings.ToLower(trimWS(stripComment(v[:i])))
	rest := v[i+1:]
	for rest != "" {
		// name
		eq := strings.IndexAny(rest, "=;")
		if eq < 0 {
			break
		}
		if rest[eq] == ';' {
			rest = rest[eq+1:]
			continue
		}
		name := strings.ToLower(trimWS(rest[:eq]))
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var val string
		if rest != "" && rest[0] == '"' {
			val, rest = unquote(rest)
			if j := strings.IndexByte(rest, ';'); j >= 0 {
				rest = rest[j+1:]
			} else {
				rest = ""
			}
		} else if j := strings.IndexByte(rest, ';'); j >= 0 {
			val, rest = trimWS(rest[:j]), rest[j+1:]
		} else {
			val, rest = trimWS(rest), ""
		}
		if name != "" && len(m.params) < 16 {
			m.params = append(m.params, Field{Name: name, Value: val})
		}
	}
	m.params = rfc2231(m.params)
	return m
}

// rfc2231 joins RFC 2231 parameter continuations (section 3: name*0,
// name*1, ... in order) and decodes extended values (section 4: name*=
// charset'language'%XX..., and name*0*=), so "boundary*0=ab;
// boundary*1=cd" is the boundary "abcd". The bytes are kept as they are:
// the parameters a report needs (boundary, charset, report-type) are
// ASCII. A plain name=value given as well wins, as mail readers do; a
// continuation with a gap stops at the gap.
func rfc2231(params []Field) []Field {
	type part struct {
		value   string
		encoded bool
	}
	var (
		out   []Field
		parts map[string]map[int]part
		order []string
	)
	for _, p := range params {
		name, rest, star := strings.Cut(p.Name, "*")
		if !star {
			out = append(out, p)
			continue
		}
		encoded := strings.HasSuffix(rest, "*") || rest == ""
		idx := 0
		if num := strings.TrimSuffix(rest, "*"); num != "" {
			n, err := strconv.Atoi(num)
			if err != nil || n < 0 || n > 64 {
				continue
			}
			idx = n
		}
		if parts == nil {
			parts = map[string]map[int]part{}
		}
		if parts[name] == nil {
			parts[name] = map[int]part{}
			order = append(order, name)
		}
		parts[name][idx] = part{p.Value, encoded}
	}
	for _, name := range order {
		if getParam(out, name) {
			continue
		}
		var b strings.Builder
		for i := 0; ; i++ {
			pt, ok := parts[name][i]
			if !ok {
				break
			}
			v := pt.value
			if pt.encoded {
				if i == 0 {
					// charset'language'value; the charset and language
					// are dropped (see above).
					if q := strings.SplitN(v, "'", 3); len(q) == 3 {
						v = q[2]
					}
				}
				if u, err := url.PathUnescape(v); err == nil {
					v = u
				}
			}
			b.WriteString(v)
		}
		if b.Len() > 0 && len(out) < 16 {
			out = append(out, Field{Name: name, Value: b.String()})
		}
	}
	return out
}

func getParam(params []Field, name string) bool {
	for _, p := range params {
		if p.Name == name {
			return true
		}
	}
	return false
}

// unquote reads the quoted-string at the start of s, RFC 5322 section 3.2.4,
// and returns its content and the rest of s. An unterminated string runs to
// the end of s.
func unquote(s string) (val, rest string) {
	var b []byte
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '"':
			if b == nil {
				return s[1:i], s[i+1:]
			}
			return string(b), s[i+1:]
		case '\\':
			if b == nil {
				b = append(make([]byte, 0, len(s)), s[1:i]...)
			}
			if i+1 < len(s) {
				i++
				b = append(b, s[i])
			}
		default:
			if b != nil {
				b = append(b, s[i])
			}
		}
	}
	if b == nil {
		return s[1:], ""
	}
	return string(b), ""
}

// stripComment removes RFC 5322 comments "(...)", nested or not, outside
// quoted strings. It returns s itself when there is none.
func stripComment(s string) string {
	if strings.IndexByte(s, '(') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	depth, quoted := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && (quoted || depth > 0):
			if depth == 0 {
				b = append(b, c)
				if i+1 < len(s) {
					b = append(b, s[i+1])
				}
			}
			i++
		case quoted:
			if c == '"' {
				quoted = false
			}
			b = append(b, c)
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		default:
			if c == '"' {
				quoted = true
			}
			b = append(b, c)
		}
	}
	return string(b)
}

// multipart walks the body parts of a multipart body, RFC 2046 section 5.1.1.
// A delimiter is "--boundary" at the start of a line followed by optional
// white space, or by "--" for the last one.
type multipart struct {
	body  string
	delim string // "--" + boundary
	pos   int    // start of the next part, or -1 when done
	// closed is set when the close delimiter was seen; truncated when the body
	// ended inside a part.
	closed, truncated bool
}

func newMultipart(body, boundary string) *multipart {
	mp := &multipart{body: body, delim: "--" + boundary}
	i, after, closing := mp.find(0)
	switch {
	case i < 0:
		mp.pos = -1
		mp.truncated = true
	case closing:
		mp.pos = -1
		mp.closed = true
	default:
		mp.pos = after
	}
	return mp
}

// find returns the offset of the next delimiter line at or after from, the
// offset of the line after it, and whether it is the close delimiter.
func (mp *multipart) find(from int) (at, after int, closing bool) {
	s, d := mp.body, mp.delim
	for from <= len(s) {
		i := strings.Index(s[from:], d)
		if i < 0 {
			return -1, 0, false
		}
		at = from + i
		from = at + 1
		if at > 0 && s[at-1] != '\n' {
			continue
		}
		rest := s[at+len(d):]
		closing = strings.HasPrefix(rest, "--")
		if closing {
			rest = rest[2:]
		}
		line, _ := nextLine(rest, 0)
		if !isBlankLine(line) {
			continue // a longer boundary, or text that merely starts like one
		}
		after = at + len(d) + len(line)
		if closing {
			after += 2
		}
		if after < len(s) {
			after++ // the "\n"
		}
		return at, after, closing
	}
	return -1, 0, false
}

// next returns the next part, or ok=false at the end.
func (mp *multipart) next() (part string, ok bool) {
	if mp.pos < 0 {
		return "", false
	}
	start := mp.pos
	at, after, closing := mp.find(start)
	if at < 0 {
		mp.pos = -1
		mp.truncated = true
		return mp.body[start:], true
	}
	end := at
	if end > start {
		end-- // the line break before the delimiter belongs to it
	}
	if closing {
		mp.pos = -1
		mp.closed = true
	} else {
		mp.pos = after
	}
	return mp.body[start:end], true
}

// guessBoundary returns the boundary of a multipart body whose Content-Type
// lost it: the first line that looks like "--boundary". It returns "" when
// there is none.
func guessBoundary(body string) string {
	for pos, n := 0, 0; pos < len(body) && n < 200; n++ {
		line, next := nextLine(body, pos)
		pos = next
		if len(line) < 4 || line[0] != '-' || line[1] != '-' {
			continue
		}
		b := trimWS(line[2:])
		if strings.IndexAny(b, " \t") >= 0 || strings.Trim(b, "-") == "" {
			continue
		}
		return strings.TrimSuffix(b, "--")
	}
	return ""
}
