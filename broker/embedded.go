// Package broker is bouncer's side of NATS JetStream: an embedded server
// for the all-in-one mode, the streams reports and sync reply logs travel
// through, and the report codec shared by the listener (Publisher) and
// ingest (DecodeReport).
package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultListen is the embedded server's address when none is configured
// (DESIGN.md "All-in-one default").
const DefaultListen = "127.0.0.1:4222"

// MaxPayload is the embedded server's max_payload. It is above
// ReportsMaxMsgSize so a 10 MiB report plus its headers fits; NATS' own
// default (1 MiB) would refuse most reports with attachments. An external
// NATS server needs the same setting (max_payload: 16MB).
const MaxPayload = 16 << 20

// readyTimeout bounds how long StartEmbedded waits for the server to listen.
const readyTimeout = 10 * time.Second

// EmbeddedConfig configures StartEmbedded.
type EmbeddedConfig struct {
	// Listen is host:port for NATS clients; DefaultListen when empty. Port
	// 0 or -1 picks a free port (tests); read it back with
	// server.ClientURL().
	Listen string
	// StoreDir holds JetStream's file store. Required: an ack must mean
	// the report is on disk, in a directory the operator chose.
	StoreDir string
	// Logger receives the server's log; nil discards it.
	Logger *slog.Logger
}

// StartEmbedded starts a NATS server with JetStream in this process and
// returns once it accepts connections. Every JetStream write is fsynced
// before it is acknowledged (SyncAlways). The caller stops it with
// Shutdown and WaitForShutdown.
func StartEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("broker: EmbeddedConfig.StoreDir is required")
	}
	listen := cfg.Listen
	if listen == "" {
		listen = DefaultListen
	}
	host, portText, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("broker: embedded NATS listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < -1 || port > 65535 {
		return nil, fmt.Errorf("broker: embedded NATS listen address %q: bad port", listen)
	}
	if port == 0 {
		// nats-server reads 0 as "the default port 4222"; -1 is its
		// "pick a free one".
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName:             "bouncer",
		Host:                   host,
		Port:                   port,
		JetStream:              true,
		StoreDir:               cfg.StoreDir,
		SyncAlways:             true,
		NoSigs:                 true,
		MaxPayload:             MaxPayload,
		DisableJetStreamBanner: true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("broker: embedded NATS on %s: %w", listen, err)
	}
	logger := &natsLogger{l: cfg.Logger}
	if logger.l == nil {
		logger.l = slog.New(slog.DiscardHandler)
	}
	s.SetLoggerV2(logger, false, false, false)

	// Start returns once the client listener is up, or after logging a
	// fatal error (port in use, unusable store dir): nats-server reports
	// those through the logger, which keeps the first.
	s.Start()
	if err := logger.fatalErr(); err != nil {
		s.Shutdown()
		return nil, fmt.Errorf("broker: embedded NATS on %s: %w", listen, err)
	}
	if !s.ReadyForConnections(readyTimeout) {
		s.Shutdown()
		if err := logger.fatalErr(); err != nil {
			return nil, fmt.Errorf("broker: embedded NATS on %s: %w", listen, err)
		}
		return nil, fmt.Errorf("broker: embedded NATS on %s: not accepting connections after %s", listen, readyTimeout)
	}
	if !s.JetStreamEnabled() {
		s.Shutdown()
		return nil, fmt.Errorf("broker: embedded NATS on %s: JetStream did not start (store dir %s)", listen, cfg.StoreDir)
	}
	return s, nil
}
