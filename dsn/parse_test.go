package dsn

import (
	"reflect"
	"strings"
	"testing"
)

// Samples are written for these tests (RFC 3464 appendix-style, with the
// oddities real MTAs produce); none is copied from a corpus.

const postfixDSN = `Return-Path: <>
Received: by mx.example.net (Postfix)
	id 3F1A82C0123; Tue, 10 Jun 2025 10:00:01 +0000 (UTC)
Date: Tue, 10 Jun 2025 10:00:01 +0000 (UTC)
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
Subject: =?UTF-8?Q?Undelivered_Mail_Returned_to_Sender?=
To: bounces+abc@bounces.example.com
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="3F1A82C0123.1749549601/mx.example.net"
Message-Id: <20250610100001.3F1A82C0123@mx.example.net>

This is a MIME-encapsulated message.

--3F1A82C0123.1749549601/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<User@Example.org>: host mx.example.org[192.0.2.1] said: 550 5.1.1
    <User@Example.org>: Recipient address rejected: User unknown (in reply
    to RCPT TO command)

--3F1A82C0123.1749549601/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: 3F1A82C0123
Original-Envelope-Id: env-42
Arrival-Date: Tue, 10 Jun 2025 10:00:00 +0000 (UTC)

Final-Recipient: rfc822; <User@Example.org>
Original-Recipient: rfc822;user@example.org
Action: failed (permanent)
Status: 5.1.1 (bad destination mailbox)
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; 550 5.1.1 <User@Example.org>: Recipient address
    rejected: User unknown   (in reply to RCPT TO command)

Final-Recipient: RFC822; second@example.org
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx2.example.org[192.0.2.2]:25:
    Connection timed out
Will-Retry-Until: Thu, 12 Jun 2025 10:00:00 +0000 (UTC)
X-Custom: kept

--3F1A82C0123.1749549601/mx.example.net
Content-Description: Undelivered Message
Content-Type: message/rfc822

Return-Path: <bounces+abc@bounces.example.com>
Message-ID: <campaign-7.1234@sender.example.com>
X-Envelope-Id: env-42
From: "Sender" <news@sender.example.com>
To: User@Example.org
Subject: =?ISO-8859-1?Q?Caf=E9_news?=
Date: Tue, 10 Jun 2025 09:59:59 +0000

Hello, this is the newsletter body and must not appear in Text.

--3F1A82C0123.1749549601/mx.example.net--
`

func mustParse(t *testing.T, s string) *Message {
	t.Helper()
	m, err := ParseBytes([]byte(s))
	if err != nil {
		t.Fatalf("ParseBytes: %v", err)
	}
	return m
}

