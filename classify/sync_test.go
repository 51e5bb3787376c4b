package classify

import (
	"testing"

	"github.com/bouncer-mail/bouncer/event"
)

func TestSync(t *testing.T) {
	tests := []struct {
		name   string
		in     SyncReply
		class  event.Class
		reason event.Reason
		scope  event.Scope
	}{
		{"postgrey", SyncReply{Recipient: "a@example.net", Action: "delayed", Code: 450, Status: "4.2.0", Text: "450 4.2.0 <a@example.net>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.net.html", Command: "RCPT"}, event.ClassGreylist, event.ReasonGreylisting, event.ScopeTransport},
		{"spamhaus", SyncReply{Recipient: "a@example.net", Action: "failed", Code: 554, Status: "5.7.1", Text: "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org"}, event.ClassSoft, event.ReasonBlocked, event.ScopeSender},
		{"gmail unknown", SyncReply{Recipient: "x@gmail.com", MX: "gmail-smtp-in.l.google.com", Action: "failed", Code: 550, Status: "5.1.1", Text: "The email account that you tried to reach does not exist.", Command: "RCPT"}, event.ClassHard, event.ReasonUserUnknown, event.ScopeRecipient},
		{"delivered", SyncReply{Recipient: "a@example.net", Action: "delivered", Code: 250, Text: "250 2.0.0 Ok: queued as 77DD"}, event.ClassDelivered, event.ReasonDelivered, event.ScopeNone},
		{"code from text", SyncReply{Recipient: "a@example.net", Action: "failed", Text: "552 5.2.2 mailbox full"}, event.ClassSoft, event.ReasonMailboxFull, event.ScopeRecipient},
		{"user unknown, log names no command", SyncReply{Recipient: "a@example.net", Action: "failed", Code: 550, Text: "550 <a@example.net>: User unknown"}, event.ClassSoft, event.ReasonFiltered, event.ScopeRecipient},
		{"user unknown, wording places it at RCPT", SyncReply{Recipient: "a@example.net", Action: "failed", Code: 550, Text: "550 <a@example.net>: Recipient address rejected: User unknown in local recipient table"}, event.ClassHard, event.ReasonUserUnknown, event.ScopeRecipient},
	}
	for _, tt := range tests {
		e := testClassifier.Sync(tt.in)
		if e.Class != tt.class || e.Reason != tt.reason || e.Scope != tt.scope {
			t.Errorf("%s: %s/%s/%s (rule %s), want %s/%s/%s", tt.name, e.Class, e.Reason, e.Scope, e.Rule, tt.class, tt.reason, tt.scope)
		}
		if e.Parser != "sync" || e.Recipient != tt.in.Recipient {
			t.Errorf("%s: parser %q recipient %q", tt.name, e.Parser, e.Recipient)
		}
	}
	if p := testClassifier.Sync(SyncReply{Recipient: "x@example.com", MX: "aspmx.l.google.com", Action: "failed", Code: 550}).Provider; p != "gmail" {
		t.Errorf("provider from the MX = %q, want gmail", p)
	}
}
