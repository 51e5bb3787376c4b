package dsn

import (
	"errors"
	"io"
	"mime"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // every charset, iso-2022-jp and iso-8859-* included
	"github.com/emersion/go-message/textproto"
)

// This file decodes bodies and header values: transfer encodings (RFC 2045
// section 6), charsets (through go-message), RFC 2047 encoded words, UTF-7
// and HTML. Decoders are lenient and report what they could not read.

// contentTransferEncoding returns the lower-cased mechanism of h's
// Content-Transfer-Encoding field.
func contentTransferEncoding(h []Field) string {
	v := getField(h, "Content-Transfer-Encoding")
	if v == "" {
		return ""
	}
	return strings.ToLower(strings.Trim(trimWS(stripComment(v)), `"`))
}

// decodeTransfer undoes a Content-Transfer-Encoding. It returns the decoded
// body and a description of the problem, "" when there was none.
func decodeTransfer(cte, body string) (string, string) {
	switch cte {
	case "", "7bit", "8bit", "binary":
		return body, ""
	case "base64":
		return decodeBase64(body)
	case "quoted-printable":
		return decodeQP(body), ""
	}
	return body, "unknown transfer encoding " + short(cte) + "; body kept as is"
}

const (
	b64Bad   = 0xFF
	b64Space = 0xFE
	b64Pad   = 0xFD
)

var b64Table = func() (t [256]byte) {
	for i := range t {
		t[i] = b64Bad
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = byte(i)
	}
	for _, c := range " \t\r\n\f\v" {
		t[c] = b64Space
	}
	t['='] = b64Pad
	return t
}()

