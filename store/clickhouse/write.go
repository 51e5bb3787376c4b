package clickhouse

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"

	"github.com/bouncer-mail/bouncer/store"
)

// Every INSERT lists its columns: clickhouse-go's PrepareBatch needs them
// on 18.16 ("expected 0 arguments" without).
var (
	insertReports  = "INSERT INTO reports " + reportsTable.columnList()
	insertEvents   = "INSERT INTO events " + eventsTable.columnList()
	insertVersions = "INSERT INTO report_versions " + reportVersionsTable.columnList()
)

// insertSettings go with every INSERT. insert_distributed_sync makes an
// INSERT into a Distributed table (the cluster schema) return only after
// every shard stored its rows, so a Write that returned is durable there
// too; a MergeTree table ignores it.
var insertSettings = ch.Settings{"insert_distributed_sync": 1}

// Write stores reports and events; see store.Store. The whole batch is
// refused, nothing sent, when one row is invalid: an empty id, a zero time
// or one outside DateTime's range (1970 to 2106), an unknown class, an
// index or reply code that does not fit its column.
//
// Rows already stored under their id (and version) are skipped: Write
// reads which are before it inserts, so the first write of a row wins.
// ClickHouse has no transactions: a Write that failed may have stored
// part of the batch (reports but not events, or some months' partitions
// but not others). Retrying it stores the rest and nothing twice, which is
// what ingest does before it acknowledges. Two concurrent Writes of the
// same new row both insert it; reads and counts take one row per id, so
// nothing is counted twice, but which of two differing contents survives
// is then not defined.
func (s *Store) Write(ctx context.Context, reports []store.Report, events []store.Event) error {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	if len(reports) == 0 && len(events) == 0 {
		return nil
	}
	if err := validate(reports, events); err != nil {
		return err
	}
	reports, events = dedupBatch(reports, events)
	sets := setVersions(events)

	reports, firstReceived, err := s.newReports(ctx, reports)
	if err != nil {
		return fmt.Errorf("clickhouse: write: %w", err)
	}
	events, err = s.newEvents(ctx, events, firstReceived)
	if err != nil {
		return fmt.Errorf("clickhouse: write: %w", err)
	}
	// Reports first: a raw report without its events is what a crash
	// between the two leaves, and it can be classified again.
	if err := s.insertReports(ctx, reports); err != nil {
		return fmt.Errorf("clickhouse: write: reports: %w", err)
	}
	if err := s.insertEvents(ctx, events); err != nil {
		return fmt.Errorf("clickhouse: write: events: %w", err)
	}
	// The set versions last: a new set becomes visible only once all its
	// events are in. Sent for every set of the batch, also those whose
	// events were stored already, so a retry after a failure here
	// completes the set.
	if err := s.insertVersions(ctx, sets); err != nil {
		return fmt.Errorf("clickhouse: write: report versions: %w", err)
	}
	return nil
}

// setVersions is the highest version of each report's events in the
// batch; events without a report have no set.
func setVersions(events []store.Event) map[string]uint32 {
	sets := make(map[string]uint32)
	for _, e := range events {
		if e.ReportID != "" && e.Version >= sets[e.ReportID] {
			sets[e.ReportID] = e.Version
		}
	}
	return sets
}

func (s *Store) insertVersions(ctx context.Context, sets map[string]uint32) error {
	if len(sets) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ch.Context(ctx, ch.WithSettings(insertSettings)), insertVersions)
	if err != nil {
		return err
	}
	defer b.Abort() // a no-op after Send
	for id, v := range sets {
		if err := b.Append(id, v); err != nil {
			return fmt.Errorf("report %s version %d: %w", id, v, err)
		}
	}
	return b.Send()
}

// DateTime's range: UInt32 seconds since the epoch.
var (
	minTime = time.Unix(0, 0).UTC()
	maxTime = time.Unix(math.MaxUint32, 0).UTC()
)

func checkTime(t time.Time) error {
	if t.Before(minTime) || t.After(maxTime) {
		return fmt.Errorf("%s outside DateTime's range (%s to %s)", t.UTC().Format(time.RFC3339),
			minTime.Format(time.RFC3339), maxTime.Format(time.RFC3339))
	}
	return nil
}

