package clickhouse

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// Reads must be right before background merges collapse an id's rows, so
// they pick each id's highest version themselves, with
// argMax(..., version) GROUP BY id rather than FINAL. Measured on 18.16
// (BenchmarkReadStrategies: 2.2 million events over a year, 10% with a
// second version, unmerged; two cores):
//
//	                      argMax     FINAL
//	recipient history      37 ms    210 ms
//	Stats, 1 hour window    7 ms     19 ms
//	Stats, 1 day (default)  7 ms     23 ms
//	Stats, 30 days        110 ms     63 ms
//	Stats, whole year     1.1 s      0.8 s
//
// (Before migration 6, when Stats deduplicated the window's events
// itself.) argMax wins where the API spends its time (histories, the
// default window) and FINAL only on month-long windows. argMax also counts each id
// once even when its rows differ in sorting key (a version that changed
// the recipient), which FINAL would count twice, so it is used for every
// read.
//
// The row is taken as one argMax over a tuple of every column, not a
// column-by-column argMax, so two rows of one (id, version) that differ
// (concurrent first writes) cannot mix into a row that was never written.

// The queries' IN subqueries are written GLOBAL IN, which is what a
// cluster's Distributed tables need (report_versions is sharded by
// report, events by recipient, so each shard must get the initiator's
// whole set). On a single node, 18.16 does not use the sorting key for
// GLOBAL IN (the subquery becomes a temporary table, and IN with a table
// is not an index condition), so a history read the whole
// report_versions table (8 million rows at 10 million events,
// bench/README.md); Store.sql turns them into plain IN there, which
// reads a few granules. distributed_product_mode = 'global' would let
// plain IN serve both, but 18.16 applies it to neither a SETTINGS clause
// nor a nested subquery, and clickhouse-go cannot send a string setting
// to 18.16 over the native protocol.

// distributedConns records, per connection pool, whether its database
// holds Distributed tables (a cluster schema, ClusterDDL); migrate fills
// it at Open.
var distributedConns sync.Map // driver.Conn -> bool

// sql is q for this store's database: GLOBAL IN on a cluster schema,
// IN on a single node.
func (s *Store) sql(q string) string {
	if d, ok := distributedConns.Load(s.conn); ok && d.(bool) {
		return q
	}
	return strings.ReplaceAll(q, "GLOBAL IN", "IN")
}

// selectRecipientEvents: t.1 is version, t.2 report_id, ... in the order
// of the tuple.
const selectRecipientEvents = `SELECT id,
	t.1, t.2, t.3, t.4, t.5, t.6, t.7, t.8, t.9, t.10,
	t.11, t.12, t.13, t.14, t.15, t.16, t.17, t.18, t.19, t.20,
	t.21, t.22
FROM (
	SELECT id, argMax(tuple(version, report_id, idx, time, source,
		recipient, class, reason, scope, status, reply_code, action, diagnostic,
		remote_mta, reporting_mta, smtp_command, provider, parser, rule, message_id,
		stream, return_path), version) AS t
	FROM events
	WHERE recipient = ?
	GROUP BY id
)
WHERE t.2 = '' OR (t.2, t.1) GLOBAL IN (
	SELECT report_id, max(version) FROM report_versions
	WHERE report_id GLOBAL IN (SELECT report_id FROM events WHERE recipient = ? AND report_id != '')
	GROUP BY report_id
)
ORDER BY t.4 DESC, id
LIMIT ?`

