package deploy

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"gopkg.in/yaml.v3"

	"github.com/bouncer-mail/bouncer/broker"
)

// flags is what a main's options.go declares: flag name -> default (the
// literal text; "" when the default is not a string literal), and the
// environment names it reads.
type flags struct {
	src      string // the options.go it was read from
	defaults map[string]string
	env      map[string]bool
}

// bouncerFlags parses cmd/bouncer/options.go, so the deployment files are
// checked against the flags and defaults the binary has, not a copy.
func bouncerFlags(t *testing.T) flags {
	t.Helper()
	fl := readFlags(t, "cmd/bouncer/options.go", "smtp-addr", "http-addr", "nats-listen", "nats-url", "data-dir", "domain", "clickhouse-dsn", "verp-keys-file")
	if !fl.env["BOUNCER_VERP_KEYS"] {
		t.Fatal("options.go: getenv(\"BOUNCER_VERP_KEYS\") not found")
	}
	return fl
}

// ingestFlags parses cmd/ingest/options.go, the ingest worker's flags.
func ingestFlags(t *testing.T) flags {
	t.Helper()
	return readFlags(t, "cmd/ingest/options.go", "nats-url", "nats-replicas", "clickhouse-dsn", "data-dir", "http-addr", "rules", "log-level")
}

// readFlags reads the flags declared in src (relative to the repository
// root) through the str/num/dur helpers or fl.XxxVar, and the literal
// getenv names; want lists flags that must be found.
func readFlags(t *testing.T, src string, want ...string) flags {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", src), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	fl := flags{src: src, defaults: map[string]string{}, env: map[string]bool{}}
	str := func(e ast.Expr) (string, bool) {
		if l, ok := e.(*ast.BasicLit); ok && l.Kind == token.STRING {
			s, err := strconv.Unquote(l.Value)
			return s, err == nil
		}
		return "", false
	}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		switch fun := call.Fun.(type) {
		case *ast.Ident:
			switch fun.Name {
			case "str", "num", "dur": // helper(p, name, default, usage)
				if len(call.Args) == 4 {
					if name, ok := str(call.Args[1]); ok {
						def, _ := str(call.Args[2])
						fl.defaults[name] = def
					}
				}
			case "getenv":
				if len(call.Args) == 1 {
					if s, ok := str(call.Args[0]); ok {
						fl.env[s] = true
					}
				}
			}
		case *ast.SelectorExpr:
			if x, ok := fun.X.(*ast.Ident); ok && x.Name == "fl" && strings.HasSuffix(fun.Sel.Name, "Var") && len(call.Args) >= 2 {
				if name, ok := str(call.Args[1]); ok {
					if _, seen := fl.defaults[name]; !seen {
						fl.defaults[name] = ""
					}
				}
			}
		}
		return true
	})
	for name := range fl.defaults {
		fl.env["BOUNCER_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))] = true
	}
	for _, w := range want {
		if _, ok := fl.defaults[w]; !ok {
			t.Fatalf("%s: flag --%s not found; the parser in this test no longer understands it", src, w)
		}
	}
	return fl
}

// port returns the port of the flag's default address.
func (f flags) port(t *testing.T, flag string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(f.defaults[flag])
	if err != nil {
		t.Fatalf("default of --%s %q: %v", flag, f.defaults[flag], err)
	}
	return p
}

// checkEnv reports BOUNCER_* names the binary does not read.
func (f flags) checkEnv(t *testing.T, where, name string) {
	t.Helper()
	if strings.HasPrefix(name, "BOUNCER_") && !f.env[name] {
		t.Errorf("%s: %s is not an environment variable the binary reads (flags in %s)", where, name, f.src)
	}
}

func addrPort(t *testing.T, where, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: address %q: %v", where, addr, err)
	}
	return p
}

