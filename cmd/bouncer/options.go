package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/smtpd"
	"github.com/bouncer-mail/bouncer/store/clickhouse"
)

// Options is the whole configuration of the all-in-one service. Every flag
// has an environment twin BOUNCER_<NAME> (dashes as underscores); the flag
// wins when both are set.
type Options struct {
	SMTPAddr       string
	HTTPAddr       string
	NATSListen     string
	NATSURL        string
	NATSReplicas   int
	Partitions     int
	DataDir        string
	Domains        []string
	ClickHouseDSN  string
	ReportLookback time.Duration
	RulesFile      string
	PolicyFile     string
	VERPKeysFile   string
	VERPKeys       string // from BOUNCER_VERP_KEYS only: never a flag, so it stays out of ps
	APITokensFile  string
	APIReadTokens  []string // from BOUNCER_API_READ_TOKENS only (comma-separated)
	APIAdminTokens []string // from BOUNCER_API_ADMIN_TOKENS only
	AcceptUnsigned bool
	Ingest         bool // run ingest in this process; false: a listener only
	Hostname       string
	TLSCert        string
	TLSKey         string
	LogLevel       string
	MemoryLimit    string

	MaxMessageBytes  int64
	MaxInflightBytes int64
	MaxRecipients    int
	MaxConnections   int
	MaxConnsPerIP    int
	ReadTimeout      time.Duration
	WriteTimeout     time.Duration
	CommandTimeout   time.Duration
	EnvelopeTimeout  time.Duration
	ShutdownTimeout  time.Duration
}

