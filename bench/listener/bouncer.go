package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/bouncer-mail/bouncer/broker"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// bouncerProc is a bouncer binary running as a separate process with its
// own data dir, no VERP keys (unsigned bounce addresses accepted) and the
// per-IP connection limit lifted, since every load comes from 127.0.0.1.
type bouncerProc struct {
	cmd                         *exec.Cmd
	dataDir                     string
	smtpAddr, httpAddr, natsURL string
	exited                      chan struct{}
}

func startBouncer(c config, dataDir string) (*bouncerProc, error) {
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	b := &bouncerProc{
		dataDir:  dataDir,
		smtpAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		httpAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		natsURL:  fmt.Sprintf("nats://127.0.0.1:%d", ports[2]),
		exited:   make(chan struct{}),
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(dataDir+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, err
	}
	args := []string{"--data-dir", dataDir, "--domain", domain, "--hostname", "bouncer.bench",
		"--smtp-addr", b.smtpAddr, "--http-addr", b.httpAddr, "--nats-listen", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"--max-connections-per-ip", "2000", "--log-level", "warn"}
	if c.partitions > 0 {
		args = append(args, "--report-partitions", fmt.Sprint(c.partitions))
	}
	if c.ingest != "inprocess" {
		args = append(args, "--ingest=false")
	}
	b.cmd = exec.Command(c.bouncer, args...)
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BOUNCER_") {
			env = append(env, kv)
		}
	}
	b.cmd.Env = env
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		b.cmd.Wait()
		logf.Close()
		close(b.exited)
	}()
	if err := waitSMTP(b.smtpAddr, c.startupWait); err != nil {
		b.kill()
		return nil, fmt.Errorf("bouncer (log %s): %w", dataDir+".log", err)
	}
	return b, nil
}

// startWorker starts bouncer-ingest on b's embedded NATS and b's SQLite
// store (its data dir), as a split deployment on one host runs it. It is
// a bouncerProc without SMTP: cpuTime, status and stop apply.
func startWorker(c config, b *bouncerProc) (*bouncerProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	w := &bouncerProc{dataDir: b.dataDir, httpAddr: fmt.Sprintf("127.0.0.1:%d", port), exited: make(chan struct{})}
	logf, err := os.OpenFile(b.dataDir+".ingest.log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, err
	}
	w.cmd = exec.Command(c.ingestBin, "--nats-url", b.natsURL, "--data-dir", b.dataDir,
		"--http-addr", w.httpAddr, "--log-level", "warn")
	w.cmd.Env = b.cmd.Env
	w.cmd.Stdout, w.cmd.Stderr = logf, logf
	if err := w.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		w.cmd.Wait()
		logf.Close()
		close(w.exited)
	}()
	return w, nil
}

// stop ends bouncer with SIGTERM (a graceful shutdown) and waits.
func (b *bouncerProc) stop() {
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(40 * time.Second):
		b.kill()
	}
}

// kill ends bouncer with SIGKILL: nothing runs after it, no shutdown.
func (b *bouncerProc) kill() {
	b.cmd.Process.Kill()
	<-b.exited
}

// status reads a kB field (VmRSS, VmHWM) of /proc/PID/status.
func (b *bouncerProc) status(field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", b.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return -1
}

// sampleRSS samples VmRSS every interval until the returned function is
// called, which returns the highest sample of each fifth of the time
// sampled: flat memory over a long load shows as five close figures.
func (b *bouncerProc) sampleRSS(interval time.Duration) func() []int64 {
	type sample struct {
		at time.Time
		kb int64
	}
	var samples []sample // the sampler's until stopped is closed
	start := time.Now()
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				if kb := b.status("VmRSS"); kb > 0 {
					samples = append(samples, sample{now, kb})
				}
			}
		}
	}()
	return func() []int64 {
		close(done)
		<-stopped
		span := time.Since(start)
		fifths := make([]int64, 5)
		for _, s := range samples {
			i := min(int(5*s.at.Sub(start)/span), 4)
			fifths[i] = max(fifths[i], s.kb)
		}
		return fifths
	}
}

// cpuTime is the user plus system time bouncer used so far; 0 for a nil
// process (no worker).
func (b *bouncerProc) cpuTime() time.Duration {
	if b == nil {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", b.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

func (b *bouncerProc) reportsReceived() (int64, error) {
	resp, err := http.Get("http://" + b.httpAddr + "/v1/stats?window=24h")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var st struct {
		ReportsReceived int64 `json:"reports_received"`
	}
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("stats: HTTP %d", resp.StatusCode)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st.ReportsReceived, err
}

// streamMsgs is how many reports wait in JetStream for ingest, in every
// reports partition.
func (b *bouncerProc) streamMsgs() (uint64, error) {
	nc, err := nats.Connect(b.natsURL, nats.Timeout(5*time.Second))
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	names, err := broker.ReportStreams(ctx, js)
	if err != nil {
		return 0, err
	}
	if len(names) == 0 {
		return 0, fmt.Errorf("no reports stream (%s)", broker.StreamReports)
	}
	var msgs uint64
	for _, name := range names {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return 0, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0, err
		}
		msgs += info.State.Msgs
	}
	return msgs, nil
}

// waitStored waits until reports_received reaches want and nothing waits
// in the stream, then returns reports_received.
func (b *bouncerProc) waitStored(want int64, timeout time.Duration) (int64, error) {
	deadline := time.Now().Add(timeout)
	for {
		got, err := b.reportsReceived()
		if err != nil {
			return got, err
		}
		pending, err := b.streamMsgs()
		if err != nil {
			return got, err
		}
		if got >= want && pending == 0 {
			return got, nil
		}
		if time.Now().After(deadline) {
			return got, fmt.Errorf("after %s: %d reports stored, %d still in the stream, want %d stored", timeout, got, pending, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// metricSet is a /metrics scrape: sample (name with labels) → value.
type metricSet map[string]float64

func (b *bouncerProc) metrics() (metricSet, error) {
	resp, err := http.Get("http://" + b.httpAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := metricSet{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

func (m metricSet) value(sample string) float64 { return m[sample] }

// bucket is one cumulative histogram bucket.
type bucket struct {
	le    float64
	count float64
}

// histogram returns name's cumulative buckets, sorted by bound.
func (m metricSet) histogram(name string) []bucket {
	var bs []bucket
	prefix := name + `_bucket{le="`
	for k, v := range m {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		le := strings.TrimSuffix(rest, `"}`)
		bound := math.Inf(1)
		if le != "+Inf" {
			bound, _ = strconv.ParseFloat(le, 64)
		}
		bs = append(bs, bucket{bound, v})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	return bs
}

// quantile estimates the q-quantile from cumulative buckets the way
// Prometheus' histogram_quantile does: linear within the bucket.
func quantile(q float64, bs []bucket) float64 {
	if len(bs) == 0 || bs[len(bs)-1].count == 0 {
		return math.NaN()
	}
	rank := q * bs[len(bs)-1].count
	lower, below := 0.0, 0.0
	for _, b := range bs {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				return lower
			}
			if b.count == below {
				return b.le
			}
			return lower + (b.le-lower)*(rank-below)/(b.count-below)
		}
		lower, below = b.le, b.count
	}
	return lower
}

// dbPath is bouncer's SQLite file under its data dir.
func (b *bouncerProc) dbPath() string { return filepath.Join(b.dataDir, "bouncer.db") }