func TestParsePostfix(t *testing.T) {
	m := mustParse(t, postfixDSN)
	if m.ReportType != "delivery-status" {
		t.Errorf("ReportType = %q, want delivery-status", m.ReportType)
	}
	if got := m.Get("subject"); got != "Undelivered Mail Returned to Sender" {
		t.Errorf("Subject = %q (RFC 2047 not decoded?)", got)
	}
	if got := m.Get("Received"); got != "by mx.example.net (Postfix) id 3F1A82C0123; Tue, 10 Jun 2025 10:00:01 +0000 (UTC)" {
		t.Errorf("Received unfolded = %q", got)
	}
	if len(m.Reports) != 1 {
		t.Fatalf("got %d reports, want 1", len(m.Reports))
	}
	r := m.Reports[0]
	if r.ReportingMTA != "mx.example.net" || r.OriginalEnvelopeID != "env-42" ||
		r.ArrivalDate != "Tue, 10 Jun 2025 10:00:00 +0000 (UTC)" || r.Global {
		t.Errorf("per-message fields = %+v", r)
	}
	if want := []Field{{"X-Postfix-Queue-ID", "3F1A82C0123"}}; !reflect.DeepEqual(r.Extra, want) {
		t.Errorf("Report.Extra = %v, want %v", r.Extra, want)
	}
	if len(r.Recipients) != 2 {
		t.Fatalf("got %d recipients, want 2", len(r.Recipients))
	}
	want0 := Recipient{
		OriginalRecipient:     "user@example.org",
		OriginalRecipientType: "rfc822",
		FinalRecipient:        "User@Example.org",
		FinalRecipientType:    "rfc822",
		Action:                ActionFailed,
		Status:                Status{5, 1, 1},
		RawStatus:             "5.1.1 (bad destination mailbox)",
		RemoteMTA:             "mx.example.org",
		DiagnosticType:        "smtp",
		DiagnosticCode:        "550 5.1.1 <User@Example.org>: Recipient address rejected: User unknown (in reply to RCPT TO command)",
	}
	if !reflect.DeepEqual(r.Recipients[0], want0) {
		t.Errorf("recipient 0 =\n%+v\nwant\n%+v", r.Recipients[0], want0)
	}
	want1 := Recipient{
		FinalRecipient:     "second@example.org",
		FinalRecipientType: "rfc822",
		Action:             ActionDelayed,
		Status:             Status{4, 4, 1},
		RawStatus:          "4.4.1",
		DiagnosticType:     "x-postfix",
		DiagnosticCode:     "connect to mx2.example.org[192.0.2.2]:25: Connection timed out",
		WillRetryUntil:     "Thu, 12 Jun 2025 10:00:00 +0000 (UTC)",
		Extra:              []Field{{"X-Custom", "kept"}},
	}
	if !reflect.DeepEqual(r.Recipients[1], want1) {
		t.Errorf("recipient 1 =\n%+v\nwant\n%+v", r.Recipients[1], want1)
	}
	o := m.Original
	if o == nil {
		t.Fatal("Original is nil")
	}
	if o.MessageID != "campaign-7.1234@sender.example.com" || o.EnvelopeID != "env-42" ||
		o.ReturnPath != "bounces+abc@bounces.example.com" || o.Subject != "Café news" ||
		o.To != "User@Example.org" || o.From != `"Sender" <news@sender.example.com>` ||
		o.Date != "Tue, 10 Jun 2025 09:59:59 +0000" || len(o.Headers) != 7 {
		t.Errorf("Original = %+v", o)
	}
	if !strings.Contains(m.Text, "550 5.1.1\n    <User@Example.org>: Recipient address rejected") {
		t.Errorf("Text misses the notification: %q", m.Text)
	}
	if strings.Contains(m.Text, "newsletter body") || strings.Contains(m.Text, "Reporting-MTA") {
		t.Errorf("Text includes the original or the report: %q", m.Text)
	}
	if len(m.Anomalies) != 0 {
		t.Errorf("Anomalies = %q, want none", m.Anomalies)
	}
}

// TestLineEndings parses the same message with LF, CRLF and CR line
// endings: the results must be identical.
func TestLineEndings(t *testing.T) {
	lf := mustParse(t, postfixDSN)
	for name, eol := range map[string]string{"CRLF": "\r\n", "CR": "\r"} {
		m := mustParse(t, strings.ReplaceAll(postfixDSN, "\n", eol))
		if !reflect.DeepEqual(m, lf) {
			t.Errorf("%s: result differs from LF:\n%+v\nwant\n%+v", name, m, lf)
		}
	}
}

