package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/bouncer-mail/bouncer/store"
)

// Stats' rollup (migration 6) is kept by Write, in its transaction, from
// the rows it inserted: a report counts in the minute it was received, an
// event in the minute of its time, in the class, reason and provider of
// the newest version of its set. Sets are what newest reads: a report's
// events of its highest version, and for an event with no report, the
// highest version of its id. (An event id belongs to one report: it is
// store.EventID of the report and the index.)
//
// A set's count changes only when Write inserts a row of it:
//   - rows of a version below the set's stored top change nothing;
//   - rows of the top version join it (a set written in parts);
//   - rows of a higher version replace it: the stored top's rows are
//     taken out of their minutes, the new ones put in.
//
// Write runs in one IMMEDIATE transaction, so the tops it reads are the
// ones its inserts change, and the counts commit with the rows or not at
// all: a retried batch inserts nothing and counts nothing.

const nsPerMinute = int64(time.Minute)

// minuteOf is the rollup's minute of a time in Unix nanoseconds: floor
// division, also before 1970.
func minuteOf(ns int64) int64 {
	m := ns / nsPerMinute
	if ns%nsPerMinute < 0 {
		m--
	}
	return m
}

type statsMinuteKey struct {
	minute                  int64
	class, reason, provider string
}

// statsDelta is what one Write changes in the rollup.
type statsDelta struct {
	events  map[statsMinuteKey]int64
	reports map[int64]int64
}

func (d *statsDelta) addEvent(ns int64, class, reason, provider string, n int64) {
	if d.events == nil {
		d.events = make(map[statsMinuteKey]int64)
	}
	d.events[statsMinuteKey{minuteOf(ns), class, reason, provider}] += n
}

func (d *statsDelta) addReport(ns int64) {
	if d.reports == nil {
		d.reports = make(map[int64]int64)
	}
	d.reports[minuteOf(ns)]++
}

// setKey names an event's set: its report, or, with none, its id.
type setKey struct {
	report, id string
}

func eventSet(e store.Event) setKey {
	if e.ReportID != "" {
		return setKey{report: e.ReportID}
	}
	return setKey{id: e.ID}
}

const (
	selectReportTops = `SELECT report_id, max(version) FROM events
	WHERE report_id IN (SELECT value FROM json_each(?)) GROUP BY report_id`
	selectIDTops = `SELECT id, max(version) FROM events
	WHERE report_id = '' AND id IN (SELECT value FROM json_each(?)) GROUP BY id`
	selectReportSet   = `SELECT time, class, reason, provider FROM events WHERE report_id = ? AND version = ?`
	selectIDSet       = `SELECT time, class, reason, provider FROM events WHERE report_id = '' AND id = ? AND version = ?`
	upsertStatsMinute = `INSERT INTO stats_minutes (minute, class, reason, provider, events) VALUES (?, ?, ?, ?, ?)
	ON CONFLICT (minute, class, reason, provider) DO UPDATE SET events = events + excluded.events`
	upsertStatsReports = `INSERT INTO stats_report_minutes (minute, reports) VALUES (?, ?)
	ON CONFLICT (minute) DO UPDATE SET reports = reports + excluded.reports`
)

// setTops returns the highest stored version of each set of events, for
// the sets that have rows stored.
func setTops(ctx context.Context, tx *sql.Tx, events []store.Event) (map[setKey]int64, error) {
	var reports, ids []string
	seen := make(map[setKey]bool)
	for _, e := range events {
		k := eventSet(e)
		if seen[k] {
			continue
		}
		seen[k] = true
		if k.report != "" {
			reports = append(reports, k.report)
		} else {
			ids = append(ids, k.id)
		}
	}
	tops := make(map[setKey]int64)
	read := func(query string, keys []string, key func(string) setKey) error {
		if len(keys) == 0 {
			return nil
		}
		list, err := json.Marshal(keys)
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, query, string(list))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				k string
				v int64
			)
			if err := rows.Scan(&k, &v); err != nil {
				return err
			}
			tops[key(k)] = v
		}
		return rows.Err()
	}
	if err := read(selectReportTops, reports, func(r string) setKey { return setKey{report: r} }); err != nil {
		return nil, fmt.Errorf("reading the stored versions of reports: %w", err)
	}
	if err := read(selectIDTops, ids, func(id string) setKey { return setKey{id: id} }); err != nil {
		return nil, fmt.Errorf("reading the stored versions of events: %w", err)
	}
	return tops, nil
}

// uncountReplaced takes out of d the stored sets that events replace:
// those with a stored top below a version among events. It runs before
// the inserts, so it reads the stored rows only. (A row of a version
// above its set's stored top cannot be stored already, so it will be
// inserted.)
func uncountReplaced(ctx context.Context, tx *sql.Tx, d *statsDelta, tops map[setKey]int64, events []store.Event) error {
	replaced := make(map[setKey]bool)
	for _, e := range events {
		k := eventSet(e)
		if old, stored := tops[k]; stored && int64(e.Version) > old && !replaced[k] {
			replaced[k] = true
			if err := uncountSet(ctx, tx, d, k, old); err != nil {
				return err
			}
		}
	}
	return nil
}

// countInserted adds to d the inserted events that are in their set's
// newest version, given the tops the sets had before (setTops).
func countInserted(d *statsDelta, tops map[setKey]int64, inserted []store.Event) {
	newTops := make(map[setKey]int64)
	for _, e := range inserted {
		k := eventSet(e)
		newTops[k] = max(newTops[k], int64(e.Version))
	}
	for _, e := range inserted {
		k := eventSet(e)
		top := newTops[k]
		if old, stored := tops[k]; stored && top < old {
			continue // older versions only: the stored set still counts
		}
		if int64(e.Version) == top {
			d.addEvent(unixNano(e.Time), string(e.Class), string(e.Reason), e.Provider, 1)
		}
	}
}

// uncountSet takes the stored rows of set k's version out of d.
func uncountSet(ctx context.Context, tx *sql.Tx, d *statsDelta, k setKey, version int64) error {
	var (
		rows *sql.Rows
		err  error
	)
	if k.report != "" {
		rows, err = tx.QueryContext(ctx, selectReportSet, k.report, version)
	} else {
		rows, err = tx.QueryContext(ctx, selectIDSet, k.id, version)
	}
	if err != nil {
		return fmt.Errorf("reading a replaced set: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			ns                      int64
			class, reason, provider string
		)
		if err := rows.Scan(&ns, &class, &reason, &provider); err != nil {
			return fmt.Errorf("reading a replaced set: %w", err)
		}
		d.addEvent(ns, class, reason, provider, -1)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading a replaced set: %w", err)
	}
	return nil
}

// writeStatsDelta adds d to the rollup's rows.
func writeStatsDelta(ctx context.Context, tx *sql.Tx, d *statsDelta) error {
	if len(d.events) > 0 {
		stmt, err := tx.PrepareContext(ctx, upsertStatsMinute)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for k, n := range d.events {
			if n == 0 {
				continue
			}
			if _, err := stmt.ExecContext(ctx, k.minute, k.class, k.reason, k.provider, n); err != nil {
				return fmt.Errorf("stats minute: %w", err)
			}
		}
	}
	if len(d.reports) > 0 {
		stmt, err := tx.PrepareContext(ctx, upsertStatsReports)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for m, n := range d.reports {
			if _, err := stmt.ExecContext(ctx, m, n); err != nil {
				return fmt.Errorf("stats reports minute: %w", err)
			}
		}
	}
	return nil
}
