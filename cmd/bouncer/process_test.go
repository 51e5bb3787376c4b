package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/broker"
)

// TestMain lets a test start this test binary as the bouncer command:
// with BOUNCER_TEST_RUN_MAIN=1 it runs main's run() on its arguments, so the
// process tests exercise the real signal handling and exit status.
func TestMain(m *testing.M) {
	if os.Getenv("BOUNCER_TEST_RUN_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// freePort returns a loopback port free right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type proc struct {
	cmd        *exec.Cmd
	smtp, http string
	stderr     *strings.Builder
	done       chan error
}

// startProcess runs bouncer as its own process on dataDir.
func startProcess(t *testing.T, dataDir string, extra ...string) *proc {
	t.Helper()
	p := &proc{
		smtp: fmt.Sprintf("127.0.0.1:%d", freePort(t)), http: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		stderr: &strings.Builder{}, done: make(chan error, 1),
	}
	args := append([]string{"--smtp-addr", p.smtp, "--http-addr", p.http, "--nats-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--data-dir", dataDir}, extra...)
	p.cmd = exec.Command(os.Args[0], args...)
	p.cmd.Env = append(os.Environ(), "BOUNCER_TEST_RUN_MAIN=1", "BOUNCER_VERP_KEYS=")
	pr, pw := io.Pipe()
	p.cmd.Stderr = pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := false
		for sc.Scan() {
			p.stderr.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "bouncer started") {
				once = true
				close(started)
			}
		}
	}()
	go func() { p.done <- p.cmd.Wait(); pw.Close() }()
	t.Cleanup(func() { p.cmd.Process.Kill() })
	select {
	case <-started:
	case err := <-p.done:
		t.Fatalf("bouncer exited at start: %v\n%s", err, p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("bouncer did not start:\n%s", p.stderr)
	}
	return p
}

// TestSIGTERMDuringData sends SIGTERM to the bouncer process while a DATA
// transfer is in flight: the transfer must finish with 250, the process
// exit 0, and the report be stored when bouncer runs again.
func TestSIGTERMDuringData(t *testing.T) {
	dir := t.TempDir()
	p := startProcess(t, dir)
	c, err := net.Dial("tcp", p.smtp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	read := replyReader(t, bufio.NewReader(c))
	read()
	for _, cmd := range []string{"EHLO mx.example.net", "MAIL FROM:<>", "RCPT TO:<bounces@bounces.example.com>", "DATA"} {
		fmt.Fprintf(c, "%s\r\n", cmd)
		read()
	}
	msg := strings.ReplaceAll(e2eNDR, "\n", "\r\n")
	half := len(msg) / 2
	io.WriteString(c, msg[:half])
	// go-smtp writes 354 before it calls the session's Data, which is
	// when the transfer counts as in flight; a SIGTERM in between closes
	// the connection without a reply (nothing was acknowledged, the
	// sender retries). Give the server that moment so the test exercises
	// a transfer that is in flight.
	time.Sleep(200 * time.Millisecond)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the process is shutting down, waiting for this transfer
	io.WriteString(c, msg[half:]+"\r\n.\r\n")
	if reply := read(); !strings.HasPrefix(reply, "250") {
		t.Fatalf("the transfer in flight during SIGTERM got %q, want 250\n%s", reply, p.stderr)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("bouncer exited with %v after SIGTERM\n%s", err, p.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("bouncer did not exit after SIGTERM\n%s", p.stderr)
	}
	// Run it again on the same data: the report acknowledged before the
	// shutdown is there (ingested then, or now from JetStream).
	p2 := startProcess(t, dir)
	var hist struct{ Events []struct{ Recipient string } }
	deadline := time.Now().Add(15 * time.Second)
	for len(hist.Events) == 0 && time.Now().Before(deadline) {
		getJSON(t, "http://"+p2.http+"/v1/recipients/gone@example.net/events", &hist)
		time.Sleep(50 * time.Millisecond)
	}
	if len(hist.Events) != 1 {
		t.Fatalf("after the restart %d events for the acknowledged report, want 1\n%s", len(hist.Events), p2.stderr)
	}
	p2.cmd.Process.Signal(syscall.SIGTERM)
	<-p2.done
}

// TestExternalNATS runs the service against a NATS server it did not start
// (--nats-url): nothing is embedded, and reports flow through it.
func TestExternalNATS(t *testing.T) {
	ext, err := broker.StartEmbedded(broker.EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Shutdown()
	opts, _, err := parseOptions([]string{
		"--smtp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--nats-url", ext.ClientURL(),
		"--data-dir", t.TempDir(),
	}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	svc, err := Start(context.Background(), opts, slog.New(slog.NewTextHandler(io.Discard, nil)), newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop(context.Background())
	if svc.nats != nil {
		t.Error("a NATS server was embedded although --nats-url was given")
	}
	if reply := smtpSend(t, svc.SMTPAddr, "bounces@bounces.example.com", e2eNDR); !strings.HasPrefix(reply, "250") {
		t.Fatalf("DATA: %q", reply)
	}
	var hist struct{ Events []struct{ Recipient string } }
	deadline := time.Now().Add(15 * time.Second)
	for len(hist.Events) == 0 && time.Now().Before(deadline) {
		getJSON(t, "http://"+svc.HTTPAddr+"/v1/recipients/gone@example.net/events", &hist)
		time.Sleep(50 * time.Millisecond)
	}
	if len(hist.Events) != 1 {
		t.Errorf("%d events through the external NATS, want 1", len(hist.Events))
	}
	js := ext.JetStreamEnabled()
	if !js {
		t.Error("the external server lost JetStream")
	}
}
