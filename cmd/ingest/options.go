package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bouncer-mail/bouncer/store/clickhouse"
)

// Options is the whole configuration of an ingest worker. Every flag has
// an environment twin BOUNCER_<NAME> (dashes as underscores), named as in
// cmd/bouncer where the meaning is the same; the flag wins when both are
// set.
type Options struct {
	NATSURL        string
	NATSReplicas   int
	ClickHouseDSN  string
	ReportLookback time.Duration
	DataDir        string
	RulesFile      string
	PolicyFile     string
	HTTPAddr       string
	LogLevel       string
	MemoryLimit    string
}

// parseOptions reads flags (args) over environment values (getenv); usage
// and flag errors go to output.
func parseOptions(args []string, getenv func(string) string, output io.Writer) (Options, *flag.FlagSet, error) {
	var o Options
	fl := flag.NewFlagSet("bouncer-ingest", flag.ContinueOnError)
	fl.SetOutput(output)
	envName := func(name string) string { return "BOUNCER_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) }
	env := func(name, def string) string {
		if v := getenv(envName(name)); v != "" {
			return v
		}
		return def
	}
	str := func(p *string, name, def, usage string) {
		fl.StringVar(p, name, env(name, def), usage+" (env "+envName(name)+")")
	}
	var envErr error
	num := func(p *int, name string, def int, usage string) {
		v, err := strconv.Atoi(env(name, strconv.Itoa(def)))
		if err != nil && envErr == nil {
			envErr = fmt.Errorf("env %s: %w", envName(name), err)
		}
		fl.IntVar(p, name, v, usage+" (env "+envName(name)+")")
	}
	dur := func(p *time.Duration, name string, def time.Duration, usage string) {
		v, err := time.ParseDuration(env(name, def.String()))
		if err != nil && envErr == nil {
			envErr = fmt.Errorf("env %s: %w", envName(name), err)
		}
		fl.DurationVar(p, name, v, usage+" (env "+envName(name)+")")
	}
	str(&o.NATSURL, "nats-url", "", "NATS `url`s of the JetStream cluster, comma-separated (required: ingest embeds no server)")
	num(&o.NATSReplicas, "nats-replicas", 1, "replicas of bouncer's JetStream streams; the same value as the listeners' (3 on a 3-node cluster)")
	str(&o.ClickHouseDSN, "clickhouse-dsn", "", "ClickHouse `dsn` (clickhouse://host:9000/db); empty: SQLite under --data-dir, for one worker only")
	dur(&o.ReportLookback, "report-lookback", clickhouse.DefaultReportLookback, "with ClickHouse: how long after a report was received the same bytes received again are recognised and not stored twice; each write reads 12 bytes per report received in this time; 0 is the default")
	str(&o.DataDir, "data-dir", "./bouncer-data", "`directory` for SQLite when there is no --clickhouse-dsn")
	str(&o.RulesFile, "rules", "", "extra rules `file` overriding the embedded defaults")
	str(&o.PolicyFile, "suppression-policy", "", "suppression policy `file` (JSON, docs/suppressions.md); the same as the listeners' (empty: the defaults)")
	// 8026, beside the all-in-one's 8025, so a listener and a worker can
	// share a host. A literal: deploy/manifests_test.go reads it.
	str(&o.HTTPAddr, "http-addr", "127.0.0.1:8026", "HTTP listen `address` for /healthz, /readyz and /metrics")
	str(&o.LogLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	str(&o.MemoryLimit, "memory-limit", "auto", "soft memory `limit` the Go runtime keeps to (400MiB, 2GiB; off): auto is GOMEMLIMIT if set, else 384 MiB, lower in a cgroup with less memory, less SQLite's writer cache")
	if envErr != nil {
		return o, fl, envErr
	}
	if err := fl.Parse(args); err != nil {
		return o, fl, err
	}
	if fl.NArg() > 0 {
		return o, fl, fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	return o, fl, nil
}

// Validate reports the first thing wrong in o.
func (o Options) Validate() error {
	if o.NATSURL == "" {
		return errors.New("--nats-url is required: ingest consumes from an existing NATS JetStream server or cluster and embeds none")
	}
	for _, u := range strings.Split(o.NATSURL, ",") {
		u = strings.TrimSpace(u)
		if !strings.Contains(u, "://") {
			u = "nats://" + u // as nats.go reads it
		}
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" {
			return fmt.Errorf("--nats-url %q: want nats://host:port, comma-separated for a cluster", u)
		}
	}
	if _, _, err := net.SplitHostPort(o.HTTPAddr); err != nil {
		return fmt.Errorf("--http-addr %q: %w", o.HTTPAddr, err)
	}
	switch {
	case o.NATSReplicas < 1 || o.NATSReplicas > 5:
		return errors.New("--nats-replicas must be 1 to 5")
	case o.ClickHouseDSN == "" && o.DataDir == "":
		return errors.New("--data-dir is required without --clickhouse-dsn (SQLite lives there)")
	case o.ReportLookback < 0:
		return fmt.Errorf("--report-lookback must not be negative, got %s", o.ReportLookback)
	}
	switch o.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.LogLevel)
	}
	if _, _, err := memoryLimit(o.MemoryLimit, 0, "", ""); err != nil {
		return err
	}
	return nil
}
