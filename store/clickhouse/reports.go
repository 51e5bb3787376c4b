package clickhouse

import (
	"context"
	"fmt"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"

	"github.com/bouncer-mail/bouncer/store"
)

// Reports' queries. A report id is normally stored once, but two
// concurrent Writes of a new report both insert it, maybe with different
// received times: a page takes each id once, at its first received time
// (within the window). The page's ids come first, from the id and
// received columns only; then only those rows' raw bytes are read, by
// the sorting key.
const (
	selectReportCursor = `SELECT count(), min(received) FROM reports WHERE id = ?`
	selectReportPage   = `SELECT id, min(received) AS r FROM reports
	WHERE received >= toDateTime(?)
	GROUP BY id
	HAVING r > toDateTime(?) OR (r = toDateTime(?) AND id > ?)
	ORDER BY r, id
	LIMIT ?`
	selectReportRows = `SELECT id, received, return_path, recipients, client_ip, helo, tls, raw, parse_error
	FROM reports
	WHERE id IN (SELECT id FROM ` + batchTable + `)
	ORDER BY id, received`
)

// Reports returns a page of raw reports; see store.Store. Received times
// are whole seconds.
func (s *Store) Reports(ctx context.Context, since time.Time, after string, limit int) ([]store.Report, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if limit < 1 {
		return nil, fmt.Errorf("clickhouse: reports: limit %d, want at least 1", limit)
	}
	out, err := s.reports(ctx, since, after, limit)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: reports: %w", err)
	}
	return out, nil
}

func (s *Store) reports(ctx context.Context, since time.Time, after string, limit int) ([]store.Report, error) {
	var cursor uint32
	if after != "" {
		var (
			n        uint64
			received time.Time
		)
		if err := s.conn.QueryRow(ctx, selectReportCursor, after).Scan(&n, &received); err != nil {
			return nil, fmt.Errorf("cursor %q: %w", after, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("cursor %q: no such report", after)
		}
		cursor = uint32(received.Unix())
	}
	rows, err := s.conn.Query(ctx, selectReportPage, clampSeconds(since), cursor, cursor, after, uint64(limit))
	if err != nil {
		return nil, err
	}
	var (
		order []string
		first = map[string]time.Time{}
	)
	for rows.Next() {
		var (
			id string
			r  time.Time
		)
		if err := rows.Scan(&id, &r); err != nil {
			rows.Close()
			return nil, err
		}
		order = append(order, id)
		first[id] = r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]store.Report, 0, len(order))
	if len(order) == 0 {
		return out, nil
	}

	tbl, err := ext.NewTable(batchTable, ext.Column("id", "String"))
	if err != nil {
		return nil, err
	}
	for _, id := range order {
		if err := tbl.Append(id); err != nil {
			return nil, err
		}
	}
	rows, err = s.conn.Query(ch.Context(ctx, ch.WithExternalTable(tbl)), selectReportRows)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	byID := make(map[string]store.Report, len(order))
	for rows.Next() {
		var (
			r   store.Report
			raw string
		)
		if err := rows.Scan(&r.ID, &r.Received, &r.ReturnPath, &r.Recipients, &r.ClientIP, &r.Helo, &r.TLS,
			&raw, &r.ParseError); err != nil {
			return nil, err
		}
		if _, ok := byID[r.ID]; ok || !r.Received.Equal(first[r.ID]) {
			continue // a duplicate row of a concurrent first write
		}
		r.Raw = []byte(raw)
		r.Received = r.Received.UTC()
		byID[r.ID] = r
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, id := range order {
		r, ok := byID[id]
		if !ok {
			return nil, fmt.Errorf("report %s vanished between two queries", id)
		}
		out = append(out, r)
	}
	return out, nil
}
