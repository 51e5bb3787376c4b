package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/bouncer-mail/bouncer/store"
)

// The batch reads of a re-fold (store.Store RecipientsEvents ...). Each
// asks about up to batchAddresses addresses in one statement, the
// addresses bound as parameters (exactly the values the single-address
// statement binds), all in one read transaction: one snapshot. A
// statement per address cost more in database/sql and the driver than
// SQLite's own index seeks (issue 4: 0.92 s of 5.4 s of ingest CPU).
// Rows come back ordered by address first, then as the single read
// orders them, and are split by their address column, which equals the
// address asked: the columns compare as BINARY text.

// batchAddresses is the most addresses bound in one statement, well
// under SQLite's limit of 32,766 parameters.
const batchAddresses = 500

// selectRecipientsEvents is selectRecipientEvents for the addresses of
// the VALUES list asked: each address's newest events, newest first, at
// most limit, found by the same subquery per address (its LIMIT keeps the
// index read short for an address with a long history). o.rowid IN the
// subquery is one rowid seek per event. The columns a fold does not read
// (store.FoldEvent) are constants in the columns' places: the diagnostic
// and the MTA names are most of an event's bytes, copied out for
// nothing.
const selectRecipientsEvents = `WITH asked(address) AS (VALUES %s)
	SELECT
	o.id, 0, '', 0, o.time, o.source,
	o.recipient, o.class, o.reason, o.scope, '', 0, o.action, '',
	'', '', '', o.provider, '', '', o.message_id,
	o.stream, o.return_path
	FROM asked, events o
	WHERE o.rowid IN (SELECT e.rowid FROM events e
		WHERE e.recipient = asked.address AND ` + newest + `
		ORDER BY e.time DESC, e.id
		LIMIT ?)
	ORDER BY o.recipient, o.time DESC, o.id`

// selectRecipientsOutcomes is selectRecipientOutcomes for the
// addresses of the IN list.
const selectRecipientsOutcomes = `SELECT key, version, stream, message_id, recipient, state, class,
	reason, scope, provider, final, first, last, observations
	FROM outcomes
	WHERE recipient IN (%s)
	ORDER BY recipient, last DESC, key`

// selectLatestRemovals is selectLatestRemoval for the addresses of the
// IN list; an address never removed has no row.
const selectLatestRemovals = `SELECT address, max(time) FROM suppression_audit
	WHERE address IN (%s) AND action = '` + store.ActionRemove + `'
	GROUP BY address`

// selectAddressesSuppressions is selectAddressSuppressions for the
// addresses of the IN list: ranges of the primary key, in its order.
const selectAddressesSuppressions = `SELECT ` + suppressionColumns + `
	FROM suppressions
	WHERE address IN (%s) AND ` + inForce + `
	ORDER BY address, stream`

