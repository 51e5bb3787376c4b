package classify

import (
	"strings"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/rules"
)

// SyncReply is one synchronous answer the sending MTA got for a recipient,
// as its delivery log told it.
type SyncReply struct {
	Recipient string // lower-cased address
	MX        string // the host that answered, for the provider
	Action    string // failed, delayed or delivered
	Code      int
	Status    string
	Text      string
	Command   string
	MessageID string
}

// Sync classifies a sync reply exactly as it would an NDR's diagnostic, and
// returns its event: a "450 4.2.0 ... Greylisted" is greylist, a "554 5.7.1
// ... blocked using zen.spamhaus.org" soft with sender scope.
func (c *Classifier) Sync(s SyncReply) event.Event {
	provider := c.rules.Provider(domainOf(s.Recipient), s.MX)
	text := s.Text
	code, status := s.Code, s.Status
	if code == 0 {
		code = ReplyCode(text)
	}
	if status == "" {
		status = EnhancedStatus(text)
	}
	command := s.Command
	if command == "" {
		command = c.command(rules.LowerASCII(text))
	}
	v := c.Reply(Reply{Code: code, Status: status, Text: text, Action: s.Action, Command: command, Provider: provider})
	return event.Event{
		Recipient:   strings.ToLower(s.Recipient),
		Class:       v.Class,
		Reason:      v.Reason,
		Scope:       v.Scope,
		Status:      v.Status,
		ReplyCode:   code,
		Action:      s.Action,
		Diagnostic:  text,
		RemoteMTA:   s.MX,
		SMTPCommand: command,
		Provider:    provider,
		Parser:      "sync",
		Rule:        v.Rule,
		MessageID:   s.MessageID,
	}
}
