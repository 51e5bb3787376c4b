package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/ingest"
	"github.com/bouncer-mail/bouncer/rules"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse"
	"github.com/bouncer-mail/bouncer/store/sqlite"
)

// bounceDomain is the domain of the envelope recipients (the bounce
// addresses) of every generated report.
const bounceDomain = "bounces.example.com"

// publishers is how many publishes are in flight while the backlog is
// built.
const publishers = 64

// throughputRound is one round's figures for one store.
type throughputRound struct {
	reports, events int
	outcomes        int64
	publish         time.Duration // building the backlog, not timed against anything
	pipeline        time.Duration // ingest draining the backlog into the store
	cpu             time.Duration // this process (NATS, ingest, SQLite) while draining
	serverCPU       time.Duration // clickhouse-server while draining
	batches         float64
	stages          map[string]float64 // seconds summed over the batches, by ingest stage
	bulk            time.Duration      // the engine's own bulk load of the same reports and events
	bulkCPU         time.Duration
	bulkBytes       int64
	// bulkAll is the bulk load of every row ingest stored: reports and
	// events, and the outcomes, suppressions, their audit and (ClickHouse)
	// the Stats rollup it also writes per batch.
	bulkAll    time.Duration
	bulkAllCPU time.Duration
}

func throughput(c config) error {
	stores := c.storesOr("sqlite", "clickhouse")
	co, err := loadCorpus(c.ndrDir, runPrefix())
	if err != nil {
		return err
	}
	fmt.Printf("\n== throughput: reports from %d samples of %s (%d left out), published to an embedded JetStream, then ingest.Pipeline drains them\n",
		len(co.samples), c.ndrDir, len(co.skipped))
	for _, s := range co.skipped {
		fmt.Println("   left out:", s)
	}
	n := c.reports
	if slices.Contains(stores, "clickhouse") {
		n = max(n, c.chReports)
	}
	all := make([]report, n)
	for i := range all {
		all[i] = co.report(i)
	}
	reportsFor := func(st string) ([]report, int) {
		rs := all[:c.reports]
		if st == "clickhouse" {
			rs = all[:c.chReports]
		}
		events := 0
		for _, r := range rs {
			events += len(r.rcpts)
		}
		return rs, events
	}

	var ch *chServer
	for _, st := range stores {
		if st == "clickhouse" {
			if ch, err = startClickHouse(filepath.Join(c.workDir, "clickhouse-throughput")); err != nil {
				return err
			}
			defer ch.Stop()
		}
	}
	results := map[string][]throughputRound{}
	for r := 0; r < c.rounds; r++ {
		for _, st := range stores {
			reports, events := reportsFor(st)
			tr, err := throughputRun(c, st, ch, r, reports)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", st, r+1, err)
			}
			if tr.events != events {
				return fmt.Errorf("%s round %d: %d events stored, the samples yield %d", st, r+1, tr.events, events)
			}
			results[st] = append(results[st], tr)
			fmt.Printf("round %d %-10s ingest %6.0f reports/s, %s bulk %6.0f reports/s: %3.0f%%; of every table %6.0f reports/s: %3.0f%% (load %s)\n", r+1, st,
				perSec(tr.reports, tr.pipeline), bulkName(st, c.chFormat), perSec(tr.reports, tr.bulk),
				100*tr.bulk.Seconds()/tr.pipeline.Seconds(), perSec(tr.reports, tr.bulkAll),
				100*tr.bulkAll.Seconds()/tr.pipeline.Seconds(), loadAvg())
			fmt.Printf("   stages over %.0f batches (s, summed; decode of one batch and re-fold of another overlap the writes): decode %.2f, write %.2f, ack %.2f, refold %.2f; CPU s: this process %.2f, clickhouse-server %.2f\n",
				tr.batches, tr.stages["decode"], tr.stages["write"], tr.stages["ack"], tr.stages["refold"], tr.cpu.Seconds(), tr.serverCPU.Seconds())
		}
	}

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "\nstore\tround\treports\tevents\tingest s\treports/s\tevents/s\tCPU µs/report\tbatches\toutcome rows\tbulk s\tbulk reports/s\tbulk events/s\tratio\tbulk all s\tratio all\t\n")
	for _, st := range stores {
		for i, tr := range results[st] {
			cpu := tr.cpu + tr.serverCPU
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%.2f\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%.2f\t%.0f\t%.0f\t%.0f%%\t%.2f\t%.0f%%\t\n", st, i+1,
				tr.reports, tr.events, tr.pipeline.Seconds(), perSec(tr.reports, tr.pipeline), perSec(tr.events, tr.pipeline),
				float64(cpu.Microseconds())/float64(tr.reports), tr.batches, tr.outcomes,
				tr.bulk.Seconds(), perSec(tr.reports, tr.bulk), perSec(tr.events, tr.bulk),
				100*tr.bulk.Seconds()/tr.pipeline.Seconds(), tr.bulkAll.Seconds(), 100*tr.bulkAll.Seconds()/tr.pipeline.Seconds())
		}
	}
	w.Flush()
	fmt.Println("ratio: ingest rate / bulk rate of the same reports and events; ratio all: of every row ingest stored (also outcomes, suppressions, their audit, the Stats rollup); goal 50%")
	for _, st := range stores {
		fmt.Printf("%s bulk: %s\n", st, bulkName(st, c.chFormat))
	}
	return nil
}

