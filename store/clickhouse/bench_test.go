package clickhouse

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
)

// benchBatch is the size of one Write in the benchmarks: what an ingest
// batch of a busy hour looks like.
const benchBatch = 10000

// benchEvents returns batch n: benchBatch events of benchBatch/10
// reports, ten recipients each out of 100,000, a second apart within the
// batch and batches a batch apart, so every batch is new rows.
func benchEvents(n int) ([]store.Report, []store.Event) {
	base := time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n*benchBatch/10) * time.Second)
	reports := make([]store.Report, 0, benchBatch/10)
	events := make([]store.Event, 0, benchBatch)
	for i := range benchBatch / 10 {
		id := fmt.Sprintf("%08d-%06d", n, i)
		at := base.Add(time.Duration(i) * time.Second)
		reports = append(reports, store.Report{
			Envelope: event.Envelope{ID: id, ReturnPath: "b+" + id + "@bounces.example.com",
				Recipients: []string{"b+" + id + "@bounces.example.com"}, ClientIP: "192.0.2.7",
				Helo: "mx.example.net", Received: at, TLS: "TLS1.3"},
			Raw: bytes.Repeat([]byte("Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"), 40),
		})
		for j := range 10 {
			rcpt := fmt.Sprintf("user%d@example.com", (n*benchBatch+i*10+j)*7919%100000)
			e := testEvent(id, j, rcpt, event.Classes[(i+j)%len(event.Classes)], at)
			e.Diagnostic = "smtp; 550 5.1.1 <" + rcpt + ">: Recipient address rejected: User unknown in virtual mailbox table"
			e.RemoteMTA, e.ReportingMTA, e.SMTPCommand = "mx1.example.org", "mta.example.com", "RCPT"
			e.Provider, e.Parser, e.Rule = "gmail", "rfc3464", "postfix-user-unknown"
			e.MessageID = "<" + id + "." + strconv.Itoa(j) + "@example.com>"
			events = append(events, e)
		}
	}
	return reports, events
}

// BenchmarkWrite measures Write with benchBatch events per call, new rows
// each time, and compares it with the same rows sent by clickhouse-client
// as TSV, the fastest way to bulk-load the server:
//
//	go test -run '^$' -bench 'Write' -benchtime 20x ./store/clickhouse/
//
// Sub-benchmarks:
//   - events: Write(nil, events), the whole call: lookup of stored ids,
//     then one INSERT.
//   - events+reports: the same with the benchBatch/10 reports (2 KiB raw
//     each) they came from.
//   - insert-only: the INSERT alone, without the lookup, to show its cost.
//   - clickhouse-client-tsv-10k, -100k: `clickhouse-client --query
//     "INSERT INTO events (...) FORMAT TSV"` fed the same rows, one batch
//     or ten per run, process start included.
func BenchmarkWrite(b *testing.B) {
	srv := clickhousetest.NewServer(b)
	ctx := context.Background()
	rowsPerSec := func(b *testing.B, rows int) {
		b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
	}

	// warmUp writes batch 0, untimed: the first INSERT into a new
	// table is slower than the rest.
	warmUp := func(b *testing.B, s *Store) {
		reports, events := benchEvents(0)
		if err := s.Write(ctx, reports, events); err != nil {
			b.Fatal(err)
		}
	}

	b.Run("events", func(b *testing.B) {
		s := openDSN(b, srv.DSN("bench_events"), Options{})
		defer s.Close()
		warmUp(b, s)
		n := 1
		for b.Loop() {
			b.StopTimer()
			_, events := benchEvents(n)
			n++
			b.StartTimer()
			if err := s.Write(ctx, nil, events); err != nil {
				b.Fatal(err)
			}
		}
		rowsPerSec(b, (n-1)*benchBatch)
	})
	b.Run("events+reports", func(b *testing.B) {
		s := openDSN(b, srv.DSN("bench_reports"), Options{})
		defer s.Close()
		warmUp(b, s)
		n := 1
		for b.Loop() {
			b.StopTimer()
			reports, events := benchEvents(n)
			n++
			b.StartTimer()
			if err := s.Write(ctx, reports, events); err != nil {
				b.Fatal(err)
			}
		}
		rowsPerSec(b, (n-1)*benchBatch)
	})
	b.Run("insert-only", func(b *testing.B) {
		s := openDSN(b, srv.DSN("bench_insert"), Options{})
		defer s.Close()
		warmUp(b, s)
		n := 1
		for b.Loop() {
			b.StopTimer()
			_, events := benchEvents(n)
			n++
			b.StartTimer()
			if err := s.insertEvents(ctx, events); err != nil {
				b.Fatal(err)
			}
		}
		rowsPerSec(b, (n-1)*benchBatch)
	})
	// batches is how many benchBatch batches one clickhouse-client run
	// sends: 1 is Write's batch size, 10 amortizes the process start.
	for _, batches := range []int{1, 10} {
		b.Run(fmt.Sprintf("clickhouse-client-tsv-%dk", batches*benchBatch/1000), func(b *testing.B) {
			db := fmt.Sprintf("bench_tsv_%d", batches)
			s := openDSN(b, srv.DSN(db), Options{}) // creates the schema
			warmUp(b, s)
			s.Close()
			query := "INSERT INTO " + db + ".events " + eventsTable.columnList() + " FORMAT TSV"
			n := 1
			for b.Loop() {
				b.StopTimer()
				var tsv []byte
				for range batches {
					_, events := benchEvents(n)
					n++
					tsv = append(tsv, eventsTSV(events)...)
				}
				cmd, err := srv.Client(ctx, "--query", query)
				if err != nil {
					b.Fatal(err)
				}
				cmd.Stdin = bytes.NewReader(tsv)
				b.StartTimer()
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("clickhouse-client: %v: %s", err, out)
				}
			}
			rowsPerSec(b, (n-1)*benchBatch)
		})
	}
}