// validate refuses the rows no engine could store faithfully
// (store.Validate), and those this engine's columns cannot hold.
func validate(reports []store.Report, events []store.Event) error {
	if err := store.Validate(reports, events); err != nil {
		return fmt.Errorf("clickhouse: write: %w", err)
	}
	for _, r := range reports {
		if err := checkTime(r.Received); err != nil {
			return fmt.Errorf("clickhouse: write: report %s: received: %w", r.ID, err)
		}
	}
	for _, e := range events {
		if err := checkTime(e.Time); err != nil {
			return fmt.Errorf("clickhouse: write: event %s: time: %w", e.ID, err)
		}
		if e.Index < 0 || int64(e.Index) > math.MaxUint32 {
			return fmt.Errorf("clickhouse: write: event %s: index %d does not fit UInt32", e.ID, e.Index)
		}
		if e.ReplyCode < 0 || e.ReplyCode > math.MaxUint16 {
			return fmt.Errorf("clickhouse: write: event %s: reply code %d does not fit UInt16", e.ID, e.ReplyCode)
		}
	}
	return nil
}

// normalizeAddress is how recipient addresses are stored and looked up.
func normalizeAddress(a string) string { return strings.ToLower(a) }

type eventKey struct {
	id      string
	version uint32
}

// dedupBatch drops the rows a batch repeats, keeping each one's first
// occurrence, as a transaction of INSERT ... ON CONFLICT DO NOTHING does.
func dedupBatch(reports []store.Report, events []store.Event) ([]store.Report, []store.Event) {
	seenR := make(map[string]bool, len(reports))
	outR := reports[:0:0]
	for _, r := range reports {
		if !seenR[r.ID] {
			seenR[r.ID] = true
			outR = append(outR, r)
		}
	}
	seenE := make(map[eventKey]bool, len(events))
	outE := events[:0:0]
	for _, e := range events {
		k := eventKey{e.ID, e.Version}
		if !seenE[k] {
			seenE[k] = true
			outE = append(outE, e)
		}
	}
	return outR, outE
}

// batchTable is the name of the external table that carries a batch's ids
// to the server for the lookups below: an IN list of 10,000 literals would
// exceed 18.16's max_query_size (256 KiB) and be slow to parse.
const batchTable = "_batch"

// newReports returns the reports whose id is not stored yet, and the
// first received time of those that are. The lookup is by the sorting
// key, in every partition (or those within Options.ReportLookback): a
// report sent again days later has a later received time but must not be
// stored again.
func (s *Store) newReports(ctx context.Context, reports []store.Report) ([]store.Report, map[string]time.Time, error) {
	if len(reports) == 0 {
		return reports, nil, nil
	}
	tbl, err := ext.NewTable(batchTable, ext.Column("id", "String"))
	if err != nil {
		return nil, nil, err
	}
	oldest := reports[0].Received
	for _, r := range reports {
		if err := tbl.Append(r.ID); err != nil {
			return nil, nil, err
		}
		if r.Received.Before(oldest) {
			oldest = r.Received
		}
	}
	from := uint32(0)
	if s.reportLookback > 0 {
		from = clampSeconds(oldest.Add(-s.reportLookback))
	}
	rows, err := s.conn.Query(ch.Context(ctx, ch.WithExternalTable(tbl)),
		`SELECT id, min(received) FROM reports
		WHERE received >= toDateTime(?) AND id IN (SELECT id FROM `+batchTable+`)
		GROUP BY id`, from)
	if err != nil {
		return nil, nil, fmt.Errorf("looking up stored reports: %w", err)
	}
	defer rows.Close()
	stored := make(map[string]time.Time)
	for rows.Next() {
		var (
			id       string
			received time.Time
		)
		if err := rows.Scan(&id, &received); err != nil {
			return nil, nil, fmt.Errorf("looking up stored reports: %w", err)
		}
		stored[id] = received
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("looking up stored reports: %w", err)
	}
	if len(stored) == 0 {
		return reports, nil, nil
	}
	out := make([]store.Report, 0, len(reports))
	for _, r := range reports {
		if _, ok := stored[r.ID]; !ok {
			out = append(out, r)
		}
	}
	return out, stored, nil
}