// decodeBase64 decodes base64, skipping characters outside the alphabet as
// RFC 2045 section 6.8 asks. A body that is mostly not base64 is returned as
// is.
func decodeBase64(s string) (string, string) {
	out := make([]byte, 0, len(s)*3/4+3)
	var acc uint32
	n, bad, valid := 0, 0, 0
	flush := func() {
		switch n {
		case 1:
			bad++ // a lone sextet holds no whole byte
		case 2:
			out = append(out, byte(acc>>4))
		case 3:
			out = append(out, byte(acc>>10), byte(acc>>2))
		}
		acc, n = 0, 0
	}
	inLine, gap := false, false // data seen on this line; white space after it
	for i := 0; i < len(s); i++ {
		switch v := b64Table[s[i]]; v {
		case b64Space:
			if c := s[i]; c == '\n' || c == '\r' {
				inLine, gap = false, false
			} else if inLine {
				gap = true
			}
		case b64Pad:
			flush()
		case b64Bad:
			bad++
		default:
			if gap {
				bad++ // base64 has no white space inside a line; prose does
				gap = false
			}
			inLine = true
			valid++
			acc = acc<<6 | uint32(v)
			if n++; n == 4 {
				out = append(out, byte(acc>>16), byte(acc>>8), byte(acc))
				acc, n = 0, 0
			}
		}
	}
	flush()
	if bad == 0 {
		return string(out), ""
	}
	if bad*4 > valid {
		return s, "body labelled base64 is not base64; kept as is"
	}
	return string(out), "invalid base64: " + strconv.Itoa(bad) + " bytes skipped"
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// decodeQP decodes quoted-printable, RFC 2045 section 6.7. An "=" that starts
// no valid escape is kept literally.
func decodeQP(s string) string {
	i := strings.IndexByte(s, '=')
	if i < 0 {
		return s
	}
	out := make([]byte, 0, len(s))
	for i >= 0 {
		out = append(out, s[:i]...)
		s = s[i:] // s[0] == '='
		if len(s) >= 3 {
			if h, ok := unhex(s[1]); ok {
				if l, ok := unhex(s[2]); ok {
					out = append(out, h<<4|l)
					s = s[3:]
					i = strings.IndexByte(s, '=')
					continue
				}
			}
		}
		// Soft line break: "=" and optional white space before the line end.
		j := 1
		for j < len(s) && (isWSP(s[j]) || s[j] == '\r') {
			j++
		}
		switch {
		case j >= len(s):
			s = ""
		case s[j] == '\n':
			s = s[j+1:]
		default:
			out = append(out, '=')
			s = s[1:]
		}
		i = strings.IndexByte(s, '=')
	}
	return string(append(out, s...))
}

// normCharset returns the lower-cased charset name, with a few aliases and
// common misspellings mapped to "utf-8" or "us-ascii".
func normCharset(cs string) string {
	cs = strings.ToLower(strings.Trim(trimWS(cs), `"'`))
	switch cs {
	case "utf8", "uft-8", "utf-8'", "x-utf-8", "unicode-1-1-utf-8":
		return "utf-8"
	case "", "ascii", "us_ascii", "usascii", "ansi_x3.4-1968", "iso646-us", "7bit", "8bit":
		return "us-ascii"
	}
	return cs
}

// isCharsetToken reports whether cs is a plausible charset name.
func isCharsetToken(cs string) bool {
	if cs == "" || len(cs) > 40 {
		return false
	}
	for i := 0; i < len(cs); i++ {
		c := cs[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-_.:+()", c) >= 0) {
			return false
		}
	}
	return true
}

// convertCharset converts s from charset cs (normalised) to UTF-8 with
// go-message's charset tables, returning at most limit bytes. It returns s
// unconverted and a problem when the charset is unknown.
func convertCharset(cs, s string, limit int) (string, string) {
	switch cs {
	case "utf-8", "us-ascii":
		return s, ""
	case "utf-7", "unicode-1-1-utf-7", "x-unicode-1-1-utf-7", "csunicode11utf7":
		return decodeUTF7(s), ""
	}
	if !isCharsetToken(cs) {
		return s, "unknown charset " + short(cs) + "; text kept as is"
	}
	if asciiCompatible(cs) && isPlainASCII(s) {
		return s, "" // conversion would be the identity
	}
	var th textproto.Header
	th.Set("Content-Type", `text/plain; charset="`+cs+`"`)
	e, err := message.New(message.Header{Header: th}, strings.NewReader(s))
	problem := ""
	if err != nil {
		// go-message returns an error and a readable entity: keep reading.
		problem = "unknown charset " + short(cs) + "; text kept as is"
	}
	if e == nil {
		return s, problem
	}
	b, err := io.ReadAll(io.LimitReader(e.Body, int64(limit)))
	if err != nil && problem == "" {
		problem = "charset " + short(cs) + ": " + short(err.Error())
	}
	return string(b), problem
}

// asciiCompatible reports whether charset cs maps the bytes 0x00-0x7F to
// ASCII (and, for ISO-2022, does so until an escape sequence).
func asciiCompatible(cs string) bool {
	for _, p := range [...]string{"iso-8859-", "iso8859-", "windows-", "cp125", "iso-2022-", "euc-", "shift_jis", "sjis", "x-sjis", "gb2312", "gbk", "gb18030", "big5", "koi8-", "ks_c_5601", "tis-620", "latin"} {
		if strings.HasPrefix(cs, p) {
			return true
		}
	}
	return false
}

// isPlainASCII reports whether s has only 7-bit bytes and none of the ESC,
// SO and SI controls of ISO-2022.
func isPlainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x80 || c == 0x1b || c == 0x0e || c == 0x0f {
			return false
		}
	}
	return true
}

// decodeUTF7 decodes UTF-7, RFC 2152, which Exchange still labels
// "unicode-1-1-utf-7". It is not in go-message's tables.
func decodeUTF7(s string) string {
	if strings.IndexByte(s, '+') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	var units []uint16
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '+' {
			b.WriteByte(c)
			continue
		}
		if i+1 < len(s) && s[i+1] == '-' {
			b.WriteByte('+')
			i++
			continue
		}
		j := i + 1
		var acc uint32
		bits := 0
		units = units[:0]
		for ; j < len(s); j++ {
			v := b64Table[s[j]]
			if v >= 64 {
				break
			}
			acc = acc<<6 | uint32(v)
			if bits += 6; bits >= 16 {
				bits -= 16
				units = append(units, uint16(acc>>bits))
				acc &= 1<<bits - 1
			}
		}
		if j == i+1 {
			b.WriteByte('+')
			continue
		}
		for _, r := range utf16.Decode(units) {
			b.WriteRune(r)
		}
		i = j - 1
		if j < len(s) && s[j] == '-' {
			i = j
		}
	}
	return b.String()
}