// ingestBinary is where the Dockerfile installs cmd/ingest; compose, the
// k8s manifests and the systemd unit all run it from there.
func ingestBinary(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`-o /out/(\S+) \./cmd/ingest\b`).FindSubmatch(b)
	if m == nil {
		t.Fatal("Dockerfile: no go build -o /out/NAME ./cmd/ingest")
	}
	if !regexp.MustCompile(`(?m)^COPY --from=build .*/out/` + regexp.QuoteMeta(string(m[1])) + `\b.* /usr/local/bin/$`).Match(b) {
		t.Fatalf("Dockerfile: /out/%s is not copied to /usr/local/bin/", m[1])
	}
	return "/usr/local/bin/" + string(m[1])
}

type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Profiles    []string          `yaml:"profiles"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		Entrypoint  []string          `yaml:"entrypoint"`
	} `yaml:"services"`
}

func TestCompose(t *testing.T) {
	fl, ifl := bouncerFlags(t), ingestFlags(t)
	var c composeFile
	readYAML(t, "compose/docker-compose.yml", &c)
	for name, s := range c.Services {
		for k := range s.Environment {
			if name == "ingest" {
				ifl.checkEnv(t, "compose service "+name, k)
			} else {
				fl.checkEnv(t, "compose service "+name, k)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
					t.Errorf("compose service %s mounts %s: %v", name, src, err)
				}
			}
		}
	}
	b, ok := c.Services["bouncer"]
	if !ok {
		t.Fatal("compose: no bouncer service")
	}
	smtp := addrPort(t, "compose BOUNCER_SMTP_ADDR", b.Environment["BOUNCER_SMTP_ADDR"])
	http := addrPort(t, "compose BOUNCER_HTTP_ADDR", b.Environment["BOUNCER_HTTP_ADDR"])
	if smtp != fl.port(t, "smtp-addr") || http != fl.port(t, "http-addr") {
		t.Errorf("compose bouncer listens on %s and %s; the binary's defaults (and the Dockerfile) use %s and %s", smtp, http, fl.port(t, "smtp-addr"), fl.port(t, "http-addr"))
	}
	published := map[string]string{}
	for _, p := range b.Ports {
		host, ctr, _ := strings.Cut(p, ":")
		published[ctr] = host
	}
	if published[smtp] != "25" {
		t.Errorf("compose bouncer: container port %s published as %q, want host port 25", smtp, published[smtp])
	}
	if published[http] == "" {
		t.Errorf("compose bouncer: HTTP port %s not published", http)
	}
	natsURL := b.Environment["BOUNCER_NATS_URL"]
	nodes := 0
	for _, u := range strings.Split(natsURL, ",") {
		pu, err := url.Parse(u)
		if err != nil || pu.Scheme != "nats" {
			t.Errorf("compose BOUNCER_NATS_URL %q: %v", u, err)
			continue
		}
		if _, ok := c.Services[pu.Hostname()]; !ok {
			t.Errorf("compose BOUNCER_NATS_URL names %s, which is no service", pu.Hostname())
		}
		if pu.Port() != fl.port(t, "nats-listen") {
			t.Errorf("compose BOUNCER_NATS_URL %s: port %s, want %s", u, pu.Port(), fl.port(t, "nats-listen"))
		}
		nodes++
	}
	if nodes != 3 {
		t.Errorf("compose: bouncer connects to %d NATS nodes, want the 3-node cluster", nodes)
	}
	for _, want := range []string{"clickhouse", "prometheus", "alertmanager", "grafana", "ingest"} {
		if _, ok := c.Services[want]; !ok {
			t.Errorf("compose: no %s service", want)
		}
	}
	checkComposeIngest(t, c, ifl)

	// Prometheus scrapes the bouncer service on its HTTP port, under a job
	// name BouncerDown matches.
	var prom struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
			DNSSDConfigs []struct {
				Names []string `yaml:"names"`
				Port  int      `yaml:"port"`
			} `yaml:"dns_sd_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, "compose/prometheus.yml", &prom)
	ingestHTTP := addrPort(t, "compose ingest BOUNCER_HTTP_ADDR", c.Services["ingest"].Environment["BOUNCER_HTTP_ADDR"])
	found := map[string]bool{}
	for _, sc := range prom.ScrapeConfigs {
		var targets []string
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
		for _, sd := range sc.DNSSDConfigs {
			for _, n := range sd.Names {
				targets = append(targets, n+":"+strconv.Itoa(sd.Port))
			}
		}
		for _, tg := range targets {
			if tg == "bouncer:"+http || tg == "ingest:"+ingestHTTP {
				found[tg] = true
				if !regexp.MustCompile(`^bouncer.*$`).MatchString(sc.JobName) {
					t.Errorf("compose/prometheus.yml: job %q scrapes %s; BouncerDown matches job=~\"bouncer.*\"", sc.JobName, tg)
				}
			}
		}
	}
	for _, want := range []string{"bouncer:" + http, "ingest:" + ingestHTTP} {
		if !found[want] {
			t.Errorf("compose/prometheus.yml: no scrape target %s", want)
		}
	}
}

