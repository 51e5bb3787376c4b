package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// migrations are the schema's versions, in order: migrations[i] brings the
// database to version i+1. They are append-only: a released migration is
// never edited, a change is a new one. Each runs in its own transaction
// together with its schema_migrations row, so a crash leaves the database
// at one version or the next, never between.
//
// Tables are STRICT, so a wrongly typed bind is an error instead of a
// silently converted value.
var migrations = []string{
	// 1: raw reports and the events read from them.
	//
	// events has no foreign key to reports: sync reply log events have no
	// raw report, their report_id names the log message instead.
	//
	// An event id has one row per classification version; readers take the
	// highest version per id (as ClickHouse's ReplacingMergeTree(version)
	// does), so reclassifying writes new rows instead of updating old ones.
	`
CREATE TABLE reports (
	id          TEXT    NOT NULL PRIMARY KEY, -- hex SHA-256 of raw
	received    INTEGER NOT NULL,             -- UTC Unix nanoseconds
	return_path TEXT    NOT NULL,
	recipients  TEXT    NOT NULL,             -- JSON array of RCPT TO addresses
	client_ip   TEXT    NOT NULL,
	helo        TEXT    NOT NULL,
	tls         TEXT    NOT NULL,
	raw         BLOB    NOT NULL,
	parse_error TEXT    NOT NULL
) STRICT;

CREATE INDEX reports_received ON reports (received);

CREATE TABLE events (
	id            TEXT    NOT NULL,
	version       INTEGER NOT NULL,
	report_id     TEXT    NOT NULL,
	idx           INTEGER NOT NULL,
	time          INTEGER NOT NULL, -- UTC Unix nanoseconds
	source        TEXT    NOT NULL,
	recipient     TEXT    NOT NULL, -- lower-cased
	class         TEXT    NOT NULL,
	reason        TEXT    NOT NULL,
	scope         TEXT    NOT NULL,
	status        TEXT    NOT NULL,
	reply_code    INTEGER NOT NULL,
	action        TEXT    NOT NULL,
	diagnostic    TEXT    NOT NULL,
	remote_mta    TEXT    NOT NULL,
	reporting_mta TEXT    NOT NULL,
	smtp_command  TEXT    NOT NULL,
	provider      TEXT    NOT NULL,
	parser        TEXT    NOT NULL,
	rule          TEXT    NOT NULL,
	message_id    TEXT    NOT NULL,
	PRIMARY KEY (id, version)
) STRICT;

CREATE INDEX events_recipient_time ON events (recipient, time);
CREATE INDEX events_time ON events (time);
`,
	// 2: the correlation keys of docs/outcomes.md. Events are grouped per
	// recipient at fold time, by VERP return path first; the partial
	// index finds the events of one return path without indexing the
	// many that have none.
	//
	// Outcomes came with migration 4, suppressions with migration 5.
	`
ALTER TABLE events ADD COLUMN stream      TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN return_path TEXT NOT NULL DEFAULT '';

CREATE INDEX events_return_path ON events (return_path) WHERE return_path != '';
`,
	// 3: reclassification. Store.Reports pages through reports by
	// (received, id); readers take, per report, the events of its
	// highest version, found through (report_id, version).
	`
CREATE INDEX reports_received_id ON reports (received, id);
CREATE INDEX events_report_version ON events (report_id, version);
`,
	// 4: stored outcomes (docs/outcomes.md "Storing and counting"), one
	// row per key, replaced only by a higher version (WriteOutcomes).
	`
CREATE TABLE outcomes (
	key          TEXT    NOT NULL PRIMARY KEY,
	version      INTEGER NOT NULL, -- store.OutcomeVersion, as a signed int64
	stream       TEXT    NOT NULL,
	message_id   TEXT    NOT NULL,
	recipient    TEXT    NOT NULL, -- lower-cased
	state        TEXT    NOT NULL,
	class        TEXT    NOT NULL,
	reason       TEXT    NOT NULL,
	scope        TEXT    NOT NULL,
	provider     TEXT    NOT NULL,
	final        INTEGER NOT NULL, -- 0 or 1
	first        INTEGER NOT NULL, -- UTC Unix nanoseconds
	last         INTEGER NOT NULL, -- UTC Unix nanoseconds
	observations INTEGER NOT NULL
) STRICT;

CREATE INDEX outcomes_recipient ON outcomes (recipient);
`,
	// 5: suppressions (DESIGN.md "Suppression policy"; store.SuppressionStore).
	//
	// suppressions holds the current row of each (address, stream), in
	// force or removed: a removal sets removed instead of deleting, so
	// the row still says what was lifted. WITHOUT ROWID clusters the
	// table by its key, so the send-time check (AddressSuppressions) is
	// one b-tree descent and a listing a range scan in key order.
	//
	// suppression_audit is append-only, one row per add and removal; its
	// rowid is the order of writing, which breaks ties of time.
	`
CREATE TABLE suppressions (
	address TEXT    NOT NULL, -- lower-cased
	stream  TEXT    NOT NULL, -- '' is the global scope
	source  TEXT    NOT NULL,
	class   TEXT    NOT NULL,
	reason  TEXT    NOT NULL,
	rule    TEXT    NOT NULL,
	since   INTEGER NOT NULL, -- UTC Unix nanoseconds
	until   INTEGER NOT NULL, -- UTC Unix nanoseconds, 0: never
	actor   TEXT    NOT NULL,
	note    TEXT    NOT NULL,
	updated INTEGER NOT NULL, -- UTC Unix nanoseconds, later than the version it replaced
	removed INTEGER,          -- UTC Unix nanoseconds of the removal, NULL while not removed
	PRIMARY KEY (address, stream)
) STRICT, WITHOUT ROWID;

CREATE TABLE suppression_audit (
	id      INTEGER NOT NULL PRIMARY KEY,
	time    INTEGER NOT NULL, -- UTC Unix nanoseconds
	address TEXT    NOT NULL,
	stream  TEXT    NOT NULL,
	action  TEXT    NOT NULL,
	source  TEXT    NOT NULL,
	actor   TEXT    NOT NULL,
	note    TEXT    NOT NULL,
	class   TEXT    NOT NULL,
	reason  TEXT    NOT NULL,
	rule    TEXT    NOT NULL
) STRICT;

CREATE INDEX suppression_audit_address_time ON suppression_audit (address, time);
`,
	// 6: Stats' rollup, kept by Write in its own transaction (stats.go):
	// events counted per minute (floor of time / 60 s, as an index) and
	// class, reason and provider, in the newest version of each event
	// and report set only, and reports per minute received. Stats reads
	// whole minutes here instead of the events row by row (with two
	// lookups each for the newest version), which took longer than 30 s
	// for a day of 4.2 million reports.
	//
	// The rows stored before are counted here, once: on a large database
	// the upgrade takes as long as one such Stats did.
	`
CREATE TABLE stats_minutes (
	minute   INTEGER NOT NULL, -- floor(time / 1 minute)
	class    TEXT    NOT NULL,
	reason   TEXT    NOT NULL,
	provider TEXT    NOT NULL,
	events   INTEGER NOT NULL,
	PRIMARY KEY (minute, class, reason, provider)
) STRICT, WITHOUT ROWID;

CREATE TABLE stats_report_minutes (
	minute  INTEGER NOT NULL PRIMARY KEY, -- floor(received / 1 minute)
	reports INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO stats_minutes (minute, class, reason, provider, events)
	SELECT e.time / 60000000000 - (e.time % 60000000000 < 0) AS m, e.class, e.reason, e.provider, count(*)
	FROM events e
	WHERE ` + newest + `
	GROUP BY m, e.class, e.reason, e.provider;

INSERT INTO stats_report_minutes (minute, reports)
	SELECT received / 60000000000 - (received % 60000000000 < 0) AS m, count(*)
	FROM reports
	GROUP BY m;
`,
	// 7: fewer b-trees for each report to dirty. On a store of some size
	// every key a report adds to an index keyed by a hash or an address
	// lands on a page of its own, read, written to the WAL and written
	// again at the checkpoint: ingest's cost per report is about the
	// number of such b-trees (BenchmarkBatchAsStoreGrows, ingest).
	//
	// - events_return_path: no statement reads it (outcome.Group groups
	//   a recipient's events, read by recipient).
	// - reports_received: (received) is a prefix of reports_received_id,
	//   which answers the same ranges.
	// - outcomes: keyed by (recipient, key), clustered (WITHOUT ROWID),
	//   as ClickHouse orders its outcomes: one b-tree where a rowid table,
	//   its key index and outcomes_recipient were three, and the re-fold
	//   reads a recipient's outcomes with one descent. A key is a hash of
	//   the recipient and its group (ingest's storedOutcome), so it was
	//   unique alone and the pair is too.
	`
DROP INDEX events_return_path;
DROP INDEX reports_received;

CREATE TABLE outcomes_by_recipient (
	recipient    TEXT    NOT NULL, -- lower-cased
	key          TEXT    NOT NULL,
	version      INTEGER NOT NULL, -- store.OutcomeVersion, as a signed int64
	stream       TEXT    NOT NULL,
	message_id   TEXT    NOT NULL,
	state        TEXT    NOT NULL,
	class        TEXT    NOT NULL,
	reason       TEXT    NOT NULL,
	scope        TEXT    NOT NULL,
	provider     TEXT    NOT NULL,
	final        INTEGER NOT NULL, -- 0 or 1
	first        INTEGER NOT NULL, -- UTC Unix nanoseconds
	last         INTEGER NOT NULL, -- UTC Unix nanoseconds
	observations INTEGER NOT NULL,
	PRIMARY KEY (recipient, key)
) STRICT, WITHOUT ROWID;

INSERT INTO outcomes_by_recipient (recipient, key, version, stream, message_id, state, class,
	reason, scope, provider, final, first, last, observations)
	SELECT recipient, key, version, stream, message_id, state, class,
	reason, scope, provider, final, first, last, observations
	FROM outcomes
	ORDER BY recipient, key;

DROP TABLE outcomes;
ALTER TABLE outcomes_by_recipient RENAME TO outcomes;
`,
}

// migrate brings the database to the newest version. It is idempotent,
// and safe against another process migrating the same file at once: the
// version is read inside each migration's IMMEDIATE transaction.
func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER NOT NULL PRIMARY KEY,
	applied_at INTEGER NOT NULL -- UTC Unix nanoseconds
) STRICT`); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	for i, m := range migrations {
		if err := apply(ctx, db, i+1, m); err != nil {
			return fmt.Errorf("version %d: %w", i+1, err)
		}
	}
	return nil
}

// apply runs one migration unless the database already has it. A database
// newer than this binary is an error: running old code on a schema it
// does not know would be guessing.
func apply(ctx context.Context, db *sql.DB, version int, ddl string) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	var current int
	if err := tx.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return err
	}
	if current > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this binary's %d", current, len(migrations))
	}
	if current >= version {
		return tx.Rollback()
	}
	if current != version-1 {
		return fmt.Errorf("database schema version %d, cannot apply %d", current, version)
	}
	if _, err := tx.ExecContext(ctx, ddl); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
		version, time.Now().UTC().UnixNano()); err != nil {
		return err
	}
	return tx.Commit()
}
