package clickhouse

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
)

// Migration 8 fills report_keys with the server's cityHash64 of each id,
// Write with reportKey: the two must agree, or a report stored before the
// migration is not found afterwards. The lengths cover CityHash's
// branches (0-16, 17-32, 33-64 and longer bytes).
func TestReportKeyIsCityHash64(t *testing.T) {
	s := openDSN(t, clickhousetest.Start(t), Options{})
	defer s.Close()
	sum := sha256.Sum256([]byte("raw"))
	ids := []string{"", "r", "abc", "same-bytes", hex.EncodeToString(sum[:]), "r\x00é"}
	for _, n := range []int{4, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 200, 1000} {
		ids = append(ids, strings.Repeat("0123456789abcdef", 63)[:n])
	}
	for _, id := range ids {
		var want uint64
		if err := s.conn.QueryRow(context.Background(), "SELECT cityHash64(?)", id).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if got := reportKey(id); got != want {
			t.Errorf("reportKey(%q) = %d, server's cityHash64 = %d", id, got, want)
		}
	}
}

// stopMerges stops the merges of the store's tables named; the test's
// database is thrown away after it.
func stopMerges(t *testing.T, s *Store, tables ...string) {
	t.Helper()
	for _, tbl := range tables {
		name := quoteIdent(s.database) + "." + quoteIdent(tbl)
		if err := s.conn.Exec(context.Background(), "SYSTEM STOP MERGES "+name); err != nil {
			t.Fatal(err)
		}
	}
}

// rowCount counts a table's rows as stored, before merges: the tests
// below stop merges, so a row inserted twice is counted twice.
func rowCount(t *testing.T, s *Store, table, where string, args ...any) uint64 {
	t.Helper()
	var n uint64
	if err := s.conn.QueryRow(context.Background(), "SELECT count() FROM "+table+" WHERE "+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Write finds a stored report by its key in report_keys: a redelivery
// (the same received time), however late, and a resend within
// ReportLookback store nothing again; a resend past it is stored again;
// a key whose report is not stored (a Write that failed after inserting
// the keys) does not keep the report out.
func TestWriteFindsStoredReports(t *testing.T) {
	srv := clickhousetest.NewServer(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		keyOnly     bool          // the first write stored the key alone
		again       time.Duration // the second write's received time, after the first's
		wantReports uint64        // rows of the report after the second write
		wantEvents  uint64        // rows of its event
	}{
		{name: "redelivery", again: 0, wantReports: 1, wantEvents: 1},
		{name: "resend within the lookback", again: DefaultReportLookback - time.Minute, wantReports: 1, wantEvents: 1},
		{name: "resend past the lookback", again: DefaultReportLookback + time.Minute, wantReports: 2, wantEvents: 2},
		{name: "key without its report", keyOnly: true, wantReports: 1, wantEvents: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openDSN(t, srv.DSN(strings.ReplaceAll(tc.name, " ", "_")), Options{})
			defer s.Close()
			stopMerges(t, s, "reports", "events")
			write := func(at time.Time) {
				t.Helper()
				r := store.Report{Envelope: event.Envelope{ID: "rk", Received: at}, Raw: []byte("raw")}
				if err := s.Write(ctx, []store.Report{r}, []store.Event{testEvent("rk", 0, "a@example.com", event.ClassHard, at)}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.keyOnly {
				if err := s.conn.Exec(ctx, "INSERT INTO report_keys (received, key) SELECT toDateTime(?), cityHash64('rk')", t0.Unix()); err != nil {
					t.Fatal(err)
				}
			} else {
				write(t0)
			}
			write(t0.Add(tc.again))
			if n := rowCount(t, s, "reports", "id = 'rk'"); n != tc.wantReports {
				t.Errorf("reports rows = %d, want %d", n, tc.wantReports)
			}
			if n := rowCount(t, s, "events", "report_id = 'rk'"); n != tc.wantEvents {
				t.Errorf("events rows = %d, want %d", n, tc.wantEvents)
			}
			got, err := s.RecipientEvents(ctx, "a@example.com", 10)
			if err != nil || len(got) != 1 {
				t.Fatalf("RecipientEvents = %v, %v; want one event", got, err)
			}
			if want := t0; tc.again < DefaultReportLookback && !got[0].Time.Equal(want) {
				t.Errorf("event time %v, want the first write's %v", got[0].Time, want)
			}
		})
	}
}

// A database of version 7 holds reports without keys; migration 8 fills
// them in, so a redelivery of such a report after the upgrade is found.
func TestMigrateReportKeys(t *testing.T) {
	ctx := context.Background()
	dsn := clickhousetest.Start(t)
	conn := openVersion(t, dsn, 7)
	err := conn.Exec(ctx, `INSERT INTO reports (id, received, return_path, recipients, client_ip, helo, tls, raw, parse_error)
		SELECT 'old', toDateTime(?), '', [], '', '', '', 'raw', ''`, t0.Unix())
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	s := openDSN(t, dsn, Options{})
	defer s.Close()
	stopMerges(t, s, "reports")
	r := store.Report{Envelope: event.Envelope{ID: "old", Received: t0}, Raw: []byte("raw")}
	if err := s.Write(ctx, []store.Report{r}, nil); err != nil {
		t.Fatal(err)
	}
	if n := rowCount(t, s, "reports", "id = 'old'"); n != 1 {
		t.Errorf("reports rows of the report stored before migration 8 = %d after its redelivery, want 1", n)
	}
}
