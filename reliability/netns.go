package reliability

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// lab is a small network of Linux network namespaces for the scenarios
// that need a real network between the programs: a bridge in the
// harness's namespace with an address of a private /24, and one namespace
// per program, each joined to the bridge by a veth pair. The harness
// reaches every namespace over the bridge (layer 2: no forwarding, no
// route but the bridge's own /24); the namespaces reach each other the
// same way. Cutting a namespace's veth, or shaping it with tc, changes
// only that namespace's traffic; the harness's loopback and routes stay
// untouched.
//
// Every name starts with "bn" and the lab's random id, so that concurrent
// runs do not collide, and Close removes everything the lab made.
type lab struct {
	id     string // 6 hex digits
	net    string // "10.213.K.", the /24 without its last octet
	bridge string
	ip     string // the ip program
	tc     string // the tc program, "" until shape needs it
	dir    string // wrapper scripts
	mu     sync.Mutex
	nss    []*netns
}

// netns is one namespace of a lab.
type netns struct {
	l       *lab
	Name    string // ip netns name
	IP      string // its address on the bridge
	hostDev string // the veth end on the bridge, in the harness's namespace
	nsDev   string // the veth end inside the namespace
	shaped  bool
}

// labMu serializes the making of labs' bridges.
var labMu sync.Mutex

// labNet is the first two octets of every lab's /24: 10.213.0.0/16 is
// otherwise unused here (newLab checks the routes).
const labNet = "10.213."

// newLab makes the bridge of a lab. It returns an error wrapping
// ErrNeedsRoot when namespaces cannot be made here: found by trying, not
// guessed from the uid.
func (e *Env) newLab() (*lab, error) {
	ip, err := findProgram("ip", "iproute2")
	if err != nil {
		return nil, err
	}
	b := make([]byte, 4)
	rand.Read(b)
	l := &lab{id: hex.EncodeToString(b)[:6], ip: ip}
	// One lab at a time picks its /24 and puts it on its bridge, so that
	// two scenarios running in parallel do not take the same one.
	labMu.Lock()
	defer labMu.Unlock()
	routes, err := exec.Command(ip, "-4", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip route: %v: %s", err, routes)
	}
	for k := int(b[3]); ; k = (k + 1) % 256 {
		cand := labNet + strconv.Itoa(k) + "."
		if !strings.Contains(string(routes), cand) {
			l.net = cand
			break
		}
		if k == int(b[3])-1 || b[3] == 0 && k == 255 {
			return nil, fmt.Errorf("no free /24 in %s0.0/16", labNet)
		}
	}
	if l.dir, err = e.subdir("lab-" + l.id); err != nil {
		return nil, err
	}
	// The real attempt: a namespace, removed again at once.
	probe := "bn" + l.id + "-probe"
	if out, err := exec.Command(ip, "netns", "add", probe).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%w: ip netns add: %v: %s", ErrNeedsRoot, err, strings.TrimSpace(string(out)))
	}
	exec.Command(ip, "netns", "del", probe).Run()
	l.bridge = "bn" + l.id + "-br"
	if err := l.run(ip, "link", "add", l.bridge, "type", "bridge"); err != nil {
		return nil, err
	}
	if err := l.run(ip, "addr", "add", l.net+"1/24", "dev", l.bridge); err != nil {
		l.Close()
		return nil, err
	}
	if err := l.run(ip, "link", "set", l.bridge, "up"); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// run runs a command and returns its output in the error.
