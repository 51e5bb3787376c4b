package main

// An end-to-end test of deploy/prometheus: a real Prometheus server scrapes
// the real all-in-one service while sync logs and NDRs flow through it, and
// evaluates the shipped recording and alert rules on what it scraped. The
// promtool tests in deploy/prometheus/tests check the rules on synthetic
// series; this one checks that the metric names and labels the service
// really exposes feed them. CI installs the Debian package prometheus; the
// test skips when /usr/bin/prometheus is missing.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/bouncer-mail/bouncer/verp"
)

const (
	promJob = "bouncer-test" // alerts.yml's BouncerDown matches job=~"bouncer.*"

	// The traffic, all to gmail.com recipients (provider "gmail").
	promDelivered = 30 // sync 250
	promBounced   = 10 // of those, bounced later by an NDR
	promRejected  = 10 // sync 550 5.1.1 at RCPT

	// promMinScrapes is how many scrapes of the pre-created zero series
	// Prometheus must hold before any traffic. rate() over a window
	// holding n samples of a counter that starts at 0 extrapolates the
	// increase by a factor f with 1 <= f <= 1 + 1.1/(n-1): nothing before
	// the first sample (the counter was 0 there), at most 1.1 average
	// scrape intervals after the last. With n >= 8, f <= 1.16; net and
	// gross volumes (40 and 50 outcomes) stay apart whatever f is.
	promMinScrapes = 8
)

// The true counts, by docs/outcomes.md and outcome.Fold. Each message is
// one (stream, message, recipient):
//   - a sync 250 is a final delivered outcome: counted delivered;
//   - its NDR, sent later to the message's VERP return path, joins the
//     same group, and the fold is then hard (accepted then bounced): the
//     re-fold counts hard and takes the delivered back (a correction);
//   - a sync 550 5.1.1 at RCPT is a final hard outcome: counted hard.
const (
	wantOutcomesDelivered    = promDelivered                  // 30
	wantOutcomesHard         = promBounced + promRejected     // 20
	wantCorrectionsDelivered = promBounced                    // 10
	wantNetDelivered         = promDelivered - promBounced    // 20
	wantNetHard              = promBounced + promRejected     // 20
	wantNetFinal             = wantNetDelivered + wantNetHard // 40
)

