package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/bouncer-mail/bouncer/store/clickhouse"
)

// queryDB is the database the query mode fills.
const queryDB = "bench_query"

// The generated events, server-side from numbers(): event n has
// recipient user<r>@<domain of r>, r = hash(n) mod addresses, so about
// events/addresses events per address; a time spread uniformly over the
// days before now; a class drawn from a fixed mix (30% hard userunknown,
// 15% soft mailboxfull, 10% greylist, 5% soft blocked, 25% delivered,
// 2% complaint, 5% autoreply, 8% unknown); one event in five a sync
// reply log event (no report), the rest one report each, with its row in
// reports (a short raw) and report_versions (at the event's time), all
// version 1, as ingest writes them; then Stats' rollup (stats_log,
// stats_minutes) filled by Store.RecountStats, migration 6's backfill.
const (
	genSource = `SELECT
	n, r, c, n %% 5 = 0 AS sync,
	toDateTime(%[1]d - cityHash64(n, 1) %% %[2]d) AS t,
	multiIf(r %% 100 < 35, 'gmail.com', r %% 100 < 45, 'outlook.com', r %% 100 < 50, 'hotmail.com',
		r %% 100 < 60, 'yahoo.com', r %% 100 < 65, 'icloud.com', r %% 100 < 68, 'aol.com', r %% 100 < 70, 'gmx.de',
		concat('corp', toString(r %% 20000), '.example')) AS domain,
	multiIf(r %% 100 < 35, 'gmail', r %% 100 < 50, 'outlook', r %% 100 < 60, 'yahoo', r %% 100 < 65, 'icloud',
		r %% 100 < 68, 'aol', r %% 100 < 70, 'gmx', 'other') AS provider,
	concat('user', toString(r), '@', domain) AS rcpt,
	lower(hex(SHA256(concat('report', toString(n))))) AS rid
FROM (SELECT number AS n, cityHash64(number, 2) %% %[3]d AS r, cityHash64(number, 3) %% 100 AS c FROM numbers(%[4]d))`

	genEvents = `INSERT INTO events (` + eventColumns + `)
SELECT
	lower(hex(MD5(concat('event', toString(n))))), toUInt32(1), if(sync, '', rid), toUInt32(0), t,
	if(sync, 'sync', 'ndr'), rcpt,
	multiIf(c < 30, 'hard', c < 45, 'soft', c < 55, 'greylist', c < 60, 'soft', c < 85, 'delivered',
		c < 87, 'complaint', c < 92, 'autoreply', 'unknown'),
	multiIf(c < 30, 'userunknown', c < 45, 'mailboxfull', c < 55, 'greylisting', c < 60, 'blocked', c < 85, 'delivered',
		c < 87, 'feedback', c < 92, 'vacation', 'undefined'),
	multiIf(c < 30, 'recipient', c < 45, 'recipient', c < 55, 'transport', c < 60, 'sender', ''),
	multiIf(c < 30, '5.1.1', c < 45, '5.2.2', c < 55, '4.2.0', c < 60, '5.7.1', c < 85, '2.0.0', ''),
	toUInt16(multiIf(c < 30, 550, c < 45, 552, c < 55, 450, c < 60, 554, c < 85, 250, 0)),
	multiIf(c < 55, if(c < 45, 'failed', 'delayed'), c < 60, 'failed', c < 85, 'delivered', ''),
	multiIf(c < 30, concat('smtp; 550 5.1.1 <', rcpt, '>: Recipient address rejected: User unknown in virtual mailbox table'),
		c < 45, concat('smtp; 552 5.2.2 <', rcpt, '>: Mailbox full'),
		c < 55, '450 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/',
		c < 60, '554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org', ''),
	concat('mx', toString(r %% 3), '.', domain), 'mta1.sender.example', if(c < 60, 'RCPT', ''),
	provider, if(sync, 'sync', 'rfc3464'), '',
	concat('<', toString(cityHash64(n, 4)), '@mail.sender.example>'),
	if(sync, concat('stream', toString(r %% 20)), ''), concat('b+', toString(n), '@bounces.example.com')
FROM (` + genSource + `)`

	genReports = `INSERT INTO reports (` + reportColumns + `)
SELECT rid, t, '', [concat('b+', toString(n), '@bounces.example.com')], '192.0.2.25', concat('mx', toString(r %% 3), '.', domain), 'TLS1.3',
	concat('Final-Recipient: rfc822; ', rcpt, '\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n'), ''
FROM (` + genSource + `) WHERE NOT sync`

	genVersions = `INSERT INTO report_versions (report_id, version, time)
SELECT rid, toUInt32(1), t FROM (` + genSource + `) WHERE NOT sync`
)

// timedQuery is one query kind the mode runs many times.
type timedQuery struct {
	name string
	run  func(ctx context.Context, i int) error
	// iterations overrides config.iterations when set (slow queries).
	iterations int
}

