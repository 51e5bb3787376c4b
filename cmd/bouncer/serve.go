package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/bouncer-mail/bouncer/api"
	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/ingest"
	"github.com/bouncer-mail/bouncer/smtpd"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse"
	"github.com/bouncer-mail/bouncer/store/sqlite"
	"github.com/bouncer-mail/bouncer/suppress"
	"github.com/bouncer-mail/bouncer/verp"
)

// Service is the running all-in-one: listener, embedded NATS, ingest,
// store and HTTP API. Start it with Start, stop it with Stop.
type Service struct {
	opts Options
	log  *slog.Logger

	SMTPAddr, HTTPAddr, NATSURL string // where it listens, known after Start

	nats      *broker.Embedded
	nc        *nats.Conn
	smtp      *smtpd.Server
	publisher *broker.Publisher // the listener's; closed once its sessions ended
	http      *http.Server
	store     store.Store
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	errc      chan error
	stopped   sync.Once
}

// Start brings every part up, in dependency order, and returns once the
// listener accepts connections. reg receives every metric.
func Start(ctx context.Context, opts Options, log *slog.Logger, reg *prometheus.Registry) (*Service, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	s := &Service{opts: opts, log: log, errc: make(chan error, 4)}
	ok := false
	defer func() {
		if !ok {
			s.Stop(context.Background())
		}
	}()
	if err := os.MkdirAll(opts.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	rs, err := loadRules(opts.RulesFile)
	if err != nil {
		return nil, err
	}
	policy, err := loadPolicy(opts.PolicyFile)
	if err != nil {
		return nil, err
	}
	signer, err := loadSigner(opts)
	if err != nil {
		return nil, err
	}
	if signer == nil {
		log.Warn("no VERP keys (BOUNCER_VERP_KEYS or --verp-keys-file): bounce addresses are accepted unsigned")
	}
	if len(opts.Domains) == 0 {
		log.Warn("no --domain: RCPT is accepted for any domain")
	}
	s.store, err = openStore(ctx, opts, log.With("component", "store"), reg)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}

	natsURL := opts.NATSURL
	if natsURL == "" {
		s.nats, err = broker.StartEmbeddedServer(broker.EmbeddedConfig{Listen: opts.NATSListen, StoreDir: filepath.Join(opts.DataDir, "nats"), Logger: log})
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: %w", err)
		}
		natsURL = s.nats.ClientURL()
	}
	s.NATSURL = natsURL
	s.nc, err = nats.Connect(natsURL, append(broker.ClientOptions(),
		nats.Name("bouncer"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))...)
	if err != nil {
		return nil, fmt.Errorf("NATS %s: %w", natsURL, err)
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		return nil, err
	}
	if opts.NATSURL != "" {
		if err := broker.CheckMaxPayload(js); err != nil {
			return nil, fmt.Errorf("NATS %s: %w", natsURL, err)
		}
	}
	if err := broker.EnsureStreams(ctx, js, opts.NATSReplicas); err != nil {
		return nil, fmt.Errorf("NATS streams: %w", err)
	}
	if err := broker.EnsureReportPartitions(ctx, js, opts.NATSReplicas, opts.Partitions); err != nil {
		return nil, fmt.Errorf("NATS streams: %w", err)
	}

	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if s.nats != nil {
		// A full disk leaves nats-server's file store failing until a
		// restart; restart it in place once there is room again.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.nats.Heal(runCtx, broker.HealConfig{Logger: log.With("component", "nats")})
		}()
	}
	published := &broker.PublishHealth{}
	var pipe *ingest.Pipeline
	if opts.Ingest {
		pipe, err = ingest.New(ingest.Config{JS: js, Store: s.store, Classifier: classify.New(rs), Logger: log.With("component", "ingest"), Registerer: reg, Policy: policy})
		if err != nil {
			return nil, err
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := pipe.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
				s.errc <- fmt.Errorf("ingest: %w", err)
			}
		}()
	} else {
		log.Info("--ingest=false: a listener only; bouncer-ingest workers on the same NATS and store store what it accepts")
	}

	read, admin, err := loadTokens(opts)
	if err != nil {
		return nil, err
	}
	handler, err := api.New(api.Config{Store: s.store, Logger: log.With("component", "api"), Gatherer: reg, Ready: s.ready(pipe, published), ReadTokens: read, AdminTokens: admin, Normalize: policy.Normalize})
	if err != nil {
		return nil, err
	}
	hl, err := net.Listen("tcp", opts.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("HTTP: %w", err)
	}
	s.HTTPAddr = hl.Addr().String()
	s.http = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 5 * time.Minute, IdleTimeout: 2 * time.Minute}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("HTTP: %w", err)
		}
	}()

	var tlsConfig *tls.Config
	if opts.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(opts.TLSCert, opts.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	perMessage := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "bouncer_publish_reports_per_message",
		Help:    "Reports in each message the listener stored in JetStream: 1 for a report alone, more for a bundle of the reports that came while the one before was being synced.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
	})
	if err := reg.Register(perMessage); err != nil {
		return nil, err
	}
	s.publisher = &broker.Publisher{JS: js, Partitions: opts.Partitions, Timeout: smtpd.DefaultPublishTimeout, Health: published, Sizes: perMessage}
	s.smtp, err = smtpd.New(smtpd.Config{
		Hostname: opts.Hostname, Domains: opts.Domains, Signer: signer, AcceptUnsigned: opts.AcceptUnsigned,
		MaxMessageBytes: opts.MaxMessageBytes, MaxInflightBytes: opts.MaxInflightBytes, MaxRecipients: opts.MaxRecipients,
		MaxConnections: opts.MaxConnections, MaxConnsPerIP: opts.MaxConnsPerIP,
		ReadTimeout: opts.ReadTimeout, WriteTimeout: opts.WriteTimeout,
		CommandTimeout: opts.CommandTimeout, EnvelopeTimeout: opts.EnvelopeTimeout,
		TLSConfig: tlsConfig, Publisher: s.publisher,
		Logger: log.With("component", "smtpd"), Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	sl, err := net.Listen("tcp", opts.SMTPAddr)
	if err != nil {
		return nil, fmt.Errorf("SMTP: %w", err)
	}
	s.SMTPAddr = sl.Addr().String()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.smtp.Serve(sl); err != nil {
			s.errc <- fmt.Errorf("SMTP: %w", err)
		}
	}()
	log.Info("bouncer started", "smtp", s.SMTPAddr, "http", s.HTTPAddr, "nats", natsURL, "data_dir", opts.DataDir, "domains", opts.Domains)
	ok = true
	return s, nil
}

