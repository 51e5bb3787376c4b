package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/ingest"
)

// BounceDomain is the bounce domain every bouncer of the harness serves.
const BounceDomain = "bounces.example.com"

// startTimeout bounds a process start; stopTimeout a graceful stop.
const (
	startTimeout = 60 * time.Second
	stopTimeout  = 60 * time.Second
)

// Bouncer is the bouncer binary serving as the all-in-one: listener,
// NATS (embedded unless BouncerOptions.NATSURL), in-process ingest and API,
// with SQLite under DataDir or ClickHouse. It keeps its data dir and ports
// across Kill and Start, as a supervisor restarting it would.
type Bouncer struct {
	env      *Env
	name     string
	opts     BouncerOptions
	DataDir  string
	LogPath  string
	SMTPAddr string
	HTTPAddr string
	NATSURL  string // the embedded server's, or BouncerOptions.NATSURL
	natsAddr string
	p        *proc
}

// BouncerOptions are a Bouncer's deviations from the all-in-one with
// SQLite, embedded NATS and no VERP keys (unsigned bounce addresses
// accepted).
type BouncerOptions struct {
	ClickHouseDSN string   // --clickhouse-dsn; empty: SQLite under the data dir
	VERPKeys      string   // BOUNCER_VERP_KEYS
	NATSURL       string   // --nats-url of an external NATS; empty: embedded
	Args          []string // further flags
}

// NewBouncer prepares a bouncer on free ports; Start runs it.
func (e *Env) NewBouncer(name, dataDir string, o BouncerOptions) (*Bouncer, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	b := &Bouncer{
		env: e, name: name, opts: o, DataDir: dataDir, LogPath: filepath.Join(e.Dir, name+".log"),
		SMTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		HTTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		natsAddr: fmt.Sprintf("127.0.0.1:%d", ports[2]),
		NATSURL:  fmt.Sprintf("nats://127.0.0.1:%d", ports[2]),
	}
	if o.NATSURL != "" {
		b.NATSURL = o.NATSURL
	}
	return b, nil
}

// startBouncer makes the data dir name under the work dir and starts an
// all-in-one bouncer on it with o, logging to name-bouncer.log: the
// beginning every single-process scenario shares.
func (e *Env) startBouncer(name string, o BouncerOptions) (*Bouncer, error) {
	dir, err := e.subdir(name)
	if err != nil {
		return nil, err
	}
	b, err := e.NewBouncer(name+"-bouncer", dir, o)
	if err != nil {
		return nil, err
	}
	if err := b.Start(); err != nil {
		b.Kill() // a process that did not greet in time may run still
		return nil, err
	}
	return b, nil
}

// startBouncerAndWorker starts the split topology's two processes on the
// ClickHouse database at dsn: an all-in-one bouncer first (it creates the
// database and the streams), then a bouncer-ingest worker sharing its
// NATS and its durable consumer. With an error, the bouncer it started
// is killed.
func (e *Env) startBouncerAndWorker(name, dsn string, args ...string) (*Bouncer, *IngestWorker, error) {
	b, err := e.startBouncer(name, BouncerOptions{ClickHouseDSN: dsn, Args: args})
	if err != nil {
		return nil, nil, err
	}
	w, err := e.NewIngestWorker(name+"-ingest", b.NATSURL, dsn)
	if err == nil {
		if err = w.Start(); err != nil {
			w.Kill()
		}
	}
	if err != nil {
		b.Kill()
		return nil, nil, err
	}
	return b, w, nil
}

// Start runs the process and returns once it greets on SMTP.
func (b *Bouncer) Start() error {
	if b.p != nil && b.p.running() {
		return fmt.Errorf("%s already running", b.name)
	}
	args := []string{b.env.Bouncer,
		"--data-dir", b.DataDir, "--domain", BounceDomain, "--hostname", "bouncer.reliability.test",
		"--smtp-addr", b.SMTPAddr, "--http-addr", b.HTTPAddr,
		// Every load comes from 127.0.0.1, and a sender reconnecting
		// after a fault briefly holds old and new connections.
		"--max-connections-per-ip", "1000",
		"--log-level", "info"}
	if b.opts.NATSURL != "" {
		args = append(args, "--nats-url", b.opts.NATSURL)
	} else {
		args = append(args, "--nats-listen", b.natsAddr)
	}
	if b.opts.ClickHouseDSN != "" {
		args = append(args, "--clickhouse-dsn", b.opts.ClickHouseDSN)
	}
	args = append(args, b.opts.Args...)
	env := []string{"BOUNCER_VERP_KEYS=" + b.opts.VERPKeys}
	p, err := startProc(b.name, b.LogPath, env, args...)
	if err != nil {
		return err
	}
	b.p = p
	if err := waitSMTP(b.SMTPAddr, p, startTimeout); err != nil {
		p.kill()
		return fmt.Errorf("%s: %w", b.name, err)
	}
	return nil
}

