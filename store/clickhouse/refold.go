package clickhouse

import (
	"context"
	"fmt"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// The batch reads of a re-fold (store.Store RecipientsEvents ...). A
// round trip to ClickHouse costs about a millisecond before any work, and
// a recipient's history tens of them (bench/README.md), so ingest's
// re-fold of a 500-recipient batch one recipient at a time took longer
// than its write. Each batch read is the single-address query with the
// address test widened to `IN (SELECT address FROM _batch)`, which uses
// the same primary key range reads, and per-address limits kept by LIMIT
// BY; the addresses go as an external table (batchTable), as the Write's
// lookups send their ids, in chunks of at most chunkAddresses. (They went
// as IN lists of literals before: bounded by max_query_size, 256 KiB, a
// batch of 8,000 was three or four reads of each kind, and on a table of
// a few granules each read all of it; with a larger max_query_size, one
// read a batch, the server still took about 16 µs an address to parse
// and evaluate the list.)
//
// chunkAddresses takes a batch of ingest's 8,000 reports in one chunk
// and keeps the set the server builds, and the rows a read returns,
// bounded for a caller with more addresses.
const chunkAddresses = 8192

// batchQuery is single with each `= ?` of the address column widened to
// `IN (SELECT address FROM _batch)` and the other replacements done. It
// panics (at package init, so every test catches it) when a pattern is
// not where it is expected: the batch read must not drift from the
// single one it widens.
func batchQuery(single string, column string, count int, more ...string) string {
	eq := column + " = ?"
	if n := strings.Count(single, eq); n != count {
		panic(fmt.Sprintf("clickhouse: batch query: %q found %d times, want %d", eq, n, count))
	}
	q := strings.ReplaceAll(single, eq, column+" IN (SELECT address FROM "+batchTable+")")
	for i := 0; i+1 < len(more); i += 2 {
		if strings.Count(q, more[i]) != 1 {
			panic(fmt.Sprintf("clickhouse: batch query: %q not found once", more[i]))
		}
		q = strings.Replace(q, more[i], more[i+1], 1)
	}
	return q
}

// foldColumns is selectRecipientEvents' tuple with the columns a fold
// does not read (store.FoldEvent) as constants of their types, so the
// tuple keeps its positions and the re-fold's read neither reads nor
// carries them through argMax: the diagnostic and the MTA names are
// most of an event's bytes.
const (
	allColumns = `tuple(version, report_id, idx, time, source,
		recipient, class, reason, scope, status, reply_code, action, diagnostic,
		remote_mta, reporting_mta, smtp_command, provider, parser, rule, message_id,
		stream, return_path)`
	foldColumns = `tuple(version, report_id, toUInt32(0), time, source,
		recipient, class, reason, scope, '', toUInt16(0), action, '',
		'', '', '', provider, '', '', message_id,
		stream, return_path)`
)

var (
	// t.6 is the recipient: each one's newest events, at most the limit,
	// with the fields a fold reads.
	selectRecipientsEvents = batchQuery(selectRecipientEvents, "recipient", 2,
		"ORDER BY t.4 DESC, id\nLIMIT ?", "ORDER BY t.6, t.4 DESC, id\nLIMIT ? BY t.6",
		allColumns, foldColumns)
	selectRecipientsOutcomes = batchQuery(selectRecipientOutcomes, "recipient", 1)
	selectLatestRemovals     = batchQuery(selectLatestRemoval, "address", 1,
		"SELECT max(time), count() FROM", "SELECT address, max(time) FROM",
		"'"+store.ActionRemove+"'", "'"+store.ActionRemove+"'\n\tGROUP BY address")
	selectAddressesSuppressions = batchQuery(selectAddressSuppressions, "address", 1)
)

// RecipientsEvents returns RecipientEvents of each address; see
// store.Store.
func (s *Store) RecipientsEvents(ctx context.Context, addresses []string, limit int) (map[string][]store.Event, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if limit < 1 {
		return nil, fmt.Errorf("clickhouse: recipients events: limit %d, want at least 1", limit)
	}
	out := make(map[string][]store.Event, len(addresses))
	err := eachChunk(addresses, func(chunk *ext.Table) error {
		rows, err := s.conn.Query(ch.Context(ctx, ch.WithExternalTable(chunk)), s.sql(selectRecipientsEvents), uint64(limit))
		if err != nil {
			return err
		}
		defer rows.Close()
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
				return err
			}
			e.Index, e.ReplyCode = int(idx), int(replyCode)
			e.Time = e.Time.UTC()
			e.Class, e.Reason, e.Scope = event.Class(class), event.Reason(reason), event.Scope(scope)
			out[e.Recipient] = append(out[e.Recipient], e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse: recipients events: %w", err)
	}
	for _, a := range addresses {
		if addr := normalizeAddress(a); out[addr] == nil {
			out[addr] = []store.Event{}
		}
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
	err := eachChunk(addresses, func(chunk *ext.Table) error {
		rows, err := s.conn.Query(ch.Context(ctx, ch.WithExternalTable(chunk)), selectRecipientsOutcomes)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			o, err := scanOutcome(rows)
			if err != nil {
				return err
			}
			out[o.Recipient] = append(out[o.Recipient], o)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse: recipients outcomes: %w", err)
	}
	for _, a := range addresses {
		if addr := normalizeAddress(a); out[addr] == nil {
			out[addr] = []store.Outcome{}
		}
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
	for _, a := range addresses {
		out[normalizeAddress(a)] = time.Time{}
	}
	err := eachChunk(addresses, func(chunk *ext.Table) error {
		rows, err := s.conn.Query(ch.Context(ctx, ch.WithExternalTable(chunk)), selectLatestRemovals)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				addr string
				at   int64
			)
			if err := rows.Scan(&addr, &at); err != nil {
				return err
			}
			out[addr] = time.Unix(0, at).UTC()
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse: latest removals: %w", err)
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
		return nil, fmt.Errorf("clickhouse: addresses suppressions: now: %w", store.ErrZeroTime)
	}
	out := make(map[string][]store.Suppression, len(addresses))
	for _, a := range addresses {
		out[normalizeAddress(a)] = []store.Suppression{}
	}
	err := eachChunk(addresses, func(chunk *ext.Table) error {
		rows, err := s.conn.Query(ch.Context(ctx, ch.WithSettings(pointReadSettings), ch.WithExternalTable(chunk)), selectAddressesSuppressions)
		if err != nil {
			return err
		}
		stored, err := scanSuppressions(rows)
		if err != nil {
			return err
		}
		for _, r := range stored {
			if !r.removed && r.InForce(now) {
				out[r.Address] = append(out[r.Address], r.Suppression)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse: addresses suppressions: %w", err)
	}
	return out, nil
}

// eachChunk calls fn with the distinct addresses, lower-cased, in
// external tables named batchTable (one column, address) of at most
// chunkAddresses each.
func eachChunk(addresses []string, fn func(*ext.Table) error) error {
	seen := make(map[string]bool, len(addresses))
	var tbl *ext.Table
	for _, a := range addresses {
		addr := normalizeAddress(a)
		if seen[addr] {
			continue
		}
		seen[addr] = true
		if tbl != nil && tbl.Block().Rows() == chunkAddresses {
			if err := fn(tbl); err != nil {
				return err
			}
			tbl = nil
		}
		if tbl == nil {
			var err error
			if tbl, err = ext.NewTable(batchTable, ext.Column("address", "String")); err != nil {
				return err
			}
		}
		if err := tbl.Append(addr); err != nil {
			return err
		}
	}
	if tbl != nil {
		return fn(tbl)
	}
	return nil
}
