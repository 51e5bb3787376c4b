package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse"
	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
)

// An event written the way a writer older than migration 6 wrote it (to
// events, not to stats_log) is missing from Stats until recount-stats.
func TestRecountStats(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"recount-stats"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--clickhouse-dsn is required") {
		t.Errorf("recount-stats without a DSN = %d, %q; want 2 and why", code, errb.String())
	}

	dsn := clickhousetest.Start(t)
	ctx := context.Background()
	st, err := clickhouse.Open(ctx, dsn, clickhouse.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	ev := store.Event{ID: "e1", Version: 1, Time: at, Source: "sync",
		Event: event.Event{Recipient: "a@example.com", Class: event.ClassHard, Reason: event.ReasonUserUnknown}}
	if err := st.Write(ctx, nil, []store.Event{ev}); err != nil {
		t.Fatal(err)
	}
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := ch.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Exec(ctx, `INSERT INTO events (id, version, report_id, idx, time, source, recipient, class, reason)
		SELECT 'old1', toUInt32(1), '', toUInt32(0), toDateTime(?), 'sync', 'b@example.com', 'soft', 'mailboxfull'`, at.Unix()); err != nil {
		t.Fatal(err)
	}
	count := func() int64 {
		t.Helper()
		s, err := st.Stats(ctx, at.Add(-time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		return s.EventsByClass[event.ClassHard] + s.EventsByClass[event.ClassSoft]
	}
	if n := count(); n != 1 {
		t.Fatalf("before the recount Stats counts %d events, want 1 (the old writer's is not in the rollup)", n)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"recount-stats", "--clickhouse-dsn", dsn}, nil, &out, &errb); code != 0 {
		t.Fatalf("recount-stats = %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "recounted") {
		t.Errorf("recount-stats printed %q", out.String())
	}
	if n := count(); n != 2 {
		t.Errorf("after the recount Stats counts %d events, want 2", n)
	}
}