// Kill ends the process with SIGKILL.
func (b *Bouncer) Kill() error {
	if b.p == nil {
		return nil
	}
	return b.p.kill()
}

// Stop ends the process with SIGTERM, a graceful shutdown.
func (b *Bouncer) Stop() error {
	if b.p == nil {
		return nil
	}
	return b.p.stop(stopTimeout)
}

// Freeze stops the process with SIGSTOP: its connections stay open and
// nothing answers on them, as with a paused VM or a host thrashing.
func (b *Bouncer) Freeze() error { return b.p.freeze() }

// Thaw resumes a frozen process with SIGCONT.
func (b *Bouncer) Thaw() error { return b.p.thaw() }

// Running reports whether the process runs.
func (b *Bouncer) Running() bool { return b.p != nil && b.p.running() }

// Pid is the process id of the current run.
func (b *Bouncer) Pid() int { return b.p.pid() }

// ReportsReceived is reports_received of GET /v1/stats over a day.
func (b *Bouncer) ReportsReceived(ctx context.Context) (int64, error) {
	var st struct {
		ReportsReceived int64 `json:"reports_received"`
	}
	if err := getJSON(ctx, "http://"+b.HTTPAddr+"/v1/stats?window=24h", &st); err != nil {
		return 0, err
	}
	return st.ReportsReceived, nil
}

// Event is one event as GET /v1/recipients/{address}/events returns it
// (the fields the harness checks).
type Event struct {
	ID        string `json:"id"`
	Source    string `json:"source"`
	Recipient string `json:"recipient"`
	Class     string `json:"class"`
	Reason    string `json:"reason"`
	Status    string `json:"status"`
	ReplyCode int    `json:"reply_code"`
	Action    string `json:"action"`
	MessageID string `json:"message_id"`
	Parser    string `json:"parser"`
}

// RecipientEvents reads GET /v1/recipients/{address}/events.
func (b *Bouncer) RecipientEvents(ctx context.Context, address string) ([]Event, error) {
	var resp struct {
		Events []Event `json:"events"`
	}
	err := getJSON(ctx, "http://"+b.HTTPAddr+"/v1/recipients/"+url.PathEscape(address)+"/events", &resp)
	return resp.Events, err
}

// Metric reads one sample, e.g. `bouncer_smtp_replies_total{code="250"}`,
// from /metrics; 0 when absent.
func (b *Bouncer) Metric(ctx context.Context, sample string) (float64, error) {
	return scrapeMetric(ctx, "http://"+b.HTTPAddr+"/metrics", sample)
}

func getJSON(ctx context.Context, u string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", u, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func scrapeMetric(ctx context.Context, u, sample string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, sc.Err()
}

// IngestWorker is the bouncer-ingest binary consuming from a bouncer's
// NATS into ClickHouse, sharing the durable consumer with that bouncer's
// in-process ingest.
type IngestWorker struct {
	env      *Env
	name     string
	LogPath  string
	HTTPAddr string
	natsURL  string
	dsn      string
	p        *proc
}

// NewIngestWorker prepares a worker on a free HTTP port.
func (e *Env) NewIngestWorker(name, natsURL, clickhouseDSN string) (*IngestWorker, error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	return &IngestWorker{env: e, name: name, LogPath: filepath.Join(e.Dir, name+".log"),
		HTTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]), natsURL: natsURL, dsn: clickhouseDSN}, nil
}