func bulkName(st, format string) string {
	if st == "clickhouse" {
		return "clickhouse-client " + format
	}
	return "one-transaction INSERT"
}

// runPrefix makes this run's report tags unique: JetStream deduplicates
// a resend of the same bytes for broker.ReportsDuplicates.
func runPrefix() string { return strconv.FormatInt(time.Now().Unix()%(36*36*36*36), 36) + "x" }

// throughputRun is one round on one store: a fresh NATS, a fresh store, the
// backlog published, the pipeline's drain timed, then the bulk load of the
// same rows into a fresh database timed.
func throughputRun(c config, kind string, chs *chServer, round int, reports []report) (throughputRound, error) {
	tr := throughputRound{reports: len(reports)}
	ctx := context.Background()
	dir := filepath.Join(c.workDir, fmt.Sprintf("throughput-%s-%d", kind, round+1))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return tr, err
	}
	ns, err := broker.StartEmbedded(broker.EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		return tr, err
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return tr, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return tr, err
	}
	if err := broker.EnsureStreams(ctx, js, 1); err != nil {
		return tr, err
	}
	if err := broker.EnsureReportPartitions(ctx, js, 1, c.partitions); err != nil {
		return tr, err
	}

	var (
		st     store.Store
		pipeDB = fmt.Sprintf("pipe_%d", round+1)
		bulkDB = fmt.Sprintf("bulk_%d", round+1)
	)
	switch kind {
	case "sqlite":
		st, err = sqlite.Open(ctx, filepath.Join(dir, "pipe.db"), sqlite.Options{})
	case "clickhouse":
		// log_queries: the statements ingest sends, for the breakdown below.
		st, err = clickhouse.Open(ctx, chs.DSN(pipeDB)+"&log_queries=1", clickhouse.Options{})
	}
	if err != nil {
		return tr, err
	}
	defer st.Close()

	// The backlog.
	start := time.Now()
	if err := publishAll(ctx, js, reports, c.partitions); err != nil {
		return tr, err
	}
	tr.publish = time.Since(start)

	// The drain.
	rs, err := rules.Default()
	if err != nil {
		return tr, err
	}
	reg := prometheus.NewRegistry()
	logs := newCountingHandler()
	defer logs.print()
	counted := &countingStore{Store: st}
	pipe, err := ingest.New(ingest.Config{JS: js, Store: counted, Classifier: classify.New(rs),
		Logger: slog.New(logs), Registerer: reg, BatchSize: c.batch})
	if err != nil {
		return tr, err
	}
	streams, err := broker.ReportStreams(ctx, js)
	if err != nil {
		return tr, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			cancel()
			return tr, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			cancel()
			return tr, err
		}
		defer pprof.StopCPUProfile()
	}
	cpu0, srv0 := selfCPU(), chs.cpu()
	start = time.Now()
	asked := start
	go func() {
		pipe.Run(runCtx)
		close(done)
	}()
	for {
		// Drained: ingest acked every report of every partition (it
		// acks only what the store committed). The streams drop them at
		// ingest's next trim, which is not part of the work measured.
		//
		// Asking JetStream costs three API requests per stream, which
		// every 10 ms took a fifth of this process's CPU (a profile of
		// a ClickHouse round) from the pipeline measured. Until the
		// store committed every report (counted by a wrapper; gathering
		// the pipeline's registry every 10 ms cost even more) it is
		// asked once a second (a dead-lettered report is acked, never
		// stored); after that every 10 ms, as the acks follow within a
		// few milliseconds.
		if counted.reports.Load() < int64(len(reports)) && time.Since(asked) < time.Second {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		asked = time.Now()
		left, err := unacked(ctx, js, streams)
		if err != nil {
			cancel()
			return tr, err
		}
		if left == 0 {
			break
		}
		if time.Since(start) > 30*time.Minute {
			cancel()
			return tr, fmt.Errorf("ingest still has %d reports to store after 30 minutes", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
	tr.pipeline = time.Since(start)
	tr.cpu, tr.serverCPU = selfCPU()-cpu0, chs.cpu()-srv0
	if c.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	cancel()
	<-done
	tr.batches = gathered(reg, "bouncer_ingest_batches_total")
	tr.stages = stageSums(reg)

	stats, err := st.Stats(ctx, time.Time{})
	if err != nil {
		return tr, err
	}
	if stats.ReportsReceived != int64(len(reports)) {
		return tr, fmt.Errorf("%d reports stored, %d published", stats.ReportsReceived, len(reports))
	}
	for _, n := range stats.EventsByClass {
		tr.events += int(n)
	}

	// The engine's own bulk load of the rows the pipeline stored.
	switch kind {
	case "sqlite":
		tr.outcomes, err = sqliteCount(filepath.Join(dir, "pipe.db"), "outcomes")
		if err != nil {
			return tr, err
		}
		tr.bulk, tr.bulkCPU, err = sqliteBulk(ctx, filepath.Join(dir, "pipe.db"), filepath.Join(dir, "bulk.db"), false)
		if err != nil {
			return tr, err
		}
		tr.bulkAll, tr.bulkAllCPU, err = sqliteBulk(ctx, filepath.Join(dir, "pipe.db"), filepath.Join(dir, "bulk-all.db"), true)
	case "clickhouse":
		n, err := chs.Query("SELECT count() FROM " + pipeDB + ".outcomes")
		if err != nil {
			return tr, err
		}
		tr.outcomes, _ = strconv.ParseInt(n, 10, 64)
		if err := printStatements(chs, start); err != nil {
			return tr, err
		}
		tr.bulk, tr.bulkCPU, tr.bulkBytes, err = clickhouseBulk(ctx, chs, dir, pipeDB, bulkDB, c.chFormat, false)
		if err != nil {
			return tr, err
		}
		tr.bulkAll, tr.bulkAllCPU, _, err = clickhouseBulk(ctx, chs, dir, pipeDB, bulkDB+"_all", c.chFormat, true)
		if err != nil {
			return tr, err
		}
	}
	return tr, err
}

// printStatements prints what the pipeline's statements since start cost
// the server, grouped by their first words: where ingest's time goes on
// ClickHouse.
func printStatements(chs *chServer, start time.Time) error {
	if _, err := chs.Query("SYSTEM FLUSH LOGS"); err != nil {
		return err
	}
	out, err := chs.Query(fmt.Sprintf(`SELECT count() AS statements, sum(query_duration_ms) AS server_ms, round(avg(query_duration_ms), 1) AS avg_ms,
	sum(read_rows) AS rows_read, sum(written_rows) AS rows_written, substring(replaceRegexpAll(query, '[\\s]+', ' '), 1, 60) AS statement
FROM system.query_log WHERE type = 2 AND query_start_time >= toDateTime(%d) AND query NOT LIKE '%%system.query_log%%'
GROUP BY statement ORDER BY server_ms DESC LIMIT 8 FORMAT PrettyCompactNoEscapes`, start.Unix()))
	if err != nil {
		return err
	}
	fmt.Println("   the pipeline's statements on ClickHouse while it drained (system.query_log):")
	for _, l := range strings.Split(out, "\n") {
		fmt.Println("   " + l)
	}
	return nil
}

// publishAll publishes every report as the listener would, publishers at
// a time, each acknowledged by JetStream (fsynced).
func publishAll(ctx context.Context, js jetstream.JetStream, reports []report, partitions int) error {
	pub := &broker.Publisher{JS: js, Partitions: partitions}
	defer pub.Close()
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make(chan error, publishers)
	)
	for range publishers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(reports) {
					return
				}
				if err := pub.Publish(ctx, envelope(reports[i].raw, i), reports[i].raw); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// envelope is what the listener would record for report i.
func envelope(raw []byte, i int) event.Envelope {
	sum := sha256.Sum256(raw)
	return event.Envelope{
		ID:         hex.EncodeToString(sum[:]),
		Recipients: []string{fmt.Sprintf("bounce+%d@%s", i, bounceDomain)},
		ClientIP:   "192.0.2.25",
		Helo:       "mx.bench.example.net",
		Received:   time.Now().UTC(),
	}
}

// gathered is the sum of a counter's samples in reg.
func gathered(reg *prometheus.Registry, name string) float64 {
	sum := 0.0
	eachMetric(reg, name, func(m *dto.Metric) { sum += m.GetCounter().GetValue() })
	return sum
}

// stageSums is bouncer_ingest_stage_seconds' sum by stage in reg.
func stageSums(reg *prometheus.Registry) map[string]float64 {
	out := map[string]float64{}
	eachMetric(reg, "bouncer_ingest_stage_seconds", func(m *dto.Metric) {
		for _, l := range m.GetLabel() {
			if l.GetName() == "stage" {
				out[l.GetValue()] += m.GetHistogram().GetSampleSum()
			}
		}
	})
	return out
}

// eachMetric calls fn with every sample of the metric name in reg (none
// when reg cannot be gathered: the figures are then 0).
func eachMetric(reg *prometheus.Registry, name string, fn func(*dto.Metric)) {
	mfs, err := reg.Gather()
	if err != nil {
		return
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				fn(m)
			}
		}
	}
}

// selfCPU is this process's user plus system time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpu is the server's user plus system time so far, 0 without a server.
func (s *chServer) cpu() time.Duration {
	if s == nil {
		return 0
	}
	return procCPU(s.PID())
}

// procCPU is a process's user plus system time so far, from /proc.
func procCPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
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

// The columns the bulk loads copy: every column of the rows ingest
// stored, in the stores' own order.
const (
	reportColumns = "id, received, return_path, recipients, client_ip, helo, tls, raw, parse_error"
	eventColumns  = "id, version, report_id, idx, time, source, recipient, class, reason, scope, status, reply_code, action, diagnostic, remote_mta, reporting_mta, smtp_command, provider, parser, rule, message_id, stream, return_path"
)

func sqliteCount(path, table string) (int64, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int64
	err = db.QueryRow("SELECT count(*) FROM " + table).Scan(&n)
	return n, err
}

// sqliteBulk copies the reports and events of the pipeline's database
// (all: every table but the migrations') into a fresh one made by
// sqlite.Open (same schema, same indexes), as one transaction with one
// prepared statement per table, with the store's durability (WAL,
// synchronous=FULL), and times the transaction.
func sqliteBulk(ctx context.Context, from, to string, all bool) (time.Duration, time.Duration, error) {
	src, err := sql.Open("sqlite", "file:"+from+"?mode=ro")
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()
	type table struct {
		name, cols string
		rows       [][]any
	}
	tables := []*table{{name: "reports", cols: reportColumns}, {name: "events", cols: eventColumns}}
	if all {
		tables = nil
		rows, err := readRows(ctx, src, `SELECT m.name, group_concat(c.name, ', ') FROM sqlite_master m, pragma_table_info(m.name) c
WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE 'schema_migrations%' GROUP BY m.name ORDER BY m.name`)
		if err != nil {
			return 0, 0, err
		}
		for _, r := range rows {
			tables = append(tables, &table{name: fmt.Sprint(r[0]), cols: fmt.Sprint(r[1])})
		}
	}
	for _, t := range tables {
		// Key order, as the store wrote them (tables WITHOUT ROWID have
		// no rowid, and are in key order anyway).
		q := "SELECT " + t.cols + " FROM " + t.name
		if !all {
			q += " ORDER BY rowid"
		}
		if t.rows, err = readRows(ctx, src, q); err != nil {
			return 0, 0, err
		}
	}
	s, err := sqlite.Open(ctx, to, sqlite.Options{}) // the schema
	if err != nil {
		return 0, 0, err
	}
	s.Close()
	dst, err := sql.Open("sqlite", "file:"+to)
	if err != nil {
		return 0, 0, err
	}
	defer dst.Close()
	dst.SetMaxOpenConns(1)
	for _, p := range []string{"PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL"} {
		if _, err := dst.ExecContext(ctx, p); err != nil {
			return 0, 0, err
		}
	}
	cpu0 := selfCPU()
	start := time.Now()
	tx, err := dst.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback()
	for _, t := range tables {
		n := strings.Count(t.cols, ",") + 1
		stmt, err := tx.PrepareContext(ctx, "INSERT INTO "+t.name+" ("+t.cols+") VALUES (?"+strings.Repeat(", ?", n-1)+")")
		if err != nil {
			return 0, 0, err
		}
		for _, row := range t.rows {
			if _, err := stmt.ExecContext(ctx, row...); err != nil {
				return 0, 0, fmt.Errorf("bulk insert into %s: %w", t.name, err)
			}
		}
		stmt.Close()
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, err
	}
	return time.Since(start), selfCPU() - cpu0, nil
}

func readRows(ctx context.Context, db *sql.DB, q string) ([][]any, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out = append(out, vals)
	}
	return out, rows.Err()
}

