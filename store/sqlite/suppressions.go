package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

var _ store.SuppressionStore = (*Store)(nil)

// upsertSuppression replaces a key's row, in force or removed, and
// returns the Updated it got: the write's time, or one nanosecond after
// the replaced row's when that is later (a clock that stepped back, two
// writes of one key in one nanosecond, one batch holding a key twice).
const upsertSuppression = `INSERT INTO suppressions
	(address, stream, source, class, reason, rule, since, until, actor, note, updated, removed)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)
	ON CONFLICT (address, stream) DO UPDATE SET
		source = excluded.source, class = excluded.class, reason = excluded.reason,
		rule = excluded.rule, since = excluded.since, until = excluded.until,
		actor = excluded.actor, note = excluded.note,
		updated = max(excluded.updated, suppressions.updated + 1), removed = NULL
	RETURNING updated`

const insertAudit = `INSERT INTO suppression_audit
	(time, address, stream, action, source, actor, note, class, reason, rule)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// suppressionColumns are read in this order by scanSuppression.
const suppressionColumns = `address, stream, source, class, reason, rule, since, until, actor, note, updated`

// inForce keeps the rows in force at the instant bound twice after it:
// not removed, started, not ended.
const inForce = `removed IS NULL AND since <= ? AND (until = 0 OR until > ?)`

// selectAddressSuppressions is a range of the primary key: address is
// its first column.
const selectAddressSuppressions = `SELECT ` + suppressionColumns + `
	FROM suppressions
	WHERE address = ? AND ` + inForce + `
	ORDER BY stream`

// selectSuppressions pages by the primary key, and EachSuppression
// reads the whole list with it (limit -1: none). Arguments: the cursor
// (address, stream); now twice; since; all streams (0 or 1) and the
// stream; the limit.
const selectSuppressions = `SELECT ` + suppressionColumns + `
	FROM suppressions
	WHERE (address, stream) > (?, ?) AND ` + inForce + ` AND since >= ?
		AND (? OR stream = ? OR stream = '')
	ORDER BY address, stream
	LIMIT ?`

// selectAddressesSince reads the updated column of every row: a scan of
// the table, which SQLite has no reason to avoid (CheckSuppressions does
// not use a filter here, so only a caller of SuppressionAddressesSince
// pays it).
const selectAddressesSince = `SELECT address FROM suppressions WHERE updated >= ?`

const selectSuppressionStats = `SELECT source, class, stream, count(*)
	FROM suppressions
	WHERE ` + inForce + `
	GROUP BY source, class, stream`

// selectSuppressionHistory reads the index (address, time) backwards;
// the rowid, which every index entry ends with, breaks ties in the
// order of writing.
const selectSuppressionHistory = `SELECT time, address, stream, action, source, actor, note, class, reason, rule
	FROM suppression_audit
	WHERE address = ?
	ORDER BY time DESC, id DESC
	LIMIT ?`

const selectLatestRemoval = `SELECT max(time) FROM suppression_audit WHERE address = ? AND action = '` + store.ActionRemove + `'`

// suppressionEpoch is the earliest time a suppression may hold: until is
// 0 for "never", so no stored time may be 0 or before it.
var suppressionEpoch = time.Unix(0, 0).UTC()

// checkSuppressionTime refuses a time the columns cannot hold: before
// 1970 (0 means "never" in until) or past int64 nanoseconds (2262).
func checkSuppressionTime(t time.Time) error {
	if t.Before(suppressionEpoch) || t.After(maxTime) {
		return fmt.Errorf("%s outside %s to %s", t.UTC().Format(time.RFC3339Nano),
			suppressionEpoch.Format(time.RFC3339), maxTime.Format(time.RFC3339))
	}
	return nil
}

// PutSuppressions stores rows, each replacing its key's, and their audit
// lines in one transaction; see store.SuppressionStore.
func (s *Store) PutSuppressions(ctx context.Context, rows []store.Suppression) (err error) {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	if len(rows) == 0 {
		return nil
	}
	if err := store.ValidateSuppressions(rows); err != nil {
		return fmt.Errorf("sqlite: put suppressions: %w", err)
	}
	for _, r := range rows {
		if err := checkSuppressionTime(r.Since); err != nil {
			return fmt.Errorf("sqlite: put suppressions: %s: since: %w", r.Address, err)
		}
		if !r.Until.IsZero() {
			if err := checkSuppressionTime(r.Until); err != nil {
				return fmt.Errorf("sqlite: put suppressions: %s: until: %w", r.Address, err)
			}
		}
	}

	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: put suppressions: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	upsert, err := tx.PrepareContext(ctx, upsertSuppression)
	if err != nil {
		return fmt.Errorf("sqlite: put suppressions: %w", err)
	}
	defer upsert.Close()
	audit, err := tx.PrepareContext(ctx, insertAudit)
	if err != nil {
		return fmt.Errorf("sqlite: put suppressions: %w", err)
	}
	defer audit.Close()
	now := time.Now().UnixNano()
	for _, r := range rows {
		var updated int64
		if err := upsert.QueryRowContext(ctx, r.Address, r.Stream, r.Source, string(r.Class), string(r.Reason),
			r.Rule, unixNano(r.Since), untilNano(r.Until), r.Actor, r.Note, now).Scan(&updated); err != nil {
			return fmt.Errorf("sqlite: put suppressions: %s/%s: %w", r.Address, r.Stream, err)
		}
		if _, err := audit.ExecContext(ctx, updated, r.Address, r.Stream, store.ActionAdd, r.Source,
			r.Actor, r.Note, string(r.Class), string(r.Reason), r.Rule); err != nil {
			return fmt.Errorf("sqlite: put suppressions: %s/%s: audit: %w", r.Address, r.Stream, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: put suppressions: commit: %w", err)
	}
	return nil
}

// RemoveSuppression marks key's row removed and appends change to the
// audit trail, in one transaction, when the row is in force at
// change.Time; see store.SuppressionStore.
func (s *Store) RemoveSuppression(ctx context.Context, key store.SuppressionKey, change store.SuppressionChange) (err error) {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	if err := store.ValidateChange(key, change); err != nil {
		return fmt.Errorf("sqlite: remove suppression: %w", err)
	}
	if err := checkSuppressionTime(change.Time); err != nil {
		return fmt.Errorf("sqlite: remove suppression: %s: time: %w", key.Address, err)
	}
	at := unixNano(change.Time)

	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: remove suppression: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	res, err := tx.ExecContext(ctx, `UPDATE suppressions
		SET removed = ?, updated = max(?, updated + 1)
		WHERE address = ? AND stream = ? AND `+inForce,
		at, time.Now().UnixNano(), key.Address, key.Stream, at, at)
	if err != nil {
		return fmt.Errorf("sqlite: remove suppression: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlite: remove suppression: %w", err)
	}
	if n == 0 {
		// Nothing in force at change.Time: the deferred rollback ends
		// the transaction, nothing written.
		return fmt.Errorf("sqlite: remove suppression %s/%s: %w", key.Address, key.Stream, store.ErrNotFound)
	}
	if _, err := tx.ExecContext(ctx, insertAudit, at, change.Address, change.Stream, store.ActionRemove,
		change.Source, change.Actor, change.Note, string(change.Class), string(change.Reason), change.Rule); err != nil {
		return fmt.Errorf("sqlite: remove suppression: audit: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: remove suppression: commit: %w", err)
	}
	return nil
}

// AddressSuppressions returns address's suppressions in force at now, by
// stream; see store.SuppressionStore. One primary-key range.
func (s *Store) AddressSuppressions(ctx context.Context, address string, now time.Time) ([]store.Suppression, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if now.IsZero() {
		return nil, fmt.Errorf("sqlite: address suppressions: now: %w", store.ErrZeroTime)
	}
	stmt, err := s.preparedAddressSuppressions(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlite: address suppressions: %w", err)
	}
	at := clampUnixNano(now)
	rows, err := stmt.QueryContext(ctx, normalizeAddress(address), at, at)
	if err != nil {
		return nil, fmt.Errorf("sqlite: address suppressions: %w", err)
	}
	out, err := scanSuppressions(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: address suppressions: %w", err)
	}
	return out, nil
}

// preparedAddressSuppressions returns selectAddressSuppressions prepared
// on the read pool, preparing it on first use: parsing and planning it
// anew would take twice as long as the lookup itself
// (BenchmarkAddressSuppressions). Closing the pool closes it.
func (s *Store) preparedAddressSuppressions(ctx context.Context) (*sql.Stmt, error) {
	if stmt := s.addressStmt.Load(); stmt != nil {
		return stmt, nil
	}
	stmt, err := s.r.PrepareContext(ctx, selectAddressSuppressions)
	if err != nil {
		return nil, err
	}
	if !s.addressStmt.CompareAndSwap(nil, stmt) {
		stmt.Close() // another call prepared it first
	}
	return s.addressStmt.Load(), nil
}

// CheckSuppressions is AddressSuppressions: a primary-key lookup costs
// SQLite about 15 µs (BenchmarkAddressSuppressions), less than a
// membership filter would save, and it sees every write at once.
func (s *Store) CheckSuppressions(ctx context.Context, address string, now time.Time) ([]store.Suppression, error) {
	return s.AddressSuppressions(ctx, address, now)
}

// Suppressions lists one page of the suppressions in force, in key
// order; see store.SuppressionStore.
func (s *Store) Suppressions(ctx context.Context, q store.SuppressionQuery) ([]store.Suppression, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("sqlite: suppressions: %w", err)
	}
	at := clampUnixNano(q.Now)
	rows, err := s.r.QueryContext(ctx, selectSuppressions, q.After.Address, q.After.Stream, at, at,
		clampUnixNano(q.Since), q.AllStreams, q.Stream, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: suppressions: %w", err)
	}
	out, err := scanSuppressions(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: suppressions: %w", err)
	}
	return out, nil
}

// EachSuppression hands fn every suppression in force that q selects,
// in key order, from one SELECT iterated row by row (one read
// transaction: one snapshot); see store.SuppressionStore.
func (s *Store) EachSuppression(ctx context.Context, q store.SuppressionQuery, fn func(store.Suppression) error) error {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	if err := q.ValidateEach(); err != nil {
		return fmt.Errorf("sqlite: each suppression: %w", err)
	}
	limit := q.Limit
	if limit == 0 {
		limit = -1 // SQLite: no limit
	}
	at := clampUnixNano(q.Now)
	rows, err := s.r.QueryContext(ctx, selectSuppressions, q.After.Address, q.After.Stream, at, at,
		clampUnixNano(q.Since), q.AllStreams, q.Stream, limit)
	if err != nil {
		return fmt.Errorf("sqlite: each suppression: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanSuppression(rows)
		if err != nil {
			return fmt.Errorf("sqlite: each suppression: %w", err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: each suppression: %w", err)
	}
	return nil
}

// SuppressionAddressesSince hands fn the address of every row whose
// updated is at or after since; see store.SuppressionStore. A row holds
// its key's latest write, put or removal, so each address comes once per
// stream it has a row on.
func (s *Store) SuppressionAddressesSince(ctx context.Context, since time.Time, fn func(address string) error) error {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	rows, err := s.r.QueryContext(ctx, selectAddressesSince, clampUnixNano(since))
	if err != nil {
		return fmt.Errorf("sqlite: suppression addresses: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return fmt.Errorf("sqlite: suppression addresses: %w", err)
		}
		if err := fn(a); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: suppression addresses: %w", err)
	}
	return nil
}

// SuppressionHistory returns address's audit trail, newest first; see
// store.SuppressionStore.
func (s *Store) SuppressionHistory(ctx context.Context, address string, limit int) ([]store.SuppressionChange, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if limit < 1 {
		return nil, fmt.Errorf("sqlite: suppression history: limit %d, want at least 1", limit)
	}
	rows, err := s.r.QueryContext(ctx, selectSuppressionHistory, normalizeAddress(address), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: suppression history: %w", err)
	}
	defer rows.Close()
	out := []store.SuppressionChange{}
	for rows.Next() {
		var (
			c             store.SuppressionChange
			at            int64
			class, reason string
		)
		if err := rows.Scan(&at, &c.Address, &c.Stream, &c.Action, &c.Source, &c.Actor, &c.Note,
			&class, &reason, &c.Rule); err != nil {
			return nil, fmt.Errorf("sqlite: suppression history: %w", err)
		}
		c.Time = fromUnixNano(at)
		c.Class, c.Reason = event.Class(class), event.Reason(reason)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: suppression history: %w", err)
	}
	return out, nil
}

// LatestRemoval returns the time of address's latest removal; see
// store.SuppressionStore.
func (s *Store) LatestRemoval(ctx context.Context, address string) (time.Time, error) {
	if err := s.gate.Enter(); err != nil {
		return time.Time{}, err
	}
	defer s.gate.Leave()
	var at sql.NullInt64
	if err := s.r.QueryRowContext(ctx, selectLatestRemoval, normalizeAddress(address)).Scan(&at); err != nil {
		return time.Time{}, fmt.Errorf("sqlite: latest removal: %w", err)
	}
	if !at.Valid {
		return time.Time{}, nil
	}
	return fromUnixNano(at.Int64), nil
}

// SuppressionStats counts the suppressions in force at now; see
// store.SuppressionStore.
func (s *Store) SuppressionStats(ctx context.Context, now time.Time) (store.SuppressionStats, error) {
	if err := s.gate.Enter(); err != nil {
		return store.SuppressionStats{}, err
	}
	defer s.gate.Leave()
	if now.IsZero() {
		return store.SuppressionStats{}, fmt.Errorf("sqlite: suppression stats: now: %w", store.ErrZeroTime)
	}
	at := clampUnixNano(now)
	rows, err := s.r.QueryContext(ctx, selectSuppressionStats, at, at)
	if err != nil {
		return store.SuppressionStats{}, fmt.Errorf("sqlite: suppression stats: %w", err)
	}
	defer rows.Close()
	st := store.NewSuppressionStats()
	for rows.Next() {
		var (
			source, class, stream string
			n                     int64
		)
		if err := rows.Scan(&source, &class, &stream, &n); err != nil {
			return store.SuppressionStats{}, fmt.Errorf("sqlite: suppression stats: %w", err)
		}
		st.Total += n
		st.BySource[source] += n
		st.ByClass[event.Class(class)] += n
		st.ByStream[stream] += n
	}
	if err := rows.Err(); err != nil {
		return store.SuppressionStats{}, fmt.Errorf("sqlite: suppression stats: %w", err)
	}
	return st, nil
}

// scanSuppressions reads suppressionColumns rows and closes them.
func scanSuppressions(rows *sql.Rows) ([]store.Suppression, error) {
	defer rows.Close()
	out := []store.Suppression{}
	for rows.Next() {
		r, err := scanSuppression(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// scanSuppression reads the current row of suppressionColumns rows.
func scanSuppression(rows *sql.Rows) (store.Suppression, error) {
	var (
		r                     store.Suppression
		class, reason         string
		since, until, updated int64
	)
	if err := rows.Scan(&r.Address, &r.Stream, &r.Source, &class, &reason, &r.Rule,
		&since, &until, &r.Actor, &r.Note, &updated); err != nil {
		return r, err
	}
	r.Class, r.Reason = event.Class(class), event.Reason(reason)
	r.Since, r.Updated = fromUnixNano(since), fromUnixNano(updated)
	if until != 0 {
		r.Until = fromUnixNano(until)
	}
	return r, nil
}

// untilNano is Until as stored: 0 for never.
func untilNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return unixNano(t)
}
