// Package verp signs and verifies VERP return paths (variable envelope
// return paths): the envelope sender (RFC 5321 MAIL FROM) of each outgoing
// message names its recipient and message, under a bounce domain, with an
// HMAC-SHA256 so that forged bounces are turned away at RCPT time.
//
// # Address layout, version 1
//
//	<prefix>+<token>@<bounce-domain>
//
// The prefix is Signer.Prefix ("b" by default; not covered by the MAC and
// not checked by Verify). The token is lower case, made of RFC 4648 base32
// characters without padding ("a"-"z", "2"-"7") and, in the literal form,
// the recipient; an MTA that changes the letter case of the local part does
// not break it. Its fixed-width fields come first and the recipient last:
//
//	offset  chars  field
//	0       1      form, which is also the layout version: "l", "e" or "h" (below)
//	1       1      key id: base32 of the first 5 bits of
//	               SHA-256("bouncer-verp-key-id\0" || secret)
//	2       3      day stamp: days since 2000-01-01 UTC, modulo 32768, as three
//	               base32 digits, most significant first; read as the day
//	               nearest today
//	5       8      message-id hash: MessageIDHash, 40 bits of SHA-256
//	13      16     MAC: the first 80 bits of HMAC-SHA256(secret,
//	               "bouncer-verp-1\0" || bounce-domain || "\0" ||
//	               token without the MAC), base32
//	29      rest   recipient, by form:
//	               "l" literal "local=domain" (classic VERP), when the lower-cased
//	                   local part is a dot-atom of a-z 0-9 . _ - + and the domain
//	                   an ASCII host name;
//	               "e" base32 of the lower-cased address (quoted local parts,
//	                   SMTPUTF8 addresses, ...);
//	               "h" 8 characters, RecipientHash (40 bits of SHA-256), when
//	                   neither fits: the address is then recovered from the sync
//	                   log that carried the same return path, or checked against
//	                   a DSN's Final-Recipient.
//
// Sign picks the first form whose local part stays within 64 octets (RFC 5321
// section 4.5.3.1.1); the hashed form always fits (at most 54 octets with a
// 16-character prefix). With the default prefix a literal recipient may be 33
// characters ("local=domain"), an encoded one 20 octets.
//
// The MAC covers the form, key id, day, message-id hash, recipient field and
// the bounce domain, so a token replayed under another bounce domain is
// forged. Several keys verify (rotation); the key id only selects which to
// try. A token stamped on day D verifies through the end of day
// D+ceil(Validity/24h); a stamp more than one day in the future is expired.
//
// Example: key "example-secret-key-1", 2026-11-25, bounce domain
// bounces.example.com, message id <20261125.abc@mail.example.org>:
//
//	Jane.Doe@Example.NET
//	  b+l5jtbdn4ibufdswkw6uodfs4xdwavjane.doe=example.net@bounces.example.com
//	jürgen@example.de
//	  b+e5jtbdn4ibufdfqvuzq34ztuqd5ucnlb3y4thmvxeazlymfwxa3dffzsgk@bounces.example.com
//	a.very.long.firstname.lastname@subsidiary.example-corporation.com
//	  b+h5jtbdn4ibufdyg25owkfuvvr2ea2l4cop262@bounces.example.com
//
// In the first: form "l", key id "5", day "jtb" (9825 days after
// 2000-01-01), message-id hash "dn4ibufd", MAC "swkw6uodfs4xdwav", recipient
// "jane.doe=example.net".
package verp
