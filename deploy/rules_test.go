package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// comingMetrics are metrics the rules may name before the code registers
// them; a metric written ahead of its code is listed here until then.
var comingMetrics = map[string]bool{}

// promtool finds promtool or fails: CI installs it (Debian package prometheus).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install the Debian package prometheus (.ci/run does); it checks deploy/prometheus")
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestPromtoolCheckRules(t *testing.T) {
	out := run(t, promtool(t), "check", "rules", "prometheus/recording.yml", "prometheus/alerts.yml")
	t.Log(out)
}

func TestPromtoolTestRules(t *testing.T) {
	files, err := filepath.Glob("prometheus/tests/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no promtool tests in prometheus/tests: %v", err)
	}
	out := run(t, promtool(t), append([]string{"test", "rules"}, files...)...)
	t.Log(out)
}

// TestPromtoolGroupOrder: the outcome alerts read recorded series, and
// promtool evaluates the groups of a test in random order unless the
// test file's group_eval_order names them, so every test file must name
// every group of the rule files it loads (one entry covers groups of the
// same name in both files). The order itself is the file's choice:
// recording groups first for the same evaluation, alert groups first for
// production's worst case (alert_lag_test.yml).
func TestPromtoolGroupOrder(t *testing.T) {
	files, _ := filepath.Glob("prometheus/tests/*.yml")
	for _, f := range files {
		var tf struct {
			RuleFiles      []string `yaml:"rule_files"`
			GroupEvalOrder []string `yaml:"group_eval_order"`
		}
		readYAML(t, f, &tf)
		listed := map[string]bool{}
		for _, g := range tf.GroupEvalOrder {
			listed[g] = true
		}
		for _, rf := range tf.RuleFiles {
			var rules ruleFile
			readYAML(t, filepath.Join(filepath.Dir(f), rf), &rules)
			for _, g := range rules.Groups {
				if !listed[g.Name] {
					t.Errorf("%s: group %q of %s is not in group_eval_order; promtool would evaluate it in random order", f, g.Name, rf)
				}
			}
		}
	}
}