func TestFoldingAndGroups(t *testing.T) {
	// No blank line between the per-message and the first recipient group,
	// none between two recipients, lower-case names, indented continuation
	// with tabs, a comment in the address, unknown Action, junk Status.
	msg := "From: postmaster@example.net\nContent-Type: message/delivery-status\n\n" +
		"reporting-mta: DNS; relay.example.net (relay)\n" +
		"final-recipient: rfc822; a@example.org (first)\n" +
		"action: FAILED\n" +
		"status: 5.2.2\n" +
		"diagnostic-code: smtp;552-5.2.2 The email account that you tried to reach is\n" +
		"\t552-5.2.2 over quota.\n" +
		"\t552 5.2.2 Please retry later.\n" +
		"final-recipient: b@example.org\n" +
		"action: bounced\n" +
		"status: five\n" +
		"\n\n\n" +
		"Original-Recipient: rfc822; c@example.org\n" +
		"Action: failed\n" +
		"Status: 5.0.0\n"
	m := mustParse(t, msg)
	if len(m.Reports) != 1 {
		t.Fatalf("got %d reports, want 1", len(m.Reports))
	}
	r := m.Reports[0]
	if r.ReportingMTA != "relay.example.net" {
		t.Errorf("ReportingMTA = %q", r.ReportingMTA)
	}
	if len(r.Recipients) != 3 {
		t.Fatalf("got %d recipients, want 3: %+v", len(r.Recipients), r.Recipients)
	}
	a, b, c := r.Recipients[0], r.Recipients[1], r.Recipients[2]
	if a.FinalRecipient != "a@example.org" || a.Action != ActionFailed || a.Status != (Status{5, 2, 2}) ||
		a.DiagnosticCode != "552-5.2.2 The email account that you tried to reach is 552-5.2.2 over quota. 552 5.2.2 Please retry later." {
		t.Errorf("recipient a = %+v", a)
	}
	if b.FinalRecipient != "b@example.org" || b.FinalRecipientType != "" || b.Action != "bounced" ||
		!b.Status.IsZero() || b.RawStatus != "five" {
		t.Errorf("recipient b = %+v", b)
	}
	if c.FinalRecipient != "c@example.org" || c.FinalRecipientType != "rfc822" || c.OriginalRecipient != "c@example.org" {
		t.Errorf("recipient c = %+v", c)
	}
	for _, want := range []string{
		"per-recipient groups without a blank line between them",
		`final-recipient without address type: "b@example.org"`,
		`unknown Action "bounced"`,
		`unparsable Status "five"`,
		"recipient without Final-Recipient; Original-Recipient used",
	} {
		if !hasAnomaly(m, want) {
			t.Errorf("anomaly %q missing from %q", want, m.Anomalies)
		}
	}
}

func hasAnomaly(m *Message, s string) bool {
	for _, a := range m.Anomalies {
		if strings.Contains(a, s) {
			return true
		}
	}
	return false
}

func TestDuplicateGroupsKept(t *testing.T) {
	group := "Final-Recipient: rfc822; dup@example.org\nAction: failed\nStatus: 5.1.1\n"
	m := mustParse(t, "Content-Type: message/delivery-status\n\nReporting-MTA: dns; x.example\n\n"+group+"\n"+group)
	if n := len(m.Reports[0].Recipients); n != 2 {
		t.Errorf("got %d recipients, want 2 (duplicates kept)", n)
	}
}

func TestGlobalDSN(t *testing.T) {
	msg := "From: postmaster@example.net\n" +
		"Content-Type: multipart/report; report-type=global-delivery-status; boundary=b\n\n" +
		"--b\nContent-Type: text/plain; charset=utf-8\n\nÉchec de remise\n" +
		"--b\nContent-Type: message/global-delivery-status\n\n" +
		"Reporting-MTA: dns; mx.example.net\n\n" +
		"Original-Recipient: utf-8; ren\\x{E9}@example.fr\n" +
		"Final-Recipient: utf-8; <用户@例子.广告>\n" +
		"Action: failed\nStatus: 5.1.1\n" +
		"--b\nContent-Type: message/global\n\n" +
		"Message-ID: <g@example.net>\nSubject: =?utf-8?B?5pel5pys6Kqe?=\n\nbody\n" +
		"--b--\n"
	m := mustParse(t, msg)
	if m.ReportType != "global-delivery-status" {
		t.Errorf("ReportType = %q", m.ReportType)
	}
	if len(m.Reports) != 1 || !m.Reports[0].Global || len(m.Reports[0].Recipients) != 1 {
		t.Fatalf("Reports = %+v", m.Reports)
	}
	rc := m.Reports[0].Recipients[0]
	if rc.OriginalRecipient != "rené@example.fr" || rc.FinalRecipient != "用户@例子.广告" || rc.FinalRecipientType != "utf-8" {
		t.Errorf("recipient = %+v", rc)
	}
	if m.Original == nil || m.Original.MessageID != "g@example.net" || m.Original.Subject != "日本語" {
		t.Errorf("Original = %+v", m.Original)
	}
	if m.Text != "Échec de remise\n" {
		t.Errorf("Text = %q", m.Text)
	}
}

