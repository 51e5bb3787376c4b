package smtpd

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer-mail/bouncer/verp"
)

// Defaults of DESIGN.md "Limits and bad input". go-smtp's zero values mean
// unlimited, so every limit is set explicitly.
const (
	DefaultMaxMessageBytes  = 10 << 20 // 552 5.3.4 beyond
	DefaultMaxRecipients    = 100
	DefaultMaxLineLength    = 2048
	DefaultReadTimeout      = 60 * time.Second
	DefaultWriteTimeout     = 60 * time.Second
	DefaultMaxConnections   = 1000
	DefaultMaxConnsPerIP    = 50
	DefaultPublishTimeout   = 15 * time.Second
	DefaultCommandTimeout   = 10 * time.Second // a command line, from its first byte
	DefaultEnvelopeTimeout  = 60 * time.Second // connect (or the previous message) to DATA
	DefaultShutdownDeadline = 30 * time.Second
	DefaultEvictIdleAfter   = 5 * time.Second // see Config.EvictIdleAfter
	DefaultMaxInflightBytes = 128 << 20       // see Config.MaxInflightBytes
)

// Config configures a Server.
type Config struct {
	// Hostname is announced in the greeting.
	Hostname string
	// Domains are the bounce domains accepted at RCPT; empty accepts any
	// domain (the caller warns about it at start).
	Domains []string
	// Signer verifies VERP tokens; nil accepts unsigned addresses only
	// (and any token unchecked), for senders that cannot sign.
	Signer *verp.Signer
	// AcceptUnsigned also accepts addresses without a token when a Signer
	// is set. Forged and expired tokens are refused either way.
	AcceptUnsigned bool

	MaxMessageBytes int64
	MaxRecipients   int
	MaxLineLength   int
	ReadTimeout     time.Duration
	WriteTimeout    time.Duration
	MaxConnections  int
	MaxConnsPerIP   int
	PublishTimeout  time.Duration
	// CommandTimeout bounds a command line from its first byte to its end,
	// so a client trickling bytes holds a connection that long, not a
	// ReadTimeout per command. Closed with 421 4.4.2 beyond.
	CommandTimeout time.Duration
	// EnvelopeTimeout bounds the time from connecting, or from the end of
	// the previous message, to the DATA or BDAT command (greeting, EHLO,
	// STARTTLS, MAIL, every RCPT), so a client sending whole commands
	// slowly cannot keep a connection either. Closed with 421 4.4.2 beyond.
	EnvelopeTimeout time.Duration
	// EvictIdleAfter: when every slot is taken, a new connection takes
	// the slot of a connection greeted at least this long ago that has
	// not sent a complete command line since (evict.go), the slowloris
	// defence. Zero: DefaultEvictIdleAfter.
	EvictIdleAfter time.Duration
	// MaxInflightBytes bounds the message bytes all sessions hold at
	// once, read and not yet published (budget.go); a message that
	// cannot have room within 5 s is answered 451 4.3.1. It must be at
	// least MaxMessageBytes. Zero: DefaultMaxInflightBytes, or
	// MaxMessageBytes when that is larger.
	MaxInflightBytes int64

	TLSConfig *tls.Config // enables STARTTLS when set

	Publisher  Publisher
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// withDefaults returns c with every zero limit set to its default.
func (c Config) withDefaults() Config {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxRecipients == 0 {
		c.MaxRecipients = DefaultMaxRecipients
	}
	if c.MaxLineLength == 0 {
		c.MaxLineLength = DefaultMaxLineLength
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = DefaultCommandTimeout
	}
	if c.EnvelopeTimeout == 0 {
		c.EnvelopeTimeout = DefaultEnvelopeTimeout
	}
	if c.EvictIdleAfter == 0 {
		c.EvictIdleAfter = DefaultEvictIdleAfter
	}
	if c.MaxInflightBytes == 0 {
		c.MaxInflightBytes = max(DefaultMaxInflightBytes, c.MaxMessageBytes+2*budgetChunk)
	}
	for i, d := range c.Domains {
		c.Domains[i] = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
	}
	return c
}

// Validate reports the first thing missing or wrong in c.
func (c Config) Validate() error {
	switch {
	case c.Publisher == nil:
		return errors.New("smtpd: Config.Publisher is required")
	case c.Logger == nil:
		return errors.New("smtpd: Config.Logger is required")
	case c.Registerer == nil:
		return errors.New("smtpd: Config.Registerer is required")
	case c.MaxMessageBytes < 0 || c.MaxRecipients < 0 || c.MaxLineLength < 0 ||
		c.MaxConnections < 0 || c.MaxConnsPerIP < 0:
		return errors.New("smtpd: limits must not be negative")
	case c.ReadTimeout < 0 || c.WriteTimeout < 0 || c.PublishTimeout < 0 ||
		c.CommandTimeout < 0 || c.EnvelopeTimeout < 0 || c.EvictIdleAfter < 0:
		return errors.New("smtpd: timeouts must not be negative")
	case c.MaxInflightBytes < 0:
		return errors.New("smtpd: MaxInflightBytes must not be negative")
	case c.MaxInflightBytes > 0 && c.MaxInflightBytes < cmp.Or(c.MaxMessageBytes, DefaultMaxMessageBytes)+2*budgetChunk:
		return fmt.Errorf("smtpd: MaxInflightBytes %d cannot hold one message of MaxMessageBytes (%d) and its last 64 KiB read",
			c.MaxInflightBytes, cmp.Or(c.MaxMessageBytes, DefaultMaxMessageBytes))
	}
	for _, d := range c.Domains {
		if d == "" || strings.ContainsAny(d, "@ \t") {
			return fmt.Errorf("smtpd: bad bounce domain %q", d)
		}
	}
	return nil
}
