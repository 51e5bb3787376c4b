package clickhouse

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/go-faster/city"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// Every INSERT lists its columns: clickhouse-go's PrepareBatch needs them
// on 18.16 ("expected 0 arguments" without).
var (
	insertReports    = "INSERT INTO reports " + reportsTable.columnList()
	insertEvents     = "INSERT INTO events " + eventsTable.columnList()
	insertVersions   = "INSERT INTO report_versions " + reportVersionsTable.columnList()
	insertStatsLog   = "INSERT INTO stats_log " + statsLogTable.columnList()
	insertReportKeys = "INSERT INTO report_keys " + reportKeysTable.columnList()
)

// A Write's recount: recountSeconds recounts the seconds given (UInt32,
// a GroupSet) that lie between two times (both included) from stats_log,
// then sumMinutes sums the minutes given (UInt32 seconds of their
// starts, a GroupSet) from their seconds. A recount reads the batch's
// seconds of stats_log, not its whole minutes: at 1,000 reports/s a
// minute is 180,000 rows, and recounting the minutes of every batch took
// up to 1.3 s a batch by the end of each minute (migration 7).
var (
	recountSeconds = "INSERT INTO stats_seconds " + statsSecondsTable.columnList() + "\n" +
		recountSelectBy("time", "time >= toDateTime(?) AND time <= toDateTime(?) AND toUInt32(time) IN ?")
	sumMinutes = "INSERT INTO stats_minutes " + statsMinutesTable.columnList() + "\n" +
		sumSecondsSelect("second >= toDateTime(?) AND second <= toDateTime(?) AND toUInt32(toStartOfMinute(second)) IN ?")
)

// A recount statement names at most recountChunk seconds or minutes
// (staying far below max_query_size, 256 KiB) within recountSpan: its
// time range is what the sorting keys of stats_log and stats_seconds
// (time, ...) prune to, so a batch spread over a month reads a day at a
// time, not the month per statement. (A time range per run of minutes,
// OR'ed, made 18.16 take seconds for a batch over 1,000 hours.)
const (
	recountChunk = 2000
	recountSpan  = 24 * 3600
)

// insertSettings go with every INSERT. insert_distributed_sync makes an
// INSERT into a Distributed table (the cluster schema) return only after
// every shard stored its rows, so a Write that returned is durable there
// too; a MergeTree table ignores it.
var insertSettings = ch.Settings{"insert_distributed_sync": 1}

