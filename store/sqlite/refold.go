package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/bouncer-mail/bouncer/store"
)

// The batch reads of a re-fold (store.Store RecipientsEvents ...). SQLite
// answers each address from its indexes in microseconds, so a batch is
// the single-address statement prepared once and run per address, all in
// one read transaction: one snapshot, no statement parsed twice.

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
	out := make(map[string][]store.Event, len(addresses))
	err := s.eachAddress(ctx, selectRecipientEvents, addresses, func(stmt *sql.Stmt, addr string) error {
		rows, err := stmt.QueryContext(ctx, addr, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		evs, err := scanEvents(rows)
		out[addr] = evs
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
	out := make(map[string][]store.Outcome, len(addresses))
	err := s.eachAddress(ctx, selectRecipientOutcomes, addresses, func(stmt *sql.Stmt, addr string) error {
		rows, err := stmt.QueryContext(ctx, addr)
		if err != nil {
			return err
		}
		defer rows.Close()
		outs, err := scanOutcomes(rows)
		out[addr] = outs
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
	out := make(map[string]time.Time, len(addresses))
	err := s.eachAddress(ctx, selectLatestRemoval, addresses, func(stmt *sql.Stmt, addr string) error {
		var at sql.NullInt64
		if err := stmt.QueryRowContext(ctx, addr).Scan(&at); err != nil {
			return err
		}
		out[addr] = time.Time{}
		if at.Valid {
			out[addr] = fromUnixNano(at.Int64)
		}
		return nil
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
	out := make(map[string][]store.Suppression, len(addresses))
	err := s.eachAddress(ctx, selectAddressSuppressions, addresses, func(stmt *sql.Stmt, addr string) error {
		rows, err := stmt.QueryContext(ctx, addr, at, at)
		if err != nil {
			return err
		}
		sups, err := scanSuppressions(rows) // closes rows
		out[addr] = sups
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: addresses suppressions: %w", err)
	}
	return out, nil
}

// eachAddress prepares query in a read transaction and calls fn with it
// once for every distinct address, lower-cased.
func (s *Store) eachAddress(ctx context.Context, query string, addresses []string, fn func(*sql.Stmt, string) error) error {
	if len(addresses) == 0 {
		return nil
	}
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback() // read only: nothing to commit
	stmt, err := tx.PrepareContext(ctx, query)
	if err != nil {
		return err
	}
	defer stmt.Close()
	done := make(map[string]bool, len(addresses))
	for _, a := range addresses {
		addr := normalizeAddress(a)
		if done[addr] {
			continue
		}
		done[addr] = true
		if err := fn(stmt, addr); err != nil {
			return fmt.Errorf("%s: %w", addr, err)
		}
	}
	return nil
}
