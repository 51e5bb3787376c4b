package reliability

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Postfix is one Postfix instance of its own: config directory (postfix
// -c), queue and data directories under Dir, one smtpd on a loopback port,
// its log (maillog_file = /dev/stdout) in LogPath. It runs as PEERS.md says
// Postfix runs on these machines: `postfix start-fg`, no chroot, explicit
// smtpd_relay_restrictions.
type Postfix struct {
	Name     string
	Dir      string
	SMTPAddr string
	LogPath  string
	postfix  string
	p        *proc
}

// postfixServices is master.cf without the smtpd line: the daemons a
// relaying instance uses, none chrooted.
const postfixServices = `cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
`

// StartRejectingMX starts the destination: a Postfix whose only local
// domain is domain, whose only known user is postmaster, so its smtpd
// answers every other RCPT with "550 5.1.1 <...>: Recipient address
// rejected: User unknown in local recipient table".
func (e *Env) StartRejectingMX(domain string) (*Postfix, error) {
	return e.startPostfix("postfix-mx", "mx."+domain, map[string]string{
		"mydestination":        domain,
		"local_recipient_maps": "texthash:{{etc}}/users",
		"local_transport":      "discard:",
		// One session carries many rejected recipients: no error
		// limits, no penalty sleep.
		"smtpd_soft_error_limit": "100000",
		"smtpd_hard_error_limit": "100000",
		"smtpd_error_sleep_time": "0",
	}, map[string]string{"users": "postmaster ok\n"})
}

// StartRelayMTA starts the sending MTA: it relays everything from loopback
// clients, routes each domain of transport to its next hop (e.g.
// "smtp:[127.0.0.1]:2525"), and retries deferred mail every second or two
// so a fault's backlog is delivered within the run.
func (e *Env) StartRelayMTA(hostname string, transport map[string]string) (*Postfix, error) {
	var tm strings.Builder
	for dom, next := range transport {
		fmt.Fprintf(&tm, "%s %s\n", dom, next)
	}
	fmt.Fprintf(&tm, "%s discard:\n", hostname) // mail for itself (a double bounce) goes nowhere
	return e.startPostfix("postfix-mta", hostname, map[string]string{
		"mydestination":        "",
		"local_recipient_maps": "",
		"transport_maps":       "texthash:{{etc}}/transport",
		"queue_run_delay":      "1s",
		"minimal_backoff_time": "1s",
		"maximal_backoff_time": "2s",
		"smtp_connect_timeout": "5s",
	}, map[string]string{"transport": tm.String()})
}

func (e *Env) startPostfix(name, hostname string, params map[string]string, files map[string]string) (*Postfix, error) {
	bin, err := findProgram("postfix", "postfix")
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: the postfix command is reserved for the superuser; the harness's Postfix instances drop to the postfix user themselves", ErrNeedsRoot)
	}
	pf, err := user.Lookup("postfix")
	if err != nil {
		return nil, fmt.Errorf("%w: user postfix: %v", ErrPeerMissing, err)
	}
	dir, err := e.subdir(name)
	if err != nil {
		return nil, err
	}
	etc := filepath.Join(dir, "etc")
	for _, d := range []string{etc, filepath.Join(dir, "spool"), filepath.Join(dir, "data")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	uid, _ := strconv.Atoi(pf.Uid)
	if err := os.Chown(filepath.Join(dir, "data"), uid, -1); err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	p := &Postfix{Name: name, Dir: dir, SMTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		LogPath: dir + ".log", postfix: bin}

	main := map[string]string{
		"compatibility_level":      "3.6",
		"queue_directory":          filepath.Join(dir, "spool"),
		"data_directory":           filepath.Join(dir, "data"),
		"maillog_file":             "/dev/stdout",
		"myhostname":               hostname,
		"inet_interfaces":          "127.0.0.1",
		"inet_protocols":           "ipv4",
		"mynetworks":               "127.0.0.0/8",
		"smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
		"alias_maps":               "",
		"alias_database":           "",
		"biff":                     "no",
		"smtpd_banner":             "$myhostname ESMTP",
		"in_flow_delay":            "0",
		"smtp_tls_security_level":  "none",
		"smtpd_tls_security_level": "none",
	}
	for k, v := range params {
		main[k] = strings.ReplaceAll(v, "{{etc}}", etc)
	}
	var mc strings.Builder
	for k, v := range main {
		fmt.Fprintf(&mc, "%s = %s\n", k, v)
	}
	if err := os.WriteFile(filepath.Join(etc, "main.cf"), []byte(mc.String()), 0o644); err != nil {
		return nil, err
	}
	master := p.SMTPAddr + " inet n - n - - smtpd\n" + postfixServices
	if err := os.WriteFile(filepath.Join(etc, "master.cf"), []byte(master), 0o644); err != nil {
		return nil, err
	}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(etc, f), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	p.p, err = startProc(name, p.LogPath, nil, bin, "-c", etc, "start-fg")
	if err != nil {
		return nil, err
	}
	if err := waitSMTP(p.SMTPAddr, p.p, startTimeout); err != nil {
		p.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// Close stops the instance: `postfix stop`, then `postfix abort` and
// SIGKILL of the master's process group if it lingers.
func (p *Postfix) Close() error {
	etc := filepath.Join(p.Dir, "etc")
	exec.Command(p.postfix, "-c", etc, "stop").Run()
	select {
	case <-p.p.exited:
		return nil
	case <-time.After(20 * time.Second):
	}
	exec.Command(p.postfix, "-c", etc, "abort").Run()
	if b, err := os.ReadFile(filepath.Join(p.Dir, "spool", "pid", "master.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
	return p.p.kill()
}

// Queued counts the messages in the instance's queue (incoming, active,
// deferred, hold): zero once everything is delivered or bounced.
func (p *Postfix) Queued() (int, error) {
	n := 0
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		err := filepath.WalkDir(filepath.Join(p.Dir, "spool", q), func(_ string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() {
				n++
			}
			return nil
		})
		if err != nil && !os.IsNotExist(err) {
			return 0, err
		}
	}
	return n, nil
}

// PostfixLog is what the MTA's log says it did.
type PostfixLog struct {
	Bounced       int // recipients the next hop refused: status=bounced
	DSNs          int // non-delivery notifications it wrote
	DSNSent       int // deliveries to the bounce domain answered 2xx
	DSNDeferred   int // deliveries to the bounce domain deferred (4xx, no connection, lost connection)
	DSNBounced    int // deliveries to the bounce domain refused (5xx)
	DeferredLines []string
}

// ReadLog counts the MTA's log lines of interest; domain is the bounce
// domain the DSNs go to.
func (p *Postfix) ReadLog(domain string) (PostfixLog, error) {
	var l PostfixLog
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return l, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		toBouncer := strings.Contains(line, "@"+domain+">, relay=")
		switch {
		case strings.Contains(line, "sender non-delivery notification:"):
			l.DSNs++
		case toBouncer && strings.Contains(line, "status=sent"):
			l.DSNSent++
		case toBouncer && strings.Contains(line, "status=deferred"):
			l.DSNDeferred++
			if len(l.DeferredLines) < 5 {
				l.DeferredLines = append(l.DeferredLines, line)
			}
		case toBouncer && strings.Contains(line, "status=bounced"):
			l.DSNBounced++
		case strings.Contains(line, "status=bounced"):
			l.Bounced++
		}
	}
	return l, nil
}
