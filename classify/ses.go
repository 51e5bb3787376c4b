package classify

import (
	"encoding/json"
	"strings"

	"github.com/bouncer-mail/bouncer/event"
)

// maxNotificationBytes bounds the JSON an Amazon SES notification may hold;
// larger text is not read as one.
const maxNotificationBytes = 256 << 10

// sesNotification is the part of an Amazon SES event notification
// (https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html)
// bouncer reads. It arrives as the body of an email, either bare or wrapped
// in an Amazon SNS envelope whose Message field holds it as a string.
type sesNotification struct {
	NotificationType string `json:"notificationType"`
	EventType        string `json:"eventType"` // configuration-set events name it so
	Bounce           *struct {
		BounceType        string `json:"bounceType"` // Permanent, Transient, Undetermined
		BounceSubType     string `json:"bounceSubType"`
		ReportingMTA      string `json:"reportingMTA"`
		BouncedRecipients []struct {
			EmailAddress   string `json:"emailAddress"`
			Action         string `json:"action"`
			Status         string `json:"status"`
			DiagnosticCode string `json:"diagnosticCode"`
		} `json:"bouncedRecipients"`
	} `json:"bounce"`
	Complaint *struct {
		ComplainedRecipients []struct {
			EmailAddress string `json:"emailAddress"`
		} `json:"complainedRecipients"`
		ComplaintFeedbackType string `json:"complaintFeedbackType"`
		UserAgent             string `json:"userAgent"`
	} `json:"complaint"`
	Delivery *struct {
		Recipients   []string `json:"recipients"`
		SMTPResponse string   `json:"smtpResponse"`
		ReportingMTA string   `json:"reportingMTA"`
	} `json:"delivery"`
}

// snsEnvelope is an Amazon SNS notification carrying the SES one as a
// string.
type snsEnvelope struct {
	Type    string `json:"Type"`
	Message string `json:"Message"`
}

// sesJSON returns the SES notification in text, or nil when text holds none.
func sesJSON(text string) *sesNotification {
	if !strings.Contains(text, "notificationType") && !strings.Contains(text, "eventType") {
		return nil
	}
	i := strings.IndexByte(text, '{')
	if i < 0 {
		return nil
	}
	body := text[i:]
	if len(body) > maxNotificationBytes {
		return nil
	}
	// Sendmail and its kin break lines longer than SMTP allows with "!"
	// and a continuation line (RFC 5321 section 4.5.3.1.6 limits a line to
	// 1000 octets); a JSON string cannot hold a raw line break, so join
	// them back.
	body = strings.ReplaceAll(body, "!\n ", "")
	// The first JSON value; a signature or unsubscribe text may follow.
	var env snsEnvelope
	var raw json.RawMessage
	if err := json.NewDecoder(strings.NewReader(body)).Decode(&raw); err != nil {
		return nil
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil
	}
	body = string(raw)
	if env.Type == "Notification" && env.Message != "" {
		body = env.Message
	}
	var n sesNotification
	if err := json.Unmarshal([]byte(body), &n); err != nil {
		return nil
	}
	if n.NotificationType == "" {
		n.NotificationType = n.EventType
	}
	switch n.NotificationType {
	case "Bounce", "Complaint", "Delivery":
		return &n
	}
	return nil
}

// ses turns an Amazon SES notification (Bounce, Complaint or Delivery) into
// events; nil when the message is not one.
func (x *exam) ses() []event.Event {
	if !strings.Contains(x.m.Text, "notificationType") && !strings.Contains(x.m.Text, "eventType") {
		return nil
	}
	n := sesJSON(x.m.Text)
	if n == nil {
		return nil
	}
	var evs []event.Event
	switch n.NotificationType {
	case "Bounce":
		if n.Bounce == nil {
			return nil
		}
		reporting := strings.TrimSpace(strings.TrimPrefix(n.Bounce.ReportingMTA, "dsn;"))
		for _, r := range n.Bounce.BouncedRecipients {
			rcpt := normalizeAddress(r.EmailAddress)
			if rcpt == "" {
				continue
			}
			diag := strings.TrimSpace(r.DiagnosticCode)
			if i := strings.IndexByte(diag, ';'); i >= 0 && i < 12 {
				diag = strings.TrimSpace(diag[i+1:]) // "smtp; 550 ..."
			}
			action := strings.ToLower(r.Action)
			if action == "" {
				action = "failed"
			}
			status := r.Status
			if st := EnhancedStatus(diag); status == "" {
				status = st
			}
			code := ReplyCode(diag)
			remote := RemoteMTA(diag)
			provider := x.c.rules.Provider(domainOf(rcpt), remote)
			command := SMTPCommand(strings.ToLower(diag))
			v := x.c.Reply(Reply{Code: code, Status: status, Text: diag, Action: action, Command: command, Provider: provider})
			evs = append(evs, x.event(rcpt, v, code, action, command, diag, remote, reporting, provider, "amazonses"))
		}
	case "Complaint":
		if n.Complaint == nil {
			return nil
		}
		for _, r := range n.Complaint.ComplainedRecipients {
			rcpt := normalizeAddress(r.EmailAddress)
			if rcpt == "" {
				continue
			}
			diag := "feedback-type: " + n.Complaint.ComplaintFeedbackType
			if n.Complaint.UserAgent != "" {
				diag += "; user-agent: " + n.Complaint.UserAgent
			}
			evs = append(evs, event.Event{
				Recipient:  rcpt,
				Class:      event.ClassComplaint,
				Reason:     event.ReasonFeedback,
				Diagnostic: diag,
				Provider:   x.c.rules.Provider(domainOf(rcpt)),
				Parser:     "amazonses",
				Rule:       "amazonses-complaint",
				MessageID:  x.messageID,
			})
		}
	case "Delivery":
		if n.Delivery == nil {
			return nil
		}
		diag := n.Delivery.SMTPResponse
		for _, r := range n.Delivery.Recipients {
			rcpt := normalizeAddress(r)
			if rcpt == "" {
				continue
			}
			evs = append(evs, event.Event{
				Recipient:    rcpt,
				Class:        event.ClassDelivered,
				Reason:       event.ReasonDelivered,
				Status:       EnhancedStatus(diag),
				ReplyCode:    ReplyCode(diag),
				Action:       "delivered",
				Diagnostic:   diag,
				ReportingMTA: n.Delivery.ReportingMTA,
				Provider:     x.c.rules.Provider(domainOf(r)),
				Parser:       "amazonses",
				Rule:         "amazonses-delivery",
				MessageID:    x.messageID,
			})
		}
	}
	return evs
}
