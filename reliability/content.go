package reliability

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/rules"
)

// The hostile-content scenario: under the load of valid reports, a second
// sender mixes in, round after round, every kind of hostile message of
// content_msgs.go — oversize header lines and blocks and a message over the
// size limit, thousands of MIME levels and tens of thousands of parts,
// base64 and quoted-printable parts that decode to megabytes, invalid
// UTF-8, bogus charsets, NUL bytes, bare LF and CR, binary garbage,
// transactions of forged, tampered and expired VERP addresses, and ARF
// complaints and auto-replies. Every reply must be the one expected, every
// message answered 250 must be stored exactly once with the events
// bouncer's own classifier finds in it (ARF and auto-replies asserted by
// class, never hard), a refused one must leave nothing behind, the
// process must stay up with its RSS under contentRSSBound, and the load
// must lose and duplicate nothing.

func init() {
	Scenarios = append(Scenarios, Scenario{"hostile-content",
		"a second sender mixes hostile messages into the load: oversize headers, nested MIME, decoding bombs, bad bytes, forged VERP floods, ARF and auto-replies",
		runHostileContent})
}

// contentRSSBound bounds the bouncer process's resident set, in KiB, during
// the hostile-content scenario. A 10 MiB message is held a few times over
// (the listener's buffer, the JetStream publish, ingest's fetch of up to
// 64 MiB, the parser's decoded copies); 1 GiB is a hundred such messages,
// and what the all-in-one stays under when each is freed after it is
// stored, not kept.
const contentRSSBound = 1 << 20

// hostileSent is what became of one hostile message.
type hostileSent struct {
	msg       *hostileMsg // Raw dropped once sent
	rawLen    int
	oracle    []wantEvent // classify.Bytes of the bytes, in the harness's process
	oracleErr error       // its error: the report is stored raw with a parse error, no event
	rcptCodes []int
	rcptReply []string
	code      int
	reply     string
	attempts  int
	refused   int // RCPTs answered 550 over every attempt: a resend is refused again
	err       error
}

// hostileSender runs sessions that send every hostile kind in rounds until
// stopped; each round builds new, unique messages.
type hostileSender struct {
	addr    string
	run     string
	cl      *classify.Classifier
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
	next    atomic.Int64
	rounds  atomic.Int64

	mu   sync.Mutex
	sent []*hostileSent
}

func startHostile(addr, run string, sessions int) (*hostileSender, error) {
	rs, err := rules.Default()
	if err != nil {
		return nil, err
	}
	h := &hostileSender{addr: addr, run: run, cl: classify.New(rs), stop: make(chan struct{})}
	for s := range sessions {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.session(s)
		}()
	}
	return h, nil
}

// finish lets each session end its round, then waits for them.
func (h *hostileSender) finish() {
	h.stopped.Do(func() { close(h.stop) })
	h.wg.Wait()
}

func (h *hostileSender) session(s int) {
	for round := 0; ; round++ {
		// Every session starts its rounds at another kind, so the big
		// messages do not all travel at once.
		for i := range hostileKinds {
			k := hostileKinds[(i+s*5)%len(hostileKinds)]
			h.send(k.build(k, h.run, int(h.next.Add(1))))
		}
		h.rounds.Add(1)
		select {
		case <-h.stop:
			return
		default:
		}
	}
}

// maxHostileAttempts bounds the resends of a message that got a 4xx or
// lost its connection after DATA, as an MTA's queue would resend it.
const maxHostileAttempts = 5

func (h *hostileSender) send(m *hostileMsg) {
	hs := &hostileSent{msg: m, rawLen: len(m.Raw)}
	if m.Want == 250 {
		evs, err := h.cl.Bytes(m.Raw)
		hs.oracleErr = err
		if err == nil {
			for _, ev := range evs {
				hs.oracle = append(hs.oracle, wantEvent{ev.Recipient, string(ev.Class), string(ev.Reason)})
			}
		}
	}
	for hs.attempts < maxHostileAttempts {
		hs.attempts++
		hs.rcptCodes, hs.rcptReply, hs.code, hs.reply, hs.err = transact(h.addr, m)
		for _, c := range hs.rcptCodes {
			if c == 550 {
				hs.refused++
			}
		}
		temp := hs.code >= 400 && hs.code < 500
		noReply := hs.code == 0 && hs.err != nil // no connection, or lost (in doubt after DATA)
		if !noReply && (m.Want != 250 || !temp) {
			break
		}
		time.Sleep(retryDelay)
	}
	m.Raw = nil
	h.mu.Lock()
	h.sent = append(h.sent, hs)
	h.mu.Unlock()
}