// eventsTSV renders events in insertEvents' column order as
// TabSeparated.
func eventsTSV(events []store.Event) []byte {
	var buf bytes.Buffer
	esc := strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`)
	for _, e := range events {
		fields := []string{e.ID, strconv.FormatUint(uint64(e.Version), 10), e.ReportID, strconv.Itoa(e.Index),
			strconv.FormatInt(e.Time.Unix(), 10), e.Source, normalizeAddress(e.Recipient), string(e.Class),
			string(e.Reason), string(e.Scope), e.Status, strconv.Itoa(e.ReplyCode), e.Action, e.Diagnostic,
			e.RemoteMTA, e.ReportingMTA, e.SMTPCommand, e.Provider, e.Parser, e.Rule, e.MessageID,
			e.Stream, e.ReturnPath}
		for i, f := range fields {
			if i > 0 {
				buf.WriteByte('\t')
			}
			esc.WriteString(&buf, f)
		}
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// BenchmarkReadStrategies compares the two ways to read the newest
// version of each event before merges: argMax(..., version) GROUP BY id,
// which Store uses for histories, and FINAL; and Store.Stats on its
// per-minute rollup (filled by RecountStats, as migration 6 does) with
// FINAL's count. The table is filled server-side with readEventsN events
// over a year, 10% of them with a second version, in unmerged parts:
//
//	go test -run '^$' -bench ReadStrategies ./store/clickhouse/
func BenchmarkReadStrategies(b *testing.B) {
	const readEventsN = 2000000
	srv := clickhousetest.NewServer(b)
	s := openDSN(b, srv.DSN("bench_read"), Options{})
	defer s.Close()
	ctx := context.Background()
	fill := func(version int, where string) {
		q := fmt.Sprintf(`INSERT INTO events %s
SELECT substring(hex(MD5(toString(number))), 1, 32), %d, hex(SHA256(toString(intDiv(number, 3)))), number %% 3,
	toDateTime(1700000000 + number * 15), 'ndr', concat('user', toString(cityHash64(number) %% 200000), '@example.com'),
	toUInt8(1 + (number + %d) %% 7), 'userunknown', 'recipient', '5.1.1', 550, 'failed',
	concat('smtp; 550 5.1.1 <user', toString(number %% 200000), '@example.com>: Recipient address rejected: User unknown'),
	'mx1.example.org', 'mta.example.com', 'RCPT', 'gmail', 'rfc3464', 'postfix-user-unknown',
	concat('<', toString(number), '@example.com>'), '', ''
FROM numbers(%d) %s`, eventsTable.columnList(), version, version, readEventsN, where)
		if err := s.conn.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	fill(1, "")
	fill(2, "WHERE number % 10 = 0")
	// The commit marks of the sets, as Write inserts them: without them
	// the store's reads show no report's events.
	if err := s.conn.Exec(ctx, `INSERT INTO report_versions (report_id, version, time)
SELECT report_id, max(version), any(time) FROM events GROUP BY report_id`); err != nil {
		b.Fatal(err)
	}
	// Stats' rollup, as migration 6 fills it from rows stored before it.
	if err := s.RecountStats(ctx); err != nil {
		b.Fatal(err)
	}
	var last time.Time
	if err := s.conn.QueryRow(ctx, "SELECT max(time) FROM events").Scan(&last); err != nil {
		b.Fatal(err)
	}
	var recipient string
	if err := s.conn.QueryRow(ctx, "SELECT recipient FROM events LIMIT 1").Scan(&recipient); err != nil {
		b.Fatal(err)
	}

	const recipientFinal = `SELECT id, version, report_id, idx, time, source,
	recipient, class, reason, scope, status, reply_code, action, diagnostic,
	remote_mta, reporting_mta, smtp_command, provider, parser, rule, message_id
FROM events FINAL
WHERE recipient = ?
ORDER BY time DESC, id
LIMIT ?`
	const statsFinal = `SELECT class, count() FROM events FINAL WHERE time >= toDateTime(?) GROUP BY class`

	drain := func(b *testing.B, q string, args ...any) {
		rows, err := s.conn.Query(ctx, q, args...)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for rows.Next() {
			n++
		}
		if err := rows.Err(); err != nil {
			b.Fatal(err)
		}
		rows.Close()
		if n == 0 {
			b.Fatal("no rows")
		}
	}
	b.Run("recipient/argMax", func(b *testing.B) {
		for b.Loop() {
			drain(b, selectRecipientEvents, recipient, recipient, uint64(100))
		}
	})
	b.Run("recipient/FINAL", func(b *testing.B) {
		for b.Loop() {
			drain(b, recipientFinal, recipient, uint64(100))
		}
	})
	for _, w := range []struct {
		name   string
		window time.Duration
	}{{"1h", time.Hour}, {"1d", 24 * time.Hour}, {"30d", 30 * 24 * time.Hour}, {"all", 0}} {
		since := uint32(0)
		if w.window > 0 {
			since = uint32(last.Add(-w.window).Unix())
		}
		// Store.Stats: whole minutes from stats_minutes (since is on
		// a minute here).
		b.Run("stats-"+w.name+"/rollup", func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Stats(ctx, time.Unix(int64(since-since%60), 0)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("stats-"+w.name+"/FINAL", func(b *testing.B) {
			for b.Loop() {
				drain(b, statsFinal, since)
			}
		})
	}
}

// BenchmarkRefoldCalls measures the calls ingest makes for every
// recipient of every committed batch (ingest.Refolder.Recipient and its
// resuppress): the recipient's events (limit 1,000), its stored outcomes,
// one WriteOutcomes (on ClickHouse an INSERT of its own), its latest
// removal, and for a failure the policy suppresses, its suppressions and
// one PutSuppressions. A batch of 500 reports to 500 recipients makes 500
// of each, one after the other, so their sum bounds ingest's rate on
// ClickHouse (bench/ingest -mode throughput):
//
//	go test -run '^$' -bench RefoldCalls -benchtime 200x ./store/clickhouse/
//
// The table holds refoldBatches of BenchmarkWrite's batches (100,000
// recipients); each op is one recipient, a different one each time.
func BenchmarkRefoldCalls(b *testing.B) {
	const refoldBatches = 10
	srv := clickhousetest.NewServer(b)
	s := openDSN(b, srv.DSN("bench_refold"), Options{})
	defer s.Close()
	ctx := context.Background()
	var rcpts []string
	for n := range refoldBatches {
		reports, events := benchEvents(n)
		if err := s.Write(ctx, reports, events); err != nil {
			b.Fatal(err)
		}
		for _, e := range events[:100] {
			rcpts = append(rcpts, e.Recipient)
		}
	}
	at := time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC)
	outcome := func(i int) store.Outcome {
		return store.Outcome{Key: fmt.Sprintf("k%d", i), Recipient: rcpts[i%len(rcpts)], State: "bounced",
			Class: event.ClassHard, Reason: event.ReasonUserUnknown, Scope: event.ScopeRecipient, Provider: "gmail",
			Final: true, First: at, Last: at, Observations: 1, Version: store.OutcomeVersion(1, at)}
	}
	suppression := func(i int) store.Suppression {
		return store.Suppression{Address: rcpts[i%len(rcpts)], Source: store.SourcePolicy, Class: event.ClassHard,
			Reason: event.ReasonUserUnknown, Rule: "hard", Since: at, Actor: "policy", Note: "bench"}
	}
	calls := []struct {
		name string
		call func(i int) error
	}{
		{"RecipientEvents", func(i int) error {
			_, err := s.RecipientEvents(ctx, rcpts[i%len(rcpts)], 1000)
			return err
		}},
		{"RecipientOutcomes", func(i int) error {
			_, err := s.RecipientOutcomes(ctx, rcpts[i%len(rcpts)])
			return err
		}},
		{"WriteOutcomes-1", func(i int) error { return s.WriteOutcomes(ctx, []store.Outcome{outcome(i)}) }},
		{"LatestRemoval", func(i int) error {
			_, err := s.LatestRemoval(ctx, rcpts[i%len(rcpts)])
			return err
		}},
		{"AddressSuppressions", func(i int) error {
			_, err := s.AddressSuppressions(ctx, rcpts[i%len(rcpts)], at)
			return err
		}},
		{"PutSuppressions-1", func(i int) error { return s.PutSuppressions(ctx, []store.Suppression{suppression(i)}) }},
	}
	for _, c := range calls {
		b.Run(c.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				if err := c.call(i); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "recipients/s")
		})
	}
	// All of them in sequence, as a recipient with a hard bounce costs.
	b.Run("all", func(b *testing.B) {
		i := 0
		for b.Loop() {
			for _, c := range calls {
				if err := c.call(i); err != nil {
					b.Fatal(err)
				}
			}
			i++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "recipients/s")
	})
	// One WriteOutcomes for a whole batch's 500 recipients, for
	// comparison: what a refold that batched its writes would send.
	b.Run("WriteOutcomes-500", func(b *testing.B) {
		i := 0
		for b.Loop() {
			batch := make([]store.Outcome, 500)
			for j := range batch {
				batch[j] = outcome(i*500 + j)
			}
			if err := s.WriteOutcomes(ctx, batch); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(500*b.N)/b.Elapsed().Seconds(), "recipients/s")
	})
}

// BenchmarkMigrateVersion6 is Open of a version-5 database holding
// BOUNCER_MIGRATE_EVENTS events (default 10 million; one in five a sync
// event, the others one report each, with their reports and
// report_versions rows, over 30 days), which applies migration 6: the
// rebuild of events and report_versions, then stats_log and
// stats_minutes filled. One migration per op:
//
//	go test -run '^$' -bench MigrateVersion6 -benchtime 1x ./store/clickhouse/
func BenchmarkMigrateVersion6(b *testing.B) {
	n := 10_000_000
	if v := os.Getenv("BOUNCER_MIGRATE_EVENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	srv := clickhousetest.NewServer(b)
	ctx := context.Background()
	const report = "lower(hex(SHA256(toString(number))))"
	const at = "toDateTime(1764000000 - number % 2592000)"
	for i := range b.N {
		b.StopTimer()
		dsn := srv.DSN(fmt.Sprintf("bench_migrate_%d", i))
		conn := openVersion5(b, dsn)
		for _, q := range []string{
			`INSERT INTO events ` + eventsTable.columnList() + `
SELECT lower(hex(MD5(toString(number)))), toUInt32(1), if(number % 5 = 0, '', ` + report + `), 0, ` + at + `,
	if(number % 5 = 0, 'sync', 'ndr'), concat('user', toString(cityHash64(number) % 1000000), '@example.com'),
	toUInt8(1 + number % 7), 'userunknown', 'recipient', '5.1.1', 550, 'failed',
	'smtp; 550 5.1.1 <user@example.com>: Recipient address rejected: User unknown', 'mx1.example.org', 'mta.example.com',
	'RCPT', 'gmail', 'rfc3464', '', concat('<', toString(number), '@example.com>'), '', ''
FROM numbers(` + strconv.Itoa(n) + `)`,
			`INSERT INTO reports (id, received, return_path, recipients, client_ip, helo, tls, raw, parse_error)
SELECT ` + report + `, ` + at + `, '', [], '192.0.2.1', 'mx', '', 'raw', '' FROM numbers(` + strconv.Itoa(n) + `) WHERE number % 5 != 0`,
			`INSERT INTO report_versions (report_id, version)
SELECT ` + report + `, toUInt32(1) FROM numbers(` + strconv.Itoa(n) + `) WHERE number % 5 != 0`,
		} {
			if err := conn.Exec(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
		conn.Close()
		b.StartTimer()
		start := time.Now()
		s, err := Open(ctx, dsn, Options{ReadTimeout: 30 * time.Minute}) // no deadline: Open migrates
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("migration 6 of %d events: %.1f s", n, time.Since(start).Seconds())
		b.StopTimer()
		st, err := s.Stats(ctx, time.Time{})
		if err != nil {
			b.Fatal(err)
		}
		var total int64
		for _, c := range st.EventsByClass {
			total += c
		}
		if total != int64(n) || st.ReportsReceived != int64(n-n/5) {
			b.Errorf("after the migration, Stats counts %d events and %d reports, want %d and %d", total, st.ReportsReceived, n, n-n/5)
		}
		s.Close()
	}
}
