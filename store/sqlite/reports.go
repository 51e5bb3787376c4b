package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/bouncer-mail/bouncer/store"
)

// selectReports is one page of Reports: the row value comparison is the
// keyset cursor, answered by the (received, id) index.
const selectReports = `SELECT id, received, return_path, recipients, client_ip, helo, tls, raw, parse_error
	FROM reports
	WHERE received >= ? AND (received, id) > (?, ?)
	ORDER BY received, id
	LIMIT ?`

// Reports returns a page of raw reports; see store.Store.
func (s *Store) Reports(ctx context.Context, since time.Time, after string, limit int) ([]store.Report, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if limit < 1 {
		return nil, fmt.Errorf("sqlite: reports: limit %d, want at least 1", limit)
	}
	out, err := s.reports(ctx, since, after, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: reports: %w", err)
	}
	return out, nil
}

func (s *Store) reports(ctx context.Context, since time.Time, after string, limit int) ([]store.Report, error) {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	cursor := int64(math.MinInt64)
	if after != "" {
		err := tx.QueryRowContext(ctx, "SELECT received FROM reports WHERE id = ?", after).Scan(&cursor)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("cursor %q: no such report", after)
		}
		if err != nil {
			return nil, fmt.Errorf("cursor %q: %w", after, err)
		}
	}
	rows, err := tx.QueryContext(ctx, selectReports, clampUnixNano(since), cursor, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []store.Report{}
	for rows.Next() {
		var (
			r     store.Report
			recv  int64
			rcpts string
		)
		if err := rows.Scan(&r.ID, &recv, &r.ReturnPath, &rcpts, &r.ClientIP, &r.Helo, &r.TLS, &r.Raw, &r.ParseError); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(rcpts), &r.Recipients); err != nil {
			return nil, fmt.Errorf("report %s: recipients: %w", r.ID, err)
		}
		r.Received = fromUnixNano(recv)
		out = append(out, r)
	}
	return out, rows.Err()
}
