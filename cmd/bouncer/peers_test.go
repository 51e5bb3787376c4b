package main

// Integration tests against real SMTP clients: swaks and Postfix's
// smtp-source (Debian packages swaks and postfix). CI installs them; when
// they are missing the tests fail, unless BOUNCER_TEST_NO_PEERS=1 says to
// skip them.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/verp"
)

// requirePeers returns the paths of the named programs, failing the test
// when one is missing (skipping it with BOUNCER_TEST_NO_PEERS=1).
func requirePeers(t testing.TB, names ...string) map[string]string {
	t.Helper()
	paths := map[string]string{}
	for _, name := range names {
		p, err := exec.LookPath(name)
		if err != nil {
			// Debian keeps smtp-source and smtp-sink in /usr/sbin, which a
			// non-root PATH may lack.
			if _, serr := os.Stat("/usr/sbin/" + name); serr == nil {
				p, err = "/usr/sbin/"+name, nil
			}
		}
		if err != nil {
			if os.Getenv("BOUNCER_TEST_NO_PEERS") == "1" {
				t.Skipf("%s not installed; skipped because BOUNCER_TEST_NO_PEERS=1", name)
			}
			t.Fatalf("%s not installed: install the real SMTP peers with `apt-get install -y postfix swaks` (postfix brings smtp-source), or set BOUNCER_TEST_NO_PEERS=1 to skip these tests", name)
		}
		paths[name] = p
	}
	return paths
}

// startPeerService starts the all-in-one service for bounces.example.com
// with the given VERP keys (empty: none, unsigned addresses accepted) and
// further flags.
func startPeerService(t testing.TB, keys string, args ...string) *Service {
	t.Helper()
	opts, _, err := parseOptions(append([]string{
		"--smtp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--domain", "bounces.example.com", "--hostname", "bouncer.test",
	}, args...), func(k string) string {
		if k == "BOUNCER_VERP_KEYS" {
			return keys
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := Start(context.Background(), opts, slog.New(slog.NewTextHandler(io.Discard, nil)), newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Stop(context.Background()) })
	return svc
}

// peer runs a client program to completion and returns its combined
// output and exit status (-1 when it could not run or timed out).
func peer(t testing.TB, timeout time.Duration, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: timed out after %s; output:\n%s", name, strings.Join(args, " "), timeout, out)
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		t.Fatalf("%s: %v", name, err)
	}
	return string(out), 0
}

// metricValue reads one sample, e.g. `bouncer_smtp_replies_total{code="250"}`,
// from the service's /metrics; 0 when it is absent.
func metricValue(t testing.TB, svc *Service, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + svc.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sample, err)
			}
			return f
		}
	}
	return 0
}

// reportsReceived is stats.reports_received over the last day.
func reportsReceived(t testing.TB, svc *Service) int64 {
	t.Helper()
	var stats struct {
		ReportsReceived int64 `json:"reports_received"`
	}
	resp, err := http.Get("http://" + svc.HTTPAddr + "/v1/stats?window=24h")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stats: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		t.Fatalf("stats: %v", err)
	}
	return stats.ReportsReceived
}

// waitReports waits until ingest has stored want reports, then a little
// longer to catch any surplus, and returns the count it saw last.
func waitReports(t testing.TB, svc *Service, want int64) int64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got int64
	for {
		got = reportsReceived(t, svc)
		if got >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	return reportsReceived(t, svc)
}

