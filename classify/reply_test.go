package classify

import (
	"testing"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/rules"
)

var testClassifier = New(rules.MustDefault())

// TestReply is the table of sync replies and diagnostics every part of
// bouncer relies on: each row is a real-world answer and what it means.
func TestReply(t *testing.T) {
	tests := []struct {
		name   string
		in     Reply
		class  event.Class
		reason event.Reason
		scope  event.Scope
	}{
		{"user unknown", Reply{Code: 550, Status: "5.1.1", Text: "550 5.1.1 <a@example.com>: Recipient address rejected: User unknown in virtual mailbox table"}, event.ClassHard, event.ReasonUserUnknown, event.ScopeRecipient},
		{"gmail does not exist", Reply{Text: "550-5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address"}, event.ClassHard, event.ReasonUserUnknown, event.ScopeRecipient},
		{"bare 5.1.1 no text", Reply{Status: "5.1.1"}, event.ClassHard, event.ReasonUserUnknown, event.ScopeRecipient},
		{"full mailbox with 550", Reply{Code: 550, Status: "5.1.1", Text: "550 5.1.1 Mailbox is full"}, event.ClassSoft, event.ReasonMailboxFull, event.ScopeRecipient},
		{"gmail over quota", Reply{Text: "452-4.2.2 The email account that you tried to reach is over quota."}, event.ClassSoft, event.ReasonMailboxFull, event.ScopeRecipient},
		{"postgrey", Reply{Text: "450 4.2.0 <a@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html"}, event.ClassGreylist, event.ReasonGreylisting, event.ScopeTransport},
		{"greylisting in action", Reply{Text: "451 4.7.1 Greylisting in action, please come back later"}, event.ClassGreylist, event.ReasonGreylisting, event.ScopeTransport},
		{"bare try again later 451", Reply{Text: "451 4.7.1 Try again later"}, event.ClassGreylist, event.ReasonGreylisting, event.ScopeTransport},
		{"spamhaus", Reply{Text: "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org"}, event.ClassSoft, event.ReasonBlocked, event.ScopeSender},
		{"does not exist after MAIL FROM is the sender", Reply{Code: 553, Status: "5.1.0", Text: "SMTP error from remote mail server after MAIL FROM:<a@example.com> SIZE=1022: 553 5.1.0 example.com does not exist", Command: "MAIL"}, event.ClassSoft, event.ReasonRejected, event.ScopeSender},
		{"dma dns lookup failure", Reply{Action: "failed", Text: "DNS lookup failure: host mail.example.invalid not found"}, event.ClassHard, event.ReasonHostUnknown, event.ScopeRecipient},
		{"relay without authentication", Reply{Text: "550-Please turn on SMTP Authentication in your mail client. 550-mx.example.net [192.0.2.1]:1234 is not permitted to 550 relay through this server without authentication."}, event.ClassSoft, event.ReasonSecurityError, event.ScopeSender},
		{"continuation lines joined", Reply{Text: "550-5.7.1 [192.0.2.1 13] Messages with multiple 550-5.7.1 addresses in From: header are not accepted."}, event.ClassSoft, event.ReasonNotCompliantRFC, event.ScopeSender},
		{"relay denied", Reply{Text: "554 5.7.1 <a@example.org>: Relay access denied"}, event.ClassSoft, event.ReasonNoRelaying, event.ScopeSender},
		{"dmarc", Reply{Text: "550-5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM."}, event.ClassSoft, event.ReasonAuthFailure, event.ScopeSender},
		{"rate limited", Reply{Text: "421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address."}, event.ClassSoft, event.ReasonRateLimited, event.ScopeSender},
		{"too large", Reply{Text: "552 5.3.4 Message size exceeds fixed limit"}, event.ClassSoft, event.ReasonEmailTooLarge, event.ScopeSender},
		{"host unknown", Reply{Text: "Host or domain name not found. Name service error for name=example.invalid type=A: Host not found"}, event.ClassHard, event.ReasonHostUnknown, event.ScopeRecipient},
		{"moved", Reply{Status: "5.1.6", Text: "550 5.1.6 Recipient has moved"}, event.ClassHard, event.ReasonHasMoved, event.ScopeRecipient},
		{"expired", Reply{Status: "4.4.7", Action: "delayed"}, event.ClassSoft, event.ReasonExpired, event.ScopeTransport},
		{"delivered dsn", Reply{Status: "2.0.0", Action: "delivered"}, event.ClassDelivered, event.ReasonDelivered, event.ScopeNone},
		{"250 sync", Reply{Code: 250, Text: "250 2.0.0 OK"}, event.ClassDelivered, event.ReasonDelivered, event.ScopeNone},
		{"temporary user unknown is soft", Reply{Code: 450, Status: "4.1.1", Text: "450 4.1.1 <a@example.com>: Recipient address rejected: User unknown"}, event.ClassSoft, event.ReasonUserUnknown, event.ScopeRecipient},
		{"null mx", Reply{Code: 556, Status: "5.1.10", Text: "556 5.1.10 Recipient address has null MX"}, event.ClassHard, event.ReasonNotAccept, event.ScopeRecipient},
		{"user unknown after DATA is a filter", Reply{Code: 550, Text: "550 Unknown user", Command: "DATA"}, event.ClassSoft, event.ReasonFiltered, event.ScopeSender},
		{"explicit 5.1.1 after DATA stays", Reply{Code: 550, Status: "5.1.1", Text: "550 5.1.1 User unknown", Command: "DATA"}, event.ClassHard, event.ReasonUserUnknown, event.ScopeRecipient},
		{"yahoo dd after DATA stays", Reply{Code: 554, Text: "554 delivery error: dd This user doesn't have a yahoo.com account", Command: "DATA"}, event.ClassHard, event.ReasonUserUnknown, event.ScopeRecipient},
		{"failed DSN with a 2xx-looking number is not delivered", Reply{Status: "5.3.0", Action: "failed", Text: "554 5.3.0 unknown mailer error 255"}, event.ClassSoft, event.ReasonMailerError, event.ScopeTransport},
		{"nothing known", Reply{Code: 550}, event.ClassSoft, event.ReasonUndefined, event.ScopeTransport},
		{"failed, nothing else known", Reply{Action: "failed", Text: "something went wrong"}, event.ClassSoft, event.ReasonUndefined, event.ScopeTransport},
		{"no evidence of failure", Reply{Text: "thank you for your message"}, event.ClassUnknown, event.ReasonUndefined, event.ScopeNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := testClassifier.Reply(tt.in)
			if got.Class != tt.class || got.Reason != tt.reason || got.Scope != tt.scope {
				t.Errorf("Reply(%+v) = %s/%s/%s (rule %s), want %s/%s/%s", tt.in, got.Class, got.Reason, got.Scope, got.Rule, tt.class, tt.reason, tt.scope)
			}
		})
	}
}

