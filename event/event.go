// Package event defines the record every part of bouncer exchanges: one
// Event per recipient of a report or sync reply, with its Class, Reason and
// Scope. The enums are closed sets; their String form is the JSON value and
// the Prometheus label value.
package event

// Class is the coarse outcome of a delivery attempt as told by a report.
type Class string

// The classes of DESIGN.md "Classification".
const (
	ClassHard      Class = "hard"      // permanent failure of the address
	ClassSoft      Class = "soft"      // any other failure
	ClassGreylist  Class = "greylist"  // a 4xx greylisting answer
	ClassComplaint Class = "complaint" // an ARF feedback report (RFC 5965)
	ClassAutoreply Class = "autoreply" // an auto-reply (RFC 3834, vacation texts)
	ClassDelivered Class = "delivered" // a positive DSN: delivered, relayed, expanded
	ClassUnknown   Class = "unknown"   // a report was read but its meaning was not
)

// Classes lists every Class, in a stable order (for pre-created metrics).
var Classes = []Class{ClassHard, ClassSoft, ClassGreylist, ClassComplaint, ClassAutoreply, ClassDelivered, ClassUnknown}

// IsFailure reports whether c is a failed or deferred delivery.
func (c Class) IsFailure() bool {
	return c == ClassHard || c == ClassSoft || c == ClassGreylist
}

func (c Class) String() string { return string(c) }

// Scope tells whose problem a failure is.
type Scope string

// Only ScopeRecipient failures ever suppress a recipient.
const (
	ScopeNone      Scope = ""          // not a failure
	ScopeRecipient Scope = "recipient" // the address is the problem
	ScopeSender    Scope = "sender"    // our side is the problem: reputation, content, auth, policy
	ScopeTransport Scope = "transport" // the path between is the problem: DNS, network, TLS, timeouts
)

// Scopes lists every non-empty Scope.
var Scopes = []Scope{ScopeRecipient, ScopeSender, ScopeTransport}

func (s Scope) String() string { return string(s) }
