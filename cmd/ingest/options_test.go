package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/store/clickhouse"
)

func TestParseOptions(t *testing.T) {
	env := map[string]string{
		"BOUNCER_NATS_URL":       "nats://n1:4222,nats://n2:4222",
		"BOUNCER_NATS_REPLICAS":  "3",
		"BOUNCER_CLICKHOUSE_DSN": "clickhouse://ch:9000/bouncer",
		"BOUNCER_HTTP_ADDR":      "0.0.0.0:8026",
	}
	o, _, err := parseOptions([]string{"--nats-replicas", "1", "--rules", "/etc/bouncer/rules.json"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Options{
		NATSURL: "nats://n1:4222,nats://n2:4222", NATSReplicas: 1, ClickHouseDSN: "clickhouse://ch:9000/bouncer",
		DataDir: "./bouncer-data", RulesFile: "/etc/bouncer/rules.json", HTTPAddr: "0.0.0.0:8026", LogLevel: "info",
		MemoryLimit: "auto", ReportLookback: clickhouse.DefaultReportLookback,
	}
	if o != want {
		t.Errorf("got  %+v\nwant %+v (the flag wins over the env)", o, want)
	}

	o, _, err = parseOptions(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.HTTPAddr != "127.0.0.1:8026" || o.NATSReplicas != 1 || o.NATSURL != "" {
		t.Errorf("defaults %+v", o)
	}
	o, _, err = parseOptions([]string{"--report-lookback", "2h"}, func(k string) string {
		return map[string]string{"BOUNCER_REPORT_LOOKBACK": "30m"}[k]
	}, io.Discard)
	if err != nil || o.ReportLookback != 2*time.Hour {
		t.Errorf("--report-lookback 2h over env 30m: %s, %v", o.ReportLookback, err)
	}

	for _, bad := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"extra"}, want: `unexpected argument "extra"`},
		{args: []string{"--smtp-addr", ":25"}, want: "flag provided but not defined: -smtp-addr"},
		{env: map[string]string{"BOUNCER_NATS_REPLICAS": "three"}, want: "env BOUNCER_NATS_REPLICAS"},
		{env: map[string]string{"BOUNCER_REPORT_LOOKBACK": "an hour"}, want: "env BOUNCER_REPORT_LOOKBACK"},
	} {
		_, _, err := parseOptions(bad.args, func(k string) string { return bad.env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("parseOptions(%q, %v): %v, want %q", bad.args, bad.env, err, bad.want)
		}
	}
}

func TestValidate(t *testing.T) {
	good := Options{NATSURL: "nats://127.0.0.1:4222", NATSReplicas: 1, DataDir: "d", HTTPAddr: "127.0.0.1:8026", LogLevel: "info", MemoryLimit: "auto",
		ReportLookback: time.Hour}
	for _, tc := range []struct {
		name string
		mod  func(*Options)
		want string // "" for valid
	}{
		{"good", func(o *Options) {}, ""},
		{"cluster urls", func(o *Options) { o.NATSURL = "nats://n1:4222, nats://n2:4222,n3:4222" }, ""},
		{"clickhouse without data dir", func(o *Options) { o.ClickHouseDSN, o.DataDir = "clickhouse://ch:9000/b", "" }, ""},
		{"replicas 3", func(o *Options) { o.NATSReplicas = 3 }, ""},
		{"missing nats url", func(o *Options) { o.NATSURL = "" }, "--nats-url is required"},
		{"bad nats url", func(o *Options) { o.NATSURL = "nats://n1:4222,," }, "--nats-url"},
		{"bad http addr", func(o *Options) { o.HTTPAddr = "8026" }, "--http-addr"},
		{"replicas 0", func(o *Options) { o.NATSReplicas = 0 }, "--nats-replicas must be 1 to 5"},
		{"replicas 7", func(o *Options) { o.NATSReplicas = 7 }, "--nats-replicas must be 1 to 5"},
		{"sqlite without data dir", func(o *Options) { o.DataDir = "" }, "--data-dir is required"},
		{"log level", func(o *Options) { o.LogLevel = "loud" }, "--log-level"},
		{"memory limit off", func(o *Options) { o.MemoryLimit = "off" }, ""},
		{"memory limit size", func(o *Options) { o.MemoryLimit = "1GiB" }, ""},
		{"memory limit typo", func(o *Options) { o.MemoryLimit = "1 gig" }, `--memory-limit "1 gig"`},
		{"report lookback 0: the default", func(o *Options) { o.ReportLookback = 0 }, ""},
		{"report lookback negative", func(o *Options) { o.ReportLookback = -time.Minute }, "--report-lookback must not be negative, got -1m0s"},
	} {
		o := good
		tc.mod(&o)
		err := o.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want valid", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestRunExitStatus: usage errors exit 2 with a message, before anything
// starts.
func TestRunExitStatus(t *testing.T) {
	var stderr strings.Builder
	if code := run(nil, func(string) string { return "" }, &stderr); code != 2 || !strings.Contains(stderr.String(), "--nats-url is required") {
		t.Errorf("no --nats-url: exit %d, stderr %q", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"-h"}, func(string) string { return "" }, &stderr); code != 0 || !strings.Contains(stderr.String(), "BOUNCER_NATS_URL") {
		t.Errorf("-h: exit %d, stderr %q", code, stderr.String())
	}
}
