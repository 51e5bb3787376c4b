package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// upsertOutcome replaces a key's row only when the new version is higher.
// The table's key is (recipient, key) (migration 7); a key names one
// recipient's group, so the pair is the key alone.
// Versions are uint64 (store.OutcomeVersion) stored as int64: the
// observations count would need 2^31 events to reach the sign bit.
const upsertOutcome = `INSERT INTO outcomes
	(key, version, stream, message_id, recipient, state, class, reason, scope, provider,
	 final, first, last, observations)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT(recipient, key) DO UPDATE SET
		version = excluded.version, stream = excluded.stream, message_id = excluded.message_id,
		state = excluded.state, class = excluded.class,
		reason = excluded.reason, scope = excluded.scope, provider = excluded.provider,
		final = excluded.final, first = excluded.first, last = excluded.last,
		observations = excluded.observations
	WHERE excluded.version > outcomes.version`

const selectRecipientOutcomes = `SELECT key, version, stream, message_id, recipient, state, class,
	reason, scope, provider, final, first, last, observations
	FROM outcomes
	WHERE recipient = ?
	ORDER BY last DESC, key`

// WriteOutcomes stores outcomes in one transaction; see store.Store.
func (s *Store) WriteOutcomes(ctx context.Context, outcomes []store.Outcome) (err error) {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	if len(outcomes) == 0 {
		return nil
	}
	if err := store.ValidateOutcomes(outcomes); err != nil {
		return fmt.Errorf("sqlite: write outcomes: %w", err)
	}
	for _, o := range outcomes {
		if err := checkTime(o.First); err != nil {
			return fmt.Errorf("sqlite: write outcomes: %s: first: %w", o.Key, err)
		}
		if err := checkTime(o.Last); err != nil {
			return fmt.Errorf("sqlite: write outcomes: %s: last: %w", o.Key, err)
		}
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: write outcomes: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	stmt, err := tx.PrepareContext(ctx, upsertOutcome)
	if err != nil {
		return fmt.Errorf("sqlite: write outcomes: %w", err)
	}
	defer stmt.Close()
	for _, o := range outcomes {
		final := 0
		if o.Final {
			final = 1
		}
		if _, err := stmt.ExecContext(ctx, o.Key, int64(o.Version), o.Stream, o.MessageID,
			normalizeAddress(o.Recipient), o.State, string(o.Class), string(o.Reason), string(o.Scope),
			o.Provider, final, unixNano(o.First), unixNano(o.Last), int64(o.Observations)); err != nil {
			return fmt.Errorf("sqlite: write outcomes: %s: %w", o.Key, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: write outcomes: commit: %w", err)
	}
	return nil
}

// RecipientOutcomes returns address's stored outcomes, newest last
// first; see store.Store.
func (s *Store) RecipientOutcomes(ctx context.Context, address string) ([]store.Outcome, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	rows, err := s.r.QueryContext(ctx, selectRecipientOutcomes, normalizeAddress(address))
	if err != nil {
		return nil, fmt.Errorf("sqlite: recipient outcomes: %w", err)
	}
	defer rows.Close()
	out, err := scanOutcomes(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: recipient outcomes: %w", err)
	}
	return out, nil
}

// scanOutcomes reads the rows of selectRecipientOutcomes, an empty,
// non-nil slice when there are none.
func scanOutcomes(rows *sql.Rows) ([]store.Outcome, error) {
	out := []store.Outcome{}
	for rows.Next() {
		var (
			o                    store.Outcome
			version, first, last int64
			final, observations  int64
			class, reason, scope string
		)
		if err := rows.Scan(&o.Key, &version, &o.Stream, &o.MessageID, &o.Recipient, &o.State,
			&class, &reason, &scope, &o.Provider, &final, &first, &last, &observations); err != nil {
			return nil, err
		}
		o.Version = uint64(version)
		o.Class, o.Reason, o.Scope = event.Class(class), event.Reason(reason), event.Scope(scope)
		o.Final = final != 0
		o.First, o.Last = fromUnixNano(first), fromUnixNano(last)
		o.Observations = int(observations)
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