// wordDecoder decodes RFC 2047 encoded words with go-message's charsets.
var wordDecoder = &mime.WordDecoder{CharsetReader: func(cs string, in io.Reader) (io.Reader, error) {
	if message.CharsetReader == nil {
		return nil, errors.New("no charset tables")
	}
	r, err := message.CharsetReader(strings.ToLower(cs), in)
	if err != nil {
		return nil, err
	}
	return smallCopy{r}, nil
}}

// smallCopy makes io.Copy use a small buffer: mime.WordDecoder copies each
// converted word into a strings.Builder, and io.Copy would allocate 32 KiB
// for a word of a few bytes.
type smallCopy struct{ io.Reader }

func (r smallCopy) WriteTo(w io.Writer) (int64, error) {
	b, err := io.ReadAll(r.Reader)
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}

// decodeHeaderValue decodes RFC 2047 encoded words, and raw ISO-2022-JP
// (seen in Japanese headers). On failure it returns v and false.
func decodeHeaderValue(v string) (string, bool) {
	if strings.Contains(v, "=?") {
		d, err := wordDecoder.DecodeHeader(v)
		if err != nil {
			return v, false
		}
		v = d
	}
	if strings.Contains(v, "\x1b$") {
		if d, problem := convertCharset("iso-2022-jp", v, 4*len(v)+16); problem == "" {
			v = d
		}
	}
	return v, true
}

// cleanText turns line endings into "\n" and invalid UTF-8 into U+FFFD.
func cleanText(s string) string {
	if strings.IndexByte(s, '\r') >= 0 {
		s = strings.ReplaceAll(s, "\r\n", "\n")
		s = strings.ReplaceAll(s, "\r", "\n")
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return s
}

// cutRunes returns the longest prefix of s of at most n bytes that does not
// end inside a UTF-8 sequence.
func cutRunes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && i > n-utf8.UTFMax && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// stripHTML returns the text of an HTML document: tags removed, script and
// style dropped, block elements as line breaks, common entities decoded,
// runs of white space collapsed.
func stripHTML(s string) string {
	b := make([]byte, 0, len(s)/2)
	space := true // the last byte written is white space
	nl := 0       // trailing line breaks written
	writeNL := func() {
		if nl >= 2 {
			return
		}
		for len(b) > 0 && b[len(b)-1] == ' ' {
			b = b[:len(b)-1]
		}
		if len(b) == 0 {
			return
		}
		b = append(b, '\n')
		nl++
		space = true
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '<':
			if strings.HasPrefix(s[i:], "<!--") {
				j := strings.Index(s[i+4:], "-->")
				if j < 0 {
					return string(b)
				}
				i += 4 + j + 3
				continue
			}
			j := strings.IndexByte(s[i:], '>')
			if j < 0 {
				i = len(s)
				continue
			}
			name := tagName(s[i+1 : i+j])
			i += j + 1
			switch name {
			case "script", "style", "title":
				if k := indexFold(s[i:], "</"+name); k >= 0 {
					i += k
				} else {
					i = len(s)
				}
			case "br", "p", "/p", "div", "/div", "tr", "/tr", "li", "table", "/table",
				"h1", "h2", "h3", "h4", "h5", "h6", "/h1", "/h2", "/h3", "/h4", "/h5", "/h6",
				"blockquote", "/blockquote", "hr", "pre", "/pre", "ul", "/ul", "ol", "/ol":
				writeNL()
			case "td", "th":
				if !space {
					b = append(b, ' ')
					space = true
				}
			}
		case c == '&':
			r, n := htmlEntity(s[i:])
			i += n
			if r == ' ' || r == '\u00a0' {
				if !space {
					b = append(b, ' ')
					space = true
				}
				continue
			}
			b = utf8.AppendRune(b, r)
			space, nl = false, 0
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			if !space {
				b = append(b, ' ')
				space = true
			}
			i++
		default:
			b = append(b, c)
			space, nl = false, 0
			i++
		}
	}
	return strings.TrimRight(string(b), " \n")
}

