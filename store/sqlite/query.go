package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// newest keeps only the highest version of each event id and, for an
// event read from a report, only the events of the report's highest
// version: a report's events are a set, and a reclassification's set
// replaces the whole older one, also when it has fewer events. e is the
// outer events row. The primary key (id, version) and the index
// (report_id, version) answer each subquery with one seek.
const newest = `NOT EXISTS (SELECT 1 FROM events n WHERE n.id = e.id AND n.version > e.version)
	AND (e.report_id = '' OR e.version = (SELECT max(m.version) FROM events m WHERE m.report_id = e.report_id))`

const selectRecipientEvents = `SELECT
	e.id, e.version, e.report_id, e.idx, e.time, e.source,
	e.recipient, e.class, e.reason, e.scope, e.status, e.reply_code, e.action, e.diagnostic,
	e.remote_mta, e.reporting_mta, e.smtp_command, e.provider, e.parser, e.rule, e.message_id,
	e.stream, e.return_path
	FROM events e
	WHERE e.recipient = ? AND ` + newest + `
	ORDER BY e.time DESC, e.id
	LIMIT ?`

// RecipientEvents returns the newest events of address (compared
// lower-cased), newest first, ties in id order, at most limit; see
// store.Store. An unknown address yields an empty, non-nil slice.
func (s *Store) RecipientEvents(ctx context.Context, address string, limit int) ([]store.Event, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if limit < 1 {
		return nil, fmt.Errorf("sqlite: recipient events: limit %d, want at least 1", limit)
	}
	rows, err := s.r.QueryContext(ctx, selectRecipientEvents, normalizeAddress(address), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: recipient events: %w", err)
	}
	defer rows.Close()
	out, err := scanEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: recipient events: %w", err)
	}
	return out, nil
}

// scanEvents reads the rows of selectRecipientEvents, an empty, non-nil
// slice when there are none.
func scanEvents(rows *sql.Rows) ([]store.Event, error) {
	out := []store.Event{}
	for rows.Next() {
		var (
			e       store.Event
			version int64
			t       int64
			class   string
			reason  string
			scope   string
		)
		if err := rows.Scan(&e.ID, &version, &e.ReportID, &e.Index, &t, &e.Source,
			&e.Recipient, &class, &reason, &scope, &e.Status, &e.ReplyCode, &e.Action, &e.Diagnostic,
			&e.RemoteMTA, &e.ReportingMTA, &e.SMTPCommand, &e.Provider, &e.Parser, &e.Rule, &e.MessageID,
			&e.Stream, &e.ReturnPath); err != nil {
			return nil, err
		}
		e.Version = uint32(version)
		e.Time = fromUnixNano(t)
		e.Class, e.Reason, e.Scope = event.Class(class), event.Reason(reason), event.Scope(scope)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// Stats counts reports received and events by class since a time, both
// from one snapshot; see store.Store. Each event id counts once, in the
// class of its highest version.
func (s *Store) Stats(ctx context.Context, since time.Time) (store.Stats, error) {
	if err := s.gate.Enter(); err != nil {
		return store.Stats{}, err
	}
	defer s.gate.Leave()
	st, err := s.stats(ctx, since)
	if err != nil {
		return store.Stats{}, fmt.Errorf("sqlite: stats: %w", err)
	}
	return st, nil
}

// stats reads whole minutes from the rollup (stats.go), and the part of
// a window that starts inside a minute from the rows, in one read
// transaction.
func (s *Store) stats(ctx context.Context, since time.Time) (store.Stats, error) {
	st := store.NewStats(since)
	from := clampUnixNano(since)
	whole, partial := minuteOf(from), from%nsPerMinute != 0
	if partial {
		whole++
	}

	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return st, err
	}
	defer tx.Rollback()

	add := func(rows *sql.Rows, err error) error {
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				class, reason, provider string
				n                       int64
			)
			if err := rows.Scan(&class, &reason, &provider, &n); err != nil {
				return err
			}
			if n != 0 {
				st.Add(store.StatsKey{Class: event.Class(class), Reason: event.Reason(reason), Provider: provider}, n)
			}
		}
		return rows.Err()
	}
	if partial {
		// The seconds before the first whole minute, to its start or, when
		// that is past the last nanosecond, to the end.
		to := int64(math.MaxInt64)
		if whole <= math.MaxInt64/nsPerMinute {
			to = whole*nsPerMinute - 1
		}
		var n int64
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM reports WHERE received BETWEEN ? AND ?", from, to).
			Scan(&n); err != nil {
			return st, err
		}
		st.ReportsReceived += n
		if err := add(tx.QueryContext(ctx, `SELECT e.class, e.reason, e.provider, count(*) FROM events e
			WHERE e.time BETWEEN ? AND ? AND `+newest+`
			GROUP BY e.class, e.reason, e.provider`, from, to)); err != nil {
			return st, err
		}
	}
	var n int64
	if err := tx.QueryRowContext(ctx, "SELECT coalesce(sum(reports), 0) FROM stats_report_minutes WHERE minute >= ?", whole).
		Scan(&n); err != nil {
		return st, err
	}
	st.ReportsReceived += n
	if err := add(tx.QueryContext(ctx, `SELECT class, reason, provider, sum(events) FROM stats_minutes
		WHERE minute >= ? GROUP BY class, reason, provider`, whole)); err != nil {
		return st, err
	}
	return st, nil
}

// clampUnixNano is unixNano for a bound: times beyond int64 nanoseconds
// become the smallest or largest one instead of wrapping around.
func clampUnixNano(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return minTime.UnixNano()
	case t.After(maxTime):
		return maxTime.UnixNano()
	}
	return unixNano(t)
}