// RecipientEvents returns the newest events of address (compared
// lower-cased), newest first, ties in id order, at most limit; see
// store.Store. An unknown address yields an empty, non-nil slice.
//
// Of an event read from a report, only the report's highest set is
// returned (see the package doc), so a reclassification that moved an
// event to another address removes it from the first address's history.
func (s *Store) RecipientEvents(ctx context.Context, address string, limit int) ([]store.Event, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if limit < 1 {
		return nil, fmt.Errorf("clickhouse: recipient events: limit %d, want at least 1", limit)
	}
	addr := normalizeAddress(address)
	rows, err := s.conn.Query(ctx, s.sql(selectRecipientEvents), addr, addr, uint64(limit))
	if err != nil {
		return nil, fmt.Errorf("clickhouse: recipient events: %w", err)
	}
	defer rows.Close()
	out := []store.Event{}
	for rows.Next() {
		var (
			e                    store.Event
			idx                  uint32
			replyCode            uint16
			class, reason, scope string
		)
		if err := rows.Scan(&e.ID, &e.Version, &e.ReportID, &idx, &e.Time, &e.Source,
			&e.Recipient, &class, &reason, &scope, &e.Status, &replyCode, &e.Action, &e.Diagnostic,
			&e.RemoteMTA, &e.ReportingMTA, &e.SMTPCommand, &e.Provider, &e.Parser, &e.Rule, &e.MessageID,
			&e.Stream, &e.ReturnPath); err != nil {
			return nil, fmt.Errorf("clickhouse: recipient events: %w", err)
		}
		e.Index, e.ReplyCode = int(idx), int(replyCode)
		e.Time = e.Time.UTC()
		e.Class, e.Reason, e.Scope = event.Class(class), event.Reason(reason), event.Scope(scope)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse: recipient events: %w", err)
	}
	return out, nil
}

// Stats' queries. Stats reads stats_minutes, the exact counts of each
// whole minute (the rows of each minute's newest sum), and the seconds
// of the window's partial first minute from stats_seconds; see doc.go
// "Query plans" and write.go's recount. A second's recount counts each
// report id once, and each event id once, in the class of its highest
// version, only when that version is its report's highest committed set.
var (
	// The window's whole minutes.
	selectStatsMinutes = statsSelect("stats_minutes", "minute", "minute >= toDateTime(?)")
	// The seconds from one time to another, both included: the partial
	// first minute of a window.
	selectStatsSeconds = statsSelect("stats_seconds", "second", "second >= toDateTime(?) AND second <= toDateTime(?)")
)

// statsSelect reads the units (unit, a column of table) that match where
// in one pass: per unit the rows of its highest gen (groupUniqArray drops
// the identical rows of two recounts with one gen), then summed by group.
func statsSelect(table, unit, where string) string {
	return `SELECT x.2, x.3, x.4, x.5, sum(x.6), sum(x.7) FROM (
	SELECT ` + unit + `, max(gen) AS g, groupUniqArray(tuple(gen, total, class, reason, provider, events, reports)) AS recounts
	FROM ` + table + `
	WHERE ` + where + `
	GROUP BY ` + unit + `
)
ARRAY JOIN recounts AS x
WHERE x.1 = g
GROUP BY x.2, x.3, x.4, x.5`
}

// recountSelect counts the minutes of stats_log's rows that match where
// ("" for all): recountSelectBy with minutes as the unit.
func recountSelect(where string) string {
	return recountSelectBy("toStartOfMinute(time)", where)
}

// recountSelectBy counts the units (bucket, an expression of time) of
// stats_log's rows that match where ("" for all): per unit, its gen (the
// distinct stats_log rows it read), a total row (total = 1) with the
// reports received, and a row per (class, reason, provider) with the
// events counted. One scan of stats_log, so one snapshot of it: of two
// recounts of a unit, the one with the higher gen saw every row the
// other saw (the table only grows, and a later snapshot holds an earlier
// one), and two with one gen saw the same rows, so they agree (max over
// the whole row picks among rows of one version, not the read order).
func recountSelectBy(bucket, where string) string {
	if where != "" {
		where = "\n\t\t\tWHERE " + where
	}
	return `SELECT minute, gen, e.1, e.2, e.3, e.4, if(e.1 = 1, 0, count()), if(e.1 = 1, any(reports), 0)
FROM (
	SELECT minute, sum(keys) AS gen, sum(reps) AS reports,
		arrayPushFront(groupArrayArray(counted), (toUInt8(1), 'unknown', '', '')) AS elems
	FROM (
		SELECT minute, report_id, sum(keys) AS keys, countIf(kind = 'report') AS reps,
			maxIf(top.1, kind = 'set') AS setv, countIf(kind = 'set') > 0 AS committed,
			arrayMap(x -> (x.2, x.3, x.4, x.5), arrayFilter(x -> report_id = '' OR (committed AND x.1 = setv),
				groupArrayIf(top, kind = 'event'))) AS counted
		FROM (
			SELECT ` + bucket + ` AS minute, kind, report_id, id,
				uniqExact(time, version, class, reason, provider) AS keys,
				max(tuple(version, toUInt8(0), toString(class), reason, provider)) AS top
			FROM stats_log` + where + `
			GROUP BY minute, kind, report_id, id
		)
		GROUP BY minute, report_id
	)
	GROUP BY minute
)
ARRAY JOIN elems AS e
GROUP BY minute, gen, e`
}

