package reliability

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sort"

	_ "modernc.org/sqlite" // reads the all-in-one's store
)

// StoreView is what a store holds of one run, read with SQL behind
// bouncer's back (the same tables bouncer's own queries read).
type StoreView struct {
	// Reports maps every stored report id to its rows: always 1 in
	// SQLite (the id is the primary key); in ClickHouse a report written
	// twice has two rows until ReplacingMergeTree merges them, which
	// bouncer's queries never count twice (uniqExact, argMax).
	Reports map[string]int
	// Events maps each of the run's recipients to its distinct event ids.
	// One report per recipient: more than one id is a report stored twice
	// under different ids, or an event counted twice.
	Events map[string]int
	// Wrong counts the run's recipients with an event that is not class
	// hard, reason userunknown; WrongSample shows a few.
	Wrong       int
	WrongSample []string
}

func newStoreView() StoreView {
	return StoreView{Reports: map[string]int{}, Events: map[string]int{}}
}

// addEvent folds one event row (any version) into the view.
func (v *StoreView) addEvent(seen map[string]bool, recipient, id, class, reason string) {
	if !seen[id] {
		seen[id] = true
		v.Events[recipient]++
	}
	if class != "hard" || reason != "userunknown" {
		v.Wrong++
		if len(v.WrongSample) < 5 {
			v.WrongSample = append(v.WrongSample, fmt.Sprintf("%s: %s/%s", recipient, class, reason))
		}
	}
}

// ReadSQLite reads the all-in-one's SQLite store under dataDir: every
// report id, and the events of recipients starting with prefix.
func ReadSQLite(ctx context.Context, dataDir, prefix string) (StoreView, error) {
	v := newStoreView()
	path := filepath.Join(dataDir, "bouncer.db")
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return v, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT id FROM reports")
	if err != nil {
		return v, fmt.Errorf("reading %s: %w", path, err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return v, err
		}
		v.Reports[id]++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return v, err
	}
	rows, err = db.QueryContext(ctx, "SELECT recipient, id, class, reason FROM events WHERE substr(recipient, 1, ?) = ?", len(prefix), prefix)
	if err != nil {
		return v, fmt.Errorf("reading %s: %w", path, err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	for rows.Next() {
		var rcpt, id, class, reason string
		if err := rows.Scan(&rcpt, &id, &class, &reason); err != nil {
			return v, err
		}
		v.addEvent(seen, rcpt, id, class, reason)
	}
	return v, rows.Err()
}

// Read reads database on the server: every report id with its rows, and
// the events of recipients starting with prefix.
func (c *ClickHouse) Read(ctx context.Context, database, prefix string) (StoreView, error) {
	v := newStoreView()
	conn, err := c.open(ctx, database)
	if err != nil {
		return v, err
	}
	defer conn.Close()
	rows, err := conn.Query(ctx, "SELECT id, count() FROM reports GROUP BY id")
	if err != nil {
		return v, fmt.Errorf("reading reports: %w", err)
	}
	for rows.Next() {
		var id string
		var n uint64
		if err := rows.Scan(&id, &n); err != nil {
			rows.Close()
			return v, err
		}
		v.Reports[id] = int(n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return v, err
	}
	rows, err = conn.Query(ctx, "SELECT recipient, id, toString(class), reason FROM events WHERE startsWith(recipient, ?)", prefix)
	if err != nil {
		return v, fmt.Errorf("reading events: %w", err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	for rows.Next() {
		var rcpt, id, class, reason string
		if err := rows.Scan(&rcpt, &id, &class, &reason); err != nil {
			return v, err
		}
		v.addEvent(seen, rcpt, id, class, reason)
	}
	return v, rows.Err()
}

// Result is one scenario's outcome: the figures docs/reliability.md
// reports.
type Result struct {
	Scenario string
	Injected string // the fault, in words

	Counts // the load's ledger

	Stored        int // distinct reports of the run in the store
	StoredUnacked int // of them, never answered 250 (in doubt at a fault, then stored: allowed)
	Lost          int // answered 250, neither stored nor in JetStream: must be 0
	Waiting       int // answered 250, not stored yet, still in JetStream (ingest did not drain)
	NoEvent       int // answered 250 and stored, but no event for its recipient: must be 0
	Duplicated    int // events beyond one per recipient: must be 0
	ExtraRows     int // ClickHouse rows beyond one per report, not yet merged (not a duplicate to readers)
	Misclassified int // events of the run not hard/userunknown: must be 0

	// Stall names a known bug when ingest did not drain because of it;
	// the invariant (Lost, Duplicated) is still checked.
	Stall string

	Notes []string // what else was seen: restarts, Postfix's counts, 451 windows
}

// compare fills the store figures of r from the acknowledged and offered
// messages, the view and the ids still in the stream.
func (r *Result) compare(acked, all map[string]*Message, v StoreView, inStream map[string]bool) {
	for id, rows := range v.Reports {
		m, ours := all[id]
		if !ours {
			continue
		}
		r.Stored++
		if rows > 1 {
			r.ExtraRows += rows - 1
		}
		if _, ok := acked[id]; !ok {
			r.StoredUnacked++
		}
		if n := v.Events[m.Recipient]; n > 1 {
			r.Duplicated += n - 1
		}
	}
	var lost []string
	for id, m := range acked {
		if v.Reports[id] == 0 {
			if inStream[id] {
				r.Waiting++
				continue
			}
			r.Lost++
			lost = append(lost, m.Recipient)
			continue
		}
		if v.Events[m.Recipient] == 0 {
			r.NoEvent++
		}
	}
	r.Misclassified = v.Wrong
	if len(v.WrongSample) > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("misclassified, e.g. %v", v.WrongSample))
	}
	if len(lost) > 0 {
		sort.Strings(lost)
		if len(lost) > 5 {
			lost = lost[:5]
		}
		r.Notes = append(r.Notes, fmt.Sprintf("lost, e.g. %v", lost))
	}
}

// Err is nil when the invariant held: something was acknowledged, and
// every acknowledged report is stored exactly once, with its event.
func (r Result) Err() error {
	switch {
	case r.Acked == 0:
		return fmt.Errorf("%s: no message was answered 250", r.Scenario)
	case r.Lost > 0:
		return fmt.Errorf("%s: %d of %d reports answered 250 are not stored", r.Scenario, r.Lost, r.Acked)
	case r.Duplicated > 0:
		return fmt.Errorf("%s: %d events beyond one per report", r.Scenario, r.Duplicated)
	case r.NoEvent > 0:
		return fmt.Errorf("%s: %d stored reports answered 250 have no event", r.Scenario, r.NoEvent)
	case r.Misclassified > 0:
		return fmt.Errorf("%s: %d events are not hard/userunknown", r.Scenario, r.Misclassified)
	}
	return nil
}