func TestClassOf(t *testing.T) {
	for _, r := range event.Reasons {
		for _, temp := range []bool{false, true} {
			got := classOf(r, temp)
			var want event.Class
			switch {
			case r == event.ReasonDelivered:
				want = event.ClassDelivered
			case r == event.ReasonFeedback:
				want = event.ClassComplaint
			case r == event.ReasonVacation:
				want = event.ClassAutoreply
			case r == event.ReasonGreylisting && temp:
				want = event.ClassGreylist
			case !temp && (r == event.ReasonUserUnknown || r == event.ReasonHostUnknown || r == event.ReasonHasMoved || r == event.ReasonNotAccept):
				want = event.ClassHard
			default:
				want = event.ClassSoft
			}
			if got != want {
				t.Errorf("classOf(%s, temporary=%v) = %s, want %s", r, temp, got, want)
			}
		}
	}
}

func TestStatusReason(t *testing.T) {
	tests := []struct {
		status string
		want   event.Reason
		ok     bool
	}{
		{"", "", false},
		{"5.1.1", event.ReasonUserUnknown, true},
		{"5.1.0", "", false}, // other address status: sender or recipient
		{"5.2.0", "", false},
		{"5.5.0", "", false},
		{"4.1.1", event.ReasonUserUnknown, true},
		{"5.1.2", event.ReasonHostUnknown, true},
		{"5.1.6", event.ReasonHasMoved, true},
		{"5.1.10", event.ReasonNotAccept, true},
		{"5.2.1", event.ReasonSuspend, true},
		{"5.2.2", event.ReasonMailboxFull, true},
		{"5.3.4", event.ReasonEmailTooLarge, true},
		{"4.4.7", event.ReasonExpired, true},
		{"5.7.1", "", false}, // generic: the text must say more
		{"5.0.0", "", false},
		{"5.7.26", event.ReasonAuthFailure, true},
		{"5.7.25", event.ReasonRequirePTR, true},
		{"4.7.28", event.ReasonRateLimited, true},
		{"5.4.316", "", false},
	}
	for _, tt := range tests {
		got, ok := statusReason(tt.status)
		if got != tt.want || ok != tt.ok {
			t.Errorf("statusReason(%q) = %q, %v; want %q, %v", tt.status, got, ok, tt.want, tt.ok)
		}
	}
	for sub, r := range statusReasons {
		if !r.Valid() {
			t.Errorf("statusReasons[%q] = %q, not in the vocabulary", sub, r)
		}
	}
}
