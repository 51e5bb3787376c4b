package reliability

import "testing"

// The flood scenarios in their CI size: connections-10k with
// ShortConfig's 2,000 senders (twice the 1,000 slots), the command and
// pipelining floods for ShortConfig's fault time. Each fails on a lost or
// duplicated report, a reply code other than the expected ones, the
// process dying, or an RSS peak over floodsRSSBound (1 GiB).

func TestConnections10k(t *testing.T)  { runScenario(t, "connections-10k") }
func TestCommandFlood(t *testing.T)    { runScenario(t, "command-flood") }
func TestPipeliningAbuse(t *testing.T) { runScenario(t, "pipelining-abuse") }

func TestReplyKey(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"421 4.7.0 Too many connections, try again later", "421 4.7.0"},
		{"250-bouncer Hello", "250"},
		{"354 Go ahead. End your data with <CR><LF>.<CR><LF>", "354"},
		{"", "EOF"},
		{"220 bouncer.reliability.test ESMTP Service Ready", "220"},
		{"500 5.5.1 Too many errors. Quiting now", "500 5.5.1"},
	} {
		if got := replyKey(tc.line); got != tc.want {
			t.Errorf("replyKey(%q) = %q, want %q", tc.line, got, tc.want)
		}
	}
}