func (l *lab) run(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// add makes a namespace on the lab's bridge; role names it (at most 5
// characters: interface names are 15).
func (l *lab) add(role string) (*netns, error) {
	l.mu.Lock()
	n := len(l.nss) + 1
	ns := &netns{l: l, Name: "bn" + l.id + "-" + role, IP: l.net + strconv.Itoa(n+1),
		hostDev: fmt.Sprintf("bn%s-h%d", l.id, n), nsDev: fmt.Sprintf("bn%s-n%d", l.id, n)}
	l.nss = append(l.nss, ns)
	l.mu.Unlock()
	ip := l.ip
	for _, argv := range [][]string{
		{ip, "netns", "add", ns.Name},
		{ip, "link", "add", ns.hostDev, "type", "veth", "peer", "name", ns.nsDev},
		{ip, "link", "set", ns.nsDev, "netns", ns.Name},
		{ip, "link", "set", ns.hostDev, "master", l.bridge},
		{ip, "link", "set", ns.hostDev, "up"},
		{ip, "-n", ns.Name, "addr", "add", ns.IP + "/24", "dev", ns.nsDev},
		{ip, "-n", ns.Name, "link", "set", ns.nsDev, "up"},
		// The namespace's own loopback, not the harness's.
		{ip, "-n", ns.Name, "link", "set", "lo", "up"},
	} {
		if err := l.run(argv...); err != nil {
			return nil, err
		}
	}
	return ns, nil
}

// Close removes the namespaces (their veth pairs go with them) and the
// bridge. The programs in the namespaces should be stopped first: a
// namespace outlives its removal while a process is in it.
func (l *lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, ns := range l.nss {
		if ns.shaped {
			ns.unshape()
		}
		exec.Command(l.ip, "link", "del", ns.hostDev).Run() // gone already when the namespace went first
		if err := l.run(l.ip, "netns", "del", ns.Name); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	l.nss = nil
	if l.bridge != "" {
		if err := l.run(l.ip, "link", "del", l.bridge); err != nil {
			errs = append(errs, err)
		}
		l.bridge = ""
	}
	return errors.Join(errs...)
}

// wrap returns a program that runs bin inside the namespace: a shell
// script exec-ing "ip netns exec NS bin", so the process keeps the pid,
// the process group and the parent-death signal the harness gave it.
func (ns *netns) wrap(bin string) (string, error) {
	path := filepath.Join(ns.l.dir, ns.Name+"-"+filepath.Base(bin))
	script := fmt.Sprintf("#!/bin/sh\nexec %s netns exec %s %s \"$@\"\n", ns.l.ip, ns.Name, bin)
	return path, os.WriteFile(path, []byte(script), 0o755)
}

// argv prefixes argv with "ip netns exec NS".
func (ns *netns) argv(argv ...string) []string {
	return append([]string{ns.l.ip, "netns", "exec", ns.Name}, argv...)
}

// Cut takes the namespace's end of the bridge down: nothing goes in or
// out of it, its TCP connections stay open and retransmit, as across a
// failed switch port. Restore brings it back.
func (ns *netns) Cut() error { return ns.l.run(ns.l.ip, "link", "set", ns.hostDev, "down") }

// Restore undoes Cut.
func (ns *netns) Restore() error { return ns.l.run(ns.l.ip, "link", "set", ns.hostDev, "up") }

// shapeRate is the rate of a shaped link, each way.
type shapeRate struct {
	Rate  string // tc rate, e.g. "2mbit"
	Burst string // token bucket size, e.g. "16kb"
	Queue string // tbf latency: the longest a packet waits before it is dropped
}

// shape limits the namespace's traffic both ways with a token bucket
// (tc tbf) on each end of its veth: into the namespace on the bridge's
// end, out of it on its own end.
func (ns *netns) shape(r shapeRate) error {
	tc, err := findProgram("tc", "iproute2")
	if err != nil {
		return err
	}
	ns.l.tc = tc
	args := []string{"root", "tbf", "rate", r.Rate, "burst", r.Burst, "latency", r.Queue}
	if err := ns.l.run(append([]string{tc, "qdisc", "add", "dev", ns.hostDev}, args...)...); err != nil {
		return err
	}
	ns.shaped = true
	return ns.l.run(ns.argv(append([]string{tc, "qdisc", "add", "dev", ns.nsDev}, args...)...)...)
}

// unshape removes what shape added.
func (ns *netns) unshape() error {
	err1 := ns.l.run(ns.l.tc, "qdisc", "del", "dev", ns.hostDev, "root")
	err2 := ns.l.run(ns.argv(ns.l.tc, "qdisc", "del", "dev", ns.nsDev, "root")...)
	ns.shaped = false
	return errors.Join(err1, err2)
}

// qdiscStats is what tc -s says of the token bucket on one veth end.
type qdiscStats struct {
	Bytes, Packets, Dropped, Overlimits int64
}

// shapeStats reads the counters of both token buckets of a shaped
// namespace: bytes through them and overlimits (packets the bucket held
// back). Overlimits above zero show that the shaping slowed the traffic.
func (ns *netns) shapeStats() (in, out qdiscStats, err error) {
	read := func(argv ...string) (qdiscStats, error) {
		var s qdiscStats
		b, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return s, fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, b)
		}
		// " Sent 1234 bytes 56 pkt (dropped 0, overlimits 7 requeues 0)"
		f := strings.Fields(strings.NewReplacer("(", " ", ")", " ", ",", " ").Replace(string(b)))
		for i := 0; i+1 < len(f); i++ {
			v, _ := strconv.ParseInt(f[i+1], 10, 64)
			switch {
			case f[i] == "Sent" && i+3 < len(f) && f[i+2] == "bytes":
				s.Bytes = v
				s.Packets, _ = strconv.ParseInt(f[i+3], 10, 64)
			case f[i] == "dropped":
				s.Dropped = v
			case f[i] == "overlimits":
				s.Overlimits = v
			}
		}
		return s, nil
	}
	if in, err = read(ns.l.tc, "-s", "qdisc", "show", "dev", ns.hostDev); err != nil {
		return in, out, err
	}
	out, err = read(ns.argv(ns.l.tc, "-s", "qdisc", "show", "dev", ns.nsDev)...)
	return in, out, err
}

