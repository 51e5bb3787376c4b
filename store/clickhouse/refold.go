package clickhouse

import (
	"context"
	"fmt"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// The batch reads of a re-fold (store.Store RecipientsEvents ...). A
// round trip to ClickHouse costs about a millisecond before any work, and
// a recipient's history tens of them (bench/README.md), so ingest's
// re-fold of a 500-recipient batch one recipient at a time took longer
// than its write. Each batch read is the single-address query with the
// address test widened to `IN (list)`, which uses the same primary key
// range reads, and per-address limits kept by LIMIT BY; the list is sent
// in chunks bounded by the bytes their literals take (chunkBytes), so a
// statement that names its chunk twice stays below max_query_size (256
// KiB) with the longest addresses, and a batch of ordinary ones is one
// or two statements. (Chunks of 256 addresses, as before, made a batch
// of 2,000 eight reads of each kind; on a table of a few granules every
// one of them reads the whole table.)
const (
	// chunkBytes bounds a chunk's literals, as literalCost counts them.
	chunkBytes = 96 << 10
	// chunkAddresses bounds a chunk's count: the IN set ClickHouse
	// builds, and the rows a chunk can return, stay modest.
	chunkAddresses = 4096
)

// batchQuery is single with each `= ?` of the address column widened to
// `IN ?` and the other replacements done. It panics (at package init,
// so every test catches it) when a pattern is not where it is expected:
// the batch read must not drift from the single one it widens.
func batchQuery(single string, column string, count int, more ...string) string {
	eq := column + " = ?"
	if n := strings.Count(single, eq); n != count {
		panic(fmt.Sprintf("clickhouse: batch query: %q found %d times, want %d", eq, n, count))
	}
	q := strings.ReplaceAll(single, eq, column+" IN ?") // a GroupSet binds as (a, b, ...)
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
	err := eachChunk(addresses, func(chunk ch.GroupSet) error {
		rows, err := s.conn.Query(ctx, s.sql(selectRecipientsEvents), chunk, chunk, uint64(limit))
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
	err := eachChunk(addresses, func(chunk ch.GroupSet) error {
		rows, err := s.conn.Query(ctx, selectRecipientsOutcomes, chunk)
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
	err := eachChunk(addresses, func(chunk ch.GroupSet) error {
		rows, err := s.conn.Query(ctx, selectLatestRemovals, chunk)
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
	err := eachChunk(addresses, func(chunk ch.GroupSet) error {
		rows, err := s.conn.Query(ch.Context(ctx, ch.WithSettings(pointReadSettings)), selectAddressesSuppressions, chunk)
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

// eachChunk calls fn with the distinct addresses, lower-cased, in chunks
// of at most chunkAddresses whose literals take at most chunkBytes (a
// single address longer than that is a chunk of its own).
func eachChunk(addresses []string, fn func(ch.GroupSet) error) error {
	seen := make(map[string]bool, len(addresses))
	var (
		chunk []any
		size  int
	)
	for _, a := range addresses {
		addr := normalizeAddress(a)
		if seen[addr] {
			continue
		}
		seen[addr] = true
		cost := literalCost(addr)
		if len(chunk) > 0 && (len(chunk) == chunkAddresses || size+cost > chunkBytes) {
			if err := fn(ch.GroupSet{Value: chunk}); err != nil {
				return err
			}
			chunk, size = nil, 0
		}
		chunk = append(chunk, addr)
		size += cost
	}
	if len(chunk) > 0 {
		return fn(ch.GroupSet{Value: chunk})
	}
	return nil
}

// literalCost is the bytes addr takes in an IN list as clickhouse-go
// binds a string: a backslash before each backslash, quote and NUL (which
// becomes \0), its quotes, a comma and a space.
func literalCost(addr string) int {
	n := len(addr) + 4
	for i := 0; i < len(addr); i++ {
		switch addr[i] {
		case '\\', '\'', 0:
			n++
		}
	}
	return n
}