type queryFigures struct {
	name                 string
	n                    int
	p50, p99, max        time.Duration
	readRows, readBytes  uint64 // median per run, every statement of it
	serverMS, statements uint64
}

func queries(c config) error {
	fmt.Printf("\n== query: %d events over %d addresses and %d days in a throwaway ClickHouse, the project's schema (clickhouse.Open), %d runs per query\n",
		c.events, c.addresses, c.days, c.iterations)
	dsn := "clickhouse://" + c.chAddr + "/" + queryDB + "?dial_timeout=5s"
	if c.chAddr == "" {
		chs, err := startClickHouse(filepath.Join(c.workDir, "clickhouse-query"))
		if err != nil {
			return err
		}
		defer chs.Stop()
		dsn = chs.DSN(queryDB)
	}
	ctx := context.Background()
	s, err := clickhouse.Open(ctx, dsn, clickhouse.Options{ReadTimeout: 10 * time.Minute})
	if err != nil {
		return err
	}
	defer s.Close()
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		return err
	}
	opts.ReadTimeout = 30 * time.Minute
	conn, err := ch.Open(opts)
	if err != nil {
		return err
	}
	defer conn.Close()

	now := time.Now().UTC().Truncate(time.Second)
	var stored uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM events").Scan(&stored); err != nil {
		return err
	}
	if stored > 0 && !c.reuse {
		return fmt.Errorf("%s.events holds %d rows: drop the database, or pass -reuse", queryDB, stored)
	}
	if stored > 0 {
		fmt.Printf("reusing the %d events stored; their times end at the first run's now\n", stored)
	}
	for _, g := range []struct{ name, sql string }{{"events", genEvents}, {"reports", genReports}, {"report_versions", genVersions}} {
		if stored > 0 {
			break
		}
		start := time.Now()
		q := fmt.Sprintf(g.sql, now.Unix(), c.days*86400, c.addresses, c.events)
		if err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("generating %s: %w", g.name, err)
		}
		fmt.Printf("generated %s in %.1f s\n", g.name, time.Since(start).Seconds())
	}
	if stored == 0 {
		// Stats' rollup from the generated rows: migration 6's backfill,
		// what an existing database gets at its upgrade.
		start := time.Now()
		if err := s.RecountStats(ctx); err != nil {
			return fmt.Errorf("filling stats_log and stats_minutes: %w", err)
		}
		fmt.Printf("filled stats_log and stats_minutes (Store.RecountStats, migration 6's backfill) in %.1f s\n", time.Since(start).Seconds())
	}
	if err := waitMerges(ctx, conn, 15*time.Minute); err != nil {
		return err
	}
	if err := printLayout(ctx, conn); err != nil {
		return err
	}

	var rcpts []string
	rows, err := conn.Query(ctx, `SELECT recipient FROM events WHERE cityHash64(recipient) % 499 = 7 GROUP BY recipient LIMIT 5000`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return err
		}
		rcpts = append(rcpts, r)
	}
	rows.Close()
	if len(rcpts) == 0 {
		return fmt.Errorf("no recipients generated")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return rcpts[rng.IntN(len(rcpts))] }
	since := func(d time.Duration) time.Time { return time.Now().UTC().Add(-d).Truncate(time.Second) }

	own := []timedQuery{
		{name: "RecipientEvents(random address, 100)", run: func(ctx context.Context, i int) error {
			evs, err := s.RecipientEvents(ctx, pick(), 100)
			if err == nil && len(evs) == 0 {
				err = fmt.Errorf("no events")
			}
			return err
		}},
		{name: "Stats(now-1h)", run: func(ctx context.Context, i int) error {
			_, err := s.Stats(ctx, since(time.Hour))
			return err
		}},
		// Stats counts by class, reason and provider in one query: GET
		// /v1/stats answers by=class, by=provider and by=reason from it.
		{name: "Stats(now-24h)", run: func(ctx context.Context, i int) error {
			_, err := s.Stats(ctx, since(24*time.Hour))
			return err
		}},
		{name: "Stats(now-30d)", iterations: 3, run: func(ctx context.Context, i int) error {
			_, err := s.Stats(ctx, since(30*24*time.Hour))
			return err
		}},
	}
	for r := range c.rounds {
		fmt.Printf("\nround %d: the store's own queries (store/clickhouse/query.go), as the API runs them:\n", r+1)
		if err := runQueries(ctx, c, conn, own); err != nil {
			return err
		}
	}
	if c.skipFix {
		return nil
	}
	return alternatives(ctx, c, conn, pick, since)
}

