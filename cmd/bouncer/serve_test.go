package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
	"github.com/bouncer-mail/bouncer/verp"
)

const serveKeys = "serve-test-key-000000000001"

func startService(t *testing.T, extra ...string) *Service {
	t.Helper()
	return startPeerService(t, serveKeys, extra...)
}

// smtpSend delivers one message over real SMTP and returns the final reply.
func smtpSend(t *testing.T, addr, rcpt, msg string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	read := replyReader(t, bufio.NewReader(c))
	read()
	for _, cmd := range []string{"EHLO mx.example.net", "MAIL FROM:<>", "RCPT TO:<" + rcpt + ">", "DATA"} {
		fmt.Fprintf(c, "%s\r\n", cmd)
		if reply := read(); reply[0] != '2' && reply[0] != '3' {
			return reply
		}
	}
	io.WriteString(c, strings.ReplaceAll(msg, "\n", "\r\n")+"\r\n.\r\n")
	return read()
}

// replyReader returns a function reading one SMTP reply (the last line of
// a multi-line one) from r.
func replyReader(t *testing.T, r *bufio.Reader) func() string {
	return func() string {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading reply: %v", err)
			}
			if len(line) < 4 || line[3] != '-' {
				return strings.TrimSpace(line)
			}
		}
	}
}

func getJSON(t *testing.T, u string, v any) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
	}
	return resp.StatusCode
}

const e2eNDR = `From: MAILER-DAEMON@mx.example.net
To: bounce@example.org
Subject: Undelivered Mail Returned to Sender
Message-ID: <ndr-e2e@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

This is the mail system at host mx.example.net.

<Gone@Example.NET>: host mx.example.net[192.0.2.1] said: 550 5.1.1
    <gone@example.net>: Recipient address rejected: User unknown (in reply to
    RCPT TO command)

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; Gone@Example.NET
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown

--b1--`

// TestServeEndToEnd runs the all-in-one service and sends it a signed NDR
// over SMTP: it must come out of the HTTP API as a classified event. It
// runs on SQLite, and on a throwaway ClickHouse server (--clickhouse-dsn).
func TestServeEndToEnd(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testServeEndToEnd(t, startService(t)) })
	t.Run("clickhouse", func(t *testing.T) {
		testServeEndToEnd(t, startService(t, "--clickhouse-dsn", clickhousetest.Start(t)))
	})
}