// tagName returns the lower-cased name of a tag's content ("/p" for "</p>").
func tagName(t string) string {
	end := 0
	if end < len(t) && t[end] == '/' {
		end++
	}
	for end < len(t) && t[end] != ' ' && t[end] != '\t' && t[end] != '\n' && t[end] != '/' && t[end] != '>' {
		end++
	}
	if end > 12 {
		return ""
	}
	return strings.ToLower(t[:end])
}

// htmlEntity decodes the character reference at the start of s and returns
// it and its length; a lone "&" is returned as itself.
func htmlEntity(s string) (rune, int) {
	if len(s) > 12 {
		s = s[:12] // the longest reference we decode, "&#x10FFFF;", fits
	}
	end := strings.IndexByte(s, ';')
	if end < 2 || end > 10 {
		return '&', 1
	}
	name := s[1:end]
	switch name {
	case "amp":
		return '&', end + 1
	case "lt":
		return '<', end + 1
	case "gt":
		return '>', end + 1
	case "nbsp":
		return '\u00a0', end + 1
	case "quot":
		return '"', end + 1
	case "apos":
		return '\'', end + 1
	}
	if name[0] == '#' {
		v, base := 0, 10
		digits := name[1:]
		if len(digits) > 0 && (digits[0] == 'x' || digits[0] == 'X') {
			base, digits = 16, digits[1:]
		}
		if digits == "" {
			return '&', 1
		}
		for i := 0; i < len(digits); i++ {
			d, ok := unhex(digits[i])
			if !ok || int(d) >= base {
				return '&', 1
			}
			v = v*base + int(d)
		}
		if v == 0 || v > utf8.MaxRune {
			return utf8.RuneError, end + 1
		}
		return rune(v), end + 1
	}
	return '&', 1
}

// indexFold is strings.Index for an ASCII-lower-case needle, ignoring ASCII
// case in s. It jumps between occurrences of the needle's first byte in
// either case with IndexByte, remembering both, so it stays linear.
func indexFold(s, lowerNeedle string) int {
	n := len(lowerNeedle)
	if n == 0 {
		return 0
	}
	lo, up := lowerNeedle[0], lowerNeedle[0]
	if 'a' <= lo && lo <= 'z' {
		up -= 'a' - 'A'
	}
	nextLo, nextUp := -2, -2 // next candidates at or after i; -1: none left
	for i := 0; i+n <= len(s); {
		if nextLo != -1 && nextLo < i {
			if nextLo = strings.IndexByte(s[i:], lo); nextLo >= 0 {
				nextLo += i
			}
		}
		if up == lo {
			nextUp = nextLo
		} else if nextUp != -1 && nextUp < i {
			if nextUp = strings.IndexByte(s[i:], up); nextUp >= 0 {
				nextUp += i
			}
		}
		at := nextLo
		if at < 0 || nextUp >= 0 && nextUp < at {
			at = nextUp
		}
		if at < 0 || at+n > len(s) {
			return -1
		}
		if equalFold(s[at:at+n], lowerNeedle) {
			return at
		}
		i = at + 1
	}
	return -1
}

// hasPrefixFold reports whether s starts with prefix, ignoring ASCII case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && equalFold(s[:len(prefix)], prefix)
}

// short quotes s for an anomaly message, cut to 60 bytes.
func short(s string) string {
	if len(s) > 60 {
		s = cutRunes(s, 60) + "..."
	}
	return strconv.Quote(s)
}