// runQueries times each query c.iterations times (after an untimed
// warm-up run), with log_queries on and a mark per run, then reads
// what each run read from system.query_log.
func runQueries(ctx context.Context, c config, conn driver.Conn, qs []timedQuery) error {
	var figs []queryFigures
	for _, q := range qs {
		n := c.iterations
		if q.iterations > 0 {
			n = min(q.iterations, n)
		}
		if err := q.run(ctx, -1); err != nil { // warm-up, untimed
			return fmt.Errorf("%s: %w", q.name, err)
		}
		durs := make([]time.Duration, 0, n)
		// A run's statements (Stats has two) are found in query_log by a
		// harmless setting whose value names the run: a query id cannot
		// be reused by the next statement at once.
		mark := nextMark()
		for i := range n {
			qctx := ch.Context(ctx, ch.WithSettings(ch.Settings{"log_queries": 1, "log_queries_cut_to_length": mark + i}))
			start := time.Now()
			if err := q.run(qctx, i); err != nil {
				return fmt.Errorf("%s: %w", q.name, err)
			}
			durs = append(durs, time.Since(start))
		}
		sortDurations(durs)
		f := queryFigures{name: q.name, n: n, p50: percentile(durs, 0.5), p99: percentile(durs, 0.99), max: percentile(durs, 1)}
		if err := conn.Exec(ctx, "SYSTEM FLUSH LOGS"); err != nil {
			return err
		}
		// Per run: the sums over its statements; then the median run.
		if err := conn.QueryRow(ctx, `SELECT quantileExact(0.5)(rr), quantileExact(0.5)(rb), quantileExact(0.5)(ms), max(st) FROM (
	SELECT toInt64(Settings.Values[indexOf(Settings.Names, 'log_queries_cut_to_length')]) AS run,
		sum(read_rows) AS rr, sum(read_bytes) AS rb, sum(query_duration_ms) AS ms, count() AS st
	FROM system.query_log WHERE type = 2 AND has(Settings.Names, 'log_queries_cut_to_length')
	GROUP BY run HAVING run >= ? AND run < ?)`, mark, mark+n).Scan(&f.readRows, &f.readBytes, &f.serverMS, &f.statements); err != nil {
			return fmt.Errorf("reading query_log: %w", err)
		}
		figs = append(figs, f)
	}
	fmt.Printf("(load at the end: %s)\n", loadAvg())
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "query\truns\tp50\tp99\tmax\tserver ms p50\tstatements\trows read p50\tMB read p50\t\n")
	for _, f := range figs {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%.1f\t\n", f.name, f.n, ms(f.p50), ms(f.p99), ms(f.max),
			f.serverMS, f.statements, f.readRows, float64(f.readBytes)/1e6)
	}
	w.Flush()
	return nil
}

// marks hands out log_queries_cut_to_length values, a range per query
// kind, far above the default (100,000) and unique across runs on one
// server, whose query_log keeps earlier runs.
var marks = int(time.Now().UnixMicro())

func nextMark() int {
	marks += 100_000
	return marks
}

// drain runs q and reads every row.
func drain(ctx context.Context, conn driver.Conn, q string, args ...any) error {
	rows, err := conn.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("no rows")
	}
	return nil
}

// waitMerges waits until no merge runs in the database for 5 s in a row:
// the parts a steady load leaves behind, not the freshly inserted ones.
func waitMerges(ctx context.Context, conn driver.Conn, timeout time.Duration) error {
	start := time.Now()
	quiet := 0
	for quiet < 5 {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.merges WHERE database = currentDatabase()").Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			quiet++
		} else {
			quiet = 0
		}
		if time.Since(start) > timeout {
			fmt.Printf("merges still running after %s; measuring anyway\n", timeout)
			return nil
		}
		time.Sleep(time.Second)
	}
	fmt.Printf("background merges settled after %.0f s\n", time.Since(start).Seconds())
	return nil
}

// printLayout prints what the plans rest on (18.16 has no EXPLAIN): each
// table's sorting key, partitioning and index granularity, and its active
// parts.
func printLayout(ctx context.Context, conn driver.Conn) error {
	fmt.Println("\nlayout (SHOW CREATE TABLE; system.parts, active parts):")
	for _, t := range []string{"events", "reports", "report_versions", "stats_log", "stats_minutes"} {
		var ddl string
		if err := conn.QueryRow(ctx, "SHOW CREATE TABLE "+t).Scan(&ddl); err != nil {
			return err
		}
		if i := strings.Index(ddl, "ENGINE"); i >= 0 {
			ddl = ddl[i:]
		}
		var parts, rows, bytes uint64
		var partitions uint64
		if err := conn.QueryRow(ctx, `SELECT count(), sum(rows), sum(bytes), uniqExact(partition)
FROM system.parts WHERE active AND database = currentDatabase() AND table = ?`, t).Scan(&parts, &rows, &bytes, &partitions); err != nil {
			return err
		}
		fmt.Printf("  %-16s %s\n  %-16s %d rows, %d partitions, %d parts, %.0f MB on disk\n", t, ddl, "", rows, partitions, parts, float64(bytes)/1e6)
	}
	return nil
}
