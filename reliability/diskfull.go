package reliability

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func runDiskFull(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "disk-full", Injected: "data dir on a " + c.DiskSize + " tmpfs filled to the last byte under load, then the filler removed"}
	if os.Geteuid() != 0 {
		return r, fmt.Errorf("%w: mounting the tmpfs of the disk-full scenario", ErrNeedsRoot)
	}
	mnt, err := e.subdir("diskfull")
	if err != nil {
		return r, err
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size="+c.DiskSize); err != nil {
		return r, fmt.Errorf("mount -t tmpfs -o size=%s tmpfs %s: %w", c.DiskSize, mnt, err)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	b, err := e.NewBouncer("diskfull-bouncer", filepath.Join(mnt, "data"), BouncerOptions{})
	if err != nil {
		return r, err
	}
	if err := b.Start(); err != nil {
		return r, err
	}
	defer b.Kill()
	ballast := filepath.Join(mnt, "ballast")
	var probeErr error // the probes said ready while the disk was full
	run := newRun()
	load := c.startLoad(b.SMTPAddr, run)
	inject := func() error {
		n, err := fill(ballast)
		r.Notes = append(r.Notes, fmt.Sprintf("filler of %.1f MiB written until ENOSPC", float64(n)/(1<<20)))
		return err
	}
	recover := func() error {
		if !b.Running() {
			r.Notes = append(r.Notes, "bouncer exited while the disk was full: "+lastLines(b.LogPath, 3))
		}
		if b.Running() {
			// bouncer must say it cannot take reports: /readyz fails
			// while JetStream cannot store.
			healthz, readyz := probe(ctx, b.HTTPAddr, "/healthz"), probe(ctx, b.HTTPAddr, "/readyz")
			r.Notes = append(r.Notes, fmt.Sprintf("disk full: /healthz %s, /readyz %s (%s)", healthz, readyz, grepLog(b.LogPath, "api: not ready")))
			if readyz == "200" {
				probeErr = errors.New("/readyz answered 200 while the disk was full and JetStream could not store")
			}
		}
		if err := os.Remove(ballast); err != nil {
			return err
		}
		if b.Running() {
			acked := load.Ledger.Counts().Acked
			freed := time.Now()
			deadline := freed.Add(c.RecoverWait)
			for load.Ledger.Counts().Acked == acked && time.Now().Before(deadline) && ctx.Err() == nil {
				sleep(ctx, 100*time.Millisecond)
			}
			if load.Ledger.Counts().Acked > acked {
				healed := time.Since(freed)
				readyz := probe(ctx, b.HTTPAddr, "/readyz")
				for readyz != "200" && time.Now().Before(deadline) && ctx.Err() == nil {
					sleep(ctx, 100*time.Millisecond)
					readyz = probe(ctx, b.HTTPAddr, "/readyz")
				}
				r.Notes = append(r.Notes, fmt.Sprintf("space freed: bouncer answered 250 again by itself after %.1fs, /readyz %s after %.1fs (%s)",
					healed.Seconds(), readyz, time.Since(freed).Seconds(), grepLog(b.LogPath, "embedded server restarted")))
				return nil
			}
			r.Notes = append(r.Notes, fmt.Sprintf("space freed: no 250 within %s, while /healthz answered %s and /readyz %s; bouncer restarted (SIGTERM)",
				c.RecoverWait, probe(ctx, b.HTTPAddr, "/healthz"), probe(ctx, b.HTTPAddr, "/readyz")))
			if err := b.Stop(); err != nil {
				r.Notes = append(r.Notes, err.Error())
			}
		}
		return b.Start()
	}
	loadErr := drive(ctx, e, c, &r, load, fault{"the full disk", inject, recover})
	if out := grepLog(b.LogPath, "JetStream out of", "no space left", "disk is full", "DISABLED"); out != "" {
		r.Notes = append(r.Notes, "bouncer's log: "+out)
	}
	if loadErr != nil {
		return r, loadErr
	}
	// Not drained: still compare, to tell a stall from a loss.
	drainErr := check(ctx, c, &r, b, b.NATSURL, load, sqliteReader(b.DataDir, run), nil)
	return r, errors.Join(drainErr, probeErr, b.Stop())
}

// fill writes path until the file system is full and returns the bytes
// written; ENOSPC is the expected end, any other error is returned.
func fill(path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	for _, size := range []int{1 << 20, 4 << 10, 1} {
		buf := make([]byte, size)
		for {
			w, err := f.Write(buf)
			n += int64(w)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// grepLog returns the distinct log lines holding any of words, at most 3.
func grepLog(path string, words ...string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var out []string
	seen := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				key := line
				if i := strings.Index(line, "msg="); i >= 0 {
					key = line[i:]
				}
				if !seen[key] && len(out) < 3 {
					seen[key] = true
					out = append(out, strings.TrimSpace(key))
				}
				break
			}
		}
	}
	return strings.Join(out, " | ")
}

// lastLines returns the last n lines of a log.
func lastLines(path string, n int) string {
	lines := strings.Split(strings.TrimSpace(fileTail(path, 4000)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// probe returns the HTTP status of GET path, or the error.
func probe(ctx context.Context, addr, path string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	resp.Body.Close()
	return strconv.Itoa(resp.StatusCode)
}