// TestPeersSwaks sends a signed VERP NDR with swaks from the null sender:
// swaks must succeed and the event must come out of the API. The same
// report to a domain that is not a bounce domain is refused 550 5.7.1.
func TestPeersSwaks(t *testing.T) {
	bin := requirePeers(t, "swaks")["swaks"]
	svc := startPeerService(t, serveKeys)
	keys, err := verp.ParseKeys(serveKeys)
	if err != nil {
		t.Fatal(err)
	}
	rcpt, err := (&verp.Signer{Keys: keys}).Sign("bounces.example.com", "gone@example.net", "<m1@example.org>")
	if err != nil {
		t.Fatal(err)
	}
	msg := filepath.Join(t.TempDir(), "ndr.eml")
	if err := os.WriteFile(msg, []byte(e2eNDR+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(svc.SMTPAddr, ":")
	swaks := func(to string) (string, int) {
		return peer(t, 30*time.Second, bin, "--server", host, "--port", port, "--helo", "mx.example.net",
			"--from", "<>", "--to", to, "--data", "@"+msg, "--timeout", "20")
	}

	out, status := swaks(rcpt)
	if status != 0 {
		t.Fatalf("swaks to %s: exit status %d, want 0; output:\n%s", rcpt, status, out)
	}
	if !strings.Contains(out, "MAIL FROM:<>") {
		t.Errorf("swaks did not send the null sender; output:\n%s", out)
	}

	out, status = swaks("postmaster@elsewhere.example.org")
	if status == 0 || !strings.Contains(out, "550 5.7.1") {
		t.Errorf("swaks to a foreign domain: exit status %d, want non-zero with 550 5.7.1; output:\n%s", status, out)
	}

	var hist struct {
		Events []struct{ Recipient, Class, Reason, Status, Source string }
	}
	u := "http://" + svc.HTTPAddr + "/v1/recipients/" + url.PathEscape("gone@example.net") + "/events"
	deadline := time.Now().Add(15 * time.Second)
	for len(hist.Events) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if code := getJSON(t, u, &hist); code != 200 {
			t.Fatalf("recipient events: HTTP %d", code)
		}
	}
	if len(hist.Events) != 1 {
		t.Fatalf("%d events for gone@example.net, want 1", len(hist.Events))
	}
	if e := hist.Events[0]; e.Class != "hard" || e.Reason != "userunknown" || e.Status != "5.1.1" || e.Source != "ndr" {
		t.Errorf("event %+v, want a hard userunknown 5.1.1 from an NDR", e)
	}
	if got := reportsReceived(t, svc); got != 1 {
		t.Errorf("reports_received = %d, want 1 (the refused one is not stored)", got)
	}
	if got := metricValue(t, svc, `bouncer_smtp_replies_total{code="550"}`); got != 1 {
		t.Errorf(`bouncer_smtp_replies_total{code="550"} = %v, want 1`, got)
	}
}

// TestPeersSMTPSource loads the listener with Postfix's smtp-source, 200
// messages over 10 parallel sessions, with no VERP keys configured. Every
// message smtp-source makes differs (its Message-Id holds its pid, the
// socket and a counter that only goes down), so every one must be stored.
// Then 50 byte-identical messages (-F) are each answered 250 and stored
// once: a resend is deduplicated by its SHA-256.
func TestPeersSMTPSource(t *testing.T) {
	bin := requirePeers(t, "smtp-source")["smtp-source"]
	svc := startPeerService(t, "")
	const n = 200
	out, status := peer(t, 60*time.Second, bin, "-s", "10", "-m", strconv.Itoa(n), "-l", "2000",
		"-f", "", "-t", "rcpt@bounces.example.com", svc.SMTPAddr)
	// smtp-source exits non-zero on any reply that is not 2xx.
	if status != 0 {
		t.Fatalf("smtp-source: exit status %d; output:\n%s", status, out)
	}
	if got := metricValue(t, svc, `bouncer_smtp_replies_total{code="250"}`); got != n {
		t.Errorf("%v replies 250, want %d", got, n)
	}
	if got := waitReports(t, svc, n); got != n {
		t.Errorf("reports_received = %d after %d distinct messages answered 250", got, n)
	}

	const same = 50
	msg := filepath.Join(t.TempDir(), "same.eml")
	if err := os.WriteFile(msg, []byte("From: <>\nTo: <rcpt@bounces.example.com>\nSubject: the same bytes every time\n\nidentical\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, status = peer(t, 60*time.Second, bin, "-s", "5", "-m", strconv.Itoa(same), "-F", msg,
		"-f", "", "-t", "rcpt@bounces.example.com", svc.SMTPAddr)
	if status != 0 {
		t.Fatalf("smtp-source -F: exit status %d; output:\n%s", status, out)
	}
	if got := metricValue(t, svc, `bouncer_smtp_replies_total{code="250"}`); got != n+same {
		t.Errorf("%v replies 250, want %d", got, n+same)
	}
	if got := waitReports(t, svc, n+1); got != n+1 {
		t.Errorf("reports_received = %d after %d identical messages, want %d (stored once)", got, same, n+1)
	}
	if got := metricValue(t, svc, `bouncer_smtp_replies_total{code="451"}`); got != 0 {
		t.Errorf("%v replies 451, want 0", got)
	}
}

// BenchmarkPeersSMTPSource runs smtp-source against the in-process service,
// b.N messages of 8 KB over 50 sessions, so `go test -bench PeersSMTPSource
// -cpuprofile` shows where a durable accept spends its time.
func BenchmarkPeersSMTPSource(b *testing.B) {
	bin := requirePeers(b, "smtp-source")["smtp-source"]
	// smtp-source opens a new connection per message; the server closes
	// the old one a moment after the client does, so 50 sessions can
	// briefly be 51 connections: lift the per-IP limit of 50.
	svc := startPeerService(b, "", "--max-connections-per-ip", "1000")
	b.ResetTimer()
	out, status := peer(b, 10*time.Minute, bin, "-s", "50", "-m", strconv.Itoa(b.N), "-l", "8000",
		"-f", "", "-t", "rcpt@bounces.example.com", svc.SMTPAddr)
	b.StopTimer()
	if status != 0 {
		b.Fatalf("smtp-source: exit status %d; output:\n%s", status, out)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	if got := metricValue(b, svc, `bouncer_smtp_replies_total{code="250"}`); got != float64(b.N) {
		b.Errorf("%v replies 250, want %d", got, b.N)
	}
}
