package sqlite

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// The batch reads seek each address in the index its single read uses:
// none scans a table. The only SCANs allowed are of the VALUES list of
// addresses itself.
func TestBatchQueryPlans(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	addrs := []any{"a@example.com", "b@example.com", "c@example.com"}
	tests := []struct {
		name  string
		query string
		args  []any
		want  []string
	}{
		{"RecipientsEvents", fmt.Sprintf(selectRecipientsEvents, placeholders("(?)", 3)), append(addrs[:3:3], 10),
			[]string{"SEARCH o USING INTEGER PRIMARY KEY (rowid=?)", "SEARCH e USING INDEX events_recipient_time (recipient=?)"}},
		{"RecipientsOutcomes", fmt.Sprintf(selectRecipientsOutcomes, placeholders("?", 3)), addrs,
			[]string{"SEARCH outcomes USING PRIMARY KEY (recipient=?)"}},
		{"LatestRemovals", fmt.Sprintf(selectLatestRemovals, placeholders("?", 3)), addrs,
			[]string{"SEARCH suppression_audit USING INDEX suppression_audit_address_time (address=?)"}},
		{"AddressesSuppressions", fmt.Sprintf(selectAddressesSuppressions, placeholders("?", 3)), append(addrs[:3:3], 1, 1),
			[]string{"SEARCH suppressions USING PRIMARY KEY (address=?)"}},
	}
	for _, tt := range tests {
		plan := queryPlan(t, s, tt.query, tt.args...)
		for _, want := range tt.want {
			if !strings.Contains(plan, want) {
				t.Errorf("%s: plan\n%s\nwant %q", tt.name, plan, want)
			}
		}
		for _, line := range strings.Split(plan, "\n") {
			if strings.HasPrefix(line, "SCAN") && line != "SCAN asked" && !strings.HasSuffix(line, "CONSTANT ROWS") {
				t.Errorf("%s: plan\n%s\nscans a table: %q", tt.name, plan, line)
			}
		}
	}
	if got := placeholders("?", 3); got != "?, ?, ?" {
		t.Errorf(`placeholders("?", 3) = %q, want "?, ?, ?"`, got)
	}
	if got := placeholders("(?)", 1); got != "(?)" {
		t.Errorf(`placeholders("(?)", 1) = %q, want "(?)"`, got)
	}
}

// benchStore returns a store holding n recipients, each with events in
// two reports, an outcome and a suppression, and their addresses.
func benchStore(b *testing.B, n int) (*Store, []string) {
	s, err := Open(context.Background(), b.TempDir()+"/bouncer.db", Options{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	var (
		reports  []store.Report
		events   []store.Event
		outcomes []store.Outcome
		sups     []store.Suppression
		addrs    []string
	)
	for i := range n {
		addr := fmt.Sprintf("user%d@example.com", i)
		addrs = append(addrs, addr)
		for r := range 2 {
			id := fmt.Sprintf("rep-%d-%d", i, r)
			at := now.Add(time.Duration(r-2) * time.Hour)
			reports = append(reports, store.Report{Envelope: event.Envelope{ID: id, Received: at}})
			events = append(events, store.Event{ID: store.EventID(id, 0), ReportID: id, Version: 1,
				Time: at, Source: "ndr", Event: event.Event{Recipient: addr, Class: event.ClassHard,
					Reason: event.ReasonUserUnknown, Status: "5.1.1", ReplyCode: 550}})
		}
		outcomes = append(outcomes, store.Outcome{Key: "k-" + addr, Version: store.OutcomeVersion(2, now), Recipient: addr, State: "bounced",
			Class: event.ClassHard, Reason: event.ReasonUserUnknown, First: now.Add(-time.Hour), Last: now, Observations: 2})
		sups = append(sups, store.Suppression{Address: addr, Source: store.SourcePolicy, Class: event.ClassHard,
			Reason: event.ReasonUserUnknown, Since: now.Add(-time.Hour), Updated: now.Add(-time.Hour)})
	}
	ctx := context.Background()
	if err := s.Write(ctx, reports, events); err != nil {
		b.Fatal(err)
	}
	if err := s.WriteOutcomes(ctx, outcomes); err != nil {
		b.Fatal(err)
	}
	if err := s.PutSuppressions(ctx, sups); err != nil {
		b.Fatal(err)
	}
	return s, addrs
}

// BenchmarkBatchReads runs the four batch reads of a re-fold for 500
// addresses, half of them known, as ingest does for each batch.
func BenchmarkBatchReads(b *testing.B) {
	s, known := benchStore(b, 250)
	defer s.Close()
	addrs := append([]string(nil), known...)
	for i := range 250 {
		addrs = append(addrs, fmt.Sprintf("new%d@example.net", i))
	}
	ctx := context.Background()
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		evs, err := s.RecipientsEvents(ctx, addrs, 1000)
		if err != nil {
			b.Fatal(err)
		}
		if len(evs[known[0]]) != 2 {
			b.Fatalf("%s: %d events, want 2", known[0], len(evs[known[0]]))
		}
		if _, err := s.RecipientsOutcomes(ctx, addrs); err != nil {
			b.Fatal(err)
		}
		if _, err := s.LatestRemovals(ctx, addrs); err != nil {
			b.Fatal(err)
		}
		if _, err := s.AddressesSuppressions(ctx, addrs, now); err != nil {
			b.Fatal(err)
		}
	}
}
