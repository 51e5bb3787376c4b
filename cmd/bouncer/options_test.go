package main

import (
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/smtpd"
	"github.com/bouncer-mail/bouncer/store/clickhouse"
)

// TestListenerDeadlineOptions: the slow-client deadlines have the
// listener's defaults, an env twin each, and must be positive.
func TestListenerDeadlineOptions(t *testing.T) {
	o, _, err := parseOptions(nil, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if o.CommandTimeout != smtpd.DefaultCommandTimeout || o.EnvelopeTimeout != smtpd.DefaultEnvelopeTimeout {
		t.Errorf("defaults: command %s, envelope %s", o.CommandTimeout, o.EnvelopeTimeout)
	}
	env := map[string]string{"BOUNCER_COMMAND_TIMEOUT": "5s", "BOUNCER_ENVELOPE_TIMEOUT": "2m"}
	o, _, err = parseOptions([]string{"--envelope-timeout", "90s"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if o.CommandTimeout != 5*time.Second || o.EnvelopeTimeout != 90*time.Second {
		t.Errorf("command %s (want 5s from env), envelope %s (want 90s, flag over env)", o.CommandTimeout, o.EnvelopeTimeout)
	}
	for _, args := range [][]string{{"--command-timeout", "0s"}, {"--envelope-timeout", "-1s"}} {
		o, _, err := parseOptions(args, func(string) string { return "" })
		if err == nil {
			err = o.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), "timeouts must be positive") {
			t.Errorf("%v: %v, want timeouts must be positive", args, err)
		}
	}
}

// TestReportLookbackOption: --report-lookback defaults to ClickHouse's
// DefaultReportLookback, has its env twin, and must not be negative (0
// leaves the choice to the store: its default).
func TestReportLookbackOption(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		env     string
		want    time.Duration
		wantErr string
	}{
		{nil, "", clickhouse.DefaultReportLookback, ""},
		{nil, "1h", time.Hour, ""},
		{[]string{"--report-lookback", "90s"}, "1h", 90 * time.Second, ""},
		{[]string{"--report-lookback", "0s"}, "", 0, ""},
		{[]string{"--report-lookback", "-1m"}, "", 0, "--report-lookback must not be negative"},
		{nil, "a while", 0, "BOUNCER_REPORT_LOOKBACK"},
	} {
		env := map[string]string{"BOUNCER_REPORT_LOOKBACK": tc.env}
		o, _, err := parseOptions(tc.args, func(k string) string { return env[k] })
		if err == nil {
			err = o.Validate()
		}
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%v env %q: %v, want %q", tc.args, tc.env, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || o.ReportLookback != tc.want):
			t.Errorf("%v env %q: %s, %v; want %s", tc.args, tc.env, o.ReportLookback, err, tc.want)
		}
	}
}

// TestReportPartitionsOption: --report-partitions defaults to
// broker.DefaultReportPartitions, has its env twin, and is refused
// outside 1 to 64 with the flag's name in the error.
func TestReportPartitionsOption(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		env     string
		want    int
		wantErr bool
	}{
		{nil, "", broker.DefaultReportPartitions, false},
		{[]string{"--report-partitions", "1"}, "", 1, false},
		{nil, "8", 8, false},
		{[]string{"--report-partitions", "2"}, "8", 2, false},
		{[]string{"--report-partitions", "64"}, "", 64, false},
		{[]string{"--report-partitions", "0"}, "", 0, true},
		{[]string{"--report-partitions", "65"}, "", 0, true},
		{nil, "-3", 0, true},
	} {
		env := map[string]string{"BOUNCER_REPORT_PARTITIONS": tc.env}
		o, _, err := parseOptions(tc.args, func(k string) string { return env[k] })
		if err == nil {
			err = o.Validate()
		}
		switch {
		case tc.wantErr && (err == nil || !strings.Contains(err.Error(), "--report-partitions must be 1 to 64")):
			t.Errorf("%v env %q: %v, want the range error", tc.args, tc.env, err)
		case !tc.wantErr && (err != nil || o.Partitions != tc.want):
			t.Errorf("%v env %q: %d, %v; want %d", tc.args, tc.env, o.Partitions, err, tc.want)
		}
	}
}

// TestIngestOption: ingest runs in-process unless --ingest=false or
// BOUNCER_INGEST=false; a value that is no boolean is an error.
func TestIngestOption(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		env     string
		want    bool
		wantErr bool
	}{
		{nil, "", true, false},
		{[]string{"--ingest=false"}, "", false, false},
		{nil, "false", false, false},
		{nil, "0", false, false},
		{[]string{"--ingest=true"}, "false", true, false},
		{nil, "sometimes", false, true},
	} {
		env := map[string]string{"BOUNCER_INGEST": tc.env}
		o, _, err := parseOptions(tc.args, func(k string) string { return env[k] })
		switch {
		case tc.wantErr && (err == nil || !strings.Contains(err.Error(), "BOUNCER_INGEST")):
			t.Errorf("%v env %q: %v, want an error naming BOUNCER_INGEST", tc.args, tc.env, err)
		case !tc.wantErr && (err != nil || o.Ingest != tc.want):
			t.Errorf("%v env %q: %v, %v; want %v", tc.args, tc.env, o.Ingest, err, tc.want)
		}
	}
}

// TestHelpListsFlags: bouncer -h lists the service's flags, as its usage
// line says.
func TestHelpListsFlags(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "help"} {
		var out, errOut strings.Builder
		if status := run([]string{arg}, strings.NewReader(""), &out, &errOut); status != 0 {
			t.Errorf("bouncer %s: exit %d, %s", arg, status, errOut.String())
		}
		for _, want := range []string{"classify [--rules FILE]", "-smtp-addr address", "-memory-limit limit", "env BOUNCER_DATA_DIR"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("bouncer %s does not print %q:\n%s", arg, want, out.String())
			}
		}
	}
}