func TestARF(t *testing.T) {
	msg := `From: <abuse@isp.example>
To: <fbl@sender.example.com>
Subject: FW: Earn money
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
192.0.2.1 on Thu, 8 Mar 2005 14:00:00 EDT.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: Abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <somespammer@example.net>
Original-Rcpt-To: <user@example.com>
Original-Rcpt-To: <user2@example.com>
Removal-Recipient: user3@example.com
Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT
Reporting-MTA: dns; mail.example.com
Source-IP: 192.0.2.1
Authentication-Results: mail.example.com; spf=fail smtp.mail=somespammer@example.com

--part1_13d.2e68ed54_boundary
Content-Type: message/rfc822
Content-Disposition: inline

From: <somespammer@example.net>
Received: from mailserver.example.net (mailserver.example.net [192.0.2.1])
        by example.com with ESMTP id M63d4137594e46; Thu, 08 Mar 2005 14:00:00 -0400
To: <Undisclosed Recipients>
Subject: Earn money
Date: Thu, 02 Sep 2004 12:31:03 -0500
Message-ID: <8787KJKJ3K4J3K4J3K4J3.mail@example.net>

Spam Spam Spam

--part1_13d.2e68ed54_boundary--
`
	m := mustParse(t, msg)
	if m.ReportType != "feedback-report" || len(m.Reports) != 0 {
		t.Errorf("ReportType = %q, %d reports", m.ReportType, len(m.Reports))
	}
	f := m.Feedback
	if f == nil {
		t.Fatal("Feedback is nil")
	}
	want := Feedback{
		FeedbackType:     "abuse",
		UserAgent:        "SomeGenerator/1.0",
		Version:          "1",
		OriginalMailFrom: "somespammer@example.net",
		OriginalRcptTo:   []string{"user@example.com", "user2@example.com", "user3@example.com"},
		ArrivalDate:      "Thu, 8 Mar 2005 14:00:00 EDT",
		SourceIP:         "192.0.2.1",
		ReportingMTA:     "mail.example.com",
		Extra:            []Field{{"Authentication-Results", "mail.example.com; spf=fail smtp.mail=somespammer@example.com"}},
	}
	if !reflect.DeepEqual(*f, want) {
		t.Errorf("Feedback =\n%+v\nwant\n%+v", *f, want)
	}
	if m.Original == nil || m.Original.MessageID != "8787KJKJ3K4J3K4J3K4J3.mail@example.net" {
		t.Errorf("Original = %+v", m.Original)
	}
	if strings.Contains(m.Text, "Spam") || !strings.Contains(m.Text, "email abuse report") {
		t.Errorf("Text = %q", m.Text)
	}
}

func TestISO2022JP(t *testing.T) {
	msg := "From: MAILER-DAEMON@example.jp\n" +
		"Subject: =?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?=\n" +
		"Content-Type: text/plain; charset=ISO-2022-JP\nContent-Transfer-Encoding: 7bit\n\n" +
		"\x1b$BG[?.$G$-$^$;$s$G$7$?\x1b(B\n550 5.1.1 unknown user\n"
	m := mustParse(t, msg)
	if want := "配信できませんでした\n550 5.1.1 unknown user\n"; m.Text != want {
		t.Errorf("Text = %q, want %q", m.Text, want)
	}
	if got := m.Get("Subject"); got != "テスト" {
		t.Errorf("Subject = %q, want テスト", got)
	}
	if len(m.Anomalies) != 0 {
		t.Errorf("Anomalies = %q", m.Anomalies)
	}
}