// checkComposeIngest checks the compose ingest service: started by
// default, the binary the image has, on the bouncer service's NATS and
// ClickHouse, its probes on its own port.
func checkComposeIngest(t *testing.T, c composeFile, ifl flags) {
	t.Helper()
	b, ing := c.Services["bouncer"], c.Services["ingest"]
	if len(ing.Profiles) > 0 {
		t.Errorf("compose ingest service: profiles %v; cmd/ingest is built, start it by default", ing.Profiles)
	}
	if want := ingestBinary(t); len(ing.Entrypoint) != 1 || ing.Entrypoint[0] != want {
		t.Errorf("compose ingest service: entrypoint %q, want [%s] (the Dockerfile's)", ing.Entrypoint, want)
	}
	if ing.Image != b.Image {
		t.Errorf("compose ingest service: image %q, the bouncer service builds %q", ing.Image, b.Image)
	}
	for _, k := range []string{"BOUNCER_NATS_URL", "BOUNCER_NATS_REPLICAS", "BOUNCER_CLICKHOUSE_DSN"} {
		if ing.Environment[k] != b.Environment[k] {
			t.Errorf("compose: ingest %s=%q, bouncer %q; they share the durable consumer, so also the NATS and the store", k, ing.Environment[k], b.Environment[k])
		}
	}
	// Several processes write the store: SQLite (an empty DSN) cannot be
	// shared among containers, so compose must refuse to start without one.
	if dsn := ing.Environment["BOUNCER_CLICKHOUSE_DSN"]; !strings.Contains(dsn, ":?") {
		t.Errorf("compose ingest BOUNCER_CLICKHOUSE_DSN %q: want it required (${BOUNCER_CLICKHOUSE_DSN:?...})", dsn)
	}
	if p := addrPort(t, "compose ingest BOUNCER_HTTP_ADDR", ing.Environment["BOUNCER_HTTP_ADDR"]); p != ifl.port(t, "http-addr") {
		t.Errorf("compose ingest listens on %s, cmd/ingest's default port is %s", p, ifl.port(t, "http-addr"))
	}
	if len(ing.Ports) > 0 {
		t.Errorf("compose ingest service publishes %v; only Prometheus needs it, on the compose network", ing.Ports)
	}
}

