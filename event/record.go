package event

// Event is one recipient's result as read from one report. Its JSON form is
// the `bouncer classify` contract of DESIGN.md; field names are fixed.
type Event struct {
	Recipient    string `json:"recipient"`
	Class        Class  `json:"class"`
	Reason       Reason `json:"reason"`
	Scope        Scope  `json:"scope"`
	Status       string `json:"status"`     // enhanced status, "5.1.1"; "" when none
	ReplyCode    int    `json:"reply_code"` // basic SMTP reply code; 0 when none
	Action       string `json:"action"`     // DSN action: failed, delayed, delivered, relayed, expanded
	Diagnostic   string `json:"diagnostic"`
	RemoteMTA    string `json:"remote_mta"`
	ReportingMTA string `json:"reporting_mta"`
	SMTPCommand  string `json:"smtp_command"` // CONN, EHLO, HELO, MAIL, RCPT, DATA, "" when unknown
	Provider     string `json:"provider"`
	Parser       string `json:"parser"` // "rfc3464", "arf", "rfc3834" or a rule set's name
	Rule         string `json:"rule"`   // the rule that decided reason and class
	MessageID    string `json:"message_id"`
}