func TestISO8859Base64(t *testing.T) {
	msg := "From: a@example.org\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: base64\n\nyWNoZWMgZGUgcmVtaXNl\n"
	if m := mustParse(t, msg); m.Text != "Échec de remise\n" {
		t.Errorf("Text = %q", m.Text)
	}
}

func TestInvalidBase64(t *testing.T) {
	msg := "From: a@example.org\nContent-Type: multipart/mixed; boundary=b\n\n" +
		"--b\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\naGVsbG8g*d29y#bGQ=\n" +
		"--b\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n%%%%not base64 at all%%%%\n" +
		"--b--\n"
	m, err := ParseBytes([]byte(msg))
	if err != nil {
		t.Fatalf("ParseBytes: %v (want anomalies, not an error)", err)
	}
	if m.Text != "hello world\n" {
		t.Errorf("Text = %q", m.Text)
	}
	if !hasAnomaly(m, "invalid base64") || !hasAnomaly(m, "not base64") {
		t.Errorf("Anomalies = %q", m.Anomalies)
	}
}

func TestUnknownCharset(t *testing.T) {
	msg := "From: a@example.org\nSubject: =?x-klingon?Q?Qapla=27?=\nContent-Type: text/plain; charset=x-klingon\n\nreadable text\n"
	m, err := ParseBytes([]byte(msg))
	if err != nil {
		t.Fatalf("ParseBytes: %v", err)
	}
	if m.Text != "readable text\n" {
		t.Errorf("Text = %q", m.Text)
	}
	if !hasAnomaly(m, `unknown charset "x-klingon"`) {
		t.Errorf("Anomalies = %q", m.Anomalies)
	}
	if got := m.Get("Subject"); got != "=?x-klingon?Q?Qapla=27?=" || !hasAnomaly(m, "undecodable encoded word") {
		t.Errorf("Subject = %q, anomalies %q; want the raw value", got, m.Anomalies)
	}
}

func TestTruncatedMIME(t *testing.T) {
	// Cut in the middle of the delivery-status part: no closing boundary.
	cut := strings.Index(postfixDSN, "Final-Recipient: RFC822; second@")
	m := mustParse(t, postfixDSN[:cut+len("Final-Recipient: RFC822; second@exa")])
	if len(m.Reports) != 1 || len(m.Reports[0].Recipients) != 2 {
		t.Fatalf("Reports = %+v", m.Reports)
	}
	if got := m.Reports[0].Recipients[1].FinalRecipient; got != "second@exa" {
		t.Errorf("truncated recipient = %q", got)
	}
	if !strings.Contains(m.Text, "could not") || !hasAnomaly(m, "closing boundary missing") {
		t.Errorf("Text = %q, Anomalies = %q", m.Text, m.Anomalies)
	}
}

func TestMislabelledDeliveryStatus(t *testing.T) {
	msg := "From: postmaster@example.net\nContent-Type: multipart/report; report-type=delivery-status; boundary=m\n\n" +
		"--m\nContent-Type: text/plain\n\nYour mail could not be delivered.\n" +
		"--m\nContent-Type: text/plain\n\nReporting-MTA: dns; example.net\n\nFinal-Recipient: rfc822; x@example.org\nAction: failed\nStatus: 5.1.1\n" +
		"--m\nContent-Type: message/disposition-notification\n\nReporting-UA: a\nFinal-Recipient: rfc822; mdn@example.org\nDisposition: manual-action/MDN-sent-manually; displayed\n" +
		"--m--\n"
	m := mustParse(t, msg)
	if len(m.Reports) != 1 || len(m.Reports[0].Recipients) != 1 || m.Reports[0].Recipients[0].FinalRecipient != "x@example.org" {
		t.Fatalf("Reports = %+v", m.Reports)
	}
	if !hasAnomaly(m, "delivery-status fields in a text/plain part") {
		t.Errorf("Anomalies = %q", m.Anomalies)
	}
	if m.Text != "Your mail could not be delivered.\n" {
		t.Errorf("Text = %q", m.Text)
	}
}

