package smtpd

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/event"
)

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bouncer.test"},
		DNSNames: []string{"bouncer.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestSTARTTLS upgrades a session with STARTTLS, delivers a report over
// TLS, and finds the TLS version in the envelope that went to JetStream.
func TestSTARTTLS(t *testing.T) {
	cert := selfSigned(t)
	h := newHarness(t, func(c *Config) {
		c.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	})
	c := h.dial()
	if ehlo := c.ehlo("mx.example.net"); !strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("EHLO does not offer STARTTLS:\n%s", ehlo)
	}
	c.expect(220, "STARTTLS")
	tc := tls.Client(c.conn, &tls.Config{ServerName: "bouncer.test", InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	c.expect(250, "EHLO mx.example.net")
	if code, line := c.send(h.sign("nobody@example.net"), ndr); code != 250 {
		t.Fatalf("DATA over TLS: %q", line)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := h.js.Stream(ctx, broker.StreamReports)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var env event.Envelope
	if err := json.Unmarshal([]byte(msg.Header.Get(broker.HeaderEnvelope)), &env); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(env.TLS, "TLS 1.") {
		t.Errorf("envelope TLS = %q, want the TLS version", env.TLS)
	}
	if env.Helo != "mx.example.net" || env.ClientIP != "127.0.0.1" || env.ReturnPath != "" || len(env.Recipients) != 1 {
		t.Errorf("envelope %+v", env)
	}
	io.WriteString(tc, "QUIT\r\n")
}
