package dsn

import (
	"strings"
	"testing"
)

const forwarded = `From: helpdesk@customer.example
To: abuse@sender.example.com
Subject: Fwd: Undeliverable
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: text/plain

Forwarding the bounce below, please check.

--outer
Content-Type: message/rfc822

From: Mail Delivery Subsystem <mailer-daemon@mx.customer.example>
Subject: Delivery Status Notification (Failure)
Content-Type: multipart/report; report-type="delivery-status"; boundary="inner"

--inner
Content-Type: text/plain; charset=utf-8

Delivery to gone@customer.example failed permanently.

--inner
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.customer.example

Final-Recipient: rfc822; gone@customer.example
Action: failed
Status: 5.1.1

--inner
Content-Type: text/rfc822-headers

Message-ID: <orig-1@sender.example.com>
From: news@sender.example.com
Subject: Hello

--inner--

--outer--
`

func TestForwardedReport(t *testing.T) {
	m := mustParse(t, forwarded)
	if m.ReportType != "delivery-status" {
		t.Errorf("ReportType = %q", m.ReportType)
	}
	if len(m.Reports) != 1 || len(m.Reports[0].Recipients) != 1 ||
		m.Reports[0].Recipients[0].FinalRecipient != "gone@customer.example" {
		t.Fatalf("Reports = %+v", m.Reports)
	}
	if m.Original == nil || m.Original.MessageID != "orig-1@sender.example.com" || m.Original.Subject != "Hello" {
		t.Errorf("Original = %+v", m.Original)
	}
	want := "Forwarding the bounce below, please check.\nDelivery to gone@customer.example failed permanently.\n"
	if m.Text != want {
		t.Errorf("Text = %q, want %q", m.Text, want)
	}
}

func TestRFC822HeadersOriginal(t *testing.T) {
	msg := "From: MAILER-DAEMON@example.net\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"x\"\n\n" +
		"--x\n\nno header on this part\n" +
		"--x\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; example.net\n\nFinal-Recipient: rfc822; r@example.org\nAction: failed\nStatus: 5.0.0\n" +
		"--x\nContent-Type: text/rfc822-headers\n\nReturn-Path: <b+1@bounces.example.com>\nMessage-Id:  <  id-9@example.com >\n" +
		"Subject: Test\nX-Campaign: spring\n\n" +
		"--x--\n"
	m := mustParse(t, msg)
	o := m.Original
	if o == nil {
		t.Fatal("Original is nil")
	}
	if o.MessageID != "id-9@example.com" || o.ReturnPath != "b+1@bounces.example.com" || o.Subject != "Test" {
		t.Errorf("Original = %+v", o)
	}
	if got := o.Headers[len(o.Headers)-1]; got != (Field{"X-Campaign", "spring"}) {
		t.Errorf("last original header = %v", got)
	}
	if m.Text != "no header on this part\n" {
		t.Errorf("Text = %q", m.Text)
	}
}

func TestInlineOriginal(t *testing.T) {
	msg := `From: MAILER-DAEMON@mx.example.org
To: bounces@example.com
Subject: failure notice

Hi. This is the qmail-send program at mx.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.

<gone@example.org>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.

Return-Path: <bounces+x@example.com>
Received: (qmail 1234 invoked by uid 0); 1 Jan 2025 00:00:00 +0000
  continued line
Message-ID: <inline-1@example.com>
From: News <news@example.com>
To: gone@example.org
Subject: Weekly
X-Mailer-Campaign: c-77

Body of the original.
`
	m := mustParse(t, msg)
	o := m.Original
	if o == nil {
		t.Fatal("Original is nil")
	}
	if o.MessageID != "inline-1@example.com" || o.ReturnPath != "bounces+x@example.com" ||
		o.Subject != "Weekly" || o.To != "gone@example.org" || len(o.Headers) != 7 {
		t.Errorf("Original = %+v", o)
	}
	// Indented and quoted blocks are found too.
	m = mustParse(t, "Subject: x\n\nOriginal message follows:\n\n> From: a@example.com\n> Message-Id: <q@example.com>\n> Subject: Hi\n\ntext\n")
	if m.Original == nil || m.Original.MessageID != "q@example.com" || m.Original.Subject != "Hi" {
		t.Errorf("quoted Original = %+v", m.Original)
	}
	// Prose that mentions Message-ID is not a header block.
	m = mustParse(t, "Subject: x\n\nThe Message-ID: header was missing.\n")
	if m.Original != nil {
		t.Errorf("Original from prose = %+v", m.Original)
	}
}

func TestDetachLargeInput(t *testing.T) {
	big := postfixDSN + strings.Repeat("x", detachSize)
	m := mustParse(t, big)
	if len(m.Reports) != 1 || m.Original == nil || m.Original.MessageID != "campaign-7.1234@sender.example.com" {
		t.Errorf("large input parsed differently: %+v", m)
	}
}

func TestEncodedEmbeddedMessage(t *testing.T) {
	// message/rfc822 must not be base64-encoded (RFC 2046 section 5.2.1),
	// but some MTAs do it.
	msg := "From: MAILER-DAEMON@example.net\nContent-Type: multipart/mixed; boundary=e\n\n" +
		"--e\nContent-Type: text/plain\n\nUndeliverable\n" +
		"--e\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n" +
		"TWVzc2FnZS1JRDogPGI2NEBleGFtcGxlLmNvbT4KU3ViamVjdDogaGkKCmJvZHkK\n" +
		"--e--\n"
	m := mustParse(t, msg)
	if m.Original == nil || m.Original.MessageID != "b64@example.com" || m.Original.Subject != "hi" {
		t.Errorf("Original = %+v", m.Original)
	}
}
