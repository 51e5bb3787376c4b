package main

import (
	"bufio"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/synclog"
)

// declaredName finds a metric declaration, `Name: "bouncer_..."`, in Go
// source.
var declaredName = regexp.MustCompile(`\bName:\s*"(bouncer_[a-z0-9_]+)"`)

// declaredMetrics is the single list of expected metric families: the
// names declared in the non-test Go files of every bouncer package this
// command links (go list -deps). A family declared there and missing from
// /metrics was declared but never registered.
func declaredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	const tmpl = `{{with .Module}}{{if eq .Path "github.com/bouncer-mail/bouncer"}}{{range $.GoFiles}}{{$.Dir}}/{{.}}
{{end}}{{end}}{{end}}`
	out, err := exec.Command("go", "list", "-deps", "-f", tmpl, ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	names := map[string]bool{}
	for _, file := range strings.Fields(string(out)) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range declaredName.FindAllSubmatch(b, -1) {
			names[string(m[1])] = true
		}
	}
	return names
}

// exposition is a parsed /metrics page: the type of each family, and each
// sample's value by its text (`name{label="v",...}` as exposed).
type exposition struct {
	types   map[string]string
	samples map[string]float64
}

func scrape(t *testing.T, svc *Service) exposition {
	t.Helper()
	return scrapeAddr(t, svc.HTTPAddr)
}

// scrapeAddr reads /metrics from the HTTP address addr (host:port), of an
// in-process Service or of a bouncer process.
func scrapeAddr(t *testing.T, addr string) exposition {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	x := exposition{types: map[string]string{}, samples: map[string]float64{}}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			x.types[name] = typ
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("/metrics: sample line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics: sample line %q: %v", line, err)
		}
		x.samples[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return x
}

// TestMetricsExposed starts the all-in-one service and reads /metrics
// before any traffic: every family the code declares is registered, each
// is bouncer_* or from the standard Go and process collectors, and the
// pre-created series are there at zero.
func TestMetricsExposed(t *testing.T) {
	declared := declaredMetrics(t)
	// The families DESIGN.md ("Metrics and alerts") names: the scan above
	// must find them, or it is broken.
	for _, name := range []string{
		"bouncer_smtp_connections_total", "bouncer_smtp_replies_total", "bouncer_smtp_received_bytes_total",
		"bouncer_smtp_accept_latency_seconds", "bouncer_smtp_active_connections", "bouncer_panics_total",
		"bouncer_ingest_lag_seconds", "bouncer_ingest_batch_size", "bouncer_ingest_write_errors_total",
		"bouncer_ingest_dead_letters_total", "bouncer_events_total", "bouncer_reports_processed_total",
		"bouncer_attempts_total",
	} {
		if !declared[name] {
			t.Errorf("no declaration of %s found in the code linked by cmd/bouncer; the scan is broken or the metric is gone", name)
		}
	}

	x := scrape(t, startService(t))
	for name := range declared {
		if _, ok := x.types[name]; !ok {
			t.Errorf("/metrics lacks %s: declared in the code, not registered (or a vector with no pre-created series)", name)
		}
	}
	var goFamilies, processFamilies int
	for name := range x.types {
		switch {
		case strings.HasPrefix(name, "bouncer_"):
			if !declared[name] {
				t.Errorf("/metrics has %s, which the scan of the code did not find", name)
			}
		case strings.HasPrefix(name, "go_"):
			goFamilies++
		case strings.HasPrefix(name, "process_"):
			processFamilies++
		default:
			t.Errorf("/metrics has %s: neither bouncer_* nor from the Go and process collectors", name)
		}
	}
	if goFamilies == 0 || processFamilies == 0 {
		t.Errorf("/metrics has %d go_ and %d process_ families; want the standard collectors", goFamilies, processFamilies)
	}

	zeros := []string{
		`bouncer_smtp_replies_total{code="250"}`,
		`bouncer_smtp_replies_total{code="451"}`,
		`bouncer_smtp_replies_total{code="550"}`,
		`bouncer_smtp_connections_total{result="accepted"}`,
		`bouncer_smtp_connections_total{result="refused_per_ip"}`,
		`bouncer_smtp_received_bytes_total`,
		`bouncer_smtp_accept_latency_seconds_count`,
		`bouncer_smtp_active_connections`,
		`bouncer_panics_total{component="smtpd"}`,
		`bouncer_panics_total{component="ingest"}`,
		`bouncer_ingest_batches_total`,
		`bouncer_ingest_write_errors_total`,
		`bouncer_ingest_dead_letters_total{reason="decode"}`,
		`bouncer_ingest_sync_records_skipped_total`,
		`bouncer_reports_processed_total`,
		`bouncer_events_total{class="hard",provider="other",reason="userunknown",scope="recipient",source="ndr"}`,
	}
	for _, p := range append(append([]string(nil), event.Providers...), event.ProviderOther) {
		for _, r := range []synclog.Result{
			synclog.ResultDelivered, synclog.ResultDeferred, synclog.ResultBounced,
			synclog.ResultExpired, synclog.ResultComplaint, synclog.ResultBounceOOB,
		} {
			zeros = append(zeros, `bouncer_attempts_total{provider="`+p+`",result="`+string(r)+`"}`)
		}
	}
	for _, s := range zeros {
		v, ok := x.samples[s]
		switch {
		case !ok:
			t.Errorf("/metrics lacks the pre-created series %s", s)
		case v != 0:
			t.Errorf("%s = %v before any traffic, want 0", s, v)
		}
	}
}
