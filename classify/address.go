package classify

import (
	"net/mail"
	"strings"
	"unicode"

	"github.com/bouncer-mail/bouncer/dsn"
	"github.com/bouncer-mail/bouncer/event"
)

// normalizeAddress returns addr lower-cased, without angle brackets, quotes,
// a "rfc822;" type or surrounding space, or "" when it is not an address.
func normalizeAddress(addr string) string {
	a := strings.TrimSpace(addr)
	if i := strings.IndexByte(a, ';'); i > 0 && i <= 12 && isAddressType(strings.TrimSpace(a[:i])) {
		a = strings.TrimSpace(a[i+1:])
	}
	if i := strings.LastIndexByte(a, '<'); i >= 0 {
		if j := strings.IndexByte(a[i:], '>'); j > 0 {
			a = a[i+1 : i+j]
		}
	}
	// One pass over punctuation and white space together: trimming them
	// one after the other left `"\v@0` as "\v@0", which normalised again
	// to nothing (found by FuzzClassify).
	a = strings.TrimFunc(a, func(r rune) bool { return unicode.IsSpace(r) || strings.ContainsRune("<>\"'`()[]{}:;,.", r) })
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 || strings.ContainsAny(a, "<>;,") || strings.IndexFunc(a, notInAddress) >= 0 {
		return ""
	}
	return strings.ToLower(a)
}

// notInAddress reports the runes no address of a report carries: white
// space and control characters.
func notInAddress(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

// isAddressType reports whether s can be an RFC 3464 address type
// ("rfc822", "utf-8", "x-local"): letters, digits and hyphens.
func isAddressType(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

// addresses splits an address-list header value into addresses, leniently.
func addresses(v string) []string {
	if v == "" {
		return nil
	}
	if list, err := mail.ParseAddressList(v); err == nil {
		out := make([]string, 0, len(list))
		for _, a := range list {
			out = append(out, a.Address)
		}
		return out
	}
	var out []string
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		if strings.Contains(f, "@") {
			out = append(out, f)
		}
	}
	return out
}

// autoreply recognises an auto-reply (RFC 3834 Auto-Submitted:
// auto-replied, and vacation texts) and reports it as one event for its
// sender.
func (x *exam) autoreply() []event.Event {
	if !x.c.rules.IsAutoreply(x.m, x.lowerText) {
		return nil
	}
	var from string
	for _, a := range addresses(x.m.Get("From")) {
		if from = normalizeAddress(a); from != "" {
			break
		}
	}
	if from == "" {
		return []event.Event{}
	}
	return []event.Event{{
		Recipient:  from,
		Class:      event.ClassAutoreply,
		Reason:     event.ReasonVacation,
		Diagnostic: x.m.Get("Subject"),
		Provider:   x.c.rules.Provider(domainOf(from)),
		Parser:     "rfc3834",
		Rule:       "autoreply",
		MessageID:  x.repliedTo(),
	}}
}

// repliedTo is the message an auto-reply answers: the returned original's
// id, or its In-Reply-To (RFC 3834 section 3.1.4 asks auto-replies to set
// it).
func (x *exam) repliedTo() string {
	if x.messageID != "" {
		return x.messageID
	}
	v := strings.TrimSpace(x.m.Get("In-Reply-To"))
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return v[i : i+j+1]
		}
	}
	return ""
}

var _ interface{ Get(string) string } = (*dsn.Message)(nil)
