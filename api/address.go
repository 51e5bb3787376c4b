package api

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxAddressLen is the longest address accepted, in octets: RFC 5321
// section 4.5.3.1 allows a 64-octet local part and a 255-octet domain.
const maxAddressLen = 320

// parseAddress checks an address from a request path and returns it
// lower-cased, as the store keeps recipients. It is a sanity check, not an
// RFC 5321 parser: the address only selects rows, so anything a bounce
// could have carried is let through, and what no address can contain is
// refused. The error is fit for a client.
func parseAddress(s string) (string, error) {
	switch {
	case s == "":
		return "", errors.New("address is empty")
	case len(s) > maxAddressLen:
		return "", errors.New("address is longer than 320 octets")
	case !utf8.ValidString(s):
		return "", errors.New("address is not valid UTF-8")
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return "", errors.New("address contains control characters")
	case strings.Count(s, "@") != 1:
		return "", errors.New("address must contain exactly one @")
	}
	local, domain, _ := strings.Cut(s, "@")
	if local == "" || domain == "" {
		return "", errors.New("address needs a local part and a domain")
	}
	// White space is part of an address only inside a quoted local part
	// ("john doe"@example.com).
	if strings.ContainsFunc(local, unicode.IsSpace) && !(len(local) >= 2 && local[0] == '"' && local[len(local)-1] == '"') {
		return "", errors.New("address has white space outside a quoted local part")
	}
	// A domain is labels of letters, digits, hyphens and dots, or an
	// address literal in brackets; none holds a slash or a space.
	if strings.ContainsFunc(domain, func(r rune) bool { return r == '/' || r == '\\' || unicode.IsSpace(r) }) {
		return "", errors.New("address has an invalid domain")
	}
	return strings.ToLower(s), nil
}
