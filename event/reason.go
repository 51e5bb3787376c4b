package event

// Reason is the precise cause of a report, in the lowercase vocabulary of
// Sisimai (https://libsisimai.org/en/reason/) plus "greylisting".
type Reason string

// The reasons of DESIGN.md "Classification".
const (
	ReasonUserUnknown     Reason = "userunknown"
	ReasonHostUnknown     Reason = "hostunknown"
	ReasonHasMoved        Reason = "hasmoved"
	ReasonNotAccept       Reason = "notaccept"
	ReasonMailboxFull     Reason = "mailboxfull"
	ReasonSuspend         Reason = "suspend"
	ReasonEmailTooLarge   Reason = "emailtoolarge"
	ReasonExpired         Reason = "expired"
	ReasonBlocked         Reason = "blocked"
	ReasonBadReputation   Reason = "badreputation"
	ReasonRequirePTR      Reason = "requireptr"
	ReasonSpamDetected    Reason = "spamdetected"
	ReasonVirusDetected   Reason = "virusdetected"
	ReasonContentError    Reason = "contenterror"
	ReasonFiltered        Reason = "filtered"
	ReasonNotCompliantRFC Reason = "notcompliantrfc"
	ReasonPolicyViolation Reason = "policyviolation"
	ReasonAuthFailure     Reason = "authfailure"
	ReasonRateLimited     Reason = "ratelimited"
	ReasonNoRelaying      Reason = "norelaying"
	ReasonRejected        Reason = "rejected"
	ReasonSecurityError   Reason = "securityerror"
	ReasonSyntaxError     Reason = "syntaxerror"
	ReasonSystemError     Reason = "systemerror"
	ReasonSystemFull      Reason = "systemfull"
	ReasonNetworkError    Reason = "networkerror"
	ReasonMailerError     Reason = "mailererror"
	ReasonFailedSTARTTLS  Reason = "failedstarttls"
	ReasonSuppressed      Reason = "suppressed"
	ReasonOnHold          Reason = "onhold"
	ReasonUndefined       Reason = "undefined"
	ReasonDelivered       Reason = "delivered"
	ReasonFeedback        Reason = "feedback"
	ReasonVacation        Reason = "vacation"
	ReasonGreylisting     Reason = "greylisting"
)

// Reasons lists the whole vocabulary, in a stable order.
var Reasons = []Reason{
	ReasonUserUnknown, ReasonHostUnknown, ReasonHasMoved, ReasonNotAccept,
	ReasonMailboxFull, ReasonSuspend, ReasonEmailTooLarge, ReasonExpired,
	ReasonBlocked, ReasonBadReputation, ReasonRequirePTR, ReasonSpamDetected,
	ReasonVirusDetected, ReasonContentError, ReasonFiltered, ReasonNotCompliantRFC,
	ReasonPolicyViolation, ReasonAuthFailure, ReasonRateLimited, ReasonNoRelaying,
	ReasonRejected, ReasonSecurityError, ReasonSyntaxError, ReasonSystemError,
	ReasonSystemFull, ReasonNetworkError, ReasonMailerError, ReasonFailedSTARTTLS,
	ReasonSuppressed, ReasonOnHold, ReasonUndefined, ReasonDelivered,
	ReasonFeedback, ReasonVacation, ReasonGreylisting,
}

var reasonSet = func() map[Reason]bool {
	m := make(map[Reason]bool, len(Reasons))
	for _, r := range Reasons {
		m[r] = true
	}
	return m
}()

// Valid reports whether r is in the vocabulary.
func (r Reason) Valid() bool { return reasonSet[r] }

func (r Reason) String() string { return string(r) }

// DefaultScope is the scope a failure with this reason has unless the
// evidence says otherwise.
func (r Reason) DefaultScope() Scope {
	switch r {
	case ReasonUserUnknown, ReasonHostUnknown, ReasonHasMoved, ReasonNotAccept,
		ReasonMailboxFull, ReasonSuspend, ReasonSuppressed:
		return ScopeRecipient
	case ReasonExpired, ReasonNetworkError, ReasonFailedSTARTTLS, ReasonSystemError,
		ReasonSystemFull, ReasonMailerError, ReasonOnHold, ReasonUndefined, ReasonGreylisting:
		return ScopeTransport
	case ReasonDelivered, ReasonFeedback, ReasonVacation:
		return ScopeNone
	default:
		return ScopeSender
	}
}