// clickhouseBulk exports the reports, events and report_versions the
// pipeline stored (clickhouse-client, format), creates a fresh database
// with the store's schema (clickhouse.Open), and times clickhouse-client
// inserting the files, one process per table, process starts included.
//
// all: every table of fromDB but the migrations', with the columns a
// write names (not MATERIALIZED or ALIAS ones).
func clickhouseBulk(ctx context.Context, chs *chServer, dir, fromDB, toDB, format string, all bool) (time.Duration, time.Duration, int64, error) {
	type table struct{ name, cols string }
	tables := []table{
		{"reports", reportColumns},
		{"events", eventColumns},
		{"report_versions", "report_id, version"},
	}
	if all {
		out, err := chs.Query(fmt.Sprintf(`SELECT table, arrayStringConcat(groupArray(name), ', ') FROM system.columns
WHERE database = '%s' AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') AND table NOT LIKE 'schema_migrations%%'
GROUP BY table ORDER BY table FORMAT TabSeparated`, fromDB))
		if err != nil {
			return 0, 0, 0, err
		}
		tables = nil
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			name, cols, ok := strings.Cut(l, "\t")
			if !ok {
				return 0, 0, 0, fmt.Errorf("listing the tables of %s: %q", fromDB, l)
			}
			tables = append(tables, table{name, cols})
		}
	}
	var size int64
	for _, t := range tables {
		f, err := os.Create(filepath.Join(dir, t.name+"."+format))
		if err != nil {
			return 0, 0, 0, err
		}
		cmd := chs.Client(ctx, "--query", "SELECT "+t.cols+" FROM "+fromDB+"."+t.name+" FORMAT "+format)
		cmd.Stdout = f
		out := &strings.Builder{}
		cmd.Stderr = out
		err = cmd.Run()
		f.Close()
		if err != nil {
			return 0, 0, 0, fmt.Errorf("exporting %s: %v: %s", t.name, err, out)
		}
		if fi, err := os.Stat(f.Name()); err == nil {
			size += fi.Size()
		}
	}
	s, err := clickhouse.Open(ctx, chs.DSN(toDB), clickhouse.Options{})
	if err != nil {
		return 0, 0, 0, err
	}
	s.Close()
	srv0 := chs.cpu()
	var cpu time.Duration
	start := time.Now()
	for _, t := range tables {
		f, err := os.Open(filepath.Join(dir, t.name+"."+format))
		if err != nil {
			return 0, 0, 0, err
		}
		cmd := chs.Client(ctx, "--query", "INSERT INTO "+toDB+"."+t.name+" ("+t.cols+") FORMAT "+format)
		cmd.Stdin = f
		out, err := cmd.CombinedOutput()
		f.Close()
		if err != nil {
			return 0, 0, 0, fmt.Errorf("clickhouse-client inserting %s: %v: %s", t.name, err, out)
		}
		if ps := cmd.ProcessState; ps != nil {
			cpu += ps.UserTime() + ps.SystemTime()
		}
	}
	d := time.Since(start)
	cpu += chs.cpu() - srv0
	// The copy must be whole.
	for _, t := range tables {
		a, err1 := chs.Query("SELECT count() FROM " + fromDB + "." + t.name)
		b, err2 := chs.Query("SELECT count() FROM " + toDB + "." + t.name)
		if err1 != nil || err2 != nil || a != b {
			return 0, 0, 0, fmt.Errorf("bulk copy of %s: %s rows, %s copied (%v %v)", t.name, a, b, err1, err2)
		}
	}
	return d, cpu, size, nil
}