// TestPrometheusRulesOnRealMetrics: the shipped rules compute the net
// hard-bounce ratio (outcomes minus corrections) from the service's real
// /metrics, every rule evaluates without error, and alerts that must stay
// quiet do.
func TestPrometheusRulesOnRealMetrics(t *testing.T) {
	promBin := "/usr/bin/prometheus"
	if _, err := os.Stat(promBin); err != nil {
		p, lerr := exec.LookPath("prometheus")
		if lerr != nil {
			t.Skipf("Prometheus server not installed (%v): `apt-get install -y prometheus` (CI does) to run this test", err)
		}
		promBin = p
	}
	svc := startService(t)
	prom := startPrometheus(t, promBin, svc.HTTPAddr)

	// 1. Prometheus scrapes the service, and holds the pre-created zeros
	// of the outcome counters before any traffic: a series first seen at
	// a non-zero value has no increase for rate() to see.
	zeros := fmt.Sprintf(`count_over_time(bouncer_outcomes_total{job=%q,provider="gmail",class="hard",reason="userunknown"}[5m])`, promJob)
	prom.waitFor(t, 45*time.Second, fmt.Sprintf("%d scrapes of the service before traffic", promMinScrapes), func() (bool, string) {
		v, err := prom.scalar(zeros)
		if err != nil {
			return false, err.Error()
		}
		return v >= promMinScrapes, fmt.Sprintf("%s = %v", zeros, v)
	})

	// 2. The sending MTA's sync logs: 30 delivered, 10 rejected at RCPT.
	nc, err := nats.Connect(svc.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := verp.ParseKeys(serveKeys)
	if err != nil {
		t.Fatal(err)
	}
	signer := &verp.Signer{Keys: keys}
	sent := time.Now().UTC().Add(-time.Minute).Truncate(time.Second).Format(time.RFC3339)
	returnPaths := make([]string, promDelivered)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	publish := func(rec string) {
		t.Helper()
		if _, err := js.Publish(ctx, "delivery.attempts.prom", []byte(rec)); err != nil {
			t.Fatalf("publishing %s: %v", rec, err)
		}
	}
	for i := range promDelivered {
		rcpt, mid := fmt.Sprintf("d%d@gmail.com", i), fmt.Sprintf("<m-d%d@example.org>", i)
		if returnPaths[i], err = signer.Sign("bounces.example.com", rcpt, mid); err != nil {
			t.Fatal(err)
		}
		publish(fmt.Sprintf(`{"id":"prom-d%d","ts":%q,"message_id":%q,"return_path":%q,"sender":"news@example.org","recipient":%q,"mx":"gmail-smtp-in.l.google.com","reply_code":250,"status":"2.0.0","reply":"250 2.0.0 OK  1795600000 d%d-20020a05 - gsmtp","smtp_command":"DATA","stream":"news"}`,
			i, sent, mid, returnPaths[i], rcpt, i))
	}
	for i := range promRejected {
		rcpt, mid := fmt.Sprintf("r%d@gmail.com", i), fmt.Sprintf("<m-r%d@example.org>", i)
		rp, err := signer.Sign("bounces.example.com", rcpt, mid)
		if err != nil {
			t.Fatal(err)
		}
		publish(fmt.Sprintf(`{"id":"prom-r%d","ts":%q,"message_id":%q,"return_path":%q,"sender":"news@example.org","recipient":%q,"mx":"gmail-smtp-in.l.google.com","reply_code":550,"status":"5.1.1","reply":"550-5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser - gsmtp","smtp_command":"RCPT","stream":"news"}`,
			i, sent, mid, rp, rcpt))
	}
	// The deliveries must be folded and counted before their NDRs arrive:
	// in one batch, the re-fold would see both and count only the bounce.
	waitMetrics(t, svc, "the sync logs counted", map[string]float64{
		outcomeSample("bouncer_outcomes_total", "delivered", "delivered", ""):       promDelivered,
		outcomeSample("bouncer_outcomes_total", "hard", "userunknown", "recipient"): promRejected,
	})

	// 3. Gmail's NDRs for 10 of the delivered messages, over SMTP to each
	// message's VERP return path, as a remote MTA sends them.
	for i := range promBounced {
		rcpt := fmt.Sprintf("d%d@gmail.com", i)
		ndr := fmt.Sprintf(gmailNDR, returnPaths[i], i, rcpt, rcpt, i, rcpt)
		if reply := smtpSend(t, svc.SMTPAddr, returnPaths[i], ndr); !strings.HasPrefix(reply, "250") {
			t.Fatalf("NDR for %s: %q", rcpt, reply)
		}
	}

	// 4. The true counts, read from /metrics: what the rules must compute from.
	waitMetrics(t, svc, "the NDRs folded", map[string]float64{
		outcomeSample("bouncer_outcomes_total", "hard", "userunknown", "recipient"):      wantOutcomesHard,
		outcomeSample("bouncer_outcome_corrections_total", "delivered", "delivered", ""): wantCorrectionsDelivered,
	})
	x := scrape(t, svc)
	outcomes := sumSamples(x, "bouncer_outcomes_total")
	corrections := sumSamples(x, "bouncer_outcome_corrections_total")
	for _, c := range []struct {
		name string
		got  map[string]float64
		want map[string]float64
	}{
		{"bouncer_outcomes_total", outcomes, map[string]float64{"gmail/delivered": wantOutcomesDelivered, "gmail/hard": wantOutcomesHard}},
		{"bouncer_outcome_corrections_total", corrections, map[string]float64{"gmail/delivered": wantCorrectionsDelivered}},
	} {
		if !equalCounts(c.got, c.want) {
			t.Fatalf("/metrics %s by provider/class = %v, want %v", c.name, c.got, c.want)
		}
	}
	netHard := outcomes["gmail/hard"] - corrections["gmail/hard"]
	netAll := outcomes["gmail/delivered"] + outcomes["gmail/hard"] - corrections["gmail/delivered"] - corrections["gmail/hard"]
	if netHard != wantNetHard || netAll != wantNetFinal {
		t.Fatalf("/metrics net gmail outcomes: %v hard of %v, want %d of %d", netHard, netAll, wantNetHard, wantNetFinal)
	}
	for sample, want := range map[string]float64{
		`bouncer_attempts_total{provider="gmail",result="delivered"}`: promDelivered,
		`bouncer_attempts_total{provider="gmail",result="bounced"}`:   promRejected,
		`bouncer_smtp_replies_total{code="250"}`:                      promBounced,
		`bouncer_reports_processed_total`:                             promBounced,
	} {
		if got := x.samples[sample]; got != want {
			t.Errorf("/metrics %s = %v, want %v", sample, got, want)
		}
	}
	wantRatio := float64(wantNetHard) / float64(wantNetFinal)                            // 0.5
	grossRatio := float64(wantOutcomesHard) / (wantOutcomesDelivered + wantOutcomesHard) // 0.4

	// 5. The recorded series, once Prometheus has scraped the final counts
	// and evaluated the rules on them.
	//
	// Ratios are compared within 1e-9: every series involved was
	// pre-created, so all hold samples at the same scrape timestamps and
	// rate() extrapolates each by the same factor, which cancels in a
	// ratio (only float rounding is left). Volumes are compared with that
	// factor's bound, [1, 1+1.1/(promMinScrapes-1)].
	const eps = 1e-9
	maxF := 1 + 1.1/float64(promMinScrapes-1)
	var steadyAt time.Time
	prom.waitFor(t, 45*time.Second, "the recorded outcome series to reach the true net figures", func() (bool, string) {
		var bad []string
		check := func(what string, ok bool, format string, args ...any) {
			if !ok {
				bad = append(bad, what+": "+fmt.Sprintf(format, args...))
			}
		}
		one := func(q string) float64 {
			v, err := prom.scalar(q)
			if err != nil {
				bad = append(bad, err.Error())
				return math.NaN()
			}
			return v
		}

		// The base rule, by class and scope.
		base, err := prom.query(`provider_class_scope:bouncer_outcomes_net:rate5m{provider="gmail"}`)
		if err != nil {
			return false, err.Error()
		}
		byClass := map[string]float64{}
		for _, s := range base {
			byClass[s.Metric["class"]+"/"+s.Metric["scope"]] += s.Value
		}
		vol := (byClass["delivered/"] + byClass["hard/recipient"]) * 300
		check("base rule net volume", vol >= wantNetFinal-eps && vol <= wantNetFinal*maxF, "%v outcomes over 5m, want %d (×[1, %.3f])", vol, wantNetFinal, maxF)
		check("base rule hard/all", math.Abs(byClass["hard/recipient"]*300/vol-wantRatio) < eps, "%v", byClass)
		for k, v := range byClass {
			if k != "delivered/" && k != "hard/recipient" {
				check("base rule "+k, math.Abs(v) < eps, "%v, want 0", v)
			}
		}

		hard := one(`provider:bouncer_outcomes_hard:ratio_rate5m{provider="gmail"}`)
		check("provider:bouncer_outcomes_hard:ratio_rate5m", math.Abs(hard-wantRatio) < eps, "%v, want %v", hard, wantRatio)
		hard1h := one(`provider:bouncer_outcomes_hard:ratio_rate1h{provider="gmail"}`)
		check("provider:bouncer_outcomes_hard:ratio_rate1h", math.Abs(hard1h-wantRatio) < eps, "%v, want %v", hard1h, wantRatio)

		// The gross ratio, from bouncer_outcomes_total alone, is another
		// figure: the corrections are what makes the recorded one right.
		gross := one(`sum(rate(bouncer_outcomes_total{provider="gmail",class="hard"}[5m])) / sum(rate(bouncer_outcomes_total{provider="gmail"}[5m]))`)
		check("gross ratio", math.Abs(gross-grossRatio) < eps, "%v, want %v", gross, grossRatio)
		check("net against gross ratio", math.Abs(hard-gross) > 0.05, "recorded %v, gross %v: the rule does not subtract the corrections", hard, gross)
		grossVol := one(`sum(rate(bouncer_outcomes_total{provider="gmail"}[5m])) * 300`)
		check("gross volume", grossVol >= wantOutcomesDelivered+wantOutcomesHard-eps, "%v, want at least %d", grossVol, wantOutcomesDelivered+wantOutcomesHard)

		// Every window holds all of the test's samples, so every window's
		// rate times its length is the same net count.
		for w, secs := range map[string]float64{"5m": 300, "15m": 900, "1h": 3600, "6h": 21600} {
			v := one(`provider:bouncer_outcomes:rate` + w + `{provider="gmail"}`)
			check("provider:bouncer_outcomes:rate"+w, math.Abs(v*secs-vol) < 1e-6, "%v outcomes, want %v as over 5m", v*secs, vol)
		}
		d := one(`provider_class:bouncer_outcomes:rate5m{provider="gmail",class="delivered"}`)
		h := one(`provider_class:bouncer_outcomes:rate5m{provider="gmail",class="hard"}`)
		check("provider_class:bouncer_outcomes:rate5m", math.Abs(d-h) < eps && math.Abs((d+h)*300-vol) < 1e-6, "delivered %v hard %v, want equal and summing to %v/300", d, h, vol)
		dl := one(`provider:bouncer_outcomes_delivered:rate1h{provider="gmail"}`)
		check("provider:bouncer_outcomes_delivered:rate1h", math.Abs(dl*3600-vol/2) < 1e-6, "%v delivered, want %v", dl*3600, vol/2)
		for _, r := range []string{"soft:ratio_rate5m", "greylist:ratio_rate5m", "sender_scope:ratio_rate5m", "complaint:ratio_rate1h"} {
			v := one(`provider:bouncer_outcomes_` + r + `{provider="gmail"}`)
			check("provider:bouncer_outcomes_"+r, v == 0, "%v, want 0", v)
		}

		// The other groups, on the same traffic.
		ad := one(`provider_result:bouncer_attempts:rate5m{provider="gmail",result="delivered"}`)
		ab := one(`provider_result:bouncer_attempts:rate5m{provider="gmail",result="bounced"}`)
		check("provider_result:bouncer_attempts:rate5m", math.Abs(ad/ab-float64(promDelivered)/promRejected) < eps, "delivered %v bounced %v, want %d:%d", ad, ab, promDelivered, promRejected)
		r250 := one(`code:bouncer_smtp_replies:rate5m{code="250"}`)
		check("code:bouncer_smtp_replies:rate5m", r250*300 >= promBounced-eps && r250*300 <= promBounced*maxF, "%v replies 250, want %d", r250*300, promBounced)
		rp := one(`:bouncer_reports_processed:rate5m`)
		check(":bouncer_reports_processed:rate5m", math.Abs(rp-r250) < eps, "%v, want %v as code 250", rp, r250)
		tf := one(`:bouncer_smtp_tempfail:ratio_rate5m`)
		check(":bouncer_smtp_tempfail:ratio_rate5m", tf == 0, "%v, want 0", tf)

		if len(bad) > 0 {
			return false, strings.Join(bad, "\n")
		}
		steadyAt = time.Now()
		t.Logf("recorded for gmail: hard ratio %v (5m), %v (1h); net outcomes over 5m %.2f (true %d); from bouncer_outcomes_total alone: ratio %v, %.2f outcomes",
			hard, hard1h, vol, wantNetFinal, gross, grossVol)
		return true, ""
	})

	// 6. Every group of both files is loaded and, evaluated after the
	// figures above were reached, healthy: no rule errs on real series.
	want := ruleGroups(t)
	var groups []promGroup
	prom.waitFor(t, 30*time.Second, "every rule group evaluated after the final scrape", func() (bool, string) {
		var err error
		if groups, err = prom.rules(); err != nil {
			return false, err.Error()
		}
		var late []string
		for _, g := range groups {
			if !g.LastEvaluation.After(steadyAt) {
				late = append(late, g.File+":"+g.Name+" at "+g.LastEvaluation.String())
			}
		}
		return len(groups) > 0 && len(late) == 0, "not yet: " + strings.Join(late, ", ")
	})
	loaded := map[string]promGroup{}
	for _, g := range groups {
		loaded[g.File+"#"+g.Name] = g
	}
	for key, w := range want {
		g, ok := loaded[key]
		if !ok {
			t.Errorf("rule group %s not loaded; loaded: %v", key, sortedKeys(loaded))
			continue
		}
		if len(g.Rules) != len(w) {
			t.Errorf("rule group %s: %d rules loaded, the file has %d", key, len(g.Rules), len(w))
		}
		for i, r := range g.Rules {
			if r.Health != "ok" || r.LastError != "" {
				t.Errorf("rule group %s: rule %s: health %q, error %q", key, r.Name, r.Health, r.LastError)
			}
			if i < len(w) && r.Name != w[i] {
				t.Errorf("rule group %s: rule %d is %s, the file says %s", key, i, r.Name, w[i])
			}
		}
	}
	if len(loaded) != len(want) {
		t.Errorf("%d rule groups loaded, the files have %d", len(loaded), len(want))
	}

	// 7. The alerts that must be quiet are: the service is up, and the hard
	// ratio (50%, over BouncerHardBounceRate's 10%) is on 40 outcomes, under
	// its volume guard of 100. Nothing else has cause to fire either.
	if up, err := prom.scalar(fmt.Sprintf(`up{job=%q}`, promJob)); err != nil || up != 1 {
		t.Errorf("up{job=%q} = %v (%v), want 1; targets: %s", promJob, up, err, prom.targets())
	}
	if v, err := prom.query(`provider:bouncer_outcomes_hard:ratio_rate5m{provider="gmail"} > 0.10`); err != nil || len(v) != 1 {
		t.Errorf("BouncerHardBounceRate's ratio condition: %v (%v), want it true: the alert is quiet by its guard alone", v, err)
	}
	if v, err := prom.query(`provider:bouncer_outcomes:rate5m{provider="gmail"} * 300 >= 100`); err != nil || len(v) != 0 {
		t.Errorf("BouncerHardBounceRate's volume guard: %v (%v), want it false on %d outcomes", v, err, wantNetFinal)
	}
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Type == "alerting" && r.State != "inactive" {
				t.Errorf("alert %s is %s, want inactive", r.Name, r.State)
			}
			if r.Name == "BouncerDown" && r.Type != "alerting" {
				t.Errorf("BouncerDown is a %s rule", r.Type)
			}
		}
	}
	alerts, err := prom.alerts()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alerts {
		t.Errorf("alert %s is %s: %v", a.Labels["alertname"], a.State, a.Labels)
	}
}

