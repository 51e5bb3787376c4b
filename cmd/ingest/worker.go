package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/ingest"
	"github.com/bouncer-mail/bouncer/rules"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse"
	"github.com/bouncer-mail/bouncer/store/sqlite"
	"github.com/bouncer-mail/bouncer/suppress"
)

// Durable is the JetStream consumer every ingest process shares: the
// separate workers and the in-process ingest of the all-in-one bouncer
// alike, so each report is stored by exactly one of them.
const Durable = ingest.DefaultDurable

// Worker is a running ingest process: a NATS connection, the pipeline,
// the store and the probe and metrics endpoint. Start it with Start, stop
// it with Stop.
type Worker struct {
	log *slog.Logger

	HTTPAddr string // where it listens, known after Start

	nc      *nats.Conn
	http    *http.Server
	store   store.Store
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errc    chan error
	stopped sync.Once
}

// Run starts a worker, runs it until ctx is done or a part fails, and
// stops it: the batch in hand is written and acked first.
func Run(ctx context.Context, opts Options, log *slog.Logger, reg *prometheus.Registry) error {
	w, err := Start(ctx, opts, log, reg)
	if err != nil {
		return err
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-w.Err():
	}
	return errors.Join(runErr, w.Stop(context.Background()))
}

// Start connects to NATS, ensures bouncer's streams, opens the store and
// starts consuming and serving HTTP. ctx bounds the start only. reg
// receives every metric and is served on /metrics.
func Start(ctx context.Context, opts Options, log *slog.Logger, reg *prometheus.Registry) (*Worker, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	w := &Worker{log: log, errc: make(chan error, 2)}
	ok := false
	defer func() {
		if !ok {
			w.Stop(context.Background())
		}
	}()
	rs, err := loadRules(opts.RulesFile)
	if err != nil {
		return nil, err
	}
	policy := suppress.Default
	if opts.PolicyFile != "" {
		if policy, err = suppress.Load(opts.PolicyFile); err != nil {
			return nil, err
		}
	}
	if opts.ClickHouseDSN == "" {
		log.Warn("no --clickhouse-dsn: storing in SQLite under --data-dir; only one ingest process may run like this, several workers need ClickHouse",
			"data_dir", opts.DataDir)
	}
	w.store, err = openStore(ctx, opts, log.With("component", "store"), reg)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}

	// A failed first connect is an error (the supervisor restarts us);
	// once connected, reconnect for ever: the pipeline backs off and
	// /readyz says so meanwhile.
	w.nc, err = nats.Connect(opts.NATSURL, append(broker.ClientOptions(), nats.Name("bouncer-ingest"), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: closed by Stop
				log.Warn("NATS disconnected; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted()) }))...)
	if err != nil {
		return nil, fmt.Errorf("NATS %s: %w", opts.NATSURL, err)
	}
	js, err := jetstream.New(w.nc)
	if err != nil {
		return nil, err
	}
	if err := broker.CheckMaxPayload(js); err != nil {
		return nil, fmt.Errorf("NATS %s: %w", opts.NATSURL, err)
	}
	if err := broker.EnsureStreams(ctx, js, opts.NATSReplicas); err != nil {
		return nil, fmt.Errorf("NATS streams: %w", err)
	}
	pipe, err := ingest.New(ingest.Config{JS: js, Store: w.store, Classifier: classify.New(rs), Logger: log, Registerer: reg, Durable: Durable, Policy: policy})
	if err != nil {
		return nil, err
	}

	hl, err := net.Listen("tcp", opts.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("HTTP: %w", err)
	}
	w.HTTPAddr = hl.Addr().String()
	w.http = &http.Server{Handler: newHandler(w.store, pipe.Ready, reg, log), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if err := w.http.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.errc <- fmt.Errorf("HTTP: %w", err)
		}
	}()

	runCtx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if err := pipe.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			w.errc <- fmt.Errorf("ingest: %w", err)
		}
	}()
	engine := "sqlite"
	if opts.ClickHouseDSN != "" {
		engine = "clickhouse"
	}
	log.Info("ingest started", "nats", w.nc.ConnectedUrlRedacted(), "durable", Durable, "http", w.HTTPAddr, "store", engine)
	ok = true
	return w, nil
}

// Err delivers the first error of a part that stopped by itself.
func (w *Worker) Err() <-chan error { return w.errc }

// Stop ends consuming (Pipeline.Run returns once the batch in hand is
// written and acked), then stops HTTP and closes NATS and the store.
func (w *Worker) Stop(ctx context.Context) error {
	var err error
	w.stopped.Do(func() {
		if w.cancel != nil {
			w.cancel()
		}
		if w.http != nil {
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			w.http.Shutdown(hctx)
			cancel()
		}
		w.wg.Wait()
		if w.nc != nil {
			w.nc.Drain()
			w.nc.Close()
		}
		if w.store != nil {
			if e := w.store.Close(); e != nil {
				err = fmt.Errorf("closing the store: %w", e)
			}
		}
	})
	return err
}

// openStore opens ClickHouse when --clickhouse-dsn is set, else SQLite
// under the data dir: the same file the all-in-one uses there.
func openStore(ctx context.Context, o Options, log *slog.Logger, reg prometheus.Registerer) (store.Store, error) {
	// A failed Open returns a nil *Store, which as a store.Store would
	// not be nil: Stop would call Close on it.
	if o.ClickHouseDSN != "" {
		s, err := clickhouse.Open(ctx, o.ClickHouseDSN, clickhouse.Options{ReportLookback: o.ReportLookback})
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	if err := os.MkdirAll(o.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	s, err := sqlite.Open(ctx, filepath.Join(o.DataDir, "bouncer.db"), sqlite.Options{Logger: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func loadRules(path string) (*rules.Set, error) {
	if path == "" {
		return rules.Default()
	}
	return rules.Load(path)
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