// Write stores reports and events; see store.Store. The whole batch is
// refused, nothing sent, when one row is invalid: an empty id, a zero time
// or one outside DateTime's range (1970 to 2106), an unknown class, an
// index or reply code that does not fit its column.
//
// Rows already stored under their id (and version) are skipped: Write
// reads which are before it inserts, so the first write of a row wins.
// A report is looked up within Options.ReportLookback of its received
// time (see doc.go): one received again later than that is stored again.
// ClickHouse has no transactions: a Write that failed may have stored
// part of the batch (reports but not events, or some months' partitions
// but not others). Retrying it stores the rest and nothing twice, which is
// what ingest does before it acknowledges. Two concurrent Writes of the
// same new row both insert it; reads and counts take one row per id, so
// nothing is counted twice, but which of two differing contents survives
// is then not defined.
//
// Stats' rollup (stats_log, stats_minutes; doc.go "Query plans") is
// kept by every Write: after the rows, it appends the batch's events,
// set marks and reports to stats_log (all of them, also those stored
// already, so a retry repairs a Write that failed before this step) and
// recounts the minutes they lie in. A minute's count is exact once a
// Write that touched it has returned nil, whatever ran concurrently.
func (s *Store) Write(ctx context.Context, reports []store.Report, events []store.Event) error {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	if len(reports) == 0 && len(events) == 0 {
		return nil
	}
	if err := validate(reports, events); err != nil {
		return err
	}
	reports, events = dedupBatch(reports, events)
	sets := setVersions(events)

	// Which of the batch's reports may be stored already: those whose key
	// report_keys holds. The others are fresh: no Write stored anything
	// of them (the keys go in before their rows, below), so their events
	// and sets need no lookup, and those lookups, in tables sorted by
	// recipient and report id, are what read the most.
	fresh, err := s.freshReports(ctx, reports)
	if err != nil {
		return fmt.Errorf("clickhouse: write: %w", err)
	}

	// The lookups, and then the two inserts of rows, go in pairs of
	// statements at once: each waits on the server, which has cores to
	// spare for a second (bench/README.md, session 13).
	var (
		newReports    []store.Report
		firstReceived map[string]time.Time
		newEvents     []store.Event
		storedEvents  []statsLogRow
		earlier       map[string][]time.Time
	)
	err = s.pair(func() (err error) {
		if newReports, firstReceived, err = s.newReports(ctx, reports, fresh); err != nil {
			return err
		}
		newEvents, storedEvents, err = s.newEvents(ctx, events, firstReceived, fresh)
		return err
	}, func() (err error) {
		if earlier, err = s.storedSetTimes(ctx, sets, fresh); err != nil {
			return err
		}
		// Every report's key, before any of its rows: a crash after
		// this leaves the key of a report that is not stored, which a
		// retry's lookup finds and newReports does not confirm.
		if err := s.insertKeys(ctx, reports); err != nil {
			return fmt.Errorf("report keys: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("clickhouse: write: %w", err)
	}
	// Reports and events together: a crash between them may leave either
	// without the other. Ingest acknowledges only after a Write returned
	// nil, so the batch comes again and its retry stores what is missing
	// (the lookups above skip what is there); until then a raw report
	// without its events can be classified again, and events without their
	// raw report are only not reclassifiable.
	err = s.pair(func() error {
		if err := s.insertReports(ctx, newReports); err != nil {
			return fmt.Errorf("reports: %w", err)
		}
		return nil
	}, func() error {
		if err := s.insertEvents(ctx, newEvents); err != nil {
			return fmt.Errorf("events: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("clickhouse: write: %w", err)
	}
	// The set versions next: a new set becomes visible only once all its
	// events are in. Sent for every set of the batch, also those whose
	// events were stored already, so a retry after a failure here
	// completes the set.
	if err := s.insertVersions(ctx, sets); err != nil {
		return fmt.Errorf("clickhouse: write: report versions: %w", err)
	}
	// Stats' rollup last, from the whole batch: its set marks, like
	// report_versions' rows, commit a set for counting.
	rows := statsLogRows(reports, firstReceived, newEvents, storedEvents, sets, earlier)
	if err := s.insertStatsLog(ctx, rows); err != nil {
		return fmt.Errorf("clickhouse: write: stats log: %w", err)
	}
	if err := s.recount(ctx, rows); err != nil {
		return fmt.Errorf("clickhouse: write: recounting stats: %w", err)
	}
	return nil
}

// pair runs a and b, at once when the pool allows (Store.pairs), and
// returns the first of their errors; both have returned when it does.
func (s *Store) pair(a, b func() error) error {
	if !s.pairs {
		if err := a(); err != nil {
			return err
		}
		return b()
	}
	var (
		wg   sync.WaitGroup
		errB error
	)
	wg.Go(func() { errB = b() })
	errA := a()
	wg.Wait()
	if errA != nil {
		return errA
	}
	return errB
}

// reportSet is a report's highest version in a batch, and the times of
// the report's events in the batch.
type reportSet struct {
	version uint32
	times   map[time.Time]bool
}

// setVersions is each report's set in the batch; events without a report
// have no set.
func setVersions(events []store.Event) map[string]*reportSet {
	sets := make(map[string]*reportSet)
	for _, e := range events {
		if e.ReportID == "" {
			continue
		}
		rs := sets[e.ReportID]
		if rs == nil {
			rs = &reportSet{version: e.Version, times: map[time.Time]bool{}}
			sets[e.ReportID] = rs
		}
		rs.version = max(rs.version, e.Version)
		rs.times[e.Time.UTC().Truncate(time.Second)] = true
	}
	return sets
}

// insertVersions writes a row per set and time of its events.
func (s *Store) insertVersions(ctx context.Context, sets map[string]*reportSet) error {
	if len(sets) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ch.Context(ctx, ch.WithSettings(insertSettings)), insertVersions)
	if err != nil {
		return err
	}
	defer b.Abort() // a no-op after Send
	for id, rs := range sets {
		for t := range rs.times {
			if err := b.Append(id, rs.version, t); err != nil {
				return fmt.Errorf("report %s version %d: %w", id, rs.version, err)
			}
		}
	}
	return b.Send()
}

// storedSetTimes returns the times of the stored sets of the batch's
// reports: a new set must also be marked in the minutes of the sets it
// replaces, so their events stop counting there. Fresh reports have no
// stored sets and are not looked up.
func (s *Store) storedSetTimes(ctx context.Context, sets map[string]*reportSet, fresh map[string]bool) (map[string][]time.Time, error) {
	tbl, err := ext.NewTable(batchTable, ext.Column("id", "String"))
	if err != nil {
		return nil, err
	}
	n := 0
	for id := range sets {
		if fresh[id] {
			continue
		}
		if err := tbl.Append(id); err != nil {
			return nil, err
		}
		n++
	}
	if n == 0 {
		return nil, nil
	}
	rows, err := s.conn.Query(ch.Context(ctx, ch.WithExternalTable(tbl)),
		`SELECT report_id, time FROM report_versions
		WHERE report_id IN (SELECT id FROM `+batchTable+`)
		GROUP BY report_id, time`)
	if err != nil {
		return nil, fmt.Errorf("looking up stored sets: %w", err)
	}
	defer rows.Close()
	out := make(map[string][]time.Time)
	for rows.Next() {
		var (
			id string
			t  time.Time
		)
		if err := rows.Scan(&id, &t); err != nil {
			return nil, fmt.Errorf("looking up stored sets: %w", err)
		}
		out[id] = append(out[id], t.UTC())
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("looking up stored sets: %w", err)
	}
	return out, nil
}

// statsLogRow is one row of stats_log.
type statsLogRow struct {
	time                    time.Time
	kind                    string // "event", "set" or "report"
	reportID, id            string
	version                 uint32
	class, reason, provider string
}

// statsLogRows are the stats_log rows of a batch: every event inserted,
// the stored row of every event that was not (so the rows are what the
// events table holds: the first write wins here too), every set's mark
// at the times of its events and of the report's stored sets, and every
// report at its first received time.
func statsLogRows(reports []store.Report, firstReceived map[string]time.Time, events []store.Event,
	stored []statsLogRow, sets map[string]*reportSet, earlier map[string][]time.Time) []statsLogRow {
	rows := make([]statsLogRow, 0, len(reports)+2*len(events)+len(stored))
	rows = append(rows, stored...)
	for _, e := range events {
		rows = append(rows, statsLogRow{time: e.Time, kind: "event", reportID: e.ReportID, id: e.ID,
			version: e.Version, class: string(e.Class), reason: string(e.Reason), provider: e.Provider})
	}
	for id, rs := range sets {
		times := maps.Clone(rs.times)
		for _, t := range earlier[id] {
			times[t] = true
		}
		for t := range times {
			rows = append(rows, statsLogRow{time: t, kind: "set", reportID: id, version: rs.version,
				class: string(event.ClassUnknown)})
		}
	}
	for _, r := range reports {
		t := r.Received
		if first, ok := firstReceived[r.ID]; ok {
			t = first
		}
		rows = append(rows, statsLogRow{time: t, kind: "report", reportID: r.ID, class: string(event.ClassUnknown)})
	}
	return rows
}

func (s *Store) insertStatsLog(ctx context.Context, rows []statsLogRow) error {
	if len(rows) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ch.Context(ctx, ch.WithSettings(insertSettings)), insertStatsLog)
	if err != nil {
		return err
	}
	defer b.Abort() // a no-op after Send
	for _, r := range rows {
		if err := b.Append(r.time.UTC(), r.kind, r.reportID, r.id, r.version, r.class, r.reason, r.provider); err != nil {
			return fmt.Errorf("%s %s%s: %w", r.kind, r.reportID, r.id, err)
		}
	}
	return b.Send()
}

// recount recounts the seconds the rows lie in, then sums the minutes
// of those seconds.
func (s *Store) recount(ctx context.Context, rows []statsLogRow) error {
	seconds := make(map[uint32]bool)
	minutes := make(map[uint32]bool)
	for _, r := range rows {
		secs := uint32(r.time.Unix())
		seconds[secs] = true
		minutes[secs-secs%60] = true
	}
	if err := s.execChunks(ctx, recountSeconds, slices.Sorted(maps.Keys(seconds)), 0); err != nil {
		return fmt.Errorf("seconds: %w", err)
	}
	if err := s.execChunks(ctx, sumMinutes, slices.Sorted(maps.Keys(minutes)), 59); err != nil {
		return fmt.Errorf("minutes: %w", err)
	}
	return nil
}

// execChunks runs stmt for keys (sorted UInt32 seconds) in chunks of at
// most recountChunk within recountSpan, with the chunk's first key, its
// last plus width, and the chunk as a GroupSet.
func (s *Store) execChunks(ctx context.Context, stmt string, keys []uint32, width uint64) error {
	for len(keys) > 0 {
		n := 1
		for n < len(keys) && n < recountChunk && keys[n]-keys[0] < recountSpan {
			n++
		}
		chunk := keys[:n]
		keys = keys[n:]
		set := make([]any, len(chunk))
		for i, k := range chunk {
			set[i] = k
		}
		last := min(uint64(chunk[len(chunk)-1])+width, math.MaxUint32)
		if err := s.conn.Exec(ch.Context(ctx, ch.WithSettings(insertSettings)), stmt,
			chunk[0], uint32(last), ch.GroupSet{Value: set}); err != nil {
			return err
		}
	}
	return nil
}

// RecountStats appends every stored event, set and report to stats_log
// and recounts every minute: what migration 6 did to fill Stats' rollup
// from the rows stored before it. Running it is harmless at any time
// (rows stats_log holds twice count once), and repairs minutes a Write
// that failed midway, and was never retried, left short. It reads the
// whole events table, and stats_log an hour at a time.
func (s *Store) RecountStats(ctx context.Context) error {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	for _, stmt := range []string{backfillStatsLogEvents, backfillStatsLogSets, backfillStatsLogReports, recountSecondsStatement} {
		if err := applyStatement(ch.Context(ctx, ch.WithSettings(insertSettings)), s.conn, stmt); err != nil {
			return fmt.Errorf("clickhouse: recounting stats: %w", err)
		}
	}
	return nil
}

// recountHour recounts the minutes of one hour from stats_log: migration
// 6, before stats_seconds.
var recountHour = "INSERT INTO stats_minutes " + statsMinutesTable.columnList() + "\n" +
	recountSelect("time >= toDateTime(?) AND time <= toDateTime(?)")

// recountSecondsHour recounts the seconds of one hour from stats_log,
// sumMinutesHour sums the hour's minutes from them.
var (
	recountSecondsHour = "INSERT INTO stats_seconds " + statsSecondsTable.columnList() + "\n" +
		recountSelectBy("time", "time >= toDateTime(?) AND time <= toDateTime(?)")
	sumMinutesHour = "INSERT INTO stats_minutes " + statsMinutesTable.columnList() + "\n" +
		sumSecondsSelect("second >= toDateTime(?) AND second <= toDateTime(?)")
)

// recountAll recounts every minute of stats_log, an hour at a time, so
// the memory a recount needs is bounded by an hour's rows (migration 6).
func recountAll(ctx context.Context, conn driver.Conn) error {
	return eachHour(ctx, conn, recountHour)
}

// recountAllSeconds recounts every second of stats_log and sums every
// minute from them, an hour at a time (migration 7, RecountStats).
func recountAllSeconds(ctx context.Context, conn driver.Conn) error {
	return eachHour(ctx, conn, recountSecondsHour, sumMinutesHour)
}

// eachHour runs stmts, in order, for every hour stats_log has rows in,
// with the hour's first and last second.
func eachHour(ctx context.Context, conn driver.Conn, stmts ...string) error {
	rows, err := conn.Query(ctx, "SELECT DISTINCT toUInt32(toStartOfHour(time)) FROM stats_log")
	if err != nil {
		return fmt.Errorf("listing the hours of stats_log: %w", err)
	}
	var hours []uint32
	for rows.Next() {
		var h uint32
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return err
		}
		hours = append(hours, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	slices.Sort(hours)
	for _, h := range hours {
		last := min(uint64(h)+3599, math.MaxUint32) // DateTime's last hour ends early
		for _, stmt := range stmts {
			if err := conn.Exec(ctx, stmt, h, uint32(last)); err != nil {
				return fmt.Errorf("recounting the hour from %d: %w", h, err)
			}
		}
	}
	return nil
}

// DateTime's range: UInt32 seconds since the epoch.
var (
	minTime = time.Unix(0, 0).UTC()
	maxTime = time.Unix(math.MaxUint32, 0).UTC()
)

func checkTime(t time.Time) error {
	if t.Before(minTime) || t.After(maxTime) {
		return fmt.Errorf("%s outside DateTime's range (%s to %s)", t.UTC().Format(time.RFC3339),
			minTime.Format(time.RFC3339), maxTime.Format(time.RFC3339))
	}
	return nil
}

// validate refuses the rows no engine could store faithfully
// (store.Validate), and those this engine's columns cannot hold.
func validate(reports []store.Report, events []store.Event) error {
	if err := store.Validate(reports, events); err != nil {
		return fmt.Errorf("clickhouse: write: %w", err)
	}
	for _, r := range reports {
		if err := checkTime(r.Received); err != nil {
			return fmt.Errorf("clickhouse: write: report %s: received: %w", r.ID, err)
		}
	}
	for _, e := range events {
		if err := checkTime(e.Time); err != nil {
			return fmt.Errorf("clickhouse: write: event %s: time: %w", e.ID, err)
		}
		if e.Index < 0 || int64(e.Index) > math.MaxUint32 {
			return fmt.Errorf("clickhouse: write: event %s: index %d does not fit UInt32", e.ID, e.Index)
		}
		if e.ReplyCode < 0 || e.ReplyCode > math.MaxUint16 {
			return fmt.Errorf("clickhouse: write: event %s: reply code %d does not fit UInt16", e.ID, e.ReplyCode)
		}
	}
	return nil
}

// normalizeAddress is how recipient addresses are stored and looked up.
func normalizeAddress(a string) string { return strings.ToLower(a) }

type eventKey struct {
	id      string
	version uint32
}

// dedupBatch drops the rows a batch repeats, keeping each one's first
// occurrence, as a transaction of INSERT ... ON CONFLICT DO NOTHING does.
func dedupBatch(reports []store.Report, events []store.Event) ([]store.Report, []store.Event) {
	seenR := make(map[string]bool, len(reports))
	outR := reports[:0:0]
	for _, r := range reports {
		if !seenR[r.ID] {
			seenR[r.ID] = true
			outR = append(outR, r)
		}
	}
	seenE := make(map[eventKey]bool, len(events))
	outE := events[:0:0]
	for _, e := range events {
		k := eventKey{e.ID, e.Version}
		if !seenE[k] {
			seenE[k] = true
			outE = append(outE, e)
		}
	}
	return outR, outE
}

// batchTable is the name of the external table that carries a batch's ids
// to the server for the lookups below: an IN list of 10,000 literals would
// exceed 18.16's max_query_size (256 KiB) and be slow to parse.
const batchTable = "_batch"

// DefaultReportLookback is Options.ReportLookback when it is zero: the
// least every engine recognises a resend in.
const DefaultReportLookback = store.ResendWindow

// reportKey is a report id's key in report_keys: ClickHouse's
// cityHash64 of the id (CityHash 1.0.2, which go-faster/city implements
// as CH64), so migration 8 computes the same keys from reports in SQL.
func reportKey(id string) uint64 { return city.CH64([]byte(id)) }

// receivedRange is the range of the reports' received times.
func receivedRange(reports []store.Report) (lo, hi time.Time) {
	lo, hi = reports[0].Received, reports[0].Received
	for _, r := range reports {
		if r.Received.Before(lo) {
			lo = r.Received
		}
		if r.Received.After(hi) {
			hi = r.Received
		}
	}
	return lo, hi
}

// lookbackRange is what Write looks reports up in: the batch's received
// times widened by the lookback on both sides (a redelivery of an older
// batch can come after a resend of one of its reports was stored), as
// DateTime seconds.
func (s *Store) lookbackRange(reports []store.Report) (from, to uint32) {
	lo, hi := receivedRange(reports)
	return clampSeconds(lo.Add(-s.reportLookback).Truncate(time.Second)), clampSeconds(hi.Add(s.reportLookback))
}

// freshReports returns the ids of the batch's reports whose key
// report_keys does not hold within the lookback of the batch's received
// times: nothing of them is stored, unless a Write ran at the same time
// (see Write) or stored them longer ago than the lookback. A redelivery
// or a retry carries the received time it was first written with, so
// the lookback decides only how late a resend (the same bytes received
// again) is still recognised.
func (s *Store) freshReports(ctx context.Context, reports []store.Report) (map[string]bool, error) {
	if len(reports) == 0 {
		return nil, nil
	}
	tbl, err := ext.NewTable(batchTable, ext.Column("key", "UInt64"))
	if err != nil {
		return nil, err
	}
	keys := make(map[uint64][]string, len(reports))
	for _, r := range reports {
		k := reportKey(r.ID)
		if keys[k] == nil {
			if err := tbl.Append(k); err != nil {
				return nil, err
			}
		}
		keys[k] = append(keys[k], r.ID)
	}
	from, to := s.lookbackRange(reports)
	rows, err := s.conn.Query(ch.Context(ctx, ch.WithExternalTable(tbl)),
		`SELECT DISTINCT key FROM report_keys
		WHERE received >= toDateTime(?) AND received <= toDateTime(?) AND key IN (SELECT key FROM `+batchTable+`)`,
		from, to)
	if err != nil {
		return nil, fmt.Errorf("looking up report keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k uint64
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("looking up report keys: %w", err)
		}
		delete(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("looking up report keys: %w", err)
	}
	fresh := make(map[string]bool, len(reports))
	for _, ids := range keys {
		for _, id := range ids {
			fresh[id] = true
		}
	}
	return fresh, nil
}

// insertKeys writes the key of every report of the batch; a key written
// twice collapses in merges and counts once in the lookups.
func (s *Store) insertKeys(ctx context.Context, reports []store.Report) error {
	if len(reports) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ch.Context(ctx, ch.WithSettings(insertSettings)), insertReportKeys)
	if err != nil {
		return err
	}
	defer b.Abort() // a no-op after Send
	for _, r := range reports {
		if err := b.Append(r.Received.UTC(), reportKey(r.ID)); err != nil {
			return fmt.Errorf("report %s: %w", r.ID, err)
		}
	}
	return b.Send()
}

// newReports returns the reports whose id is not stored yet, and the
// first received time of those that are. Only the reports that are not
// fresh are looked up, by id in reports within the lookback range: their
// key says they may be stored, the row says they are (a Write that
// failed after the keys stored keys alone).
func (s *Store) newReports(ctx context.Context, reports []store.Report, fresh map[string]bool) ([]store.Report, map[string]time.Time, error) {
	tbl, err := ext.NewTable(batchTable, ext.Column("id", "String"))
	if err != nil {
		return nil, nil, err
	}
	n := 0
	for _, r := range reports {
		if fresh[r.ID] {
			continue
		}
		if err := tbl.Append(r.ID); err != nil {
			return nil, nil, err
		}
		n++
	}
	if n == 0 {
		return reports, nil, nil
	}
	from, to := s.lookbackRange(reports)
	rows, err := s.conn.Query(ch.Context(ctx, ch.WithExternalTable(tbl)),
		`SELECT id, min(received) FROM reports
		WHERE received >= toDateTime(?) AND received <= toDateTime(?) AND id IN (SELECT id FROM `+batchTable+`)
		GROUP BY id`, from, to)
	if err != nil {
		return nil, nil, fmt.Errorf("looking up stored reports: %w", err)
	}
	defer rows.Close()
	stored := make(map[string]time.Time)
	for rows.Next() {
		var (
			id       string
			received time.Time
		)
		if err := rows.Scan(&id, &received); err != nil {
			return nil, nil, fmt.Errorf("looking up stored reports: %w", err)
		}
		stored[id] = received
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("looking up stored reports: %w", err)
	}
	if len(stored) == 0 {
		return reports, nil, nil
	}
	out := make([]store.Report, 0, len(reports))
	for _, r := range reports {
		if _, ok := stored[r.ID]; !ok {
			out = append(out, r)
		}
	}
	return out, stored, nil
}

// newEvents returns the events whose id is not stored yet at their
// version or a higher one (the events of fresh reports without a
// lookup): a stored (id, version) keeps its first
// content, and a version lower than one stored would be superseded
// anyway. For the others it returns the stored highest version's
// stats_log row, so a retry can complete stats_log.
//
// The lookup covers a time range, so that partition and part pruning on
// time keep it from scanning the whole table: the batch's times, widened
// to the first received time of the batch's reports that are stored
// already (firstReceived). An event's time is its report's received
// time, so that is where an earlier write of the same event lies, also
// when the report itself was received again later. An id rewritten
// under another time outside that range is not found and is inserted
// again; reads still take one row per id (argMax by version), but it can
// then be counted in a window holding either time.
func (s *Store) newEvents(ctx context.Context, events []store.Event, firstReceived map[string]time.Time, fresh map[string]bool) ([]store.Event, []statsLogRow, error) {
	tbl, err := ext.NewTable(batchTable, ext.Column("recipient", "String"), ext.Column("id", "String"))
	if err != nil {
		return nil, nil, err
	}
	var lo, hi time.Time
	widen := func(t time.Time) {
		if lo.IsZero() || t.Before(lo) {
			lo = t
		}
		if hi.IsZero() || t.After(hi) {
			hi = t
		}
	}
	for _, e := range events {
		if fresh[e.ReportID] {
			continue
		}
		if err := tbl.Append(normalizeAddress(e.Recipient), e.ID); err != nil {
			return nil, nil, err
		}
		widen(e.Time)
		if t, ok := firstReceived[e.ReportID]; ok {
			widen(t)
		}
	}
	if lo.IsZero() {
		return events, nil, nil
	}
	rows, err := s.conn.Query(ch.Context(ctx, ch.WithExternalTable(tbl)),
		`SELECT id, v, t.1, t.2, t.3, t.4, t.5 FROM (
			SELECT id, max(version) AS v, argMax(tuple(report_id, time, toString(class), reason, provider), version) AS t
			FROM events
			WHERE time >= toDateTime(?) AND time <= toDateTime(?)
				AND (recipient, id) IN (SELECT recipient, id FROM `+batchTable+`)
			GROUP BY id
		)`, clampSeconds(lo.Truncate(time.Second)), clampSeconds(hi))
	if err != nil {
		return nil, nil, fmt.Errorf("looking up stored events: %w", err)
	}
	defer rows.Close()
	stored := make(map[string]statsLogRow)
	for rows.Next() {
		r := statsLogRow{kind: "event"}
		if err := rows.Scan(&r.id, &r.version, &r.reportID, &r.time, &r.class, &r.reason, &r.provider); err != nil {
			return nil, nil, fmt.Errorf("looking up stored events: %w", err)
		}
		stored[r.id] = r
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("looking up stored events: %w", err)
	}
	if len(stored) == 0 {
		return events, nil, nil
	}
	out := make([]store.Event, 0, len(events))
	var skipped []statsLogRow
	for _, e := range events {
		if r, ok := stored[e.ID]; fresh[e.ReportID] || !ok || e.Version > r.version {
			out = append(out, e)
		} else {
			skipped = append(skipped, r)
		}
	}
	return out, skipped, nil
}

// reportsBlockBytes bounds the raw bytes of one block of a reports
// INSERT. The client builds a block's raw column in one buffer that grows
// by doubling, and encodes it into a second one: for a batch of 8,000
// reports that was tens of MB copied and faulted in per batch (15% of
// ingest's CPU on ClickHouse in a profile of bench/ingest). Sent in blocks
// of this size, the buffers are reused from one block to the next.
const reportsBlockBytes = 4 << 20

func (s *Store) insertReports(ctx context.Context, reports []store.Report) error {
	if len(reports) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ch.Context(ctx, ch.WithSettings(insertSettings)), insertReports)
	if err != nil {
		return err
	}
	defer b.Abort() // a no-op after Send
	pending := 0
	for _, r := range reports {
		rcpts := r.Recipients
		if rcpts == nil {
			rcpts = []string{}
		}
		if err := b.Append(r.ID, r.Received.UTC(), r.ReturnPath, rcpts, r.ClientIP, r.Helo, r.TLS,
			r.Raw, r.ParseError); err != nil {
			return fmt.Errorf("report %s: %w", r.ID, err)
		}
		if pending += len(r.Raw); pending >= reportsBlockBytes {
			if err := b.Flush(); err != nil {
				return err
			}
			pending = 0
		}
	}
	return b.Send()
}

func (s *Store) insertEvents(ctx context.Context, events []store.Event) error {
	if len(events) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ch.Context(ctx, ch.WithSettings(insertSettings)), insertEvents)
	if err != nil {
		return err
	}
	defer b.Abort() // a no-op after Send
	for _, e := range events {
		if err := b.Append(e.ID, e.Version, e.ReportID, uint32(e.Index), e.Time.UTC(), e.Source,
			normalizeAddress(e.Recipient), string(e.Class), string(e.Reason), string(e.Scope), e.Status,
			uint16(e.ReplyCode), e.Action, e.Diagnostic, e.RemoteMTA, e.ReportingMTA, e.SMTPCommand,
			e.Provider, e.Parser, e.Rule, e.MessageID, e.Stream, e.ReturnPath); err != nil {
			return fmt.Errorf("event %s version %d: %w", e.ID, e.Version, err)
		}
	}
	return b.Send()
}
