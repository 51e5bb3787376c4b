package reliability

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// NATSServer is an external nats-server process with JetStream, configured
// as bouncer needs it (broker.MaxPayload, every write synced before the
// ack), on a free port and a store directory that survive Kill and Start.
type NATSServer struct {
	URL     string
	Dir     string
	LogPath string
	addr    string
	bin     string
	p       *proc
}

// StartNATS starts e.NATS.
func (e *Env) StartNATS(name string) (*NATSServer, error) {
	if e.NATS == "" {
		return nil, fmt.Errorf("%w: no nats-server binary (Build makes one)", ErrPeerMissing)
	}
	dir, err := e.subdir(name)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	n := &NATSServer{Dir: dir, LogPath: dir + ".log", bin: e.NATS,
		addr: fmt.Sprintf("127.0.0.1:%d", ports[0]), URL: fmt.Sprintf("nats://127.0.0.1:%d", ports[0])}
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

// Start runs the server (again) and waits until it accepts connections.
func (n *NATSServer) Start() error {
	if n.p != nil && n.p.running() {
		return errors.New("nats-server already running")
	}
	p, err := startProc("nats-server", n.LogPath, nil, n.bin, "-c", filepath.Join(n.Dir, "nats.conf"))
	if err != nil {
		return err
	}
	n.p = p
	deadline := time.Now().Add(startTimeout)
	for {
		// A NATS server greets every client with an INFO line.
		if c, err := net.DialTimeout("tcp", n.addr, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "INFO ") {
				return nil
			}
		}
		if !p.running() {
			return fmt.Errorf("nats-server exited at start (%v):\n%s", p.waitErr, p.logTail(2000))
		}
		if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("nats-server not accepting connections after %s:\n%s", startTimeout, p.logTail(2000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill ends the server with SIGKILL.
func (n *NATSServer) Kill() error {
	if n.p == nil {
		return nil
	}
	return n.p.kill()
}

// Close kills the server.
func (n *NATSServer) Close() error { return n.Kill() }
