// Package smtpd is bouncer's return-path listener: an SMTP server (RFC 5321,
// github.com/emersion/go-smtp) that accepts bounce reports for the
// configured bounce domains only, checks VERP tokens at RCPT time, enforces
// explicit limits, and hands each message to a Publisher. It answers 250
// only after the Publisher made the report durable; on any failure to do so
// it answers 451 4.3.0 so the remote MTA keeps the report and retries.
//
// It never relays: every accepted message is a report for bouncer itself.
package smtpd