func testServeEndToEnd(t *testing.T, svc *Service) {
	keys, _ := verp.ParseKeys(serveKeys)
	rcpt, err := (&verp.Signer{Keys: keys}).Sign("bounces.example.com", "gone@example.net", "<m1@example.org>")
	if err != nil {
		t.Fatal(err)
	}
	if reply := smtpSend(t, svc.SMTPAddr, rcpt, e2eNDR); !strings.HasPrefix(reply, "250") {
		t.Fatalf("DATA: %q", reply)
	}
	if reply := smtpSend(t, svc.SMTPAddr, "b+forged@bounces.example.com", e2eNDR); !strings.HasPrefix(reply, "550 5.7.1") {
		t.Errorf("forged VERP: %q, want 550 5.7.1", reply)
	}
	base := "http://" + svc.HTTPAddr
	var hist struct {
		Events []struct {
			Recipient, Class, Reason, Scope, Status, Source string
			SMTPCommand                                     string `json:"smtp_command"`
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if code := getJSON(t, base+"/v1/recipients/"+url.PathEscape("GONE@example.net")+"/events", &hist); code != 200 {
			t.Fatalf("recipient events: HTTP %d", code)
		}
		if len(hist.Events) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(hist.Events) != 1 {
		t.Fatalf("%d events stored, want 1", len(hist.Events))
	}
	e := hist.Events[0]
	if e.Recipient != "gone@example.net" || e.Class != "hard" || e.Reason != "userunknown" || e.Scope != "recipient" || e.Status != "5.1.1" || e.SMTPCommand != "RCPT" || e.Source != "ndr" {
		t.Errorf("stored event %+v", e)
	}
	var stats struct {
		ReportsReceived int64            `json:"reports_received"`
		EventsByClass   map[string]int64 `json:"events_by_class"`
	}
	// The event shows as soon as the events insert lands; on ClickHouse
	// the Stats rollup is recounted after it, within the same Write (a CI
	// run read 0 in between), so stats are waited for too.
	for {
		if code := getJSON(t, base+"/v1/stats?window=24h", &stats); code != 200 {
			t.Fatalf("stats: HTTP %d", code)
		}
		if stats.ReportsReceived == 1 && stats.EventsByClass["hard"] == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if stats.ReportsReceived != 1 || stats.EventsByClass["hard"] != 1 {
		t.Errorf("stats %+v, want 1 report and 1 hard event", stats)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code := getJSON(t, base+path, nil); code != 200 {
			t.Errorf("%s: HTTP %d", path, code)
		}
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`bouncer_smtp_replies_total{code="250"} 1`,
		`bouncer_smtp_replies_total{code="550"} 1`,
		"bouncer_smtp_connections_total", "bouncer_smtp_received_bytes_total",
		"bouncer_smtp_accept_latency_seconds_bucket", `bouncer_panics_total{component="smtpd"} 0`,
		"bouncer_ingest_batches_total",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestParseOptionsEnv(t *testing.T) {
	env := map[string]string{"BOUNCER_SMTP_ADDR": "0.0.0.0:25", "BOUNCER_DOMAIN": "a.example.com,b.example.com", "BOUNCER_MAX_RECIPIENTS": "7"}
	o, _, err := parseOptions([]string{"--max-recipients", "9"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if o.SMTPAddr != "0.0.0.0:25" || len(o.Domains) != 2 || o.MaxRecipients != 9 {
		t.Errorf("options %+v: want env address, two env domains, flag over env for max-recipients", o)
	}
	if err := o.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	bad := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--smtp-addr", "nope"}, nil, "--smtp-addr"},
		{[]string{"--tls-cert", "x"}, nil, "--tls-key"},
		{[]string{"--domain", "user@example.com"}, nil, "not a domain"},
		{[]string{"--log-level", "loud"}, nil, "--log-level"},
		{nil, map[string]string{"BOUNCER_MAX_RECIPIENTS": "many"}, "BOUNCER_MAX_RECIPIENTS"},
		{[]string{"--verp-keys-file", "/x"}, map[string]string{"BOUNCER_VERP_KEYS": "k"}, "both set"},
		{[]string{"extra"}, nil, "unexpected argument"},
		{[]string{"--nats-replicas", "3"}, nil, "needs a NATS cluster"},
		{[]string{"--nats-replicas", "0", "--nats-url", "nats://x:4222"}, nil, "1 to 5"},
	}
	for _, b := range bad {
		o, _, err := parseOptions(b.args, func(k string) string { return b.env[k] })
		if err == nil {
			err = o.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%v %v: err %v, want one mentioning %q", b.args, b.env, err, b.want)
		}
	}
}

// TestServeSyncLogs publishes a sync reply log in each format to the
// embedded NATS, as a sending MTA would, and reads the judged replies back
// from the HTTP API.
func TestServeSyncLogs(t *testing.T) {
	svc := startService(t)
	nc, err := nats.Connect(svc.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	records := []string{
		`{"id":"e2e-1","ts":"2026-11-25T10:00:00Z","recipient":"grey@example.net","reply_code":451,"status":"4.7.1","reply":"451 4.7.1 Greylisting in action, please come back later"}`,
		`{"type":"Bounce","id":"k1","sender":"s@example.org","recipient":"kumo@gmail.com","queue":"gmail.com","response":{"code":550,"enhanced_code":{"class":5,"subject":1,"detail":1},"content":"The email account that you tried to reach does not exist.","command":"RCPT TO:<kumo@gmail.com>"},"timestamp":1795600000,"num_attempts":1}`,
		`2026-11-25T10:00:00Z mail postfix/smtp[1]: 4ABCDEF: to=<pf@example.net>, relay=mx.example.net[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.2.2, status=bounced (host mx.example.net[192.0.2.1] said: 552 5.2.2 Mailbox full (in reply to RCPT TO command))`,
	}
	for _, r := range records {
		if err := nc.Publish("delivery.attempts.mta1", []byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	nc.Flush()
	want := map[string]string{"grey@example.net": "greylist", "kumo@gmail.com": "hard", "pf@example.net": "soft"}
	for rcpt, class := range want {
		var hist struct {
			Events []struct{ Class, Source string }
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			getJSON(t, "http://"+svc.HTTPAddr+"/v1/recipients/"+rcpt+"/events", &hist)
			if len(hist.Events) > 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(hist.Events) != 1 || hist.Events[0].Class != class || hist.Events[0].Source != "sync" {
			t.Errorf("%s: events %+v, want one %s from sync", rcpt, hist.Events, class)
		}
	}
}

func TestLoadTokens(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/tokens"
	if err := os.WriteFile(file, []byte("# tokens\nread  reader-token-0123456789\nadmin admin-token-0123456789\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	read, admin, err := loadTokens(Options{APITokensFile: file, APIReadTokens: []string{"env-read-token-0123456789"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(read) != 2 || read[1] != "reader-token-0123456789" || len(admin) != 1 || admin[0] != "admin-token-0123456789" {
		t.Errorf("read %q admin %q", read, admin)
	}
	for _, bad := range []string{"read\n", "write some-token-0123456789\n", "read short\n"} {
		os.WriteFile(file, []byte(bad), 0o600)
		if _, _, err := loadTokens(Options{APITokensFile: file}); err == nil {
			t.Errorf("tokens file %q: no error", bad)
		} else if strings.Contains(err.Error(), "0123456789") {
			t.Errorf("error %q shows a token", err)
		}
	}
}

// TestServeSuppressionPolicy: the policy file reaches ingest and the API
// alike, so a suppression the policy keys by a normalised address is found
// by the check a sending application makes, under any spelling of it.
func TestServeSuppressionPolicy(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"normalize":{"plus_tags":true}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := startService(t, "--suppression-policy", policy)
	nc, err := nats.Connect(svc.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rec := `{"id":"p-1","ts":"2026-11-25T10:00:00Z","recipient":"Jane+News@example.net","reply_code":550,"status":"5.1.1","reply":"550 5.1.1 <jane+news@example.net>: Recipient address rejected: User unknown in virtual mailbox table","smtp_command":"RCPT"}`
	if err := nc.Publish("delivery.attempts.mta1", []byte(rec)); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	type check struct {
		Address      string `json:"address"`
		Suppressed   bool   `json:"suppressed"`
		Suppressions []struct {
			Source, Rule, Reason string
		} `json:"suppressions"`
	}
	var got check
	deadline := time.Now().Add(15 * time.Second)
	for {
		getJSON(t, "http://"+svc.HTTPAddr+"/v1/suppressions/jane@example.net", &got)
		if got.Suppressed || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !got.Suppressed || len(got.Suppressions) != 1 || got.Suppressions[0].Source != "policy" || got.Suppressions[0].Rule != "hard" || got.Suppressions[0].Reason != "userunknown" {
		t.Fatalf("jane@example.net: %+v, want suppressed by the policy's hard rule", got)
	}
	got = check{}
	getJSON(t, "http://"+svc.HTTPAddr+"/v1/suppressions/JANE+other@example.net", &got)
	if !got.Suppressed || got.Address != "jane@example.net" {
		t.Errorf("another +tag of the address: %+v, want it suppressed as jane@example.net", got)
	}
}

func TestServeBadPolicy(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"soft_count":0}`), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, _, err := parseOptions([]string{"--data-dir", dir, "--suppression-policy", policy, "--smtp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), opts, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err == nil || !strings.Contains(err.Error(), "soft_count") {
		t.Errorf("Start with soft_count 0: %v, want an error naming soft_count", err)
	}
}