// unacked is how many reports of the streams ingest's consumer has not
// acked: their last sequence less the consumer's ack floor, or the
// stream's reports while the consumer does not exist yet.
func unacked(ctx context.Context, js jetstream.JetStream, streams []string) (uint64, error) {
	var left uint64
	for _, name := range streams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return 0, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0, err
		}
		cons, err := s.Consumer(ctx, ingest.DefaultDurable)
		if err != nil {
			left += info.State.Msgs
			continue
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			return 0, err
		}
		if ci.NumAckPending > 0 || ci.NumPending > 0 || ci.AckFloor.Stream < info.State.LastSeq {
			left += max(info.State.LastSeq-ci.AckFloor.Stream, 1)
		}
	}
	return left, nil
}

// countingStore counts the reports its store committed, so the drain loop
// knows when to look at the acks without asking JetStream. It keeps the
// store's own batch size (ingest.BatchSizer).
type countingStore struct {
	store.Store
	reports atomic.Int64
}

func (c *countingStore) Write(ctx context.Context, reports []store.Report, events []store.Event) error {
	err := c.Store.Write(ctx, reports, events)
	if err == nil {
		c.reports.Add(int64(len(reports)))
	}
	return err
}

func (c *countingStore) IngestBatchSize() int {
	if bs, ok := c.Store.(ingest.BatchSizer); ok {
		return bs.IngestBatchSize()
	}
	return 0
}