// Start runs the worker and returns once /healthz answers.
func (w *IngestWorker) Start() error {
	if w.p != nil && w.p.running() {
		return fmt.Errorf("%s already running", w.name)
	}
	p, err := startProc(w.name, w.LogPath, nil, w.env.Ingest,
		"--nats-url", w.natsURL, "--clickhouse-dsn", w.dsn, "--http-addr", w.HTTPAddr, "--log-level", "info")
	if err != nil {
		return err
	}
	w.p = p
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := http.Get("http://" + w.HTTPAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if !p.running() {
			return fmt.Errorf("%s exited at start (%v); log %s:\n%s", w.name, p.waitErr, w.LogPath, p.logTail(3000))
		}
		if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("%s: /healthz not answering after %s; log %s:\n%s", w.name, startTimeout, w.LogPath, p.logTail(3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill ends the worker with SIGKILL.
func (w *IngestWorker) Kill() error {
	if w.p == nil {
		return nil
	}
	return w.p.kill()
}

// Stop ends the worker with SIGTERM.
func (w *IngestWorker) Stop() error {
	if w.p == nil {
		return nil
	}
	return w.p.stop(stopTimeout)
}

// Metric reads one sample of the worker's /metrics.
func (w *IngestWorker) Metric(ctx context.Context, sample string) (float64, error) {
	return scrapeMetric(ctx, "http://"+w.HTTPAddr+"/metrics", sample)
}

// StreamState is what JetStream holds for ingest: reports in the stream
// (acked ones are removed) and those handed to an ingest process and not
// acked yet.
type StreamState struct {
	Msgs       uint64
	AckPending int
	Pending    uint64 // not yet delivered to any ingest process
	// AckFloor is the sum over the partitions of the stream sequence up
	// to which ingest acked everything: it grows while ingest acks.
	AckFloor uint64
}

// Idle reports whether the ingest consumer has nothing left to do:
// everything delivered and acked. The stream itself is then empty too
// within a moment (ingest trims what it acked, broker.Trim); Msgs that
// stay above zero are reports the consumer holds as acked that the stream
// failed to drop.
func (s StreamState) Idle() bool { return s.AckPending == 0 && s.Pending == 0 }

// reportStreams connects to natsURL and returns a client and the reports
// streams (every partition, broker.ReportStreams). The caller closes nc.
func reportStreams(ctx context.Context, natsURL string) (*nats.Conn, []jetstream.Stream, error) {
	nc, err := nats.Connect(natsURL, nats.Timeout(5*time.Second), nats.MaxReconnects(0))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	names, err := broker.ReportStreams(ctx, js)
	if err == nil && len(names) == 0 {
		err = fmt.Errorf("no reports stream (%s)", broker.StreamReports)
	}
	var streams []jetstream.Stream
	for _, name := range names {
		if err != nil {
			break
		}
		var s jetstream.Stream
		if s, err = js.Stream(ctx, name); err == nil {
			streams = append(streams, s)
		}
	}
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, streams, nil
}

// Stream reads the reports streams (every partition) and their ingest
// consumers from natsURL, summed.
func Stream(ctx context.Context, natsURL string) (StreamState, error) {
	var st StreamState
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, streams, err := reportStreams(ctx, natsURL)
	if err != nil {
		return st, err
	}
	defer nc.Close()
	for _, s := range streams {
		info, err := s.Info(ctx)
		if err != nil {
			return st, err
		}
		st.Msgs += info.State.Msgs
		c, err := s.Consumer(ctx, ingest.DefaultDurable)
		if err != nil {
			return st, fmt.Errorf("%s: consumer %s: %w", info.Config.Name, ingest.DefaultDurable, err)
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return st, err
		}
		st.AckPending += ci.NumAckPending
		st.Pending += ci.NumPending
		st.AckFloor += ci.AckFloor.Stream
	}
	return st, nil
}

// StreamLeftovers returns the report ids of the messages still in the
// reports streams and not acked by ingest (a report alone's Nats-Msg-Id,
// every report of a bundle), about limit of them at most: after a drain
// that did not finish, they tell a stall (ids stored already, or never
// delivered) from a loss.
func StreamLeftovers(ctx context.Context, natsURL string, limit int) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	nc, streams, err := reportStreams(ctx, natsURL)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	var ids []string
	for _, s := range streams {
		info, err := s.Info(ctx)
		if err != nil {
			return ids, err
		}
		// What ingest acked may still be there until its next trim: start
		// above the consumer's ack floor.
		first := info.State.FirstSeq
		if c, err := s.Consumer(ctx, ingest.DefaultDurable); err == nil {
			if ci, err := c.Info(ctx); err == nil && ci.AckFloor.Stream >= first {
				first = ci.AckFloor.Stream + 1
			}
		}
		for seq := first; seq <= info.State.LastSeq && len(ids) < limit && info.State.Msgs > 0; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				return ids, err
			}
			if count := m.Header.Get(broker.HeaderBundle); count != "" {
				reports, err := broker.DecodeBundle(m.Data, count)
				if err != nil {
					return ids, fmt.Errorf("%s seq %d: %w", info.Config.Name, seq, err)
				}
				for _, r := range reports {
					ids = append(ids, r.Envelope.ID)
				}
				continue
			}
			ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
		}
	}
	return ids, nil
}
