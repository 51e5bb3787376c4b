package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/bouncer-mail/bouncer/store"
)

const insertReport = `INSERT INTO reports
	(id, received, return_path, recipients, client_ip, helo, tls, raw, parse_error)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT DO NOTHING`

const insertEvent = `INSERT INTO events
	(id, version, report_id, idx, time, source,
	 recipient, class, reason, scope, status, reply_code, action, diagnostic,
	 remote_mta, reporting_mta, smtp_command, provider, parser, rule, message_id,
	 stream, return_path)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT DO NOTHING`

// Write stores reports and events in one transaction; see store.Store.
// A report or event already stored under its id (and version) is left
// as it is. The whole batch is refused, nothing written, when one row is
// invalid: an empty id, a zero time, an unknown class.
func (s *Store) Write(ctx context.Context, reports []store.Report, events []store.Event) (err error) {
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

	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: write: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	var delta statsDelta
	if err := writeReports(ctx, tx, reports, &delta); err != nil {
		return fmt.Errorf("sqlite: write: %w", err)
	}
	if err := writeEvents(ctx, tx, events, &delta); err != nil {
		return fmt.Errorf("sqlite: write: %w", err)
	}
	if err := writeStatsDelta(ctx, tx, &delta); err != nil {
		return fmt.Errorf("sqlite: write: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: write: commit: %w", err)
	}
	return nil
}

// writeReports inserts the reports not stored yet, counting them in d.
func writeReports(ctx context.Context, tx *sql.Tx, reports []store.Report, d *statsDelta) error {
	if len(reports) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, insertReport)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, r := range reports {
		rcpts := r.Recipients
		if rcpts == nil {
			rcpts = []string{}
		}
		rcptJSON, err := json.Marshal(rcpts)
		if err != nil {
			return fmt.Errorf("report %s: recipients: %w", r.ID, err)
		}
		raw := r.Raw
		if raw == nil {
			raw = []byte{}
		}
		res, err := stmt.ExecContext(ctx, r.ID, unixNano(r.Received), r.ReturnPath, string(rcptJSON),
			r.ClientIP, r.Helo, r.TLS, raw, r.ParseError)
		if err != nil {
			return fmt.Errorf("report %s: %w", r.ID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("report %s: %w", r.ID, err)
		} else if n == 1 {
			d.addReport(unixNano(r.Received))
		}
	}
	return nil
}

// writeEvents inserts the events not stored yet (id and version),
// counting in d what they change in Stats' rollup.
func writeEvents(ctx context.Context, tx *sql.Tx, events []store.Event, d *statsDelta) error {
	if len(events) == 0 {
		return nil
	}
	tops, err := setTops(ctx, tx, events)
	if err != nil {
		return err
	}
	if err := uncountReplaced(ctx, tx, d, tops, events); err != nil {
		return err
	}
	stmt, err := tx.PrepareContext(ctx, insertEvent)
	if err != nil {
		return err
	}
	defer stmt.Close()
	inserted := make([]store.Event, 0, len(events))
	for _, e := range events {
		res, err := stmt.ExecContext(ctx, e.ID, int64(e.Version), e.ReportID, e.Index, unixNano(e.Time), e.Source,
			normalizeAddress(e.Recipient), string(e.Class), string(e.Reason), string(e.Scope), e.Status, e.ReplyCode,
			e.Action, e.Diagnostic, e.RemoteMTA, e.ReportingMTA, e.SMTPCommand, e.Provider, e.Parser,
			e.Rule, e.MessageID, e.Stream, e.ReturnPath)
		if err != nil {
			return fmt.Errorf("event %s version %d: %w", e.ID, e.Version, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("event %s version %d: %w", e.ID, e.Version, err)
		} else if n == 1 {
			inserted = append(inserted, e)
		}
	}
	countInserted(d, tops, inserted)
	return nil
}

// Times outside this range do not fit Unix nanoseconds in an int64.
var (
	minTime = time.Unix(0, -1<<63).UTC()
	maxTime = time.Unix(0, 1<<63-1).UTC()
)

// validate refuses the rows no engine could store faithfully
// (store.Validate), and those whose times do not fit int64 nanoseconds.
func validate(reports []store.Report, events []store.Event) error {
	if err := store.Validate(reports, events); err != nil {
		return fmt.Errorf("sqlite: write: %w", err)
	}
	for _, r := range reports {
		if err := checkTime(r.Received); err != nil {
			return fmt.Errorf("sqlite: write: report %s: received: %w", r.ID, err)
		}
	}
	for _, e := range events {
		if err := checkTime(e.Time); err != nil {
			return fmt.Errorf("sqlite: write: event %s: time: %w", e.ID, err)
		}
	}
	return nil
}

func checkTime(t time.Time) error {
	if t.Before(minTime) || t.After(maxTime) {
		return fmt.Errorf("%s out of range", t.Format(time.RFC3339))
	}
	return nil
}

// normalizeAddress is how recipient addresses are stored and looked up.
func normalizeAddress(a string) string { return strings.ToLower(a) }

func unixNano(t time.Time) int64 { return t.UTC().UnixNano() }

func fromUnixNano(n int64) time.Time { return time.Unix(0, n).UTC() }
