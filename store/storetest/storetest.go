// Package storetest is the conformance suite every store.Store engine
// passes: store/sqlite runs it on a temporary file, store/clickhouse on a
// throwaway server. What it checks is the contract the rest of bouncer
// relies on: idempotent writes, atomic batches, newest-version-wins reads,
// complete per-class counts, and ErrClosed after Close.
//
// The suite uses whole-second times, the precision of ClickHouse's
// DateTime, and lower-case recipients, as classify produces them.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// Run runs the suite. open must return a new, empty store for each call;
// Run closes it when the subtest ends, so Close must be idempotent.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		run  func(t *testing.T, s store.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"Idempotent", testIdempotent},
		{"FirstWriteWins", testFirstWriteWins},
		{"RecipientEvents", testRecipientEvents},
		{"RecipientEventsLimit", testRecipientEventsLimit},
		{"Stats", testStats},
		{"Versions", testVersions},
		{"EventSets", testEventSets},
		{"Reports", testReports},
		{"ReportsPaging", testReportsPaging},
		{"ReportsErrors", testReportsErrors},
		{"Empty", testEmpty},
		{"Atomic", testAtomic},
		{"InvalidRows", testInvalidRows},
		{"CanceledContext", testCanceledContext},
		{"LargeBatch", testLargeBatch},
		{"Concurrent", testConcurrent},
		{"Closed", testClosed},
		{"Outcomes", testOutcomes},
		{"OutcomeVersions", testOutcomeVersions},
		{"OutcomesInvalid", testOutcomesInvalid},
		{"BatchReads", testBatchReads},
		{"SuppressionRoundTrip", testSuppressionRoundTrip},
		{"SuppressionReplace", testSuppressionReplace},
		{"SuppressionScopes", testSuppressionScopes},
		{"SuppressionExpiry", testSuppressionExpiry},
		{"SuppressionRemove", testSuppressionRemove},
		{"SuppressionLatestRemoval", testSuppressionLatestRemoval},
		{"SuppressionPaging", testSuppressionPaging},
		{"SuppressionPagingSparse", testSuppressionPagingSparse},
		{"SuppressionSince", testSuppressionSince},
		{"SuppressionStats", testSuppressionStats},
		{"SuppressionInvalid", testSuppressionInvalid},
		{"SuppressionEmpty", testSuppressionEmpty},
		{"SuppressionCanceledContext", testSuppressionCanceledContext},
		{"SuppressionClosed", testSuppressionClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.run(t, s)
		})
	}
}

// base is the suite's "now": recent enough for any engine's time type,
// whole seconds, in UTC.
var base = time.Now().UTC().Truncate(time.Second).Add(-time.Hour)

// newReport returns a report with every field set, received at t.
func newReport(id string, t time.Time) store.Report {
	return store.Report{
		Envelope: event.Envelope{
			ID:         id,
			ReturnPath: "bounce+" + id + "@bounces.example.com",
			Recipients: []string{"b+" + id + "@bounces.example.com", "c@bounces.example.com"},
			ClientIP:   "192.0.2.7",
			Helo:       "mx.example.net",
			Received:   t,
			TLS:        "TLS1.3",
		},
		Raw:        []byte("From: MAILER-DAEMON\r\n\r\nreport " + id + "\x00\xff"),
		ParseError: "",
	}
}

// newEvent returns event index of reportID with every field set.
func newEvent(reportID string, index int, recipient string, class event.Class, t time.Time) store.Event {
	return store.Event{
		ID:       store.EventID(reportID, index),
		ReportID: reportID,
		Index:    index,
		Version:  1,
		Time:     t,
		Source:   "ndr",
		// A report's stream is "" in practice, but the store keeps
		// whatever it is given.
		Stream:     "newsletter",
		ReturnPath: "b+" + reportID + "." + strconv.Itoa(index) + "@bounces.example.com",
		Event: event.Event{
			Recipient:    recipient,
			Class:        class,
			Reason:       event.ReasonUserUnknown,
			Scope:        event.ScopeRecipient,
			Status:       "5.1.1",
			ReplyCode:    550,
			Action:       "failed",
			Diagnostic:   "smtp; 550 5.1.1 <" + recipient + ">: Recipient address rejected: User unknown",
			RemoteMTA:    "mx1.example.org",
			ReportingMTA: "mta.example.com",
			SMTPCommand:  "RCPT",
			Provider:     "gmail",
			Parser:       "rfc3464",
			Rule:         "postfix-user-unknown",
			MessageID:    fmt.Sprintf("<%s.%d@example.com>", reportID, index),
		},
	}
}

func write(t *testing.T, s store.Store, reports []store.Report, events []store.Event) {
	t.Helper()
	if err := s.Write(context.Background(), reports, events); err != nil {
		t.Fatalf("Write(%d reports, %d events): %v", len(reports), len(events), err)
	}
}

func recipientEvents(t *testing.T, s store.Store, address string, limit int) []store.Event {
	t.Helper()
	got, err := s.RecipientEvents(context.Background(), address, limit)
	if err != nil {
		t.Fatalf("RecipientEvents(%q, %d): %v", address, limit, err)
	}
	if got == nil {
		t.Fatalf("RecipientEvents(%q, %d) = nil, want a non-nil slice", address, limit)
	}
	return got
}

