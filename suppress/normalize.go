package suppress

import "strings"

// Normalization says how addresses are compared. Lower-casing is always
// done; the provider rules are off by default because they are true only of
// the providers that apply them.
type Normalization struct {
	// GmailDots ignores dots in the local part at gmail.com and
	// googlemail.com, where they are not significant.
	GmailDots bool `json:"gmail_dots"`
	// PlusTags drops a "+tag" from the local part ("jane+news@" is "jane@").
	PlusTags bool `json:"plus_tags"`
}

// Address returns the form of addr that suppressions are keyed by, or ""
// when addr is not an address.
func (n Normalization) Address(addr string) string {
	a := strings.ToLower(strings.TrimSpace(addr))
	a = strings.TrimSuffix(strings.TrimPrefix(a, "<"), ">")
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 || strings.ContainsAny(a, " \t\r\n<>,;") {
		return ""
	}
	local, domain := a[:at], a[at+1:]
	if n.PlusTags {
		if i := strings.IndexByte(local, '+'); i > 0 {
			local = local[:i]
		}
	}
	if n.GmailDots && (domain == "gmail.com" || domain == "googlemail.com") {
		local = strings.ReplaceAll(local, ".", "")
		domain = "gmail.com"
	}
	if local == "" {
		return ""
	}
	return local + "@" + domain
}
