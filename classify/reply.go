package classify

import (
	"strings"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/rules"
)

// Reply is one SMTP answer or DSN diagnostic as evidence: whatever of it is
// known. The same Reply comes from an NDR's recipient block and from a sync
// reply log, so both are judged alike.
type Reply struct {
	Code     int    // basic reply code, 550; 0 when unknown
	Status   string // enhanced status, "5.1.1"; "" when unknown
	Text     string // reply or diagnostic text
	Action   string // DSN action when the reply came from a DSN
	Command  string // SMTP command that drew the reply: RCPT, DATA, ...; "" when unknown
	Provider string
	// Local says the text is the reporting system's own verdict (its
	// local delivery agent or directory, rules.Format.Local), which no
	// SMTP command drew.
	Local bool
}

// Verdict is what a Reply means.
type Verdict struct {
	Class  event.Class
	Reason event.Reason
	Scope  event.Scope
	Status string // the status given, or one derived from the reason when none was
	Rule   string // the rule that decided the reason
}

// Reply classifies one reply. Its text decides first (a full mailbox answered
// with 550 5.1.1 is still mailboxfull); the enhanced status decides when the
// text names no cause, then the reply code and the DSN action.
func (c *Classifier) Reply(r Reply) Verdict {
	status := r.Status
	code := r.Code
	if status == "" && code == 0 && r.Text != "" {
		code, status = ReplyCode(r.Text), EnhancedStatus(r.Text)
	}
	action := strings.ToLower(r.Action)
	switch action {
	case "delivered", "relayed", "expanded":
		return Verdict{Class: event.ClassDelivered, Reason: event.ReasonDelivered, Status: status, Rule: "dsn-action-" + action}
	}
	failed := action == "failed" || strings.HasPrefix(status, "4.") || strings.HasPrefix(status, "5.")
	if !failed && (code/100 == 2 || (code == 0 && strings.HasPrefix(status, "2."))) {
		return Verdict{Class: event.ClassDelivered, Reason: event.ReasonDelivered, Status: status, Rule: "reply-2xx"}
	}
	temporary := code/100 == 4 || (code == 0 && strings.HasPrefix(status, "4.")) ||
		(code == 0 && status == "" && action == "delayed")

	var v Verdict
	if m, ok := c.rules.Reason(rules.Reply{Text: rules.LowerASCII(JoinContinuations(r.Text)), Status: status, Code: code, Provider: r.Provider}); ok {
		v = Verdict{Reason: event.Reason(m.Reason), Scope: event.Scope(m.Scope), Rule: m.Rule}
		if m.AfterData != "" && !strings.HasSuffix(status, ".1.1") {
			// An explicit X.1.1 ("bad destination mailbox address") says
			// what it means whenever it came.
			switch {
			case r.Command == "DATA":
				v = Verdict{Reason: event.Reason(m.AfterData), Rule: m.Rule + "+after-data"}
			case r.Command == "" && !r.Local:
				// Nothing says the recipient was refused at RCPT: the
				// reply may as well be a filter's after DATA, and only
				// X.1.1 or a known RCPT makes "user unknown" certain
				// (Sisimai::Reason::UserUnknown and Filtered read it so).
				// The text still names this recipient as refused, so
				// mailing it again fails either way: recipient scope,
				// and soft, since it may be our message that was refused.
				v = Verdict{Reason: event.Reason(m.AfterData), Scope: event.ScopeRecipient, Rule: m.Rule + "+command-unknown"}
			}
		}
		if v.Reason == event.ReasonUserUnknown && beforeRcpt(r.Command) {
			// Refused before any recipient was named (RFC 5321 section
			// 3.3: MAIL comes first): "... does not exist" speaks of the
			// sender or its domain.
			v = Verdict{Reason: event.ReasonRejected, Rule: m.Rule + "+before-rcpt"}
		}
		if v.Reason == event.ReasonRejected && m.Rule == "rejected-generic" && beforeMail(r.Command) {
			// A bare refusal of the connection or the greeting: nothing
			// but the client host has been presented yet.
			v = Verdict{Reason: event.ReasonBlocked, Rule: m.Rule + "+before-mail"}
		}
	} else if reason, ok := statusReason(status); ok {
		v = Verdict{Reason: reason, Rule: "status-" + status}
	} else if beforeMail(r.Command) && !temporary && (code/100 == 5 || strings.HasPrefix(status, "5.")) {
		// A permanent refusal of the connection, its greeting or EHLO
		// that names no cause: nothing but our host has been presented.
		v = Verdict{Reason: event.ReasonBlocked, Rule: "none+before-mail"}
	} else if code == 451 {
		// RFC 5321 section 4.2.3: "451 Requested action aborted: local
		// error in processing", the server's own trouble.
		v = Verdict{Reason: event.ReasonSystemError, Rule: "reply-451"}
	} else if action == "delayed" {
		v = Verdict{Reason: event.ReasonExpired, Rule: "dsn-action-delayed"}
	} else {
		v = Verdict{Reason: event.ReasonUndefined, Rule: "none"}
		if code == 0 && status == "" && action != "failed" {
			// Nothing says the delivery failed: no code, no status, no
			// failed action, no phrase. Do not guess.
			return Verdict{Class: event.ClassUnknown, Reason: event.ReasonUndefined, Rule: "none"}
		}
		if strings.TrimSpace(r.Text) != "" {
			// The vocabulary's own distinction (Sisimai): onhold is a
			// failure whose reply says something no rule reads a cause
			// from; undefined one with no reply to read at all.
			v.Reason = event.ReasonOnHold
		}
	}
	if v.Scope == "" {
		v.Scope = v.Reason.DefaultScope()
	}
	v.Status = status
	v.Class = classOf(v.Reason, temporary, action == "failed")
	return v
}

