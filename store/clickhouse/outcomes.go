package clickhouse

import (
	"context"
	"fmt"
	"math"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

var insertOutcomes = "INSERT INTO outcomes " + outcomesTable.columnList()

// selectRecipientOutcomes takes each key's row of the highest version, as
// one argMax over a tuple (see query.go): t.1 is version, t.2 stream, ...
const selectRecipientOutcomes = `SELECT key,
	t.1, t.2, t.3, t.4, t.5, t.6, t.7, t.8, t.9, t.10, t.11, t.12, t.13
FROM (
	SELECT key, argMax(tuple(version, stream, message_id, recipient, state, class,
		reason, scope, provider, final, first, last, observations), version) AS t
	FROM outcomes
	WHERE recipient = ?
	GROUP BY key
)
ORDER BY t.12 DESC, key`

// WriteOutcomes inserts outcomes; see store.Store. Every row is inserted:
// merges and reads keep each key's highest version, so a lower or equal
// version changes nothing a reader sees. One INSERT, so nothing is
// written when a row is invalid; like Write, a failed call may have
// stored part of the rows on a cluster, and a retry is harmless.
func (s *Store) WriteOutcomes(ctx context.Context, outcomes []store.Outcome) error {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	if len(outcomes) == 0 {
		return nil
	}
	if err := store.ValidateOutcomes(outcomes); err != nil {
		return fmt.Errorf("clickhouse: write outcomes: %w", err)
	}
	for _, o := range outcomes {
		if err := checkTime(o.First); err != nil {
			return fmt.Errorf("clickhouse: write outcomes: %s: first: %w", o.Key, err)
		}
		if err := checkTime(o.Last); err != nil {
			return fmt.Errorf("clickhouse: write outcomes: %s: last: %w", o.Key, err)
		}
		if o.Observations < 0 || int64(o.Observations) > math.MaxUint32 {
			return fmt.Errorf("clickhouse: write outcomes: %s: observations %d do not fit UInt32", o.Key, o.Observations)
		}
	}
	b, err := s.conn.PrepareBatch(ch.Context(ctx, ch.WithSettings(insertSettings)), insertOutcomes)
	if err != nil {
		return fmt.Errorf("clickhouse: write outcomes: %w", err)
	}
	defer b.Abort() // a no-op after Send
	for _, o := range outcomes {
		final := uint8(0)
		if o.Final {
			final = 1
		}
		if err := b.Append(o.Key, o.Version, o.Stream, o.MessageID, normalizeAddress(o.Recipient),
			o.State, string(o.Class), string(o.Reason), string(o.Scope), o.Provider, final,
			o.First.UTC(), o.Last.UTC(), uint32(o.Observations)); err != nil {
			return fmt.Errorf("clickhouse: write outcomes: %s: %w", o.Key, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("clickhouse: write outcomes: %w", err)
	}
	return nil
}

// RecipientOutcomes returns address's stored outcomes, each key's highest
// version, newest last first; see store.Store.
func (s *Store) RecipientOutcomes(ctx context.Context, address string) ([]store.Outcome, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	rows, err := s.conn.Query(ctx, selectRecipientOutcomes, normalizeAddress(address))
	if err != nil {
		return nil, fmt.Errorf("clickhouse: recipient outcomes: %w", err)
	}
	defer rows.Close()
	out := []store.Outcome{}
	for rows.Next() {
		o, err := scanOutcome(rows)
		if err != nil {
			return nil, fmt.Errorf("clickhouse: recipient outcomes: %w", err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse: recipient outcomes: %w", err)
	}
	return out, nil
}

// scanOutcome reads one row of selectRecipientOutcomes.
func scanOutcome(rows driver.Rows) (store.Outcome, error) {
	var (
		o                    store.Outcome
		class, reason, scope string
		final                uint8
		observations         uint32
	)
	if err := rows.Scan(&o.Key, &o.Version, &o.Stream, &o.MessageID, &o.Recipient, &o.State,
		&class, &reason, &scope, &o.Provider, &final, &o.First, &o.Last, &observations); err != nil {
		return o, err
	}
	o.Class, o.Reason, o.Scope = event.Class(class), event.Reason(reason), event.Scope(scope)
	o.Final = final != 0
	o.First, o.Last = o.First.UTC(), o.Last.UTC()
	o.Observations = int(observations)
	return o, nil
}