func TestHTMLAlternative(t *testing.T) {
	html := "From: a@example.org\nContent-Type: multipart/alternative; boundary=a\n\n" +
		"--a\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" +
		"<html><body><p>Delivery has failed to:</p><p>x@example.org &lt;550&gt;</p></body></html>\n" +
		"--a--\n"
	if m := mustParse(t, html); m.Text != "Delivery has failed to:\n\nx@example.org <550>\n" {
		t.Errorf("html only: Text = %q", m.Text)
	}
	both := "From: a@example.org\nContent-Type: multipart/alternative; boundary=a\n\n" +
		"--a\nContent-Type: text/plain\n\nplain version\n" +
		"--a\nContent-Type: text/html\n\n<p>html version</p>\n" +
		"--a--\n"
	if m := mustParse(t, both); m.Text != "plain version\n" {
		t.Errorf("plain and html: Text = %q", m.Text)
	}
}

func TestSinglePartBogusType(t *testing.T) {
	m := mustParse(t, "From: a@example.org\nContent-Type: bogus\n\nUser unknown\n")
	if m.Text != "User unknown\n" {
		t.Errorf("Text = %q", m.Text)
	}
	m = mustParse(t, "From: a@example.org\n\nno content type\n")
	if m.Text != "no content type\n" {
		t.Errorf("Text = %q", m.Text)
	}
}

func TestMboxAndBrokenBoundary(t *testing.T) {
	msg := "From MAILER-DAEMON Thu Jan  1 00:00:00 2025\n" +
		"From: MAILER-DAEMON@example.net\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"declared\"\n\n" +
		"--actual\nContent-Type: text/plain\n\nnotification\n" +
		"--actual\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; example.net\n\nFinal-Recipient: rfc822; y@example.org\nAction: failed\nStatus: 5.1.1\n" +
		"--actual--\n"
	m := mustParse(t, msg)
	if m.Get("From") != "MAILER-DAEMON@example.net" {
		t.Errorf("From = %q (mbox From_ line not skipped?)", m.Get("From"))
	}
	if len(m.Reports) != 1 || m.Text != "notification\n" || !hasAnomaly(m, `boundary "declared" not found`) {
		t.Errorf("Reports = %+v, Text = %q, Anomalies = %q", m.Reports, m.Text, m.Anomalies)
	}
}

func TestDeliveryStatusInText(t *testing.T) {
	// Sendmail-style DSN whose MIME header got lost.
	msg := "From: Mail Delivery Subsystem <MAILER-DAEMON@example.edu>\nSubject: Returned mail\n\n" +
		"   ----- The following addresses had permanent fatal errors -----\n<z@example.edu>\n\n" +
		"Reporting-MTA: dns; mail.example.edu\nArrival-Date: Thu, 1 Jan 2025 00:00:00 +0000\n\n" +
		"Final-Recipient: RFC822; z@example.edu\nAction: failed\nStatus: 5.5.0\n\n" +
		"Return-Path: <s@example.com>\nMessage-Id: <t@example.com>\n\nbody\n"
	m := mustParse(t, msg)
	if len(m.Reports) != 1 || len(m.Reports[0].Recipients) != 1 || m.Reports[0].Recipients[0].Status != (Status{5, 5, 0}) {
		t.Fatalf("Reports = %+v", m.Reports)
	}
	if len(m.Reports[0].Extra) != 0 {
		t.Errorf("the original's header leaked into the report: %+v", m.Reports[0].Extra)
	}
	if m.Original == nil || m.Original.MessageID != "t@example.com" {
		t.Errorf("Original = %+v", m.Original)
	}
}

func TestParseReaderCRLF(t *testing.T) {
	m, err := Parse(strings.NewReader(strings.ReplaceAll(postfixDSN, "\n", "\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Reports) != 1 || strings.Contains(m.Text, "\r") || m.Reports[0].Recipients[0].DiagnosticType != "smtp" {
		t.Errorf("Parse(CRLF) = %+v", m)
	}
}