// beforeRcpt reports whether an SMTP command comes before any recipient is
// named in a transaction.
func beforeRcpt(command string) bool {
	switch command {
	case "MAIL", "EHLO", "HELO", "CONN":
		return true
	}
	return false
}

// beforeMail reports whether an SMTP command comes before the sender is
// named: the connection, its greeting, EHLO or HELO.
func beforeMail(command string) bool {
	switch command {
	case "EHLO", "HELO", "CONN":
		return true
	}
	return false
}

// classOf applies DESIGN.md: hard is userunknown, hostunknown, hasmoved and
// notaccept, when permanent; greylisting is its own class when temporary;
// every other failure is soft.
//
// final says the sending MTA gave up on the recipient (a DSN or log record
// with action "failed"): a temporary answer was then its last one, after
// the retries of its queue lifetime. A mailbox's own server that still
// called the mailbox unknown or moved at the last attempt ("450 4.1.1 User
// unknown in virtual alias table" five days on) has answered for good:
// hard, as the design's list has it. A temporary host or null-MX verdict
// stays soft even then: it comes from a DNS lookup that failed rather
// than answered (4.4.3, "try again"), and the design keeps notaccept hard
// only with a 5xx.
func classOf(reason event.Reason, temporary, final bool) event.Class {
	switch reason {
	case event.ReasonUserUnknown, event.ReasonHasMoved:
		if temporary && !final {
			return event.ClassSoft
		}
		return event.ClassHard
	case event.ReasonHostUnknown, event.ReasonNotAccept:
		if temporary {
			return event.ClassSoft
		}
		return event.ClassHard
	case event.ReasonGreylisting:
		if temporary {
			return event.ClassGreylist
		}
		return event.ClassSoft
	case event.ReasonDelivered:
		return event.ClassDelivered
	case event.ReasonFeedback:
		return event.ClassComplaint
	case event.ReasonVacation:
		return event.ClassAutoreply
	}
	return event.ClassSoft
}

// statusReason maps an enhanced status code (RFC 3463, and the IANA registry
// of RFC 5248) to the reason it alone implies. Generic codes (x.0.0, 5.5.0,
// 5.7.1 ...) imply nothing specific and return false.
func statusReason(status string) (event.Reason, bool) {
	if status == "" || len(status) < 5 {
		return "", false
	}
	sub := status[2:] // "1.1" of "5.1.1"
	if r, ok := statusReasons[sub]; ok {
		return r, true
	}
	return "", false
}

