package broker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startServer runs an embedded server on a free port for one test.
func startServer(t *testing.T, dir string) *server.Server {
	t.Helper()
	return startOn(t, "127.0.0.1:-1", dir)
}

func startOn(t *testing.T, listen, dir string) *server.Server {
	t.Helper()
	s, err := StartEmbedded(EmbeddedConfig{Listen: listen, StoreDir: dir})
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// connect returns a JetStream client of s with bouncer's streams in place.
func connect(t *testing.T, s *server.Server, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := EnsureStreams(ctx, js, 1); err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
	return js
}

func envelopeOf(raw []byte) event.Envelope {
	sum := sha256.Sum256(raw)
	return event.Envelope{
		ID:         hex.EncodeToString(sum[:]),
		ReturnPath: "",
		Recipients: []string{"b+token@bounces.example.com"},
		ClientIP:   "192.0.2.7",
		Helo:       "mx.example.net",
		Received:   time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		TLS:        "TLS1.3",
	}
}

// next fetches one message of the reports stream through a consumer.
func next(t *testing.T, js jetstream.JetStream) jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(ctx, StreamReports, jetstream.ConsumerConfig{
		Durable: "test", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatalf("next: %v", err)
	}
	return msg
}

func TestStartEmbeddedPicksFreePort(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", "127.0.0.1:-1"} {
		s := startOn(t, listen, t.TempDir())
		if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(s.ClientURL(), ":4222") {
			t.Errorf("ClientURL = %s, want a free loopback port", s.ClientURL())
		}
		if !s.JetStreamEnabled() {
			t.Error("JetStream not enabled")
		}
	}
}

func TestStartEmbeddedPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	s, err := StartEmbedded(EmbeddedConfig{Listen: addr, StoreDir: t.TempDir()})
	if err == nil {
		s.Shutdown()
		t.Fatalf("StartEmbedded on a used port: no error")
	}
	t.Logf("port in use: %v", err)
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the address %s", err, addr)
	}
}

func TestStartEmbeddedConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  EmbeddedConfig
		want string
	}{
		{"no store dir", EmbeddedConfig{Listen: "127.0.0.1:-1"}, "StoreDir is required"},
		{"no port", EmbeddedConfig{Listen: "127.0.0.1", StoreDir: t.TempDir()}, "127.0.0.1"},
		{"bad port", EmbeddedConfig{Listen: "127.0.0.1:x", StoreDir: t.TempDir()}, "bad port"},
		{"port too big", EmbeddedConfig{Listen: "127.0.0.1:70000", StoreDir: t.TempDir()}, "bad port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := StartEmbedded(tc.cfg)
			if err == nil {
				s.Shutdown()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestEnsureStreams(t *testing.T) {
	s := startServer(t, t.TempDir())
	js := connect(t, s)
	ctx := context.Background()
	// Twice: the second call finds them and changes nothing.
	if err := EnsureStreams(ctx, js, 0); err != nil {
		t.Fatalf("EnsureStreams again: %v", err)
	}
	for _, want := range StreamConfigs(1) {
		st, err := js.Stream(ctx, want.Name)
		if err != nil {
			t.Fatalf("stream %s: %v", want.Name, err)
		}
		got := st.CachedInfo().Config
		if got.Storage != jetstream.FileStorage || got.Replicas != 1 || got.MaxMsgSize != want.MaxMsgSize ||
			got.Duplicates != want.Duplicates || got.Retention != want.Retention || got.Subjects[0] != want.Subjects[0] {
			t.Errorf("stream %s: got %+v", want.Name, got)
		}
	}
	rep := StreamConfigs(1)[0]
	if rep.Duplicates < 2*time.Minute || rep.MaxMsgSize != 12<<20 {
		t.Errorf("reports stream: duplicates %s, max msg size %d", rep.Duplicates, rep.MaxMsgSize)
	}
}

func TestCheckMaxPayload(t *testing.T) {
	js := connect(t, startServer(t, t.TempDir()))
	if err := CheckMaxPayload(js); err != nil {
		t.Errorf("embedded server: %v", err)
	}
	// A server with NATS' default max_payload, as an external one may be.
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Shutdown()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("plain server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	plain, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckMaxPayload(plain); err == nil || !strings.Contains(err.Error(), "max_payload") {
		t.Errorf("default max_payload: %v, want an error", err)
	}
}

func TestPublishDecodeRoundTrip(t *testing.T) {
	s := startServer(t, t.TempDir())
	js := connect(t, s)
	raw := []byte("From: MAILER-DAEMON@mx.example.net\r\nSubject: failure\r\n\r\nno such user\r\n")
	env := envelopeOf(raw)
	pub := &Publisher{JS: js}
	ctx := context.Background()
	if err := pub.Publish(ctx, env, raw); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	// The same bytes again: a duplicate ack, success, stored once.
	if err := pub.Publish(ctx, env, raw); err != nil {
		t.Fatalf("Publish again: %v", err)
	}
	st, err := js.Stream(ctx, StreamReports)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1", info.State.Msgs)
	}

	msg := next(t, js)
	gotEnv, gotRaw, err := DecodeReport(msg)
	if err != nil {
		t.Fatalf("DecodeReport: %v", err)
	}
	if !bytes.Equal(gotRaw, raw) {
		t.Errorf("raw = %q, want %q", gotRaw, raw)
	}
	if gotEnv.ID != env.ID || gotEnv.ClientIP != env.ClientIP || gotEnv.Helo != env.Helo || !gotEnv.Received.Equal(env.Received) ||
		gotEnv.TLS != env.TLS || len(gotEnv.Recipients) != 1 || gotEnv.Recipients[0] != env.Recipients[0] {
		t.Errorf("envelope = %+v, want %+v", gotEnv, env)
	}
	if id := msg.Headers().Get(jetstream.MsgIDHeader); id != env.ID {
		t.Errorf("Nats-Msg-Id = %q, want %q", id, env.ID)
	}
}

// TestPublishLargeReport checks a report at the listener's 10 MiB limit
// passes, which NATS' default 1 MiB max_payload would refuse.
func TestPublishLargeReport(t *testing.T) {
	s := startServer(t, t.TempDir())
	js := connect(t, s)
	raw := bytes.Repeat([]byte("0123456789abcdef"), 10<<20/16)
	if err := (&Publisher{JS: js}).Publish(context.Background(), envelopeOf(raw), raw); err != nil {
		t.Fatalf("Publish 10 MiB: %v", err)
	}
	_, got, err := DecodeReport(next(t, js))
	if err != nil || len(got) != len(raw) {
		t.Fatalf("DecodeReport: %d bytes, %v", len(got), err)
	}
}

func TestPublishErrors(t *testing.T) {
	s := startServer(t, t.TempDir())
	js := connect(t, s)
	pub := &Publisher{JS: js, Timeout: 500 * time.Millisecond}
	raw := []byte("x")
	if err := pub.Publish(context.Background(), event.Envelope{}, raw); err == nil {
		t.Error("Publish without an id: no error")
	}
	big := envelopeOf(raw)
	big.Helo = strings.Repeat("h", MaxEnvelopeBytes)
	if err := pub.Publish(context.Background(), big, raw); err == nil || IsUnavailable(err) {
		t.Errorf("Publish with an oversized envelope: %v, want a plain error", err)
	}

	s.Shutdown()
	s.WaitForShutdown()
	err := pub.Publish(context.Background(), envelopeOf(raw), raw)
	if err == nil {
		t.Fatal("Publish with the server down: no error")
	}
	t.Logf("server down: %v", err)
	if !errors.Is(err, ErrUnavailable) || !IsUnavailable(err) {
		t.Errorf("Publish with the server down: %v, want ErrUnavailable", err)
	}
}

func TestDecodeReportErrors(t *testing.T) {
	s := startServer(t, t.TempDir())
	js := connect(t, s)
	raw := []byte("report")
	good := envelopeOf(raw)
	wrongID := good
	wrongID.ID = strings.Repeat("0", 64)
	for _, tc := range []struct {
		name   string
		header string
		want   string
	}{
		{"no header", "", "no Bouncer-Envelope header"},
		{"bad json", "{not json", "decoding Bouncer-Envelope"},
		{"wrong id", mustJSON(t, wrongID), "is not the SHA-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			m := &nats.Msg{Subject: SubjectReports, Data: raw, Header: nats.Header{}}
			if tc.header != "" {
				m.Header.Set(HeaderEnvelope, tc.header)
			}
			if _, err := js.PublishMsg(ctx, m); err != nil {
				t.Fatal(err)
			}
			msg := next(t, js)
			if err := msg.Ack(); err != nil {
				t.Fatal(err)
			}
			_, _, err := DecodeReport(msg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("DecodeReport: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func mustJSON(t *testing.T, env event.Envelope) string {
	t.Helper()
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