// TestPrometheusComposeConfig checks the compose Prometheus configuration
// with its rule files where compose mounts them.
func TestPrometheusComposeConfig(t *testing.T) {
	pt := promtool(t)
	dir := t.TempDir()
	cfg, err := os.ReadFile("compose/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"recording.yml", "alerts.yml"} {
		b, err := os.ReadFile(filepath.Join("prometheus", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Contains(cfg, []byte("/etc/prometheus/rules/")) {
		t.Fatal("compose/prometheus.yml: rule files are expected under /etc/prometheus/rules/ (docker-compose.yml mounts them there)")
	}
	cfg = bytes.ReplaceAll(cfg, []byte("/etc/prometheus/rules/"), []byte(dir+"/"))
	p := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(p, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, pt, "check", "config", p)
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type promtoolTests struct {
	Tests []struct {
		Name          string `yaml:"name"`
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels map[string]string `yaml:"exp_labels"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestAlertContract: every alert has a severity (warn or page), a summary,
// a description and a runbook link to a heading of docs/runbooks.md, and
// for every alert and severity a promtool case shows it firing, and for
// every alert a case shows it quiet.
func TestAlertContract(t *testing.T) {
	var alerts ruleFile
	readYAML(t, "prometheus/alerts.yml", &alerts)
	anchors := markdownAnchors(t, "../docs/runbooks.md")

	type key struct{ alert, severity string }
	rules := map[key]bool{}
	names := map[string]bool{}
	for _, g := range alerts.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a recording rule %q in alerts.yml; it belongs in recording.yml", g.Name, r.Record)
				continue
			}
			sev := r.Labels["severity"]
			if sev != "warn" && sev != "page" {
				t.Errorf("%s: severity %q, want warn or page", r.Alert, sev)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s (%s): annotation %s missing", r.Alert, sev, a)
				}
			}
			const base = "https://github.com/bouncer-mail/bouncer/blob/main/docs/runbooks.md#"
			rb := r.Annotations["runbook"]
			if !strings.HasPrefix(rb, base) {
				t.Errorf("%s: runbook %q does not link into docs/runbooks.md", r.Alert, rb)
			} else if a := strings.TrimPrefix(rb, base); !anchors[a] {
				t.Errorf("%s: runbook anchor #%s is not a heading of docs/runbooks.md", r.Alert, a)
			} else if a != strings.ToLower(r.Alert) {
				t.Errorf("%s: runbook anchor #%s, want #%s (the heading is the alert name)", r.Alert, a, strings.ToLower(r.Alert))
			}
			if rules[key{r.Alert, sev}] {
				t.Errorf("%s: two rules with severity %s", r.Alert, sev)
			}
			rules[key{r.Alert, sev}] = true
			names[r.Alert] = true
		}
	}

	fires := map[key]bool{}
	quiet := map[string]bool{}
	files, _ := filepath.Glob("prometheus/tests/*.yml")
	for _, f := range files {
		var pt promtoolTests
		readYAML(t, f, &pt)
		for _, tc := range pt.Tests {
			for _, at := range tc.AlertRuleTest {
				if !names[at.Alertname] {
					t.Errorf("%s: test %q asserts on %q, which alerts.yml does not define", f, tc.Name, at.Alertname)
				}
				if len(at.ExpAlerts) == 0 {
					quiet[at.Alertname] = true
				}
				for _, e := range at.ExpAlerts {
					fires[key{at.Alertname, e.ExpLabels["severity"]}] = true
				}
			}
		}
	}
	for k := range rules {
		if !fires[k] {
			t.Errorf("%s (severity %s): no promtool case shows it firing", k.alert, k.severity)
		}
	}
	for n := range names {
		if !quiet[n] {
			t.Errorf("%s: no promtool case shows it staying quiet", n)
		}
	}
}

// markdownAnchors returns the GitHub anchors of the headings of a file.
func markdownAnchors(t *testing.T, path string) map[string]bool {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	m := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		m[strings.ReplaceAll(drop.ReplaceAllString(h, ""), " ", "-")] = true
	}
	return m
}

// codeMetrics returns the bouncer_* metric names the Go code declares, from
// the string literals of the non-test sources of the whole module.
func codeMetrics(t *testing.T) map[string]bool {
	t.Helper()
	lit := regexp.MustCompile(`"(bouncer_[a-z0-9_]+)"`)
	m := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != ".." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range lit.FindAllSubmatch(b, -1) {
			m[string(s[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var (
	rawName      = regexp.MustCompile(`\bbouncer_[a-z0-9_]+\b`)
	recordedName = regexp.MustCompile(`[a-z_]*:[a-z0-9_]+:[a-z0-9_]+`)
)

// checkExpr reports metric names in expr that neither the code nor
// recording.yml defines.
func checkExpr(t *testing.T, where, expr string, code, recorded map[string]bool) {
	t.Helper()
	for _, n := range recordedName.FindAllString(expr, -1) {
		if !recorded[n] {
			t.Errorf("%s: recorded series %s is not in recording.yml", where, n)
		}
	}
	for _, n := range rawName.FindAllString(recordedName.ReplaceAllString(expr, " "), -1) {
		base := n
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b := strings.TrimSuffix(n, suf); b != n && code[b] {
				base = b
			}
		}
		if !code[base] && !comingMetrics[base] {
			t.Errorf("%s: metric %s is not declared by the code", where, n)
		}
	}
}

// TestMetricNames: the rules and the dashboard use only metric names the
// code declares (or the ones announced in comingMetrics) and recorded
// series recording.yml defines.
func TestMetricNames(t *testing.T) {
	code := codeMetrics(t)
	if len(code) < 10 {
		t.Fatalf("found only %d bouncer_* names in the code; the scan is broken", len(code))
	}
	var coming []string
	for n := range comingMetrics {
		if !code[n] {
			coming = append(coming, n)
		}
	}
	sort.Strings(coming)
	if len(coming) > 0 {
		t.Logf("not yet declared by the code, used by the rules: %v", coming)
	}
	var rec, alerts ruleFile
	readYAML(t, "prometheus/recording.yml", &rec)
	readYAML(t, "prometheus/alerts.yml", &alerts)
	recorded := map[string]bool{}
	for _, g := range rec.Groups {
		for _, r := range g.Rules {
			if r.Record == "" {
				t.Errorf("recording.yml group %s: alert %q belongs in alerts.yml", g.Name, r.Alert)
			}
			recorded[r.Record] = true
		}
	}
	for _, g := range rec.Groups {
		for _, r := range g.Rules {
			checkExpr(t, "recording.yml "+r.Record, r.Expr, code, recorded)
		}
	}
	for _, g := range alerts.Groups {
		for _, r := range g.Rules {
			checkExpr(t, "alerts.yml "+r.Alert, r.Expr, code, recorded)
		}
	}

	b, err := os.ReadFile("grafana/bouncer.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr       string `json:"expr"`
				Datasource struct {
					UID string `json:"uid"`
				} `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana/bouncer.json: %v", err)
	}
	ids := map[int]bool{}
	exprs := 0
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("dashboard: panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs++
			if tg.Datasource.UID != "${datasource}" {
				t.Errorf("dashboard panel %q: datasource %q, want the ${datasource} variable", p.Title, tg.Datasource.UID)
			}
			checkExpr(t, "dashboard panel "+p.Title, tg.Expr, code, recorded)
		}
	}
	if exprs < 15 {
		t.Errorf("dashboard has %d queries; expected the outcome, listener and ingest panels", exprs)
	}
}

// TestAlertmanagerConfig checks the example with amtool where it is
// installed (Debian package prometheus-alertmanager), and the routing of
// both severities in any case.
func TestAlertmanagerConfig(t *testing.T) {
	var cfg struct {
		Route struct {
			Routes []struct {
				Matchers []string `yaml:"matchers"`
				Receiver string   `yaml:"receiver"`
			} `yaml:"routes"`
		} `yaml:"route"`
	}
	readYAML(t, "alertmanager/alertmanager.yml", &cfg)
	routed := map[string]bool{}
	for _, r := range cfg.Route.Routes {
		for _, m := range r.Matchers {
			routed[m] = true
		}
	}
	for _, sev := range []string{"warn", "page"} {
		if !routed[`severity="`+sev+`"`] {
			t.Errorf("alertmanager.yml: no route for severity=%q", sev)
		}
	}
	amtool, err := exec.LookPath("amtool")
	if err != nil {
		t.Skip("amtool not installed (Debian package prometheus-alertmanager); routes checked, syntax not")
	}
	run(t, amtool, "check-config", "alertmanager/alertmanager.yml")
}