// Err delivers the first error of a part that stopped by itself.
func (s *Service) Err() <-chan error { return s.errc }

// Stop shuts down in reverse order: the listener first (transfers in
// flight finish and are answered), then ingest, HTTP, NATS and the store.
func (s *Service) Stop(ctx context.Context) error {
	var err error
	s.stopped.Do(func() {
		if s.smtp != nil {
			sctx, cancel := context.WithTimeout(ctx, s.opts.ShutdownTimeout)
			if e := s.smtp.Shutdown(sctx); e != nil {
				err = fmt.Errorf("SMTP shutdown: %w", e)
			}
			cancel()
		}
		if s.publisher != nil {
			// Every session has ended: no report waits to be published.
			s.publisher.Close()
		}
		if s.cancel != nil {
			s.cancel()
		}
		if s.http != nil {
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			s.http.Shutdown(hctx)
			cancel()
		}
		s.wg.Wait()
		if s.nc != nil {
			s.nc.Drain()
			s.nc.Close()
		}
		if s.nats != nil {
			s.nats.Shutdown()
		}
		if s.store != nil {
			s.store.Close()
		}
	})
	return err
}

// ready is /readyz's check: ingest's (when it runs here), then whether
// reports can be made durable — the embedded JetStream can store (a full
// disk fails it), and the listener's latest publish did not fail.
func (s *Service) ready(pipe *ingest.Pipeline, published *broker.PublishHealth) func() error {
	return func() error {
		if pipe != nil {
			if err := pipe.Ready(); err != nil {
				return err
			}
		}
		if s.nats != nil {
			if err := s.nats.Check(); err != nil {
				return err
			}
		}
		return published.Err()
	}
}

// openStore opens ClickHouse when --clickhouse-dsn is set, else SQLite
// under the data dir.
func openStore(ctx context.Context, o Options, log *slog.Logger, reg prometheus.Registerer) (store.Store, error) {
	if o.ClickHouseDSN != "" {
		return clickhouse.Open(ctx, o.ClickHouseDSN, clickhouse.Options{ReportLookback: o.ReportLookback})
	}
	return sqlite.Open(ctx, filepath.Join(o.DataDir, "bouncer.db"), sqlite.Options{Logger: log, Registerer: reg})
}

func loadSigner(o Options) (*verp.Signer, error) {
	var keys verp.Keys
	var err error
	switch {
	case o.VERPKeysFile != "":
		keys, err = verp.LoadKeysFile(o.VERPKeysFile)
	case o.VERPKeys != "":
		keys, err = verp.ParseKeys(o.VERPKeys)
	default:
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("VERP keys: %w", err)
	}
	return &verp.Signer{Keys: keys}, nil
}

// loadTokens returns the API's read and admin tokens from the environment
// and --api-tokens-file ("read TOKEN" / "admin TOKEN" lines, # comments).
func loadTokens(o Options) (read, admin []string, err error) {
	read = append(read, o.APIReadTokens...)
	admin = append(admin, o.APIAdminTokens...)
	if o.APITokensFile == "" {
		return read, admin, nil
	}
	b, err := os.ReadFile(o.APITokensFile)
	if err != nil {
		return nil, nil, fmt.Errorf("API tokens: %w", err)
	}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kind, tok, ok := strings.Cut(line, " ")
		tok = strings.TrimSpace(tok)
		switch {
		case !ok || tok == "":
			return nil, nil, fmt.Errorf("API tokens file line %d: want \"read TOKEN\" or \"admin TOKEN\"", i+1)
		case len(tok) < 16:
			return nil, nil, fmt.Errorf("API tokens file line %d: a token needs at least 16 characters", i+1)
		case kind == "read":
			read = append(read, tok)
		case kind == "admin":
			admin = append(admin, tok)
		default:
			return nil, nil, fmt.Errorf("API tokens file line %d: kind %q is not read or admin", i+1, kind)
		}
	}
	return read, admin, nil
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// loadPolicy reads the suppression policy file, or returns the defaults
// for "".
func loadPolicy(path string) (suppress.Policy, error) {
	if path == "" {
		return suppress.Default, nil
	}
	return suppress.Load(path)
}