// stringList is a repeatable flag; a comma-separated env value fills it too.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// parseOptions reads flags (args) over environment values (getenv).
func parseOptions(args []string, getenv func(string) string) (Options, *flag.FlagSet, error) {
	var o Options
	fl := flag.NewFlagSet("bouncer", flag.ContinueOnError)
	env := func(name, def string) string {
		if v := getenv("BOUNCER_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))); v != "" {
			return v
		}
		return def
	}
	str := func(p *string, name, def, usage string) {
		fl.StringVar(p, name, env(name, def), usage+" (env BOUNCER_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+")")
	}
	var envErr error
	num := func(p *int, name string, def int, usage string) {
		v, err := strconv.Atoi(env(name, strconv.Itoa(def)))
		if err != nil && envErr == nil {
			envErr = fmt.Errorf("env BOUNCER_%s: %w", strings.ToUpper(strings.ReplaceAll(name, "-", "_")), err)
		}
		fl.IntVar(p, name, v, usage+" (env BOUNCER_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+")")
	}
	dur := func(p *time.Duration, name string, def time.Duration, usage string) {
		v, err := time.ParseDuration(env(name, def.String()))
		if err != nil && envErr == nil {
			envErr = fmt.Errorf("env BOUNCER_%s: %w", strings.ToUpper(strings.ReplaceAll(name, "-", "_")), err)
		}
		fl.DurationVar(p, name, v, usage+" (env BOUNCER_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+")")
	}
	str(&o.SMTPAddr, "smtp-addr", "127.0.0.1:2525", "SMTP listen `address` for bounce reports")
	str(&o.HTTPAddr, "http-addr", "127.0.0.1:8025", "HTTP listen `address` for the API, /metrics and health")
	str(&o.NATSListen, "nats-listen", "127.0.0.1:4222", "listen `address` of the embedded NATS server")
	str(&o.NATSURL, "nats-url", "", "external NATS `url`; when set, no NATS server is embedded")
	num(&o.NATSReplicas, "nats-replicas", 1, "replicas of bouncer's JetStream streams (3 on a NATS cluster; 1 embedded)")
	num(&o.Partitions, "report-partitions", broker.DefaultReportPartitions, "JetStream streams the listener spreads reports over, stored in parallel (1 to 64)")
	str(&o.DataDir, "data-dir", "./bouncer-data", "`directory` for the embedded NATS store and SQLite")
	var domains stringList
	_ = domains.Set(env("domain", ""))
	fl.Var(&domains, "domain", "bounce `domain` accepted at RCPT; repeatable (env BOUNCER_DOMAIN, comma-separated)")
	str(&o.ClickHouseDSN, "clickhouse-dsn", "", "ClickHouse `dsn` (clickhouse://host:9000/db); empty: SQLite under --data-dir")
	dur(&o.ReportLookback, "report-lookback", clickhouse.DefaultReportLookback, "with ClickHouse: how long after a report was received the same bytes received again are recognised and not stored twice; each write reads 12 bytes per report received in this time; 0 is the default")
	str(&o.RulesFile, "rules", "", "extra rules `file` overriding the embedded defaults")
	str(&o.PolicyFile, "suppression-policy", "", "suppression policy `file` (JSON, docs/suppressions.md); empty: the defaults")
	str(&o.VERPKeysFile, "verp-keys-file", "", "`file` of VERP keys, one per line; the first signs, all verify")
	str(&o.APITokensFile, "api-tokens-file", "", "`file` of API bearer tokens, lines \"read TOKEN\" or \"admin TOKEN\"; or env BOUNCER_API_READ_TOKENS / BOUNCER_API_ADMIN_TOKENS")
	ingestOn, err := strconv.ParseBool(env("ingest", "true"))
	if err != nil && envErr == nil {
		envErr = fmt.Errorf("env BOUNCER_INGEST: %w", err)
	}
	fl.BoolVar(&o.Ingest, "ingest", ingestOn, "run ingest in this process; --ingest=false makes a listener only, with bouncer-ingest workers storing what it accepts (env BOUNCER_INGEST)")
	fl.BoolVar(&o.AcceptUnsigned, "accept-unsigned", env("accept-unsigned", "") == "true", "also accept bounce addresses without a VERP token (env BOUNCER_ACCEPT_UNSIGNED=true)")
	host, _ := os.Hostname()
	str(&o.Hostname, "hostname", host, "host `name` announced in the SMTP greeting")
	str(&o.TLSCert, "tls-cert", "", "PEM certificate `file` enabling STARTTLS")
	str(&o.TLSKey, "tls-key", "", "PEM private key `file` for --tls-cert")
	str(&o.LogLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	num(&o.MaxRecipients, "max-recipients", 100, "recipients per SMTP transaction")
	num(&o.MaxConnections, "max-connections", 1000, "concurrent SMTP connections")
	num(&o.MaxConnsPerIP, "max-connections-per-ip", 50, "concurrent SMTP connections from one IP address")
	maxMsg := 0
	num(&maxMsg, "max-message-bytes", 10<<20, "largest message accepted, in bytes (552 5.3.4 beyond)")
	maxInflight := 0
	num(&maxInflight, "max-inflight-bytes", smtpd.DefaultMaxInflightBytes, "bytes of messages all SMTP sessions may hold at once while receiving and publishing them; beyond, a message waits up to 5 s, then gets 451 4.3.1 (at least --max-message-bytes + 128 KiB)")
	str(&o.MemoryLimit, "memory-limit", "auto", "soft memory `limit` the Go runtime keeps to (400MiB, 2GiB; off): auto is GOMEMLIMIT if set, else --max-inflight-bytes + 256 MiB, lower in a cgroup with less memory")
	dur(&o.ReadTimeout, "read-timeout", 60*time.Second, "SMTP read timeout")
	dur(&o.WriteTimeout, "write-timeout", 60*time.Second, "SMTP write timeout")
	dur(&o.CommandTimeout, "command-timeout", smtpd.DefaultCommandTimeout, "how long an SMTP command line may take from its first byte to its end (421 4.4.2 beyond)")
	dur(&o.EnvelopeTimeout, "envelope-timeout", smtpd.DefaultEnvelopeTimeout, "how long an SMTP client may take from connecting, or from its previous message, to DATA (421 4.4.2 beyond)")
	dur(&o.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long SIGTERM waits for transfers in flight")
	if envErr != nil {
		return o, fl, envErr
	}
	if err := fl.Parse(args); err != nil {
		return o, fl, err
	}
	if fl.NArg() > 0 {
		return o, fl, fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	o.Domains = domains
	o.MaxMessageBytes = int64(maxMsg)
	o.MaxInflightBytes = int64(maxInflight)
	o.VERPKeys = getenv("BOUNCER_VERP_KEYS")
	o.APIReadTokens = splitList(getenv("BOUNCER_API_READ_TOKENS"))
	o.APIAdminTokens = splitList(getenv("BOUNCER_API_ADMIN_TOKENS"))
	return o, fl, nil
}

func splitList(v string) []string {
	var l stringList
	_ = l.Set(v)
	return l
}

// Validate reports the first thing wrong in o.
func (o Options) Validate() error {
	for name, addr := range map[string]string{"--smtp-addr": o.SMTPAddr, "--http-addr": o.HTTPAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%s %q: %w", name, addr, err)
		}
	}
	if o.NATSURL == "" {
		if _, _, err := net.SplitHostPort(o.NATSListen); err != nil {
			return fmt.Errorf("--nats-listen %q: %w", o.NATSListen, err)
		}
	}
	switch {
	case o.DataDir == "":
		return errors.New("--data-dir is required")
	case (o.TLSCert == "") != (o.TLSKey == ""):
		return errors.New("--tls-cert and --tls-key go together")
	case o.VERPKeys != "" && o.VERPKeysFile != "":
		return errors.New("BOUNCER_VERP_KEYS and --verp-keys-file are both set; use one")
	case o.NATSReplicas < 1 || o.NATSReplicas > 5:
		return errors.New("--nats-replicas must be 1 to 5")
	case o.NATSURL == "" && o.NATSReplicas != 1:
		return errors.New("--nats-replicas above 1 needs a NATS cluster (--nats-url); the embedded server is one node")
	case broker.ValidateReportPartitions(o.Partitions) != nil:
		return fmt.Errorf("--report-partitions must be 1 to %d, got %d", broker.MaxReportPartitions, o.Partitions)
	case o.MaxMessageBytes <= 0 || o.MaxRecipients <= 0 || o.MaxConnections <= 0 || o.MaxConnsPerIP <= 0 || o.MaxInflightBytes <= 0:
		return errors.New("limits must be positive")
	case o.MaxInflightBytes < o.MaxMessageBytes+128<<10:
		return fmt.Errorf("--max-inflight-bytes %d cannot hold one message of --max-message-bytes %d (it needs 128 KiB more)", o.MaxInflightBytes, o.MaxMessageBytes)
	case o.ReadTimeout <= 0 || o.WriteTimeout <= 0 || o.ShutdownTimeout <= 0 || o.CommandTimeout <= 0 || o.EnvelopeTimeout <= 0:
		return errors.New("timeouts must be positive")
	case o.ReportLookback < 0:
		return fmt.Errorf("--report-lookback must not be negative, got %s", o.ReportLookback)
	}
	if _, _, err := memoryLimit(o.MemoryLimit, o.MaxInflightBytes, 0, "", ""); err != nil {
		return err
	}
	switch o.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.LogLevel)
	}
	for _, d := range o.Domains {
		if strings.ContainsAny(d, "@ /") || !strings.Contains(d, ".") && d != "localhost" {
			return fmt.Errorf("--domain %q is not a domain name", d)
		}
	}
	return nil
}