// gmailNDR is Gmail's DSN for an accepted message whose mailbox is gone:
// the VERP address it is sent to, a number, the recipient (twice), the
// message number and the recipient again.
const gmailNDR = `From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: %s
Subject: Delivery Status Notification (Failure)
Message-ID: <ndr-%d@mx.google.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain; charset="UTF-8"

** Address not found **

Your message wasn't delivered to %s because the address couldn't be found, or is unable to receive mail.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com

Final-Recipient: rfc822; %s
Action: failed
Status: 5.1.1
Remote-MTA: dns; gmail-smtp-in.l.google.com
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist.

--b1
Content-Type: text/rfc822-headers

Message-ID: <m-d%d@example.org>
From: news@example.org
To: %s
Subject: News

--b1--`

// outcomeSample is the exposition text of a gmail outcome series, labels
// sorted as client_golang writes them.
func outcomeSample(name, class, reason, scope string) string {
	return fmt.Sprintf(`%s{class=%q,provider="gmail",reason=%q,scope=%q}`, name, class, reason, scope)
}

// waitMetrics polls the service's /metrics until each sample has its value.
func waitMetrics(t *testing.T, svc *Service, what string, want map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		x := scrape(t, svc)
		var diff []string
		for s, v := range want {
			if got := x.samples[s]; got != v {
				diff = append(diff, fmt.Sprintf("%s = %v, want %v", s, got, v))
			}
		}
		if len(diff) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %s", what, strings.Join(diff, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sumSamples sums a family's samples by "provider/class", leaving out zeros.
func sumSamples(x exposition, name string) map[string]float64 {
	out := map[string]float64{}
	for s, v := range x.samples {
		labels, ok := strings.CutPrefix(s, name+"{")
		if !ok || v == 0 {
			continue
		}
		out[labelValue(labels, "provider")+"/"+labelValue(labels, "class")] += v
	}
	return out
}

// labelValue reads name="value" from an exposition label list (label
// values here hold no quotes).
func labelValue(labels, name string) string {
	_, rest, ok := strings.Cut(","+labels, ","+name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

func equalCounts(got, want map[string]float64) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// ruleGroups reads the rule files: the rule names of each group, by
// "<absolute file>#<group>" (Prometheus keys groups by file and name; both
// files have a group bouncer-service).
func ruleGroups(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, f := range promRuleFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rf struct {
			Groups []struct {
				Name  string
				Rules []struct{ Record, Alert string }
			}
		}
		if err := yaml.Unmarshal(b, &rf); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, g := range rf.Groups {
			var names []string
			for _, r := range g.Rules {
				names = append(names, r.Record+r.Alert)
			}
			out[f+"#"+g.Name] = names
		}
	}
	if len(out) == 0 {
		t.Fatal("no rule groups in deploy/prometheus")
	}
	return out
}

func promRuleFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, f := range []string{"recording.yml", "alerts.yml"} {
		p, err := filepath.Abs(filepath.Join("..", "..", "deploy", "prometheus", f))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	return files
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// promServer is a Prometheus server process and its HTTP API.
type promServer struct {
	base string // http://127.0.0.1:port
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startPrometheus runs bin scraping target's /metrics every second and
// evaluating deploy/prometheus's rule files every second. It is stopped
// when the test ends, its output logged if the test failed.
func startPrometheus(t *testing.T, bin, target string) *promServer {
	t.Helper()
	dir := t.TempDir()
	files := promRuleFiles(t)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
  - %q
scrape_configs:
  - job_name: %q
    static_configs:
      - targets: [%q]
`, files[0], files[1], promJob, target)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeLoopbackAddr(t)
	out := &lockedBuffer{}
	cmd := exec.Command(bin,
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=info",
	)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out.String())
		}
	})
	p := &promServer{base: "http://" + addr}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("prometheus exited before it was ready: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready at %s after 30s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p
}

// freeLoopbackAddr returns a loopback address no one listens on now.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitFor polls cond until it holds, failing the test with cond's last
// explanation after timeout.
func (p *promServer) waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s:\n%s", timeout, what, why)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// api GETs a Prometheus API path and decodes its data.
func (p *promServer) api(path string, params url.Values, data any) error {
	u := p.base + path
	if params != nil {
		u += "?" + params.Encode()
	}
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("GET %s: HTTP %d: %v", u, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("GET %s: HTTP %d: %s", u, resp.StatusCode, body.Error)
	}
	return json.Unmarshal(body.Data, data)
}

type promSample struct {
	Metric map[string]string
	Value  float64
}

// query runs an instant query returning a vector.
func (p *promServer) query(q string) ([]promSample, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := p.api("/api/v1/query", url.Values{"query": {q}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("%s: result type %s, want vector", q, data.ResultType)
	}
	out := make([]promSample, 0, len(data.Result))
	for _, r := range data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: value %v: %v", q, r.Value, err)
		}
		out = append(out, promSample{Metric: r.Metric, Value: v})
	}
	return out, nil
}

// scalar runs an instant query that must return exactly one sample.
func (p *promServer) scalar(q string) (float64, error) {
	v, err := p.query(q)
	if err != nil {
		return 0, err
	}
	if len(v) != 1 {
		return 0, fmt.Errorf("%s: %d samples %v, want 1", q, len(v), v)
	}
	return v[0].Value, nil
}

type promGroup struct {
	Name           string    `json:"name"`
	File           string    `json:"file"`
	LastEvaluation time.Time `json:"lastEvaluation"`
	Rules          []struct {
		Name      string `json:"name"`
		Type      string `json:"type"`
		Health    string `json:"health"`
		LastError string `json:"lastError"`
		State     string `json:"state"` // alerting rules: inactive, pending, firing
	} `json:"rules"`
}

func (p *promServer) rules() ([]promGroup, error) {
	var data struct {
		Groups []promGroup `json:"groups"`
	}
	err := p.api("/api/v1/rules", nil, &data)
	return data.Groups, err
}

type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// alerts returns the active (pending or firing) alerts.
func (p *promServer) alerts() ([]promAlert, error) {
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	err := p.api("/api/v1/alerts", nil, &data)
	return data.Alerts, err
}

// targets describes the scrape targets' health and last error, for a
// failure message.
func (p *promServer) targets() string {
	var data struct {
		ActiveTargets []struct {
			ScrapeURL string `json:"scrapeUrl"`
			Health    string `json:"health"`
			LastError string `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := p.api("/api/v1/targets", nil, &data); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%+v", data.ActiveTargets)
}