// transact runs one transaction of m on a new connection: MAIL FROM, each
// RCPT, DATA, and the stuffed message written while the reply is read (a
// listener may answer before it read everything). It returns each RCPT's
// reply code and text, and the final reply's (0 when none came).
func transact(addr string, m *hostileMsg) (rcptCodes []int, rcptReply []string, code int, reply string, err error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, nil, 0, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(smtpTimeout))
	r := bufio.NewReader(c)
	codeOf := func(line string) int {
		if len(line) < 3 {
			return 0
		}
		n, _ := strconv.Atoi(line[:3])
		return n
	}
	cmd := func(line string) (int, string, error) {
		if line != "" {
			if _, err := fmt.Fprintf(c, "%s\r\n", line); err != nil {
				return 0, "", err
			}
		}
		l, err := readReply(r)
		return codeOf(l), l, err
	}
	for _, line := range []string{"", "EHLO hostile.sender.example", "MAIL FROM:<" + m.From + ">"} {
		code, reply, err = cmd(line)
		if err != nil || code >= 400 {
			return nil, nil, code, reply, err
		}
	}
	for _, rcpt := range m.Rcpts {
		n, l, err := cmd("RCPT TO:<" + rcpt + ">")
		if err != nil {
			return rcptCodes, rcptReply, 0, l, err
		}
		rcptCodes, rcptReply = append(rcptCodes, n), append(rcptReply, l)
	}
	code, reply, err = cmd("DATA")
	if err != nil || code != 354 || m.Raw == nil {
		return rcptCodes, rcptReply, code, reply, err
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(stuff(m.Raw))
		wrote <- err
	}()
	code, reply, err = cmd("")
	c.Close() // ends a write the listener stopped reading
	werr := <-wrote
	if err != nil && code == 0 {
		err = errors.Join(err, werr)
	} else {
		err = nil
	}
	return rcptCodes, rcptReply, code, reply, err
}

// rssSampler records the peak resident set of a process.
type rssSampler struct {
	peak, first atomic.Int64
	stop        chan struct{}
	done        chan struct{}
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	s.first.Store(vmRSS(pid))
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if v := vmRSS(pid); v > s.peak.Load() {
				s.peak.Store(v)
			}
			select {
			case <-t.C:
			case <-s.stop:
				return
			}
		}
	}()
	return s
}

func (s *rssSampler) end() int64 {
	close(s.stop)
	<-s.done
	return s.peak.Load()
}