// RecipientsEvents returns RecipientEvents of each address; see
// store.Store.
func (s *Store) RecipientsEvents(ctx context.Context, addresses []string, limit int) (map[string][]store.Event, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if limit < 1 {
		return nil, fmt.Errorf("sqlite: recipients events: limit %d, want at least 1", limit)
	}
	addrs := distinctAddresses(addresses)
	out := make(map[string][]store.Event, len(addrs))
	for _, a := range addrs {
		out[a] = []store.Event{}
	}
	err := s.eachBatch(ctx, addrs, func(tx *sql.Tx, batch []any) error {
		query := fmt.Sprintf(selectRecipientsEvents, placeholders("(?)", len(batch)))
		rows, err := tx.QueryContext(ctx, query, append(batch, limit)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		evs, err := scanEvents(rows)
		for _, e := range evs {
			out[e.Recipient] = append(out[e.Recipient], e)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: recipients events: %w", err)
	}
	return out, nil
}

// RecipientsOutcomes returns RecipientOutcomes of each address; see
// store.Store.
func (s *Store) RecipientsOutcomes(ctx context.Context, addresses []string) (map[string][]store.Outcome, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	addrs := distinctAddresses(addresses)
	out := make(map[string][]store.Outcome, len(addrs))
	for _, a := range addrs {
		out[a] = []store.Outcome{}
	}
	err := s.eachBatch(ctx, addrs, func(tx *sql.Tx, batch []any) error {
		rows, err := tx.QueryContext(ctx, fmt.Sprintf(selectRecipientsOutcomes, placeholders("?", len(batch))), batch...)
		if err != nil {
			return err
		}
		defer rows.Close()
		outs, err := scanOutcomes(rows)
		for _, o := range outs {
			out[o.Recipient] = append(out[o.Recipient], o)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: recipients outcomes: %w", err)
	}
	return out, nil
}

// LatestRemovals returns LatestRemoval of each address; see
// store.SuppressionStore.
func (s *Store) LatestRemovals(ctx context.Context, addresses []string) (map[string]time.Time, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	addrs := distinctAddresses(addresses)
	out := make(map[string]time.Time, len(addrs))
	for _, a := range addrs {
		out[a] = time.Time{}
	}
	err := s.eachBatch(ctx, addrs, func(tx *sql.Tx, batch []any) error {
		rows, err := tx.QueryContext(ctx, fmt.Sprintf(selectLatestRemovals, placeholders("?", len(batch))), batch...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				addr string
				at   sql.NullInt64
			)
			if err := rows.Scan(&addr, &at); err != nil {
				return err
			}
			if at.Valid {
				out[addr] = fromUnixNano(at.Int64)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: latest removals: %w", err)
	}
	return out, nil
}

// AddressesSuppressions returns AddressSuppressions of each address; see
// store.SuppressionStore.
func (s *Store) AddressesSuppressions(ctx context.Context, addresses []string, now time.Time) (map[string][]store.Suppression, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if now.IsZero() {
		return nil, fmt.Errorf("sqlite: addresses suppressions: now: %w", store.ErrZeroTime)
	}
	at := clampUnixNano(now)
	addrs := distinctAddresses(addresses)
	out := make(map[string][]store.Suppression, len(addrs))
	for _, a := range addrs {
		out[a] = []store.Suppression{}
	}
	err := s.eachBatch(ctx, addrs, func(tx *sql.Tx, batch []any) error {
		query := fmt.Sprintf(selectAddressesSuppressions, placeholders("?", len(batch)))
		rows, err := tx.QueryContext(ctx, query, append(batch, at, at)...)
		if err != nil {
			return err
		}
		sups, err := scanSuppressions(rows) // closes rows
		for _, r := range sups {
			out[r.Address] = append(out[r.Address], r)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: addresses suppressions: %w", err)
	}
	return out, nil
}

// distinctAddresses returns addresses lower-cased, each once, in the
// order first asked.
func distinctAddresses(addresses []string) []string {
	out := make([]string, 0, len(addresses))
	seen := make(map[string]bool, len(addresses))
	for _, a := range addresses {
		addr := normalizeAddress(a)
		if !seen[addr] {
			seen[addr] = true
			out = append(out, addr)
		}
	}
	return out
}

// eachBatch calls fn in one read transaction with addrs as statement
// arguments, at most batchAddresses at a time. fn may append to the
// slice it is given.
func (s *Store) eachBatch(ctx context.Context, addrs []string, fn func(*sql.Tx, []any) error) error {
	if len(addrs) == 0 {
		return nil
	}
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback() // read only: nothing to commit
	for len(addrs) > 0 {
		n := min(len(addrs), batchAddresses)
		args := make([]any, n, n+2)
		for i, a := range addrs[:n] {
			args[i] = a
		}
		if err := fn(tx, args); err != nil {
			return fmt.Errorf("%d addresses from %s: %w", n, addrs[0], err)
		}
		addrs = addrs[n:]
	}
	return nil
}

// placeholders returns n copies of p separated by commas: "?, ?, ?".
func placeholders(p string, n int) string {
	return strings.Repeat(p+", ", n-1) + p
}
