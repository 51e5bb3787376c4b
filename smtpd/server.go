package smtpd

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer-mail/bouncer/verp"
)

// Server is the listener. Create it with New, run it with Serve, stop it
// with Shutdown.
type Server struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	smtp    *smtp.Server
	backend *backend
	domains map[string]bool

	// inflight bounds the message bytes held by all sessions; a session
	// waits up to budgetWait for room.
	inflight   *budget
	budgetWait time.Duration

	mu        sync.Mutex
	listeners []*limitListener
}

// New returns a Server for cfg, with every limit left zero set to its
// default.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, m: m, domains: map[string]bool{},
		inflight: newBudget(cfg.MaxInflightBytes), budgetWait: budgetWait}
	if err := cfg.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bouncer_smtp_inflight_bytes",
		Help: "Bytes of messages being received and published now, taken from --max-inflight-bytes in 64 KiB steps.",
	}, func() float64 { return float64(s.inflight.held(cfg.MaxInflightBytes)) })); err != nil {
		return nil, err
	}
	for _, d := range cfg.Domains {
		s.domains[d] = true
	}
	s.backend = &backend{s: s}
	srv := smtp.NewServer(s.backend)
	srv.Domain = cfg.Hostname
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = cfg.MaxRecipients
	srv.MaxLineLength = cfg.MaxLineLength
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	srv.TLSConfig = cfg.TLSConfig
	srv.EnableSMTPUTF8 = true
	srv.AllowInsecureAuth = false
	srv.ErrorLog = log.New(slogWriter{cfg.Logger}, "", 0)
	s.smtp = srv
	return s, nil
}

// Serve accepts connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	d := deadlines{command: s.cfg.CommandTimeout, envelope: s.cfg.EnvelopeTimeout, evictAfter: s.cfg.EvictIdleAfter, hostname: s.cfg.Hostname}
	ll := newLimitListener(l, s.cfg.MaxConnections, s.cfg.MaxConnsPerIP, d, s.m)
	s.mu.Lock()
	s.listeners = append(s.listeners, ll)
	s.mu.Unlock()
	err := s.smtp.Serve(ll)
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and closes every connection that
// holds no mail transaction; a connection that does (from an accepted MAIL
// FROM to the final reply of its DATA, or its RSET) may finish it — its
// report made durable and answered — and is closed then. A MAIL FROM after
// Shutdown began is answered 421 4.3.2. Shutdown returns ctx's error if the
// transactions take longer than ctx allows; their connections are closed
// then too.
func (s *Server) Shutdown(ctx context.Context) error {
	// Close the listeners first so no new connection arrives.
	shutdownErr := make(chan error, 1)
	go func() { shutdownErr <- s.smtp.Shutdown(context.Background()) }()
	s.mu.Lock()
	listeners := append([]*limitListener(nil), s.listeners...)
	s.mu.Unlock()
	drained := make([]<-chan struct{}, len(listeners))
	for i, l := range listeners {
		drained[i] = l.drain()
	}
	var err error
	for _, d := range drained {
		select {
		case <-d:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	for _, l := range listeners {
		l.closeAll()
	}
	select {
	case <-shutdownErr:
	case <-time.After(5 * time.Second):
		s.log.Warn("smtp: connections still open after shutdown")
	}
	return err
}

func (s *Server) ourDomain(d string) bool {
	if len(s.domains) == 0 {
		return true
	}
	return s.domains[strings.TrimSuffix(d, ".")]
}

// verify checks a recipient's VERP token: nil when it may be accepted.
func (s *Server) verify(addr string) error {
	if s.cfg.Signer == nil {
		return nil
	}
	_, err := s.cfg.Signer.Verify(addr)
	if errors.Is(err, verp.ErrNotVERP) && s.cfg.AcceptUnsigned {
		return nil
	}
	return err
}

// slogWriter routes go-smtp's log lines to the structured logger.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn("smtp: " + strings.TrimSpace(string(p)))
	return len(p), nil
}