// inNS returns a copy of e whose bouncer, bouncer-ingest and nats-server
// run inside ns.
func (e *Env) inNS(ns *netns) (*Env, error) {
	c := *e
	var err error
	if c.Bouncer, err = ns.wrap(e.Bouncer); err != nil {
		return nil, err
	}
	if c.Ingest, err = ns.wrap(e.Ingest); err != nil {
		return nil, err
	}
	if e.NATS != "" {
		if c.NATS, err = ns.wrap(e.NATS); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

// newBouncerIn prepares a bouncer that runs inside ns and listens on its
// address.
func (e *Env) newBouncerIn(ns *netns, name, dataDir string, o BouncerOptions) (*Bouncer, error) {
	ne, err := e.inNS(ns)
	if err != nil {
		return nil, err
	}
	b, err := ne.NewBouncer(name, dataDir, o)
	if err != nil {
		return nil, err
	}
	for _, a := range []*string{&b.SMTPAddr, &b.HTTPAddr, &b.natsAddr} {
		*a = strings.Replace(*a, "127.0.0.1", ns.IP, 1)
	}
	if o.NATSURL == "" {
		b.NATSURL = "nats://" + b.natsAddr
	}
	return b, nil
}

// newIngestWorkerIn prepares a bouncer-ingest worker that runs inside ns.
func (e *Env) newIngestWorkerIn(ns *netns, name, natsURL, clickhouseDSN string) (*IngestWorker, error) {
	ne, err := e.inNS(ns)
	if err != nil {
		return nil, err
	}
	w, err := ne.NewIngestWorker(name, natsURL, clickhouseDSN)
	if err != nil {
		return nil, err
	}
	w.HTTPAddr = strings.Replace(w.HTTPAddr, "127.0.0.1", ns.IP, 1)
	return w, nil
}

// startNATSIn starts a nats-server configured as StartNATS does, inside
// ns, listening on its address.
func (e *Env) startNATSIn(ns *netns, name string) (*NATSServer, error) {
	if e.NATS == "" {
		return nil, fmt.Errorf("%w: no nats-server binary (Build makes one)", ErrPeerMissing)
	}
	ne, err := e.inNS(ns)
	if err != nil {
		return nil, err
	}
	dir, err := e.subdir(name)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(ns.IP, strconv.Itoa(ports[0]))
	n := &NATSServer{Dir: dir, LogPath: dir + ".log", bin: ne.NATS, addr: addr, URL: "nats://" + addr}
	conf := fmt.Sprintf(`listen: %q
max_payload: 16MB
jetstream {
  store_dir: %q
  sync_interval: always
}
`, n.addr, filepath.Join(dir, "store"))
	if err := os.WriteFile(filepath.Join(dir, "nats.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return n, n.Start()
}

// nsClickHouse is a clickhouse-server inside a namespace, listening on the
// namespace's address. The programs under test reach it at DSN; the
// harness reads it through *ClickHouse, whose ports are those of a
// loopback forwarder to the namespace (ClickHouse's own reader dials
// 127.0.0.1).
type nsClickHouse struct {
	*ClickHouse
	ns  *netns
	fwd *forwarder
}

// DSN is the clickhouse-go DSN of database at the namespace's address.
func (c *nsClickHouse) DSN(database string) string {
	return fmt.Sprintf("clickhouse://%s:%d/%s?dial_timeout=5s", c.ns.IP, c.fwd.target, database)
}

// Close kills the server and stops the forwarder.
func (c *nsClickHouse) Close() error {
	c.fwd.Close()
	return c.ClickHouse.Close()
}

// startClickHouseIn starts a throwaway clickhouse-server as StartClickHouse
// does, inside ns.
func (e *Env) startClickHouseIn(ctx context.Context, ns *netns) (*nsClickHouse, error) {
	bin, err := findProgram("clickhouse-server", "clickhouse-server clickhouse-client")
	if err != nil {
		return nil, err
	}
	setpriv, err := findProgram("setpriv", "util-linux")
	if err != nil {
		return nil, err
	}
	dir, err := e.subdir("clickhouse")
	if err != nil {
		return nil, err
	}
	if err := chownToClickHouse(dir); err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	argv := ns.argv(setpriv, "--reuid=clickhouse", "--regid=clickhouse", "--init-groups", "--pdeathsig=KILL",
		bin, "--config-file=/etc/clickhouse-server/config.xml", "--",
		"--path="+dir+"/", "--tmp_path="+dir+"/tmp/",
		"--user_files_path="+dir+"/user_files/", "--format_schema_path="+dir+"/format_schemas/",
		"--tcp_port="+strconv.Itoa(ports[0]), "--http_port="+strconv.Itoa(ports[1]),
		"--interserver_http_port="+strconv.Itoa(ports[2]),
		// The first of the config's two listen_host (::1, 127.0.0.1):
		// the namespace's address instead.
		"--listen_host="+ns.IP,
		"--logger.log="+dir+"/log", "--logger.errorlog="+dir+"/err")
	logPath := filepath.Join(e.Dir, filepath.Base(dir)+".log")
	p, err := startProc("clickhouse-server", logPath, nil, argv...)
	if err != nil {
		return nil, err
	}
	fwd, err := forward(net.JoinHostPort(ns.IP, strconv.Itoa(ports[0])))
	if err != nil {
		p.kill()
		return nil, err
	}
	fwd.target = ports[0]
	c := &nsClickHouse{ClickHouse: &ClickHouse{Dir: dir, TCPPort: fwd.port, HTTPPort: ports[1], Interserver: ports[2],
		LogPath: logPath, bin: bin, p: p}, ns: ns, fwd: fwd}
	if err := waitHTTPPing(ctx, fmt.Sprintf("http://%s:%d/ping", ns.IP, ports[1]), p, dir); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// forwarder copies TCP connections from a loopback port to a target: the
// harness's own way to the ClickHouse of a namespace.
type forwarder struct {
	ln     net.Listener
	port   int
	target int
	wg     sync.WaitGroup
}

func forward(to string) (*forwarder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &forwarder{ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", to)
				if err != nil {
					return
				}
				defer u.Close()
				done := make(chan struct{}, 2)
				go func() { io.Copy(u, c); done <- struct{}{} }()
				go func() { io.Copy(c, u); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return f, nil
}

// Close stops accepting; open connections end with their peers.
func (f *forwarder) Close() {
	f.ln.Close()
	f.wg.Wait()
}

// chownToClickHouse gives dir to the clickhouse user, as StartClickHouse
// does when the harness runs as root.
func chownToClickHouse(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("clickhouse")
	if err != nil {
		return fmt.Errorf("%w: user clickhouse (the clickhouse-server package creates it): %v", ErrPeerMissing, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(dir, uid, gid)
}

// waitHTTPPing waits until ClickHouse's /ping at u answers "Ok.", the
// process exits or startTimeout passes.
func waitHTTPPing(ctx context.Context, u string, p *proc, dir string) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Get(u)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
			resp.Body.Close()
			if strings.TrimSpace(string(body)) == "Ok." {
				return nil
			}
		}
		if !p.running() {
			return fmt.Errorf("clickhouse-server exited at start (%v):\n%s\n%s", p.waitErr, p.logTail(2000), fileTail(dir+"/err", 2000))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.kill()
			return fmt.Errorf("clickhouse-server: no answer at %s after %s:\n%s", u, startTimeout, fileTail(dir+"/err", 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