var statusReasons = map[string]event.Reason{
	"1.1":  event.ReasonUserUnknown,     // bad destination mailbox address
	"1.2":  event.ReasonHostUnknown,     // bad destination system address
	"1.3":  event.ReasonUserUnknown,     // bad destination mailbox address syntax
	"1.4":  event.ReasonUserUnknown,     // destination mailbox address ambiguous
	"1.6":  event.ReasonHasMoved,        // destination mailbox has moved
	"1.7":  event.ReasonRejected,        // bad sender's mailbox address syntax
	"1.8":  event.ReasonRejected,        // bad sender's system address
	"1.10": event.ReasonNotAccept,       // recipient address has null MX (RFC 7505)
	"2.1":  event.ReasonSuspend,         // mailbox disabled, not accepting messages
	"2.2":  event.ReasonMailboxFull,     // mailbox full
	"2.3":  event.ReasonEmailTooLarge,   // message length exceeds administrative limit
	"2.4":  event.ReasonMailerError,     // mailing list expansion problem
	"3.0":  event.ReasonSystemError,     // other or undefined mail system status
	"3.1":  event.ReasonSystemFull,      // mail system full
	"3.2":  event.ReasonNotAccept,       // system not accepting network messages
	"3.3":  event.ReasonSystemError,     // system not capable of selected features
	"3.4":  event.ReasonEmailTooLarge,   // message too big for system
	"3.5":  event.ReasonSystemError,     // system incorrectly configured
	"4.0":  event.ReasonNetworkError,    // other or undefined network or routing status
	"4.1":  event.ReasonNetworkError,    // no answer from host
	"4.2":  event.ReasonNetworkError,    // bad connection
	"4.3":  event.ReasonSystemError,     // directory server failure
	"4.4":  event.ReasonHostUnknown,     // unable to route
	"4.5":  event.ReasonNetworkError,    // mail system congestion
	"4.6":  event.ReasonNetworkError,    // routing loop detected
	"4.7":  event.ReasonExpired,         // delivery time expired
	"5.1":  event.ReasonSyntaxError,     // invalid command
	"5.2":  event.ReasonSyntaxError,     // syntax error
	"5.3":  event.ReasonRateLimited,     // too many recipients
	"5.4":  event.ReasonSyntaxError,     // invalid command arguments
	"5.5":  event.ReasonSyntaxError,     // wrong protocol version
	"5.6":  event.ReasonEmailTooLarge,   // authentication exchange line is too long
	"6.0":  event.ReasonContentError,    // other or undefined media error
	"6.1":  event.ReasonContentError,    // media not supported
	"6.2":  event.ReasonContentError,    // conversion required and prohibited
	"6.3":  event.ReasonContentError,    // conversion required but not supported
	"6.5":  event.ReasonContentError,    // conversion failed
	"6.6":  event.ReasonContentError,    // message content not available
	"6.7":  event.ReasonNotCompliantRFC, // non-ASCII addresses not permitted
	"7.2":  event.ReasonPolicyViolation, // mailing list expansion prohibited
	"7.3":  event.ReasonSecurityError,   // security conversion required but not possible
	"7.4":  event.ReasonSecurityError,   // security features not supported
	"7.5":  event.ReasonSecurityError,   // cryptographic failure
	"7.6":  event.ReasonSecurityError,   // cryptographic algorithm not supported
	"7.7":  event.ReasonSecurityError,   // message integrity failure
	"7.8":  event.ReasonSecurityError,   // authentication credentials invalid
	"7.9":  event.ReasonSecurityError,   // authentication mechanism is too weak
	"7.10": event.ReasonFailedSTARTTLS,  // encryption needed
	"7.11": event.ReasonFailedSTARTTLS,  // encryption required for requested authentication mechanism
	"7.13": event.ReasonSuspend,         // user account disabled
	"7.14": event.ReasonSecurityError,   // trust relationship required
	"7.15": event.ReasonSecurityError,   // priority level is too low
	"7.16": event.ReasonEmailTooLarge,   // message is too big for the specified priority
	"7.17": event.ReasonHasMoved,        // mailbox owner has changed
	"7.18": event.ReasonHasMoved,        // domain owner has changed
	"7.19": event.ReasonSecurityError,   // RRVS test cannot be completed
	"7.20": event.ReasonAuthFailure,     // no passing DKIM signature found
	"7.21": event.ReasonAuthFailure,     // no acceptable DKIM signature found
	"7.22": event.ReasonAuthFailure,     // no valid author-matched DKIM signature found
	"7.23": event.ReasonAuthFailure,     // SPF validation failed
	"7.24": event.ReasonAuthFailure,     // SPF validation error
	"7.25": event.ReasonRequirePTR,      // reverse DNS validation failed
	"7.26": event.ReasonAuthFailure,     // multiple authentication checks failed
	"7.27": event.ReasonRejected,        // sender address has null MX
	"7.28": event.ReasonRateLimited,     // mail flood detected
	"7.29": event.ReasonAuthFailure,     // ARC validation failure
	"7.30": event.ReasonAuthFailure,     // REQUIRETLS support required
}