// TestNATSConfig loads compose/nats.conf with the NATS server's own parser.
func TestNATSConfig(t *testing.T) {
	fl := bouncerFlags(t)
	t.Setenv("NATS_SERVER_NAME", "nats1")
	o, err := server.ProcessConfigFile("compose/nats.conf")
	if err != nil {
		t.Fatalf("compose/nats.conf: %v", err)
	}
	if o.MaxPayload < broker.ReportsMaxMsgSize {
		t.Errorf("nats.conf max_payload %d < broker.ReportsMaxMsgSize %d: large reports would be answered 451 for ever", o.MaxPayload, broker.ReportsMaxMsgSize)
	}
	if !o.JetStream || !o.SyncAlways {
		t.Errorf("nats.conf: jetstream %v, sync_interval always %v; both are needed for a 250 to mean on disk", o.JetStream, o.SyncAlways)
	}
	if strconv.Itoa(o.Port) != fl.port(t, "nats-listen") {
		t.Errorf("nats.conf port %d, bouncer's NATS default %s", o.Port, fl.port(t, "nats-listen"))
	}
	if o.ServerName != "nats1" || len(o.Routes) != 3 || o.Cluster.Name == "" {
		t.Errorf("nats.conf: server %q, %d routes, cluster %q; want a named 3-node cluster", o.ServerName, len(o.Routes), o.Cluster.Name)
	}
}

