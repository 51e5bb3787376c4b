package classify

import "testing"

func TestReplyCode(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"", 0},
		{"550 5.1.1 <a@example.com>: Recipient address rejected", 550},
		{"smtp; 550-5.1.1 The email account that you tried to reach does not exist", 550},
		{"host mx.example.com[192.0.2.25] said: 452 4.2.2 Mailbox full (in reply to RCPT TO command)", 452},
		{"remote host 192.0.2.32 said: 550 Unknown user", 550},
		{"192.0.2.250 refused", 0},                // inside an IPv4 address
		{"port 2525 closed", 0},                   // part of a longer number
		{"#5.5.0", 0},                             // a status is not a code
		{"250 ok; then 421 4.7.0 try again", 421}, // a failure code wins over 2xx
		{"250 2.0.0 Ok: queued", 250},
		{"(550)", 550},
		{"said: 554:", 554},
		{"Error 5501", 0},
		{"600 not a code", 0},
		{"291 not a code", 0}, // second digit above 5
	}
	for _, tt := range tests {
		if got := ReplyCode(tt.in); got != tt.want {
			t.Errorf("ReplyCode(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestEnhancedStatus(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"", ""},
		{"550 5.1.1 user unknown", "5.1.1"},
		{"550-5.7.26 unauthenticated", "5.7.26"},
		{"(#5.1.1)", "5.1.1"},
		{"554 5.4.316 Message expired", "5.4.316"},
		{"relay 192.0.2.4 said", ""}, // IPv4 address
		{"version 4.2.10.1", ""},     // four parts
		{"2.0.0 Ok then 4.2.0 Greylisted", "4.2.0"},
		{"2.1.5 Ok", "2.1.5"},
		{"5.1", ""},
		{"15.1.1", ""},
		{"5.1234.1", ""},
		{"x5.1.1", "5.1.1"},
	}
	for _, tt := range tests {
		if got := EnhancedStatus(tt.in); got != tt.want {
			t.Errorf("EnhancedStatus(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSMTPCommand(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"", ""},
		{"550 5.1.1 user unknown (in reply to rcpt to command)", "RCPT"},
		{"554 5.7.1 spam (in reply to end of data command)", "DATA"},
		{"553 sender rejected (in reply to mail from command)", "MAIL"},
		{">>> data <<< 554 rejected", "DATA"},
		{"smtp error from remote mail server after rcpt to:<a@example.com>:", "RCPT"},
		{"sorry, no smtp connection got far enough; most progress was rcpt to response", "RCPT"},
		{"smtp error from remote mail server after initial connection", "CONN"},
		{"550 user unknown", ""},
		{"... while talking to mx.example.org.: >>> data <<< 550 5.1.1 <a@example.org>... user unknown <<< 503 5.0.0 need rcpt (recipient)", "RCPT"},
		{"... while talking to mx.example.org.:\n<<< 554 ip=192.0.2.1 - a problem occurred.\n554 5.0.0 service unavailable", "CONN"},
		{"... while talking to mx.example.org.:\n>>> rcpt to:<a@example.org>\n<<< 554 no", "RCPT"},
	}
	for _, tt := range tests {
		if got := SMTPCommand(tt.in); got != tt.want {
			t.Errorf("SMTPCommand(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestCommandFromRules: with no transcript phrasing, the rules' command
// phrases place a reply ("Recipient address rejected" is a refusal at RCPT).
func TestCommandFromRules(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"550 <a@example.com>: recipient address rejected: user unknown in local recipient table", "RCPT"},
		{"550 5.2.1 <a@example.com>... user unknown [rcpt_to]", "RCPT"},
		{"smtp:rcpt host 192.0.2.8: 553 5.3.0 <a@example.com>... no such user here", "RCPT"},
		{"550 5.7.1 recipient address rejected (in reply to end of data command)", "DATA"},
		{"550 <a@example.com>: user unknown", ""},
	} {
		if got := testClassifier.command(tt.in); got != tt.want {
			t.Errorf("command(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRefusedAllAtRcpt(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"... while talking to mx.example.de.:\n>>> data\n<<< 550 5.2.1 <a@example.de>... user unknown\n<<< 550 5.1.1 <b@example.de>... user unknown\n<<< 503 5.0.0 need rcpt (recipient)", true},
		{"... while talking to mx.example.de.:\n>>> data\n<<< 554 5.7.1 rejected as spam", false},
		{"... while talking to mx.example.de.:\n>>> rcpt to:<a@example.de>\n<<< 550 no\n<<< 503 5.0.0 need rcpt (recipient)", false},
		{"... while talking to mx1.example.de.:\n>>> data\n<<< 503 5.0.0 need rcpt\n... while talking to mx2.example.org.:\n>>> data\n<<< 554 no", false},
		{"", false},
	} {
		if got := refusedAllAtRcpt(tt.in); got != tt.want {
			t.Errorf("refusedAllAtRcpt(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestRemoteMTA(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"", ""},
		{"host mx.example.com[192.0.2.1] said: 550 no", "mx.example.com"},
		{"remote host 192.0.2.32 said: 550 Unknown user", "192.0.2.32"},
		{"SMTP error from remote mail server after RCPT TO:<a@b.example>: host mx1.example.net [192.0.2.9]: 550", "mx1.example.net"},
		{"... while talking to mx.example.org.: >>> DATA", "mx.example.org"},
		{"the host said no", ""},
	}
	for _, tt := range tests {
		if got := RemoteMTA(tt.in); got != tt.want {
			t.Errorf("RemoteMTA(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNormalizeAddress(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"User@Example.COM", "user@example.com"},
		{"<user@example.com>", "user@example.com"},
		{"rfc822; <User@example.com>", "user@example.com"},
		{"Kijitora <k@example.jp>", "k@example.jp"},
		{"\"k@example.jp\"", "k@example.jp"},
		{"no address", ""},
		{"@example.com", ""},
		{"user@", ""},
		{"utf-8; Jürgen@Example.DE", "jürgen@example.de"},
		{"\"00000000000;@0", ""},  // fuzz: a ';' inside is no address type, and no address
		{"x y;b@example.com", ""}, // "x y" is no address type
		{"\"\v@0", ""},            // fuzz: white space behind a quote
		{"\"\u00a0a@example.com", "a@example.com"},
		{"a\x00b@example.com", ""},
		{"a\x7fb@example.com", ""},
	}
	for _, tt := range tests {
		if got := normalizeAddress(tt.in); got != tt.want {
			t.Errorf("normalizeAddress(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := normalizeAddress(tt.want); got != tt.want {
			t.Errorf("normalizeAddress is not idempotent: %q -> %q", tt.want, got)
		}
	}
}

func TestJoinContinuations(t *testing.T) {
	for in, want := range map[string]string{
		"550-5.7.1 [192.0.2.1 13] Messages with multiple 550 5.7.1 addresses in From: header are not accepted.":         "550 5.7.1 [192.0.2.1 13] Messages with multiple addresses in From: header are not accepted.",
		"host mx.example.com said: 550-5.7.1 This message 550-5.7.1 was blocked 550 5.7.1 by policy (in reply to DATA)": "host mx.example.com said: 550 5.7.1 This message was blocked by policy (in reply to DATA)",
		"554-mx.example.net 554-No SMTP service here 554 closing":                                                       "554 mx.example.net No SMTP service here closing",
		"550 5.1.1 User unknown":                       "550 5.1.1 User unknown",
		"552-5.7.0 only the first line":                "552 5.7.0 only the first line",
		"no code here":                                 "no code here",
		"550-5.7.1 see https://x.example/550-5.7.1 ok": "550 5.7.1 see https://x.example/550-5.7.1 ok",
		"0@0 200-2.0.0":                                "0@0 200 2.0.0", // fuzz: a status at the very end
		"550-":                                         "550",
	} {
		if got := JoinContinuations(in); got != want {
			t.Errorf("JoinContinuations(%q)\n = %q\nwant %q", in, got, want)
		}
	}
}

func TestRefineStatus(t *testing.T) {
	for _, tt := range []struct{ status, diag, want string }{
		{"5.1.0", "5.1.0 - Unknown address error 550-'5.2.2 <a@example.jp>... Mailbox Full'", "5.2.2"},
		{"4.4.7", "554 4.4.7 Message expired: unable to deliver in 840 minutes.<421 4.4.2 Connection timed out>", "4.4.2"},
		{"4.4.7", "450 4.7.1 <host[192.0.2.1]>: Client host rejected", "4.7.1"},
		{"5.1.1", "550 5.7.1 IP address blacklisted", "5.1.1"},          // a specific status stands
		{"5.0.0", "550 5.2.2 full", "5.0.0"},                            // x.0.0 is dsn()'s own business
		{"4.4.7", "421 4.4.7 expired, 5.1.1 earlier", "4.4.7"},          // another class is another answer
		{"5.7.0", "554 5.7.0 Reject, id=20025-09 - SPAM", "5.7.0"},      // nothing more specific
		{"5.4.0", "from 192.0.2.1 version 1.2.3.4 said 5.4.4", "5.4.4"}, // IPs and versions are not statuses
	} {
		if got := refineStatus(tt.status, tt.diag); got != tt.want {
			t.Errorf("refineStatus(%q, %q) = %q, want %q", tt.status, tt.diag, got, tt.want)
		}
	}
	if got := Statuses("550-5.1.1 a 550 5.1.1 b 4.2.2 c 1.2.3.4"); len(got) != 3 || got[2] != "4.2.2" {
		t.Errorf("Statuses = %q", got)
	}
}