// sumSecondsSelect sums the seconds of stats_seconds that match where
// into their minutes, as stats_minutes rows: per second the rows of its
// highest gen (groupUniqArray drops the identical rows of two recounts
// with one gen), per minute their sums by (total, class, reason,
// provider), stamped with 2 × the sum of the seconds' highest gens + 1.
// One scan of stats_seconds, so one snapshot: a later sum saw each second
// at a gen at least as high, so its gen is at least as high, and equal
// gens mean every second at the same recount.
func sumSecondsSelect(where string) string {
	return `SELECT minute, 2 * gen + 1, e.1, e.2, e.3, e.4, sum(e.5), sum(e.6)
FROM (
	SELECT toStartOfMinute(second) AS minute, sum(g) AS gen, groupArrayArray(rows) AS elems
	FROM (
		SELECT second, max(gen) AS g,
			arrayMap(x -> (x.2, x.3, x.4, x.5, x.6, x.7), arrayFilter(x -> x.1 = g,
				groupUniqArray(tuple(gen, total, class, reason, provider, events, reports)))) AS rows
		FROM stats_seconds
		WHERE ` + where + `
		GROUP BY second
	)
	GROUP BY minute
)
ARRAY JOIN elems AS e
GROUP BY minute, gen, e.1, e.2, e.3, e.4`
}

// Stats counts reports received and events by class since a time; see
// store.Store. The two counts are separate queries: ClickHouse has no
// snapshot across them, so a Write that lands between them is in one and
// not the other.
func (s *Store) Stats(ctx context.Context, since time.Time) (store.Stats, error) {
	if err := s.gate.Enter(); err != nil {
		return store.Stats{}, err
	}
	defer s.gate.Leave()
	st, err := s.stats(ctx, since)
	if err != nil {
		return store.Stats{}, fmt.Errorf("clickhouse: stats: %w", err)
	}
	return st, nil
}

func (s *Store) stats(ctx context.Context, since time.Time) (store.Stats, error) {
	st := store.NewStats(since)
	from := clampSeconds(since)
	// Whole minutes from stats_minutes; the seconds of a window that
	// starts inside a minute from stats_seconds.
	whole := uint64(from)
	if from%60 != 0 {
		whole = whole - whole%60 + 60
		rows, err := s.conn.Query(ctx, selectStatsSeconds, from, uint32(min(whole-1, math.MaxUint32)))
		if err != nil {
			return st, err
		}
		err = addStatsRows(&st, rows)
		rows.Close()
		if err != nil {
			return st, err
		}
	}
	whole = min(whole, math.MaxUint32) // a window in DateTime's last minute has no whole minute
	rows, err := s.conn.Query(ctx, selectStatsMinutes, uint32(whole))
	if err != nil {
		return st, err
	}
	defer rows.Close()
	return st, addStatsRows(&st, rows)
}

// statsRows is what addStatsRows reads: driver.Rows' part it uses.
type statsRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// addStatsRows adds rows of (total, class, reason, provider, events,
// reports) to st.
func addStatsRows(st *store.Stats, rows statsRows) error {
	for rows.Next() {
		var (
			events, reports         uint64
			total                   uint8
			class, reason, provider string
		)
		if err := rows.Scan(&total, &class, &reason, &provider, &events, &reports); err != nil {
			return err
		}
		if total == 1 {
			st.ReportsReceived += int64(reports)
			continue
		}
		if events > 0 {
			st.Add(store.StatsKey{Class: event.Class(class), Reason: event.Reason(reason), Provider: provider}, int64(events))
		}
	}
	return rows.Err()
}

// clampSeconds is a window's start as DateTime seconds, rounded up, so
// the window holds no stored second before since: times before 1970 (the
// zero time: "everything") become 0, times past DateTime's end its last
// second, instead of wrapping around.
func clampSeconds(t time.Time) uint32 {
	switch {
	case t.Before(minTime):
		return 0
	case !t.Before(maxTime):
		return uint32(maxTime.Unix())
	}
	secs := t.Unix()
	if t.Nanosecond() != 0 {
		secs++
	}
	return uint32(secs)
}