func stats(t *testing.T, s store.Store, since time.Time) store.Stats {
	t.Helper()
	st, err := s.Stats(context.Background(), since)
	if err != nil {
		t.Fatalf("Stats(%v): %v", since, err)
	}
	return st
}

// classCounts builds a complete EventsByClass map from the non-zero counts.
func classCounts(nonZero map[event.Class]int64) map[event.Class]int64 {
	m := make(map[event.Class]int64, len(event.Classes))
	for _, c := range event.Classes {
		m[c] = nonZero[c]
	}
	return m
}

func checkStats(t *testing.T, s store.Store, since time.Time, reports int64, byClass map[event.Class]int64) {
	t.Helper()
	st := stats(t, s, since)
	if st.ReportsReceived != reports {
		t.Errorf("Stats(%v).ReportsReceived = %d, want %d", since, st.ReportsReceived, reports)
	}
	if want := classCounts(byClass); !reflect.DeepEqual(st.EventsByClass, want) {
		t.Errorf("Stats(%v).EventsByClass = %v, want %v", since, st.EventsByClass, want)
	}
}

// sameEvent reports the differences between two events, comparing times
// as instants.
func sameEvent(got, want store.Event) string {
	var diffs []string
	if !got.Time.Equal(want.Time) {
		diffs = append(diffs, fmt.Sprintf("Time = %v, want %v", got.Time, want.Time))
	}
	if got.Time.Location() != time.UTC {
		diffs = append(diffs, fmt.Sprintf("Time location = %v, want UTC", got.Time.Location()))
	}
	got.Time, want.Time = time.Time{}, time.Time{}
	if got != want {
		diffs = append(diffs, fmt.Sprintf("got %+v\nwant %+v", got, want))
	}
	return strings.Join(diffs, "; ")
}

