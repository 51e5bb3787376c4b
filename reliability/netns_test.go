package reliability

// The scenarios that need a network between the programs (netns.go): they
// make network namespaces, veth pairs and a bridge, which needs root (CI
// runs as root in a container); without it newLab's real attempt fails
// and runScenario skips, saying so.

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestClickHouseSlow: ClickHouse behind a throttled link (tc tbf; the
// kernel here has no sch_netem, so a fixed delay cannot be added, see
// slowRate). It fails on a lost or twice-stored report, on a backlog that
// never drains, and when the token buckets held nothing back (the fault
// did not happen).
func TestClickHouseSlow(t *testing.T) { runScenario(t, "clickhouse-slow") }

// TestLab checks the lab itself against the kernel: a program in a
// namespace is reachable over the bridge, not while its link is cut, again
// once restored, and Close leaves no namespace, veth or bridge behind.
func TestLab(t *testing.T) {
	e := testEnv(t)
	l, err := e.newLab()
	if errors.Is(err, ErrNeedsRoot) {
		t.Skipf("%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			l.Close()
		}
	}()
	ns, err := l.add("t")
	if err != nil {
		t.Fatal(err)
	}
	n, err := e.startNATSIn(ns, "lab-nats")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if !strings.HasPrefix(n.addr, ns.IP+":") {
		t.Fatalf("nats-server at %s, want the namespace's address %s", n.addr, ns.IP)
	}
	dial := func() error {
		c, err := net.DialTimeout("tcp", n.addr, 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatalf("nats-server in the namespace not reachable over the bridge: %v", err)
	}
	// Not on the harness's loopback: it really is in the namespace.
	if c, err := net.DialTimeout("tcp", strings.Replace(n.addr, ns.IP, "127.0.0.1", 1), 2*time.Second); err == nil {
		c.Close()
		t.Errorf("nats-server answers on the harness's loopback too")
	}
	if err := ns.Cut(); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err == nil {
		t.Errorf("nats-server reachable while its link is cut")
	}
	if err := ns.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err != nil {
		t.Errorf("nats-server not reachable after the link was restored: %v", err)
	}
	if err := ns.shape(slowRate); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err != nil {
		t.Errorf("nats-server not reachable over the shaped link: %v", err)
	}
	in, out, err := ns.shapeStats()
	if err != nil {
		t.Fatal(err)
	}
	if in.Packets == 0 || out.Packets == 0 {
		t.Errorf("token buckets saw %d packets in, %d out; want the dial's", in.Packets, out.Packets)
	}
	n.Close()
	closed = true
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	list, _ := exec.Command(l.ip, "netns", "list").CombinedOutput()
	links, _ := exec.Command(l.ip, "-br", "link").CombinedOutput()
	for _, left := range []string{ns.Name, ns.hostDev, "bn" + l.id + "-br"} {
		if strings.Contains(string(list)+string(links), left) {
			t.Errorf("%s still there after Close", left)
		}
	}
}

// TestNATSPartition: nats-server's link cut for longer than the publish
// timeout while the listener and ingest, each in its own namespace, use
// it. It fails on a lost or twice-stored report and on a backlog that
// never drains.
func TestNATSPartition(t *testing.T) { runScenario(t, "nats-partition") }

// TestClockJump steps the clock of the whole host, which every other
// program on it sees: it runs only with BOUNCER_TEST_CLOCK_JUMP=1 (the
// scenario itself refuses without it too). It fails on a lost or
// twice-stored report, and when the API's count of reports disagrees with
// the store after the steps.
func TestClockJump(t *testing.T) {
	if os.Getenv(clockJumpEnv) != "1" {
		t.Skipf("steps the host's wall clock 10 min forward and back; set %s=1 to run it", clockJumpEnv)
	}
	runScenario(t, "clock-jump")
}

// TestClickHousePartition: ClickHouse's link cut while both ingest
// processes write to it. It fails on a lost or twice-stored report and on
// a backlog that never drains.
func TestClickHousePartition(t *testing.T) { runScenario(t, "clickhouse-partition") }
