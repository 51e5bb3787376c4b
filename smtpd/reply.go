package smtpd

import (
	"crypto/rand"
	"encoding/hex"
	"errors"

	"github.com/emersion/go-smtp"

	"github.com/bouncer-mail/bouncer/verp"
)

// Reply errors of the listener. Each is a *smtp.SMTPError so go-smtp, which
// finds them by type assertion, sends exactly this reply.
var (
	errNotOurDomain = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relaying denied: not a bounce domain of this server"}
	errUnsigned     = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Not a valid bounce address"}
	errForged       = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Bounce address does not verify"}
	errExpired      = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Bounce address has expired"}
	errBadAddress   = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad recipient address syntax"}
	errNoRecipients = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}
	errShuttingDown = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down, try again later"}
	// errLineTooLong answers a message with a line over MaxLineLength,
	// which go-smtp applies to DATA lines too (smtp.ErrTooLongLine).
	// Permanent: the same bytes fail the same way, and a 451 had the
	// sender resend them for days. go-smtp closes the connection after it.
	errLineTooLong = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Message has a line over this server's line length limit (RFC 5321 section 4.5.3.1.6: 1000 octets)"}
)

// replyFor turns any error of a session into the SMTP reply to give. It is
// the only place that does: replies the listener means (*smtp.SMTPError of
// its own, go-smtp's size limit) pass through; a VERP verdict becomes its
// 550 5.7.1; a message line over the line limit 554 5.6.0; every other
// error, a store or NATS failure above all, becomes 451 4.3.0 with generic
// text and the reference id under which it was logged, never its internal
// text and never a 5xx, so the sender retries.
func replyFor(err error, ref string) *smtp.SMTPError {
	var se *smtp.SMTPError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return se
	case errors.Is(err, smtp.ErrTooLongLine):
		return errLineTooLong
	case errors.Is(err, verp.ErrNotVERP):
		return errUnsigned
	case errors.Is(err, verp.ErrForged):
		return errForged
	case errors.Is(err, verp.ErrExpired):
		return errExpired
	}
	return &smtp.SMTPError{
		Code:         451,
		EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message:      "Temporary failure, please try again later (ref " + ref + ")",
	}
}

// newRef returns a short random reference id to quote in a reply and log.
func newRef() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "unknown"
	}
	return hex.EncodeToString(b[:])
}