func ids(events []store.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func testRoundTrip(t *testing.T, s store.Store) {
	// A time zone other than UTC must come back as the same instant, in UTC.
	zone := time.FixedZone("UTC+9", 9*3600)
	r := newReport("r1", base.In(zone))
	want := []store.Event{
		newEvent("r1", 0, "alice@example.com", event.ClassHard, base.In(zone)),
		newEvent("r1", 1, "bob@example.org", event.ClassSoft, base),
	}
	want[1].Version = 7
	want[1].Source = "sync"
	want[1].ReportID = "" // a sync event: its own Version is not the report's
	want[1].Stream = "tenant-a/receipts"
	want[1].ReturnPath = "Bounce+Mixed.Case@Bounces.example.com" // kept as given
	want[1].Reason = event.ReasonMailboxFull
	want[1].Scope = event.ScopeRecipient
	want[1].Status = "4.2.2"
	want[1].ReplyCode = 452
	want[1].Action = "delayed"
	want[1].Provider = "outlook"
	want[1].Diagnostic = "unicode ✓ and \"quotes\"\nnew line"
	write(t, s, []store.Report{r}, want)

	for _, w := range want {
		got := recipientEvents(t, s, w.Recipient, 10)
		if len(got) != 1 {
			t.Fatalf("RecipientEvents(%q) = %d events, want 1", w.Recipient, len(got))
		}
		want := w
		want.Time = want.Time.UTC()
		if d := sameEvent(got[0], want); d != "" {
			t.Errorf("RecipientEvents(%q): %s", w.Recipient, d)
		}
	}
	checkStats(t, s, base.Add(-time.Minute), 1, map[event.Class]int64{event.ClassHard: 1, event.ClassSoft: 1})

	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func testIdempotent(t *testing.T, s store.Store) {
	reports := []store.Report{newReport("r1", base), newReport("r2", base)}
	events := []store.Event{
		newEvent("r1", 0, "a@example.com", event.ClassHard, base),
		newEvent("r1", 1, "b@example.com", event.ClassSoft, base),
		newEvent("r2", 0, "a@example.com", event.ClassGreylist, base.Add(time.Second)),
	}
	write(t, s, reports, events)
	want := map[event.Class]int64{event.ClassHard: 1, event.ClassSoft: 1, event.ClassGreylist: 1}
	checkStats(t, s, base, 2, want)

	// A redelivery writes the same rows again, whole or in part.
	write(t, s, reports, events)
	write(t, s, reports[1:], events[2:])
	write(t, s, nil, events[:1])
	checkStats(t, s, base, 2, want)
	if got := recipientEvents(t, s, "a@example.com", 10); len(got) != 2 {
		t.Errorf("RecipientEvents(a) after rewrites = %v, want 2 events", ids(got))
	}
	if got := recipientEvents(t, s, "b@example.com", 10); len(got) != 1 {
		t.Errorf("RecipientEvents(b) after rewrites = %v, want 1 event", ids(got))
	}
}

// A row whose id (and version) is stored is left as it is, even when the
// second write differs: a retry must not rewrite history. The report
// comes again as a resend does, received later within
// store.ResendWindow.
func testFirstWriteWins(t *testing.T, s store.Store) {
	first := newEvent("r1", 0, "a@example.com", event.ClassHard, base)
	write(t, s, []store.Report{newReport("r1", base)}, []store.Event{first})
	second := first
	second.Class = event.ClassSoft
	second.Diagnostic = "different"
	later := newReport("r1", base.Add(store.ResendWindow-time.Second))
	write(t, s, []store.Report{later}, []store.Event{second})

	got := recipientEvents(t, s, "a@example.com", 10)
	if len(got) != 1 {
		t.Fatalf("RecipientEvents = %v, want 1 event", ids(got))
	}
	if d := sameEvent(got[0], first); d != "" {
		t.Errorf("after a second write of the same id: %s", d)
	}
	checkStats(t, s, base, 1, map[event.Class]int64{event.ClassHard: 1})
	checkStats(t, s, base.Add(time.Second), 0, nil) // the resend's time counts nothing
}

func testRecipientEvents(t *testing.T, s store.Store) {
	var events []store.Event
	// a@ gets events at base+0s..4s written out of order, b@ one event.
	for i, offset := range []int{3, 0, 4, 1, 2} {
		events = append(events, newEvent("r1", i, "a@example.com", event.ClassSoft, base.Add(time.Duration(offset)*time.Second)))
	}
	events = append(events, newEvent("r1", 5, "b@example.com", event.ClassHard, base.Add(10*time.Second)))
	// Sync events have no raw report.
	write(t, s, nil, events)

	tests := []struct {
		address string
		limit   int
		want    []string // event ids, newest first
	}{
		{"a@example.com", 10, ids([]store.Event{events[2], events[0], events[4], events[3], events[1]})},
		{"a@example.com", 5, ids([]store.Event{events[2], events[0], events[4], events[3], events[1]})},
		{"a@example.com", 2, ids([]store.Event{events[2], events[0]})},
		{"a@example.com", 1, ids([]store.Event{events[2]})},
		{"A@Example.COM", 10, ids([]store.Event{events[2], events[0], events[4], events[3], events[1]})},
		{"b@example.com", 10, ids(events[5:])},
		{"c@example.com", 10, []string{}},
		{"", 10, []string{}},
		{"example.com", 10, []string{}},
		{"a@example.com ", 10, []string{}},
		{"a@example.co", 10, []string{}},
	}
	for _, tt := range tests {
		got := recipientEvents(t, s, tt.address, tt.limit)
		if !reflect.DeepEqual(ids(got), tt.want) {
			t.Errorf("RecipientEvents(%q, %d) = %v, want %v", tt.address, tt.limit, ids(got), tt.want)
		}
		for _, e := range got {
			if e.Recipient != strings.ToLower(tt.address) {
				t.Errorf("RecipientEvents(%q) returned recipient %q", tt.address, e.Recipient)
			}
		}
	}
}

func testRecipientEventsLimit(t *testing.T, s store.Store) {
	write(t, s, nil, []store.Event{newEvent("r1", 0, "a@example.com", event.ClassSoft, base)})
	for _, limit := range []int{0, -1} {
		if got, err := s.RecipientEvents(context.Background(), "a@example.com", limit); err == nil {
			t.Errorf("RecipientEvents(limit %d) = %v, nil; want an error", limit, ids(got))
		}
	}
}

func testStats(t *testing.T, s store.Store) {
	// An empty store reports every class, at zero.
	checkStats(t, s, time.Time{}, 0, nil)

	day := 24 * time.Hour
	reports := []store.Report{
		newReport("old", base.Add(-3*day)),
		newReport("edge", base.Add(-day)),
		newReport("new", base),
	}
	events := []store.Event{
		newEvent("old", 0, "a@example.com", event.ClassHard, base.Add(-3*day)),
		newEvent("old", 1, "b@example.com", event.ClassComplaint, base.Add(-3*day)),
		newEvent("edge", 0, "a@example.com", event.ClassSoft, base.Add(-day)),
		newEvent("new", 0, "a@example.com", event.ClassDelivered, base),
		newEvent("new", 1, "b@example.com", event.ClassAutoreply, base),
		newEvent("new", 2, "c@example.com", event.ClassUnknown, base),
		newEvent("new", 3, "d@example.com", event.ClassUnknown, base),
		newEvent("sync", 0, "e@example.com", event.ClassGreylist, base.Add(time.Second)),
	}
	write(t, s, reports, events)

	tests := []struct {
		name    string
		since   time.Time
		reports int64
		byClass map[event.Class]int64
	}{
		{"everything", time.Time{}, 3, map[event.Class]int64{
			event.ClassHard: 1, event.ClassComplaint: 1, event.ClassSoft: 1, event.ClassDelivered: 1,
			event.ClassAutoreply: 1, event.ClassUnknown: 2, event.ClassGreylist: 1}},
		{"window start inclusive", base.Add(-day), 2, map[event.Class]int64{
			event.ClassSoft: 1, event.ClassDelivered: 1, event.ClassAutoreply: 1, event.ClassUnknown: 2,
			event.ClassGreylist: 1}},
		{"just after the edge", base.Add(-day + time.Second), 1, map[event.Class]int64{
			event.ClassDelivered: 1, event.ClassAutoreply: 1, event.ClassUnknown: 2, event.ClassGreylist: 1}},
		{"last second only", base.Add(time.Second), 0, map[event.Class]int64{event.ClassGreylist: 1}},
		{"future", base.Add(day), 0, nil},
		{"non-UTC since", base.Add(-day).In(time.FixedZone("UTC-5", -5*3600)), 2, map[event.Class]int64{
			event.ClassSoft: 1, event.ClassDelivered: 1, event.ClassAutoreply: 1, event.ClassUnknown: 2,
			event.ClassGreylist: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkStats(t, s, tt.since, tt.reports, tt.byClass)
		})
	}
	st := stats(t, s, base)
	if !st.Since.Equal(base) {
		t.Errorf("Stats(%v).Since = %v", base, st.Since)
	}
	testStatsGroups(t, s)
}

// testStatsGroups: Stats.Events counts by class, reason and provider, the
// newest version of each event only, and sums to EventsByClass.
func testStatsGroups(t *testing.T, s store.Store) {
	at := base.Add(time.Hour)
	ev := func(report string, i int, class event.Class, reason event.Reason, provider string) store.Event {
		e := newEvent(report, i, "g@example.com", class, at)
		e.Reason, e.Provider = reason, provider
		return e
	}
	events := []store.Event{
		ev("g1", 0, event.ClassHard, event.ReasonUserUnknown, "gmail"),
		ev("g1", 1, event.ClassHard, event.ReasonUserUnknown, "gmail"),
		ev("g2", 0, event.ClassSoft, event.ReasonMailboxFull, "yahoo"),
		ev("g3", 0, event.ClassSoft, event.ReasonMailboxFull, ""),
	}
	// g3 reclassified: its newest version is a hard hostunknown at yahoo.
	newer := ev("g3", 0, event.ClassHard, event.ReasonHostUnknown, "yahoo")
	newer.Version = 2
	write(t, s, []store.Report{newReport("g1", at), newReport("g2", at), newReport("g3", at)}, append(events, newer))
	st := stats(t, s, at)
	want := map[store.StatsKey]int64{
		{Class: event.ClassHard, Reason: event.ReasonUserUnknown, Provider: "gmail"}: 2,
		{Class: event.ClassSoft, Reason: event.ReasonMailboxFull, Provider: "yahoo"}: 1,
		{Class: event.ClassHard, Reason: event.ReasonHostUnknown, Provider: "yahoo"}: 1,
	}
	if !reflect.DeepEqual(st.Events, want) {
		t.Errorf("Stats.Events = %v, want %v", st.Events, want)
	}
	sum := map[event.Class]int64{}
	for k, n := range st.Events {
		sum[k.Class] += n
	}
	for c, n := range st.EventsByClass {
		if sum[c] != n {
			t.Errorf("EventsByClass[%s] = %d, Events sum to %d", c, n, sum[c])
		}
	}
}

// Reclassifying writes a higher Version under the same id: reads and
// counts see only the highest, whatever order the versions arrive in.
func testVersions(t *testing.T, s store.Store) {
	v1 := newEvent("r1", 0, "a@example.com", event.ClassSoft, base)
	v1.Reason = event.ReasonUndefined
	v2 := v1
	v2.Version = 2
	v2.Class = event.ClassHard
	v2.Reason = event.ReasonUserUnknown
	v2.Rule = "better-rule"
	v3 := v2
	v3.Version = 3
	v3.Class = event.ClassGreylist
	v3.Reason = event.ReasonGreylisting
	// Another report's: the versions of r1's set do not touch it.
	other := newEvent("r0", 1, "a@example.com", event.ClassSoft, base.Add(-time.Second))

	check := func(step string, want store.Event, byClass map[event.Class]int64) {
		t.Helper()
		got := recipientEvents(t, s, "a@example.com", 10)
		if len(got) != 2 {
			t.Fatalf("%s: RecipientEvents = %v, want 2 events (one per id)", step, ids(got))
		}
		if d := sameEvent(got[0], want); d != "" {
			t.Errorf("%s: %s", step, d)
		}
		if got, n := recipientEvents(t, s, "a@example.com", 1), 1; len(got) != n || got[0].Version != want.Version {
			t.Errorf("%s: RecipientEvents(limit 1) = %+v, want version %d only", step, got, want.Version)
		}
		checkStats(t, s, base.Add(-time.Minute), 1, byClass)
	}

	write(t, s, []store.Report{newReport("r1", base)}, []store.Event{v1, other})
	check("v1", v1, map[event.Class]int64{event.ClassSoft: 2})
	write(t, s, nil, []store.Event{v2})
	check("v2", v2, map[event.Class]int64{event.ClassSoft: 1, event.ClassHard: 1})
	// An old version redelivered changes nothing.
	write(t, s, nil, []store.Event{v1})
	check("v1 again", v2, map[event.Class]int64{event.ClassSoft: 1, event.ClassHard: 1})
	// Two versions in one batch, newest first.
	write(t, s, nil, []store.Event{v3, v2})
	check("v3", v3, map[event.Class]int64{event.ClassSoft: 1, event.ClassGreylist: 1})
}

func testEmpty(t *testing.T, s store.Store) {
	ctx := context.Background()
	for _, w := range []struct {
		reports []store.Report
		events  []store.Event
	}{{nil, nil}, {[]store.Report{}, []store.Event{}}, {nil, []store.Event{}}, {[]store.Report{}, nil}} {
		if err := s.Write(ctx, w.reports, w.events); err != nil {
			t.Errorf("Write(%#v, %#v): %v", w.reports, w.events, err)
		}
	}
	checkStats(t, s, time.Time{}, 0, nil)
}

// A batch is one transaction: one bad row and nothing of it is stored.
func testAtomic(t *testing.T, s store.Store) {
	good := newEvent("r1", 0, "a@example.com", event.ClassHard, base)
	bad := newEvent("r1", 1, "a@example.com", event.Class("bogus"), base)
	if err := s.Write(context.Background(), []store.Report{newReport("r1", base)}, []store.Event{good, bad}); err == nil {
		t.Fatal("Write with an unknown class succeeded")
	}
	checkStats(t, s, time.Time{}, 0, nil)
	if got := recipientEvents(t, s, "a@example.com", 10); len(got) != 0 {
		t.Errorf("after a failed Write, RecipientEvents = %v, want none", ids(got))
	}
}

func testInvalidRows(t *testing.T, s store.Store) {
	ok := newEvent("r1", 0, "a@example.com", event.ClassHard, base)
	mod := func(f func(e *store.Event)) []store.Event {
		e := ok
		f(&e)
		return []store.Event{e}
	}
	noID := newReport("", base)
	zeroTime := newReport("r1", time.Time{})
	tests := []struct {
		name    string
		reports []store.Report
		events  []store.Event
	}{
		{"report without id", []store.Report{noID}, nil},
		{"report without time", []store.Report{zeroTime}, nil},
		{"event without id", nil, mod(func(e *store.Event) { e.ID = "" })},
		{"event without time", nil, mod(func(e *store.Event) { e.Time = time.Time{} })},
		{"event with empty class", nil, mod(func(e *store.Event) { e.Class = "" })},
		{"event with unknown class", nil, mod(func(e *store.Event) { e.Class = "HARD" })},
	}
	for _, tt := range tests {
		if err := s.Write(context.Background(), tt.reports, tt.events); err == nil {
			t.Errorf("%s: Write succeeded, want an error", tt.name)
		}
	}
	checkStats(t, s, time.Time{}, 0, nil)
}

func testCanceledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Write(ctx, []store.Report{newReport("r1", base)},
		[]store.Event{newEvent("r1", 0, "a@example.com", event.ClassHard, base)})
	if err == nil {
		t.Error("Write with a canceled context succeeded")
	}
	checkStats(t, s, time.Time{}, 0, nil)
	if _, err := s.RecipientEvents(ctx, "a@example.com", 10); err == nil {
		t.Error("RecipientEvents with a canceled context succeeded")
	}
	if _, err := s.Stats(ctx, base); err == nil {
		t.Error("Stats with a canceled context succeeded")
	}
	if _, err := s.Reports(ctx, time.Time{}, "", 10); err == nil {
		t.Error("Reports with a canceled context succeeded")
	}
}

func testLargeBatch(t *testing.T, s store.Store) {
	const n = 10000
	reports := make([]store.Report, 0, n/10)
	events := make([]store.Event, 0, n)
	for i := range n / 10 {
		id := fmt.Sprintf("r%04d", i)
		reports = append(reports, newReport(id, base))
		for j := range 10 {
			class := event.Classes[(i*10+j)%len(event.Classes)]
			events = append(events, newEvent(id, j, fmt.Sprintf("u%d@example.com", j), class,
				base.Add(time.Duration(i)*time.Second)))
		}
	}
	write(t, s, reports, events)

	st := stats(t, s, time.Time{})
	if st.ReportsReceived != n/10 {
		t.Errorf("ReportsReceived = %d, want %d", st.ReportsReceived, n/10)
	}
	var total int64
	for _, c := range event.Classes {
		total += st.EventsByClass[c]
	}
	if total != n {
		t.Errorf("events counted = %d (%v), want %d", total, st.EventsByClass, n)
	}
	got := recipientEvents(t, s, "u3@example.com", 1000)
	if len(got) != n/10 {
		t.Fatalf("RecipientEvents(u3, 1000) = %d events, want %d", len(got), n/10)
	}
	if want := store.EventID(fmt.Sprintf("r%04d", n/10-1), 3); got[0].ID != want {
		t.Errorf("newest event of u3 = %s, want %s", got[0].ID, want)
	}
	// Writing the whole batch again stores nothing new.
	write(t, s, reports, events)
	if st2 := stats(t, s, time.Time{}); !reflect.DeepEqual(st2.EventsByClass, st.EventsByClass) ||
		st2.ReportsReceived != st.ReportsReceived {
		t.Errorf("after rewriting the batch, stats %+v, want %+v", st2, st)
	}
}

// Writers and readers at once, with overlapping batches; run under -race.
func testConcurrent(t *testing.T, s store.Store) {
	const (
		writers = 8
		batches = 20
		perBat  = 10
	)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers*batches)
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				// Writers 2k and 2k+1 write the same reports, as two
				// ingest workers given the same redelivered message would.
				id := fmt.Sprintf("r%d-%d", (w/2)*2+b%2, b)
				r := newReport(id, base)
				var events []store.Event
				for i := range perBat {
					events = append(events, newEvent(id, i, fmt.Sprintf("u%d@example.com", i), event.ClassSoft, base))
				}
				if err := s.Write(ctx, []store.Report{r}, events); err != nil {
					errs <- fmt.Errorf("writer %d batch %d: %w", w, b, err)
				}
			}
		})
		wg.Go(func() {
			for range batches {
				if _, err := s.RecipientEvents(ctx, fmt.Sprintf("u%d@example.com", w), 50); err != nil {
					errs <- err
				}
				if _, err := s.Stats(ctx, time.Time{}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Each pair of writers stored 'batches' distinct reports.
	wantReports := int64(writers / 2 * batches)
	checkStats(t, s, time.Time{}, wantReports, map[event.Class]int64{event.ClassSoft: wantReports * perBat})
}

func testClosed(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checks := []struct {
		name string
		err  error
	}{
		{"Write", s.Write(ctx, []store.Report{newReport("r1", base)}, nil)},
		{"Write empty", s.Write(ctx, nil, nil)},
		{"RecipientEvents", func() error { _, err := s.RecipientEvents(ctx, "a@example.com", 1); return err }()},
		{"Stats", func() error { _, err := s.Stats(ctx, base); return err }()},
		{"Reports", func() error { _, err := s.Reports(ctx, base, "", 1); return err }()},
		{"WriteOutcomes", s.WriteOutcomes(ctx, []store.Outcome{newOutcome("k", "a@example.com", 1, base)})},
		{"RecipientOutcomes", func() error { _, err := s.RecipientOutcomes(ctx, "a@example.com"); return err }()},
		{"Ping", s.Ping(ctx)},
	}
	for _, c := range checks {
		if !errors.Is(c.err, store.ErrClosed) {
			t.Errorf("%s after Close = %v, want store.ErrClosed", c.name, c.err)
		}
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func reports(t *testing.T, s store.Store, since time.Time, after string, limit int) []store.Report {
	t.Helper()
	got, err := s.Reports(context.Background(), since, after, limit)
	if err != nil {
		t.Fatalf("Reports(%v, %q, %d): %v", since, after, limit, err)
	}
	if got == nil {
		t.Fatalf("Reports(%v, %q, %d) = nil, want a non-nil slice", since, after, limit)
	}
	return got
}

func reportIDs(reports []store.Report) []string {
	out := make([]string, len(reports))
	for i, r := range reports {
		out[i] = r.ID
	}
	return out
}

// Reports returns the raw reports as written, every field, times in UTC.
func testReports(t *testing.T, s store.Store) {
	if got := reports(t, s, time.Time{}, "", 10); len(got) != 0 {
		t.Errorf("Reports on an empty store = %v, want none", reportIDs(got))
	}
	zone := time.FixedZone("UTC+9", 9*3600)
	full := newReport("full", base.In(zone))
	full.ParseError = "truncated"
	full.Raw = []byte{0, 1, 2, 0xff, '\'', '\\'}
	empty := store.Report{Envelope: event.Envelope{ID: "empty", Received: base.Add(time.Second)}}
	write(t, s, []store.Report{empty, full}, nil)

	got := reports(t, s, time.Time{}, "", 10)
	if !reflect.DeepEqual(reportIDs(got), []string{"full", "empty"}) {
		t.Fatalf("Reports = %v, want [full empty]", reportIDs(got))
	}
	want := full
	want.Received = base
	if got[0].Received.Location() != time.UTC {
		t.Errorf("Received location = %v, want UTC", got[0].Received.Location())
	}
	if !reflect.DeepEqual(got[0], want) {
		t.Errorf("Reports[0]\n got %+v\nwant %+v", got[0], want)
	}
	if e := got[1]; e.ID != "empty" || len(e.Recipients) != 0 || len(e.Raw) != 0 || e.ParseError != "" ||
		!e.Received.Equal(base.Add(time.Second)) {
		t.Errorf("Reports[1] = %+v, want the empty report", e)
	}
}

// Paging with any page size visits every report in the window exactly
// once, in (received, id) order; ties in received are ordered by id.
func testReportsPaging(t *testing.T, s store.Store) {
	day := 24 * time.Hour
	var all []store.Report
	for i := range 23 {
		// Several reports per second, written out of order, over days.
		at := base.Add(-time.Duration(i%5)*day + time.Duration(i%3)*time.Second)
		all = append(all, newReport(fmt.Sprintf("r%02d", (i*7)%23), at))
	}
	write(t, s, all[10:], nil)
	write(t, s, all[:10], nil)
	sorted := func(since time.Time) []string {
		var in []store.Report
		for _, r := range all {
			if !r.Received.Before(since) {
				in = append(in, r)
			}
		}
		slices.SortFunc(in, func(a, b store.Report) int {
			if c := a.Received.Compare(b.Received); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
		return reportIDs(in)
	}
	for _, since := range []time.Time{{}, base.Add(-2 * day), base.Add(-2*day + time.Second), base, base.Add(day)} {
		want := sorted(since)
		for _, limit := range []int{1, 2, 3, 7, 23, 100} {
			var (
				got   []string
				after string
			)
			for page := 0; ; page++ {
				if page > len(all)+1 {
					t.Fatalf("since %v, limit %d: paging does not end", since, limit)
				}
				p := reports(t, s, since, after, limit)
				if len(p) > limit {
					t.Fatalf("since %v, limit %d: a page of %d", since, limit, len(p))
				}
				if len(p) == 0 {
					break
				}
				for _, r := range p {
					if r.Received.Before(since) {
						t.Errorf("since %v: report %s received %v", since, r.ID, r.Received)
					}
				}
				got = append(got, reportIDs(p)...)
				after = p[len(p)-1].ID
				if len(p) < limit {
					// A short page is the last one, but another call must
					// say so too.
					if rest := reports(t, s, since, after, limit); len(rest) != 0 {
						t.Errorf("since %v, limit %d: after the short page, %v", since, limit, reportIDs(rest))
					}
					break
				}
			}
			if got == nil {
				got = []string{}
			}
			if want == nil {
				want = []string{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("since %v, limit %d: paged %v, want %v", since, limit, got, want)
			}
		}
	}
	// The cursor's own window does not matter: a cursor received before
	// since still starts the page at since.
	first := sorted(time.Time{})[0]
	if got := reports(t, s, base, first, 100); !reflect.DeepEqual(reportIDs(got), sorted(base)) {
		t.Errorf("Reports(base, %s) = %v, want %v", first, reportIDs(got), sorted(base))
	}
}

func testReportsErrors(t *testing.T, s store.Store) {
	write(t, s, []store.Report{newReport("r1", base)}, nil)
	ctx := context.Background()
	for _, limit := range []int{0, -1} {
		if got, err := s.Reports(ctx, time.Time{}, "", limit); err == nil {
			t.Errorf("Reports(limit %d) = %v, nil; want an error", limit, reportIDs(got))
		}
	}
	if got, err := s.Reports(ctx, time.Time{}, "no-such-report", 10); err == nil {
		t.Errorf("Reports(after an unknown id) = %v, nil; want an error", reportIDs(got))
	}
	// Sync events have no report: they are not listed.
	write(t, s, nil, []store.Event{newEvent("sync", 0, "a@example.com", event.ClassSoft, base)})
	if got := reports(t, s, time.Time{}, "", 10); !reflect.DeepEqual(reportIDs(got), []string{"r1"}) {
		t.Errorf("Reports = %v, want [r1]", reportIDs(got))
	}
}

// A report's events are a set: a higher Version of the set replaces the
// whole lower one, so a reclassification with more, fewer or other
// recipients leaves no stale event behind. Events without a report
// (sync events) and other reports are unaffected.
func testEventSets(t *testing.T, s store.Store) {
	at := base
	set := func(version uint32, recipients ...string) []store.Event {
		var out []store.Event
		for i, rcpt := range recipients {
			e := newEvent("r1", i, rcpt, event.ClassSoft, at)
			e.Version = version
			e.Rule = fmt.Sprintf("v%d", version)
			if version%2 == 0 {
				e.Class = event.ClassHard
			}
			out = append(out, e)
		}
		return out
	}
	syncEv := newEvent("", 0, "a@example.com", event.ClassGreylist, at.Add(time.Second))
	syncEv.ID = store.EventID("sync:1", 0)
	other := newEvent("r2", 0, "b@example.com", event.ClassComplaint, at)
	write(t, s, []store.Report{newReport("r1", at), newReport("r2", at)}, append(set(1, "a@example.com", "b@example.com"), syncEv, other))

	recipients := []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com"}
	// check compares each recipient's history, as "rule" strings of the
	// r1 events and names of the others, and the counts.
	check := func(step string, want map[string][]string, byClass map[event.Class]int64) {
		t.Helper()
		for _, rcpt := range recipients {
			got := []string{}
			for _, e := range recipientEvents(t, s, rcpt, 100) {
				switch e.ID {
				case syncEv.ID:
					got = append(got, "sync")
				case other.ID:
					got = append(got, "r2")
				default:
					got = append(got, fmt.Sprintf("%s#%d", e.Rule, e.Index))
				}
			}
			slices.Sort(got)
			w := want[rcpt]
			if w == nil {
				w = []string{}
			}
			if !reflect.DeepEqual(got, w) {
				t.Errorf("%s: RecipientEvents(%s) = %v, want %v", step, rcpt, got, w)
			}
		}
		checkStats(t, s, at.Add(-time.Minute), 2, byClass)
	}
	check("v1", map[string][]string{
		"a@example.com": {"sync", "v1#0"},
		"b@example.com": {"r2", "v1#1"},
	}, map[event.Class]int64{event.ClassSoft: 2, event.ClassGreylist: 1, event.ClassComplaint: 1})

	// More events than before.
	write(t, s, nil, set(2, "a@example.com", "b@example.com", "c@example.com"))
	check("more", map[string][]string{
		"a@example.com": {"sync", "v2#0"},
		"b@example.com": {"r2", "v2#1"},
		"c@example.com": {"v2#2"},
	}, map[event.Class]int64{event.ClassHard: 3, event.ClassGreylist: 1, event.ClassComplaint: 1})

	// Fewer: the extra events of the old set disappear.
	write(t, s, nil, set(3, "a@example.com"))
	check("fewer", map[string][]string{
		"a@example.com": {"sync", "v3#0"},
		"b@example.com": {"r2"},
	}, map[event.Class]int64{event.ClassSoft: 1, event.ClassGreylist: 1, event.ClassComplaint: 1})

	// Other recipients under the same ids: the old recipient's history
	// loses the event.
	write(t, s, nil, set(4, "d@example.com", "c@example.com"))
	check("different recipients", map[string][]string{
		"a@example.com": {"sync"},
		"b@example.com": {"r2"},
		"c@example.com": {"v4#1"},
		"d@example.com": {"v4#0"},
	}, map[event.Class]int64{event.ClassHard: 2, event.ClassGreylist: 1, event.ClassComplaint: 1})

	// An older set written late (a redelivery, a slow reclassify run)
	// changes nothing.
	write(t, s, nil, set(2, "a@example.com", "b@example.com", "c@example.com"))
	write(t, s, nil, set(1, "a@example.com", "b@example.com"))
	check("older sets again", map[string][]string{
		"a@example.com": {"sync"},
		"b@example.com": {"r2"},
		"c@example.com": {"v4#1"},
		"d@example.com": {"v4#0"},
	}, map[event.Class]int64{event.ClassHard: 2, event.ClassGreylist: 1, event.ClassComplaint: 1})
}

func newOutcome(key, recipient string, observations int, last time.Time) store.Outcome {
	return store.Outcome{
		Key:          key,
		Stream:       "news",
		MessageID:    "<" + key + "@example.com>",
		Recipient:    recipient,
		State:        "bounced",
		Class:        event.ClassHard,
		Reason:       event.Reason("mailbox_unknown"),
		Scope:        event.Scope("recipient"),
		Provider:     "gmail",
		Final:        true,
		First:        last.Add(-time.Minute),
		Last:         last,
		Observations: observations,
		Version:      store.OutcomeVersion(observations, last),
	}
}

func recipientOutcomes(t *testing.T, s store.Store, address string) []store.Outcome {
	t.Helper()
	got, err := s.RecipientOutcomes(context.Background(), address)
	if err != nil {
		t.Fatalf("RecipientOutcomes(%q): %v", address, err)
	}
	if got == nil {
		t.Fatalf("RecipientOutcomes(%q) = nil, want a non-nil slice", address)
	}
	return got
}

func writeOutcomes(t *testing.T, s store.Store, outcomes ...store.Outcome) {
	t.Helper()
	if err := s.WriteOutcomes(context.Background(), outcomes); err != nil {
		t.Fatalf("WriteOutcomes: %v", err)
	}
}

func checkOutcomes(t *testing.T, got []store.Outcome, want ...store.Outcome) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d outcomes %+v, want %d %+v", len(got), got, len(want), want)
	}
	for i := range want {
		w := want[i]
		w.Recipient = strings.ToLower(w.Recipient)
		if !reflect.DeepEqual(got[i], w) {
			t.Errorf("outcome %d\n got %+v\nwant %+v", i, got[i], w)
		}
	}
}

// Outcomes round-trip, newest Last first, per recipient (compared
// lower-cased), and rewriting them is a no-op.
func testOutcomes(t *testing.T, s store.Store) {
	if got := recipientOutcomes(t, s, "nobody@example.com"); len(got) != 0 {
		t.Errorf("unknown recipient: %+v, want none", got)
	}
	a := newOutcome("k1", "A@example.com", 2, base)
	b := newOutcome("k2", "a@example.com", 1, base.Add(time.Hour))
	b.State, b.Class, b.Final, b.Stream, b.Reason, b.Scope = "pending", event.ClassSoft, false, "", "", ""
	other := newOutcome("k3", "b@example.com", 3, base)
	writeOutcomes(t, s, a, b, other)
	checkOutcomes(t, recipientOutcomes(t, s, "a@EXAMPLE.com"), b, a)
	checkOutcomes(t, recipientOutcomes(t, s, "b@example.com"), other)

	// Idempotent: the same rows again change nothing.
	writeOutcomes(t, s, a, b, other)
	writeOutcomes(t, s, a)
	checkOutcomes(t, recipientOutcomes(t, s, "a@example.com"), b, a)
	checkOutcomes(t, recipientOutcomes(t, s, "b@example.com"), other)

	if err := s.WriteOutcomes(context.Background(), nil); err != nil {
		t.Errorf("WriteOutcomes(nil) = %v, want nil", err)
	}
}

// A higher version replaces a key's outcome; a lower one, written later,
// does not.
func testOutcomeVersions(t *testing.T, s store.Store) {
	old := newOutcome("k", "a@example.com", 1, base)
	old.State, old.Class, old.Final = "delivered", event.ClassDelivered, true
	newer := newOutcome("k", "a@example.com", 2, base.Add(time.Minute))
	if newer.Version <= old.Version {
		t.Fatalf("version of 2 observations %d <= of 1 %d", newer.Version, old.Version)
	}
	writeOutcomes(t, s, old)
	writeOutcomes(t, s, newer)
	checkOutcomes(t, recipientOutcomes(t, s, "a@example.com"), newer)
	writeOutcomes(t, s, old)
	checkOutcomes(t, recipientOutcomes(t, s, "a@example.com"), newer)

	// More observations win over a later last time.
	late := newOutcome("k", "a@example.com", 1, base.Add(time.Hour))
	writeOutcomes(t, s, late)
	checkOutcomes(t, recipientOutcomes(t, s, "a@example.com"), newer)
	// As many observations: the later last time wins.
	later := newOutcome("k", "a@example.com", 2, base.Add(2*time.Minute))
	later.State = "complained"
	later.Class = event.ClassComplaint
	writeOutcomes(t, s, later)
	checkOutcomes(t, recipientOutcomes(t, s, "a@example.com"), later)
}

// An invalid row fails the whole call, nothing written.
func testOutcomesInvalid(t *testing.T, s store.Store) {
	good := newOutcome("k", "a@example.com", 1, base)
	for name, mutate := range map[string]func(*store.Outcome){
		"empty key":       func(o *store.Outcome) { o.Key = "" },
		"empty recipient": func(o *store.Outcome) { o.Recipient = "" },
		"zero last":       func(o *store.Outcome) { o.Last = time.Time{} },
		"unknown class":   func(o *store.Outcome) { o.Class = "nonsense" },
	} {
		bad := newOutcome("bad", "a@example.com", 1, base)
		mutate(&bad)
		if err := s.WriteOutcomes(context.Background(), []store.Outcome{good, bad}); err == nil {
			t.Errorf("%s: WriteOutcomes succeeded, want an error", name)
		}
	}
	checkOutcomes(t, recipientOutcomes(t, s, "a@example.com"))
}