type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Type     string `yaml:"type"`
		Replicas *int   `yaml:"replicas"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
		Template struct {
			Metadata struct {
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				Containers []k8sContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Command []string `yaml:"command"`
	EnvFrom []struct {
		ConfigMapRef struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
	} `yaml:"envFrom"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom struct {
			SecretKeyRef struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  k8sProbe `yaml:"livenessProbe"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

func loadK8s(t *testing.T) map[string]k8sObject {
	t.Helper()
	var kust struct {
		Resources []string `yaml:"resources"`
	}
	readYAML(t, "k8s/kustomization.yaml", &kust)
	objs := map[string]k8sObject{}
	for _, r := range kust.Resources {
		f, err := os.Open(filepath.Join("k8s", r))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bufio.NewReader(f))
		for {
			var o k8sObject
			if err := dec.Decode(&o); err != nil {
				if err.Error() != "EOF" {
					t.Fatalf("k8s/%s: %v", r, err)
				}
				break
			}
			objs[o.Kind+"/"+o.Metadata.Name] = o
		}
		f.Close()
	}
	return objs
}

func TestK8sManifests(t *testing.T) {
	fl := bouncerFlags(t)
	objs := loadK8s(t)
	get := func(key string) k8sObject {
		o, ok := objs[key]
		if !ok {
			t.Fatalf("k8s: no %s in the kustomization's resources", key)
		}
		return o
	}
	cm := get("ConfigMap/bouncer-config")
	sec := get("Secret/bouncer-secrets")
	for k := range cm.Data {
		fl.checkEnv(t, "ConfigMap bouncer-config", k)
	}
	for _, k := range []string{"BOUNCER_VERP_KEYS", "CLICKHOUSE_PASSWORD"} {
		if _, ok := sec.StringData[k]; !ok {
			t.Errorf("Secret bouncer-secrets: no %s", k)
		}
	}
	if strings.Contains(strings.Join(mapKeys(cm.Data), " "), "VERP_KEYS") {
		t.Error("VERP keys belong in the Secret, not the ConfigMap")
	}
	smtp := addrPort(t, "ConfigMap BOUNCER_SMTP_ADDR", cm.Data["BOUNCER_SMTP_ADDR"])
	http := addrPort(t, "ConfigMap BOUNCER_HTTP_ADDR", cm.Data["BOUNCER_HTTP_ADDR"])
	if smtp != fl.port(t, "smtp-addr") || http != fl.port(t, "http-addr") {
		t.Errorf("k8s listens on %s and %s; the binary's defaults use %s and %s", smtp, http, fl.port(t, "smtp-addr"), fl.port(t, "http-addr"))
	}

	// checkContainer checks a Deployment's one container against the
	// flags of the binary it runs; its HTTP port is what BOUNCER_HTTP_ADDR
	// says, the container's env over the ConfigMap's.
	checkContainer := func(dep string, d k8sObject, fl flags, wantSMTP bool) k8sContainer {
		if len(d.Spec.Template.Spec.Containers) != 1 {
			t.Fatalf("%s: want one container", dep)
		}
		c := d.Spec.Template.Spec.Containers[0]
		httpAddr := cm.Data["BOUNCER_HTTP_ADDR"]
		for _, e := range c.Env {
			if e.Name == "BOUNCER_HTTP_ADDR" {
				httpAddr = e.Value
			}
		}
		http := addrPort(t, dep+" BOUNCER_HTTP_ADDR", httpAddr)
		if http != fl.port(t, "http-addr") {
			t.Errorf("%s: HTTP on port %s; the binary's default (%s) is %s", dep, http, fl.src, fl.port(t, "http-addr"))
		}
		ports := map[string]string{}
		for _, p := range c.Ports {
			ports[p.Name] = strconv.Itoa(p.ContainerPort)
		}
		if ports["http"] != http {
			t.Errorf("%s: container port http %q, want %s (BOUNCER_HTTP_ADDR)", dep, ports["http"], http)
		}
		if got := d.Spec.Template.Metadata.Annotations["prometheus.io/port"]; got != http {
			t.Errorf("%s: annotation prometheus.io/port %q, want %s", dep, got, http)
		}
		if wantSMTP && ports["smtp"] != smtp {
			t.Errorf("%s: container port smtp %q, want %s (BOUNCER_SMTP_ADDR)", dep, ports["smtp"], smtp)
		}
		if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" ||
			c.ReadinessProbe.HTTPGet.Port != "http" || c.LivenessProbe.HTTPGet.Port != "http" {
			t.Errorf("%s: probes %+v / %+v, want /readyz and /healthz on port http", dep, c.ReadinessProbe, c.LivenessProbe)
		}
		refs := false
		for _, ef := range c.EnvFrom {
			refs = refs || ef.ConfigMapRef.Name == cm.Metadata.Name
		}
		if !refs {
			t.Errorf("%s: does not take its environment from ConfigMap %s", dep, cm.Metadata.Name)
		}
		for _, e := range c.Env {
			fl.checkEnv(t, dep, e.Name)
			if r := e.ValueFrom.SecretKeyRef; r.Name != "" {
				if _, ok := sec.StringData[r.Key]; r.Name != sec.Metadata.Name || !ok {
					t.Errorf("%s: env %s from secret %s key %s, which secret.yaml does not define", dep, e.Name, r.Name, r.Key)
				}
			}
		}
		return c
	}
	secretEnv := func(c k8sContainer) map[string]string {
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.ValueFrom.SecretKeyRef.Key
		}
		return env
	}
	lis := checkContainer("listener Deployment", get("Deployment/bouncer-listener"), fl, true)
	if secretEnv(lis)["BOUNCER_VERP_KEYS"] == "" {
		t.Error("listener Deployment: BOUNCER_VERP_KEYS not set from the Secret")
	}

	svc := get("Service/bouncer-smtp")
	if svc.Spec.Type != "LoadBalancer" || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 25 || svc.Spec.Ports[0].TargetPort != "smtp" {
		t.Errorf("Service bouncer-smtp: %+v, want a LoadBalancer on port 25 to the container port smtp", svc.Spec)
	}

	// The ingest workers: several, the image's ingest binary, the same
	// store as the listeners (which share their durable consumer).
	ingDep := get("Deployment/bouncer-ingest")
	ing := checkContainer("ingest Deployment", ingDep, ingestFlags(t), false)
	if r := ingDep.Spec.Replicas; r == nil || *r < 2 {
		t.Errorf("ingest Deployment: replicas %v, want at least 2 workers sharing the durable consumer", deref(r))
	}
	if want := ingestBinary(t); len(ing.Command) != 1 || ing.Command[0] != want {
		t.Errorf("ingest Deployment: command %q, want [%s] (the Dockerfile's)", ing.Command, want)
	}
	if got, want := secretEnv(ing)["BOUNCER_CLICKHOUSE_DSN"], secretEnv(lis)["BOUNCER_CLICKHOUSE_DSN"]; got == "" || got != want {
		t.Errorf("ingest Deployment: BOUNCER_CLICKHOUSE_DSN from secret key %q, the listener's from %q; want the same store", got, want)
	}
	if _, ok := secretEnv(ing)["BOUNCER_VERP_KEYS"]; ok {
		t.Error("ingest Deployment: gets BOUNCER_VERP_KEYS, which it does not use")
	}
	// An empty DSN would put each pod's events in its own emptyDir.
	if dsn := sec.StringData["BOUNCER_CLICKHOUSE_DSN"]; !strings.HasPrefix(dsn, "clickhouse://") {
		t.Errorf("Secret bouncer-secrets: BOUNCER_CLICKHOUSE_DSN %q; with ingest workers it must name ClickHouse", dsn)
	}
}

func deref(p *int) any {
	if p == nil {
		return "unset"
	}
	return *p
}

func mapKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// TestSystemdUnits runs systemd-analyze verify (it needs no running
// systemd, so it works in containers too) and the offline security
// score on the units, and checks their environment names.
func TestSystemdUnits(t *testing.T) {
	fl, ifl := bouncerFlags(t), ingestFlags(t)
	units := []string{"bouncer.service", "bouncer-ingest.service"}
	read := func(f string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("systemd", f))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// BOUNCER_* names in env files (set or commented out) and in
	// Environment= lines, with their values.
	envLine := regexp.MustCompile(`(?m)^(?:#?\s*|Environment=)(BOUNCER_[A-Z0-9_]+)=(\S*)`)
	envOf := func(f string, fl flags) map[string]string {
		t.Helper()
		env := map[string]string{}
		for _, m := range envLine.FindAllStringSubmatch(read(f), -1) {
			fl.checkEnv(t, "systemd/"+f, m[1])
			if _, seen := env[m[1]]; !seen {
				env[m[1]] = m[2]
			}
		}
		return env
	}
	envOf("bouncer.service", fl)
	benv := envOf("bouncer.env.example", fl)
	envOf("bouncer-ingest.service", ifl)
	ienv := envOf("ingest.env.example", ifl)

	// The ingest unit: the ingest binary, its own env file (no VERP keys),
	// on its own HTTP port beside a listener's.
	unit := read("bouncer-ingest.service")
	if want := "ExecStart=" + ingestBinary(t) + "\n"; !strings.Contains(unit, want) {
		t.Errorf("systemd/bouncer-ingest.service: no %q (the Dockerfile's path, and the install lines')", strings.TrimSpace(want))
	}
	if !strings.Contains(unit, "EnvironmentFile=/etc/bouncer/ingest.env\n") || !strings.Contains(unit, "ingest.env.example /etc/bouncer/ingest.env") {
		t.Error("systemd/bouncer-ingest.service: want EnvironmentFile=/etc/bouncer/ingest.env, installed from ingest.env.example")
	}
	if strings.Contains(unit, "NOT YET USABLE") {
		t.Error("systemd/bouncer-ingest.service: still says NOT YET USABLE")
	}
	if ienv["BOUNCER_NATS_URL"] == "" {
		t.Error("systemd/ingest.env.example: BOUNCER_NATS_URL is required by cmd/ingest and not set")
	}
	if _, ok := ienv["BOUNCER_VERP_KEYS"]; ok {
		t.Error("systemd/ingest.env.example: ingest does not use VERP keys; keep them out of its env")
	}
	ip := addrPort(t, "systemd/ingest.env.example BOUNCER_HTTP_ADDR", ienv["BOUNCER_HTTP_ADDR"])
	if ip != ifl.port(t, "http-addr") {
		t.Errorf("systemd/ingest.env.example: BOUNCER_HTTP_ADDR port %s, cmd/ingest's default is %s", ip, ifl.port(t, "http-addr"))
	}
	if bp := addrPort(t, "systemd/bouncer.env.example BOUNCER_HTTP_ADDR", benv["BOUNCER_HTTP_ADDR"]); bp == ip {
		t.Errorf("systemd: bouncer and bouncer-ingest both on HTTP port %s; they may share a host", bp)
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd); units not verified")
	}
	// verify checks that ExecStart is executable: point it at a binary
	// that exists here, in a copy.
	dir := t.TempDir()
	exe := regexp.MustCompile(`(?m)^ExecStart=/usr/local/bin/\S+`)
	var paths []string
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		if !exe.Match(b) {
			t.Fatalf("systemd/%s: ExecStart is not /usr/local/bin/...", u)
		}
		p := filepath.Join(dir, u)
		if err := os.WriteFile(p, exe.ReplaceAll(b, []byte("ExecStart=/bin/true")), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.Command(sa, append([]string{"verify"}, paths...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		// Unknown keys are only warnings with exit status 0: fail on any output.
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, p := range paths {
		out, err := exec.Command(sa, "security", "--offline=true", "--threshold=25", p).CombinedOutput()
		if err != nil {
			t.Errorf("systemd-analyze security %s: %v (exposure over 2.5, or it could not run)\n%s", filepath.Base(p), err, out)
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Logf("%s: %s", filepath.Base(p), lines[len(lines)-1])
	}
}

// TestDockerfile checks the image's ports, user and build against the code.
func TestDockerfile(t *testing.T) {
	fl, ifl := bouncerFlags(t), ingestFlags(t)
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	m := regexp.MustCompile(`(?m)^EXPOSE\s+(.+)$`).FindStringSubmatch(df)
	want := fl.port(t, "smtp-addr") + " " + fl.port(t, "http-addr") + " " + fl.port(t, "nats-listen") + " " + ifl.port(t, "http-addr")
	if m == nil || strings.Join(strings.Fields(m[1]), " ") != want {
		t.Errorf("Dockerfile EXPOSE %q, want %q (the default ports; bouncer-ingest's last)", m, want)
	}
	// Comments show bouncer-ingest runs (its flags); the rest is bouncer's.
	for _, line := range strings.Split(df, "\n") {
		if strings.HasPrefix(line, "#") {
			for _, e := range regexp.MustCompile(`(BOUNCER_[A-Z0-9_]+)=`).FindAllStringSubmatch(line, -1) {
				if !fl.env[e[1]] && !ifl.env[e[1]] {
					t.Errorf("Dockerfile comment: %s is read by neither bouncer nor bouncer-ingest", e[1])
				}
			}
		}
	}
	ingestBinary(t)
	for _, e := range regexp.MustCompile(`(?m)^[^#\n]*?(BOUNCER_[A-Z0-9_]+)=(\S+)`).FindAllStringSubmatch(df, -1) {
		fl.checkEnv(t, "Dockerfile", e[1])
		switch e[1] {
		case "BOUNCER_SMTP_ADDR", "BOUNCER_HTTP_ADDR", "BOUNCER_NATS_LISTEN":
			flag := map[string]string{"BOUNCER_SMTP_ADDR": "smtp-addr", "BOUNCER_HTTP_ADDR": "http-addr", "BOUNCER_NATS_LISTEN": "nats-listen"}[e[1]]
			if p := addrPort(t, "Dockerfile "+e[1], e[2]); p != fl.port(t, flag) {
				t.Errorf("Dockerfile %s port %s, want %s", e[1], p, fl.port(t, flag))
			}
		}
	}
	u := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(u) == 0 || strings.HasPrefix(u[len(u)-1][1], "0") || strings.HasPrefix(u[len(u)-1][1], "root") {
		t.Errorf("Dockerfile: the final image must run as a non-root USER, got %v", u)
	}
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/bouncer", "./cmd/ingest", "distroless/static"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile: %q missing", want)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^FROM `).FindAllString(df, -1)); n < 2 {
		t.Errorf("Dockerfile: %d stages, want a multi-stage build", n)
	}
}
