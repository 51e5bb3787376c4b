package event

import "time"

// Envelope is what the listener knew of a report when it accepted it: the
// SMTP envelope and the connection. It travels with the raw message through
// NATS to ingest and the store.
type Envelope struct {
	ID         string    `json:"id"`          // hex SHA-256 of the raw message; the JetStream message id
	ReturnPath string    `json:"return_path"` // MAIL FROM, "" for the null sender
	Recipients []string  `json:"recipients"`  // RCPT TO: the bounce addresses (VERP)
	ClientIP   string    `json:"client_ip"`
	Helo       string    `json:"helo"`
	Received   time.Time `json:"received"`
	TLS        string    `json:"tls"` // TLS version, "" for plain text
}