func runHostileContent(ctx context.Context, e *Env, c Config) (Result, error) {
	r := Result{Scenario: "hostile-content", Injected: "hostile messages of 21 kinds mixed into the load by a second sender, round after round, on an all-in-one with VERP keys (unsigned accepted)"}
	b, err := e.startBouncer("hostile-content", BouncerOptions{VERPKeys: contentVERPKey, Args: []string{"--accept-unsigned"}})
	if err != nil {
		return r, err
	}
	defer b.Kill()
	pid := b.Pid()
	rss := sampleRSS(pid)
	run := newRun()
	load := c.startLoad(b.SMTPAddr, run)
	var h *hostileSender
	sessions := max(2, c.Sessions/5)
	var cpuAt [2]time.Duration // bouncer's and the harness's CPU time at inject
	var wallAt time.Time
	inject := func() error {
		cpuAt, wallAt = [2]time.Duration{procCPU(pid), selfCPU()}, time.Now()
		h, err = startHostile(b.SMTPAddr, run, sessions)
		return err
	}
	recover := func() error {
		h.finish()
		r.Notes = append(r.Notes, fmt.Sprintf("while the hostile sender ran (%s, %d sessions): bouncer used %.1f s of CPU, the harness (load, hostile sender building and classifying its messages) %.1f s, on %d CPUs",
			time.Since(wallAt).Round(100*time.Millisecond), sessions, (procCPU(pid)-cpuAt[0]).Seconds(), (selfCPU()-cpuAt[1]).Seconds(), runtime.NumCPU()))
		if !b.Running() {
			return errors.New("bouncer died under the hostile messages: " + lastLines(b.LogPath, 3))
		}
		return nil
	}
	if err := drive(ctx, e, c, &r, load, fault{"the hostile sender", inject, recover}); err != nil {
		if h != nil {
			h.finish()
		}
		rss.end()
		return r, err
	}
	drainErr := check(ctx, c, &r, b, b.NATSURL, load, sqliteReader(b.DataDir, run), nil)
	peak := rss.end()
	herr := checkHostile(ctx, &r, b, h, load, peak, rss.first.Load())
	r.Notes = append(r.Notes, fmt.Sprintf("bouncer RSS once ingest drained: %d MiB", vmRSS(pid)>>10))
	if b.Pid() != pid || !b.Running() {
		herr = errors.Join(herr, errors.New("bouncer is not the process started at the beginning: it died"))
	}
	return r, errors.Join(drainErr, herr, b.Stop())
}

// procCPU is the user and system CPU time a process used so far, 0 when
// unknown (/proc/PID/stat, in clock ticks of 1/100 s).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

// selfCPU is the CPU time this process used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hostileStored is what the store holds of one hostile report.
type hostileStored struct {
	parseError string
	recipients []string
	rawLen     int
	events     []wantEvent
}

// readHostile reads the reports of ids from the all-in-one's SQLite store,
// with their events.
func readHostile(ctx context.Context, dataDir string, ids map[string]bool) (map[string]*hostileStored, error) {
	path := filepath.Join(dataDir, "bouncer.db")
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	out := map[string]*hostileStored{}
	rows, err := db.QueryContext(ctx, "SELECT id, parse_error, recipients, length(raw) FROM reports")
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	for rows.Next() {
		var id, perr, rcpts string
		var n int
		if err := rows.Scan(&id, &perr, &rcpts, &n); err != nil {
			rows.Close()
			return nil, err
		}
		if !ids[id] {
			continue
		}
		s := &hostileStored{parseError: perr, rawLen: n}
		if err := json.Unmarshal([]byte(rcpts), &s.recipients); err != nil {
			rows.Close()
			return nil, fmt.Errorf("report %s: recipients %q: %w", id, rcpts, err)
		}
		out[id] = s
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = db.QueryContext(ctx, "SELECT report_id, recipient, class, reason FROM events")
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, rcpt, class, reason string
		if err := rows.Scan(&id, &rcpt, &class, &reason); err != nil {
			return nil, err
		}
		if s := out[id]; s != nil {
			s.events = append(s.events, wantEvent{rcpt, class, reason})
		}
	}
	return out, rows.Err()
}

// kindTally sums one kind for the notes.
type kindTally struct {
	sent, acked, refused, stored, wrong, parseErrors int
	codes, classes                                   map[string]int
}

