package synclog

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Attempt // only the fields set are compared, plus Recipient and Result always
	}{
		{
			name: "canonical bounce",
			in:   `{"id":"a1","ts":"2026-11-25T10:00:00Z","message_id":"m1@example.org","return_path":"b+tok@bounces.example.com","sender":"news@example.org","recipient":"User@Example.NET","mx":"mx.example.net","reply_code":550,"status":"5.1.1","reply":"550 5.1.1 user unknown","smtp_command":"rcpt","attempt":1,"stream":"newsletter","campaign":"nov"}`,
			want: []Attempt{{ID: "a1", Format: FormatCanonical, Result: ResultBounced, MessageID: "<m1@example.org>", ReturnPath: "b+tok@bounces.example.com", Recipient: "user@example.net", MX: "mx.example.net", ReplyCode: 550, Status: "5.1.1", Command: "RCPT", Attempt: 1, Stream: "newsletter", Campaign: "nov"}},
		},
		{
			name: "canonical greylist deferral, unix time, no id",
			in:   `{"ts":1795600000,"recipient":"a@example.net","reply_code":450,"status":"4.2.0","reply":"450 4.2.0 Greylisted"}`,
			want: []Attempt{{Format: FormatCanonical, Result: ResultDeferred, Recipient: "a@example.net", ReplyCode: 450, Status: "4.2.0"}},
		},
		{
			name: "canonical delivered",
			in:   `{"id":"a2","ts":"2026-11-25T10:00:05Z","recipient":"a@example.net","reply_code":250}`,
			want: []Attempt{{ID: "a2", Result: ResultDelivered, Recipient: "a@example.net", ReplyCode: 250}},
		},
		{
			name: "kumomta bounce",
			in:   `{"type":"Bounce","id":"1d98076a","sender":"b+tok@bounces.example.com","recipient":"user@gmail.com","queue":"nov:acme@gmail.com","site":"pool->gmail-smtp-in.l.google.com.","size":1047,"response":{"code":550,"enhanced_code":{"class":5,"subject":1,"detail":1},"content":"The email account that you tried to reach does not exist.","command":"RCPT TO:<user@gmail.com>\r\n"},"peer_address":{"name":"gmail-smtp-in.l.google.com.","addr":"192.0.2.5"},"timestamp":1795600000,"created":1795599990,"num_attempts":0,"bounce_classification":"InvalidRecipient","meta":{},"headers":{"Message-ID":"<m2@example.org>"}}`,
			want: []Attempt{{ID: "1d98076a/Bounce/0/user@gmail.com", Format: FormatKumoMTA, Result: ResultBounced, QueueID: "1d98076a", Recipient: "user@gmail.com", ReturnPath: "b+tok@bounces.example.com", MX: "gmail-smtp-in.l.google.com", ReplyCode: 550, Status: "5.1.1", Command: "RCPT", MessageID: "<m2@example.org>", Stream: "acme"}},
		},
		{
			name: "kumomta transient failure, two recipients, no enhanced code",
			in:   `{"type":"TransientFailure","id":"x9","sender":"s@example.org","recipient":["a@example.net","B@example.net"],"queue":"example.net","site":"","response":{"code":451,"enhanced_code":null,"content":"Greylisting in action, please come back later","command":"."},"timestamp":1795600000,"num_attempts":2,"meta":{"stream":"tx"}}`,
			want: []Attempt{
				{Result: ResultDeferred, Recipient: "a@example.net", ReplyCode: 451, Status: "", Command: "DATA", Attempt: 2, Stream: "tx"},
				{Result: ResultDeferred, Recipient: "b@example.net", ReplyCode: 451, Command: "DATA", Attempt: 2, Stream: "tx"},
			},
		},
		{
			name: "kumomta delivery and expiration",
			in:   `{"type":"Expiration","id":"x10","sender":"s@example.org","recipient":"a@example.net","queue":"example.net","response":{"code":551,"enhanced_code":{"class":5,"subject":4,"detail":7},"content":"Next delivery time would be at X which exceeds the expiry time","command":null},"timestamp":1795600000,"num_attempts":7}`,
			want: []Attempt{{Result: ResultExpired, Recipient: "a@example.net", ReplyCode: 551, Status: "5.4.7", Attempt: 7}},
		},
		{
			name: "postfix bounced",
			in:   `2026-11-25T10:00:00.123456+00:00 mail postfix/smtp[1234]: 4XyZ1abcd: to=<user@example.net>, relay=mx.example.net[192.0.2.1]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=5.1.1, status=bounced (host mx.example.net[192.0.2.1] said: 550 5.1.1 <user@example.net>: Recipient address rejected: User unknown (in reply to RCPT TO command))`,
			want: []Attempt{{Format: FormatPostfix, Result: ResultBounced, QueueID: "4XyZ1abcd", Recipient: "user@example.net", MX: "mx.example.net", ReplyCode: 550, Status: "5.1.1", Command: "RCPT"}},
		},
		{
			name: "postfix deferred greylist, syslog time, orig_to",
			in:   `Nov 25 10:00:00 mail postfix/smtp[99]: 3F2A1B2C3D: to=<a@example.net>, orig_to=<alias@example.org>, relay=mx.example.net[192.0.2.1]:25, delay=0.5, delays=0/0/0.2/0.3, dsn=4.2.0, status=deferred (host mx.example.net[192.0.2.1] said: 450 4.2.0 <a@example.net>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.net.html (in reply to RCPT TO command))`,
			want: []Attempt{{Result: ResultDeferred, Recipient: "a@example.net", ReplyCode: 450, Status: "4.2.0", Command: "RCPT"}},
		},
		{
			name: "postfix sent",
			in:   `2026-11-25T10:00:00Z mail postfix/smtp[1]: 4ABCDEF: to=<a@example.net>, relay=mx.example.net[192.0.2.1]:25, delay=0.4, delays=0/0/0.2/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 77DD)`,
			want: []Attempt{{Result: ResultDelivered, Recipient: "a@example.net", ReplyCode: 250, Status: "2.0.0"}},
		},
		{
			name: "postfix connect timeout",
			in:   `2026-11-25T10:00:00Z mail postfix/smtp[1]: 4ABCDEF: to=<a@example.net>, relay=none, delay=30, delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to mx.example.net[192.0.2.1]:25: Connection timed out)`,
			want: []Attempt{{Result: ResultDeferred, Recipient: "a@example.net", Status: "4.4.1", Command: "CONN"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d attempts, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				g := got[i]
				check := func(field string, got, want any, set bool) {
					if set && got != want {
						t.Errorf("attempt %d %s = %v, want %v", i, field, got, want)
					}
				}
				check("Recipient", g.Recipient, w.Recipient, true)
				check("Result", g.Result, w.Result, true)
				check("ID", g.ID, w.ID, w.ID != "")
				check("Format", g.Format, w.Format, w.Format != "")
				check("MessageID", g.MessageID, w.MessageID, w.MessageID != "")
				check("QueueID", g.QueueID, w.QueueID, w.QueueID != "")
				check("ReturnPath", g.ReturnPath, w.ReturnPath, w.ReturnPath != "")
				check("MX", g.MX, w.MX, w.MX != "")
				check("ReplyCode", g.ReplyCode, w.ReplyCode, w.ReplyCode != 0)
				check("Status", g.Status, w.Status, w.Status != "")
				check("Command", g.Command, w.Command, w.Command != "")
				check("Attempt", g.Attempt, w.Attempt, w.Attempt != 0)
				check("Stream", g.Stream, w.Stream, w.Stream != "")
				check("Campaign", g.Campaign, w.Campaign, w.Campaign != "")
				if g.ID == "" {
					t.Errorf("attempt %d has no id", i)
				}
				if g.Time.IsZero() {
					t.Errorf("attempt %d has no time", i)
				}
			}
			again, _ := Parse([]byte(tt.in))
			for i := range got {
				if again[i].ID != got[i].ID {
					t.Errorf("the same record gave ids %q and %q", got[i].ID, again[i].ID)
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrUnknownFormat},
		{"prose", "hello there", ErrUnknownFormat},
		{"broken json", `{"recipient":`, ErrMalformed},
		{"canonical without recipient", `{"ts":"2026-11-25T10:00:00Z","reply_code":550}`, ErrMalformed},
		{"canonical without outcome", `{"ts":"2026-11-25T10:00:00Z","recipient":"a@example.net"}`, ErrMalformed},
		{"canonical bad code", `{"ts":"2026-11-25T10:00:00Z","recipient":"a@example.net","reply_code":999}`, ErrMalformed},
		{"canonical bad time", `{"ts":"yesterday","recipient":"a@example.net","reply_code":550}`, ErrMalformed},
		{"canonical bad result", `{"ts":"2026-11-25T10:00:00Z","recipient":"a@example.net","result":"maybe"}`, ErrMalformed},
		{"kumo reception", `{"type":"Reception","id":"1","sender":"s@example.org","recipient":"a@example.net","response":{"code":250,"content":"","command":null},"timestamp":1795600000}`, ErrNotAttempt},
		{"kumo unknown type", `{"type":"Mystery","id":"1","recipient":"a@example.net","response":{"code":250},"timestamp":1795600000}`, ErrMalformed},
		{"kumo recipient object", `{"type":"Bounce","id":"1","recipient":{"a":1},"response":{"code":550},"timestamp":1795600000}`, ErrMalformed},
		{"kumo no timestamp", `{"type":"Bounce","id":"1","recipient":"a@example.net","response":{"code":550}}`, ErrMalformed},
		{"postfix qmgr expired", `Nov 25 10:00:00 mail postfix/qmgr[1]: 4ABCDEF: from=<s@example.org>, status=expired, returned to sender`, ErrNotAttempt},
		{"postfix cleanup", `Nov 25 10:00:00 mail postfix/cleanup[1]: 4ABCDEF: message-id=<m@example.org>`, ErrNotAttempt},
		{"postfix connect line", `Nov 25 10:00:00 mail postfix/smtpd[1]: connect from unknown[192.0.2.1]`, ErrNotAttempt},
		{"postfix two lines", "Nov 25 10:00:00 mail postfix/smtp[1]: 4ABCDEF: to=<a@example.net>, status=sent (250 ok)\nmore", ErrMalformed},
		{"postfix bad status", `Nov 25 10:00:00 mail postfix/smtp[1]: 4ABCDEF: to=<a@example.net>, status=weird (x)`, ErrMalformed},
		{"too large", "{" + strings.Repeat(" ", MaxRecordBytes) + "}", ErrTooLarge},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.in))
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestPostfixTime(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 30, 0, 0, time.UTC)
	tests := []struct {
		prefix string
		want   time.Time
	}{
		{"", now},
		{"2026-11-25T10:00:00.5+01:00 mail ", time.Date(2026, 11, 25, 9, 0, 0, 5e8, time.UTC)},
		{"Dec 31 23:59:00 mail ", time.Date(2025, 12, 31, 23, 59, 0, 0, time.UTC)}, // last year's line read just after New Year
		{"Jan  1 00:10:00 mail ", time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		got, err := postfixTime(tt.prefix, now)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("postfixTime(%q) = %v, %v; want %v", tt.prefix, got, err, tt.want)
		}
	}
	if _, err := postfixTime("yesterday evening ", now); err == nil {
		t.Error("a prefix without a time parsed")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`{"id":"a1","ts":"2026-11-25T10:00:00Z","recipient":"a@example.net","reply_code":550}`)
	f.Add(`{"type":"Bounce","id":"1","recipient":["a@example.net"],"response":{"code":550,"enhanced_code":{"class":5,"subject":1,"detail":1},"content":"x","command":"RCPT TO:<a>"},"timestamp":1795600000}`)
	f.Add(`Nov 25 10:00:00 mail postfix/smtp[1]: 4ABCDEF: to=<a@example.net>, relay=mx[192.0.2.1]:25, dsn=5.1.1, status=bounced (host mx said: 550 5.1.1 no (in reply to RCPT TO command))`)
	f.Fuzz(func(t *testing.T, in string) {
		got, err := Parse([]byte(in))
		if err != nil {
			if !errors.Is(err, ErrUnknownFormat) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotAttempt) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if len(got) == 0 || len(got) > MaxRecipients {
			t.Fatalf("%d attempts", len(got))
		}
		for _, a := range got {
			if a.ID == "" || !strings.Contains(a.Recipient, "@") || a.Result == "" || a.Time.IsZero() {
				t.Fatalf("incomplete attempt %+v", a)
			}
		}
	})
}
