package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/ingest"
	"github.com/bouncer-mail/bouncer/rules"
	"github.com/bouncer-mail/bouncer/verp"
)

// TestServeListenerOnly: with --ingest=false bouncer answers 250 once
// the report is in JetStream and stores nothing itself; /readyz does not
// depend on an ingest it does not run; an ingest worker on the same NATS
// and store (what bouncer-ingest is) then stores the report.
func TestServeListenerOnly(t *testing.T) {
	svc := startService(t, "--ingest=false")
	keys, _ := verp.ParseKeys(serveKeys)
	rcpt, err := (&verp.Signer{Keys: keys}).Sign("bounces.example.com", "gone@example.net", "<m1@example.org>")
	if err != nil {
		t.Fatal(err)
	}
	if reply := smtpSend(t, svc.SMTPAddr, rcpt, e2eNDR); !strings.HasPrefix(reply, "250") {
		t.Fatalf("DATA: %q", reply)
	}
	base := "http://" + svc.HTTPAddr
	events := func() int {
		var hist struct{ Events []struct{ Recipient string } }
		if code := getJSON(t, base+"/v1/recipients/"+url.PathEscape("gone@example.net")+"/events", &hist); code != 200 {
			t.Fatalf("recipient events: HTTP %d", code)
		}
		return len(hist.Events)
	}

	nc, err := nats.Connect(svc.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names, err := broker.ReportStreams(ctx, js)
	if err != nil || len(names) != broker.DefaultReportPartitions {
		t.Fatalf("reports streams %v, %v; want the %d partitions", names, err, broker.DefaultReportPartitions)
	}
	var held uint64
	for _, name := range names {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held += info.State.Msgs
	}
	// The 250 came after JetStream stored it, so it is there now; with no
	// ingest here it stays there.
	time.Sleep(300 * time.Millisecond)
	if held != 1 || events() != 0 {
		t.Fatalf("%d reports in JetStream and %d events stored; want 1 and 0 with --ingest=false", held, events())
	}
	if code := getJSON(t, base+"/readyz", nil); code != 200 {
		t.Errorf("/readyz: HTTP %d, want 200", code)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), "bouncer_ingest_batches_total") || !strings.Contains(string(body), `bouncer_smtp_replies_total{code="250"} 1`) {
		t.Errorf("/metrics: want the listener's metrics and no ingest's")
	}

	// The worker.
	p, err := ingest.New(ingest.Config{JS: js, Store: svc.store, Classifier: classify.New(rules.MustDefault()),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(wctx) }()
	defer func() { wcancel(); <-done }()
	deadline := time.Now().Add(15 * time.Second)
	for events() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := events(); n != 1 {
		t.Errorf("%d events stored by the worker, want 1", n)
	}
}