// newEvents returns the events whose id is not stored yet at their
// version or a higher one: a stored (id, version) keeps its first
// content, and a version lower than one stored would be superseded
// anyway.
//
// The lookup covers a time range, so that partition and part pruning on
// time keep it from scanning the whole table: the batch's times, widened
// to the first received time of the batch's reports that are stored
// already (firstReceived). An event's time is its report's received
// time, so that is where an earlier write of the same event lies, also
// when the report itself was received again later. An id rewritten
// under another time outside that range is not found and is inserted
// again; reads still take one row per id (argMax by version), but it can
// then be counted in a window holding either time.
func (s *Store) newEvents(ctx context.Context, events []store.Event, firstReceived map[string]time.Time) ([]store.Event, error) {
	if len(events) == 0 {
		return events, nil
	}
	tbl, err := ext.NewTable(batchTable, ext.Column("recipient", "String"), ext.Column("id", "String"))
	if err != nil {
		return nil, err
	}
	lo, hi := events[0].Time, events[0].Time
	widen := func(t time.Time) {
		if t.Before(lo) {
			lo = t
		}
		if t.After(hi) {
			hi = t
		}
	}
	for _, e := range events {
		if err := tbl.Append(normalizeAddress(e.Recipient), e.ID); err != nil {
			return nil, err
		}
		widen(e.Time)
		if t, ok := firstReceived[e.ReportID]; ok {
			widen(t)
		}
	}
	rows, err := s.conn.Query(ch.Context(ctx, ch.WithExternalTable(tbl)),
		`SELECT id, max(version) FROM events
		WHERE time >= toDateTime(?) AND time <= toDateTime(?)
			AND (recipient, id) IN (SELECT recipient, id FROM `+batchTable+`)
		GROUP BY id`, clampSeconds(lo.Truncate(time.Second)), clampSeconds(hi))
	if err != nil {
		return nil, fmt.Errorf("looking up stored events: %w", err)
	}
	defer rows.Close()
	stored := make(map[string]uint32)
	for rows.Next() {
		var (
			id string
			v  uint32
		)
		if err := rows.Scan(&id, &v); err != nil {
			return nil, fmt.Errorf("looking up stored events: %w", err)
		}
		stored[id] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("looking up stored events: %w", err)
	}
	if len(stored) == 0 {
		return events, nil
	}
	out := make([]store.Event, 0, len(events))
	for _, e := range events {
		if v, ok := stored[e.ID]; !ok || e.Version > v {
			out = append(out, e)
		}
	}
	return out, nil
}

func (s *Store) insertReports(ctx context.Context, reports []store.Report) error {
	if len(reports) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ch.Context(ctx, ch.WithSettings(insertSettings)), insertReports)
	if err != nil {
		return err
	}
	defer b.Abort() // a no-op after Send
	for _, r := range reports {
		rcpts := r.Recipients
		if rcpts == nil {
			rcpts = []string{}
		}
		if err := b.Append(r.ID, r.Received.UTC(), r.ReturnPath, rcpts, r.ClientIP, r.Helo, r.TLS,
			string(r.Raw), r.ParseError); err != nil {
			return fmt.Errorf("report %s: %w", r.ID, err)
		}
	}
	return b.Send()
}

func (s *Store) insertEvents(ctx context.Context, events []store.Event) error {
	if len(events) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ch.Context(ctx, ch.WithSettings(insertSettings)), insertEvents)
	if err != nil {
		return err
	}
	defer b.Abort() // a no-op after Send
	for _, e := range events {
		if err := b.Append(e.ID, e.Version, e.ReportID, uint32(e.Index), e.Time.UTC(), e.Source,
			normalizeAddress(e.Recipient), string(e.Class), string(e.Reason), string(e.Scope), e.Status,
			uint16(e.ReplyCode), e.Action, e.Diagnostic, e.RemoteMTA, e.ReportingMTA, e.SMTPCommand,
			e.Provider, e.Parser, e.Rule, e.MessageID, e.Stream, e.ReturnPath); err != nil {
			return fmt.Errorf("event %s version %d: %w", e.ID, e.Version, err)
		}
	}
	return b.Send()
}