// checkHostile compares what the hostile sender got with the store, the
// API's counts and the metrics, and notes the figures. It returns an
// error for every broken expectation.
func checkHostile(ctx context.Context, r *Result, b *Bouncer, h *hostileSender, load *Load, peakRSS, firstRSS int64) error {
	var errs []error
	failf := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	ids := map[string]bool{}
	for _, hs := range h.sent {
		if hs.msg.Sum != "" {
			ids[hs.msg.Sum] = true
		}
	}
	stored, err := readHostile(ctx, b.DataDir, ids)
	if err != nil {
		return err
	}
	tally := map[string]*kindTally{}
	var kinds []string
	// One hard event per stored report of the load (check filled r.Stored).
	wantClass := map[string]int64{"hard": int64(r.Stored)}
	rcpt550, acked, lost, refusedStored, wrongCode, misclassified, wrongEnvelope := 0, 0, 0, 0, 0, 0, 0
	storedAfterTemp := 0
	var ackedBytes int64 // of every message answered 250, load and hostile
	for _, m := range load.Ledger.Acked() {
		ackedBytes += int64(m.Size)
	}
	var samples []string
	sample := func(s string) {
		if len(samples) < 8 {
			samples = append(samples, s)
		}
	}
	resent := 0
	for _, hs := range h.sent {
		m := hs.msg
		if hs.attempts > 1 {
			resent++
		}
		t := tally[m.Kind]
		if t == nil {
			t = &kindTally{codes: map[string]int{}, classes: map[string]int{}}
			tally[m.Kind] = t
			kinds = append(kinds, m.Kind)
		}
		t.sent++
		t.codes[strconv.Itoa(hs.code)]++
		bad := false
		for i, want := range m.RcptWant {
			switch {
			case i >= len(hs.rcptCodes):
				bad = true
				sample(fmt.Sprintf("%s: no reply to RCPT %d (%v)", m.Kind, i+1, hs.err))
			case hs.rcptCodes[i] != want || (want == 550 && !strings.Contains(hs.rcptReply[i], "5.7.1")):
				bad = true
				sample(fmt.Sprintf("%s: RCPT %s answered %q, want %d", m.Kind, m.Rcpts[i], hs.rcptReply[i], want))
			}
		}
		rcpt550 += hs.refused
		if hs.code != m.Want || !strings.Contains(hs.reply, m.WantText) {
			bad = true
			sample(fmt.Sprintf("%s: answered %q (%v), want %d %s", m.Kind, hs.reply, hs.err, m.Want, m.WantText))
		}
		if bad {
			wrongCode++
			t.wrong++
		}
		st := stored[m.Sum]
		if st != nil {
			t.stored++
		}
		switch {
		case hs.code == 250:
			t.acked++
			acked++
			ackedBytes += int64(hs.rawLen)
			if st == nil {
				lost++
				sample(fmt.Sprintf("%s: answered 250, not stored (%s)", m.Kind, m.Sum))
				continue
			}
		case hs.code >= 500:
			t.refused++
			if st != nil {
				refusedStored++
				sample(fmt.Sprintf("%s: refused with %q, yet stored", m.Kind, hs.reply))
			}
			continue
		default:
			// Still 4xx or in doubt after maxHostileAttempts (a wrong
			// code above): it may be stored, as a transfer whose 451
			// came after JetStream had it; checked like one answered 250.
			if st == nil {
				continue
			}
			storedAfterTemp++
		}
		for _, ev := range hs.oracle {
			wantClass[ev.Class]++
		}
		for _, ev := range st.events {
			t.classes[ev.Class]++
		}
		if st.parseError != "" {
			t.parseErrors++
		}
		if (st.parseError != "") != (hs.oracleErr != nil) {
			misclassified++
			t.wrong++
			sample(fmt.Sprintf("%s: stored with parse error %q, the parser's error is %v", m.Kind, st.parseError, hs.oracleErr))
		}
		if !slices.Equal(st.recipients, m.Accepted) || st.rawLen != hs.rawLen {
			wrongEnvelope++
			sample(fmt.Sprintf("%s: stored with envelope recipients %v and %d bytes, want %v and %d", m.Kind, st.recipients, st.rawLen, m.Accepted, hs.rawLen))
		}
		got, want := sortedEvents(st.events), sortedEvents(hs.oracle)
		ok := slices.Equal(got, want)
		for _, x := range m.Explicit {
			if !slices.Contains(got, x) {
				ok = false
			}
		}
		if m.Group == groupARF && !slices.Equal(got, sortedEvents(m.Explicit)) {
			ok = false // a complaint or auto-reply is that and nothing else
		}
		if !ok {
			misclassified++
			t.wrong++
			sample(fmt.Sprintf("%s: stored events %v, the classifier finds %v, want among them %v", m.Kind, got, want, m.Explicit))
		}
	}
	for _, k := range kinds {
		t := tally[k]
		r.Notes = append(r.Notes, fmt.Sprintf("%s: %d sent, %d answered 250, %d refused, %d stored (%d with a parse error), %d wrong; final replies by code %v; stored events by class %v",
			k, t.sent, t.acked, t.refused, t.stored, t.parseErrors, t.wrong, t.codes, t.classes))
	}
	r.Notes = append(r.Notes, fmt.Sprintf("hostile sender: %d rounds, %d transactions, %d answered 250, %d RCPTs refused 550 5.7.1; bouncer RSS %d MiB at the start, peak %d MiB (bound %d MiB)",
		h.rounds.Load(), len(h.sent), acked, rcpt550, firstRSS>>10, peakRSS>>10, contentRSSBound>>10))
	if storedAfterTemp > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d hostile messages whose last reply was a 4xx or none are stored: JetStream had them when the listener gave up waiting", storedAfterTemp))
	}
	if len(samples) > 0 {
		r.Notes = append(r.Notes, "hostile messages that broke an expectation, e.g.: "+strings.Join(samples, " | "))
	}
	if wrongCode > 0 {
		failf("%d hostile transactions got another reply than expected", wrongCode)
	}
	if lost > 0 {
		failf("%d hostile messages answered 250 are not stored", lost)
	}
	if refusedStored > 0 {
		failf("%d refused hostile messages were stored", refusedStored)
	}
	if misclassified > 0 || wrongEnvelope > 0 {
		failf("%d stored hostile reports have other events than expected, %d another envelope or length", misclassified, wrongEnvelope)
	}
	if len(h.sent) == 0 || h.rounds.Load() == 0 {
		failf("the hostile sender did not finish a round")
	}
	if peakRSS == 0 || peakRSS > contentRSSBound {
		failf("bouncer's RSS peaked at %d KiB, bound %d KiB", peakRSS, contentRSSBound)
	}

	// The API counts every class as the store holds it: hard is the
	// load's reports and the hostile NDRs, complaints and auto-replies
	// are never hard.
	var st struct {
		EventsByClass map[string]int64 `json:"events_by_class"`
	}
	if err := getJSON(ctx, "http://"+b.HTTPAddr+"/v1/stats?window=24h", &st); err != nil {
		failf("GET /v1/stats: %v", err)
	} else {
		for class := range mapsKeys(st.EventsByClass, wantClass) {
			if n := st.EventsByClass[class]; n != wantClass[class] {
				failf("GET /v1/stats: %d %s events, want %d (the load's stored reports and what the classifier finds in the hostile ones stored)", n, class, wantClass[class])
			}
		}
		r.Notes = append(r.Notes, fmt.Sprintf("GET /v1/stats events_by_class: %v", st.EventsByClass))
	}
	// A refused RCPT is counted once, and nothing else is refused 550;
	// only bytes answered 250 count as received (each message of this
	// scenario is answered 250 at most once unless a transfer was in doubt
	// and sent again).
	want := map[string]float64{
		`bouncer_smtp_replies_total{code="550"}`:              float64(rcpt550),
		`bouncer_smtp_received_bytes_total`:                   float64(ackedBytes),
		`bouncer_panics_total{component="smtpd"}`:             0,
		`bouncer_panics_total{component="ingest"}`:            0,
		`bouncer_ingest_dead_letters_total{reason="decode"}`:  0,
		`bouncer_ingest_dead_letters_total{reason="panic"}`:   0,
		`bouncer_ingest_dead_letters_total{reason="unknown"}`: 0,
	}
	if load.Ledger.Counts().InDoubt > 0 || resent > 0 {
		delete(want, `bouncer_smtp_received_bytes_total`)
		r.Notes = append(r.Notes, "received bytes not compared: some transfers were in doubt or got a 4xx and were sent again")
	}
	for name, w := range want {
		got, err := b.Metric(ctx, name)
		if err != nil {
			failf("/metrics: %v", err)
			break
		}
		if got != w {
			failf("/metrics: %s is %v, want %v", name, got, w)
		}
	}
	return errors.Join(errs...)
}

// mapsKeys is the union of the keys of a and b.
func mapsKeys(a, b map[string]int64) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func sortedEvents(evs []wantEvent) []wantEvent {
	out := slices.Clone(evs)
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}
