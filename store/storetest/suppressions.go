package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// The suppression part of the suite (store.SuppressionStore). Unlike
// events, suppressions keep nanoseconds in both engines, so times here
// carry them and must come back exact.

// newSuppression returns a policy suppression of address on stream with
// every field set, started an hour before now (with nanoseconds), ending
// in 30 days.
func newSuppression(address, stream string, now time.Time) store.Suppression {
	since := now.Add(-time.Hour).Add(123456789 * time.Nanosecond)
	return store.Suppression{
		Address: address,
		Stream:  stream,
		Source:  store.SourcePolicy,
		Class:   event.ClassSoft,
		Reason:  event.ReasonMailboxFull,
		Rule:    "soft",
		Since:   since,
		Until:   since.Add(30 * 24 * time.Hour),
		Actor:   "policy",
		Note:    "3 soft failures within 7 days",
	}
}

func putSuppressions(t *testing.T, s store.Store, rows ...store.Suppression) {
	t.Helper()
	if err := s.PutSuppressions(context.Background(), rows); err != nil {
		t.Fatalf("PutSuppressions(%d rows): %v", len(rows), err)
	}
}

func addressSuppressions(t *testing.T, s store.Store, address string, now time.Time) []store.Suppression {
	t.Helper()
	got, err := s.AddressSuppressions(context.Background(), address, now)
	if err != nil {
		t.Fatalf("AddressSuppressions(%q): %v", address, err)
	}
	if got == nil {
		t.Fatalf("AddressSuppressions(%q) = nil, want a non-nil slice", address)
	}
	return got
}

func listSuppressions(t *testing.T, s store.Store, q store.SuppressionQuery) []store.Suppression {
	t.Helper()
	got, err := s.Suppressions(context.Background(), q)
	if err != nil {
		t.Fatalf("Suppressions(%+v): %v", q, err)
	}
	if got == nil {
		t.Fatalf("Suppressions(%+v) = nil, want a non-nil slice", q)
	}
	return got
}

// listAll pages through every suppression q selects, with pages of
// q.Limit, checking each page's size and the key order across pages.
func listAll(t *testing.T, s store.Store, q store.SuppressionQuery) []store.Suppression {
	t.Helper()
	var all []store.Suppression
	for page := 0; ; page++ {
		if page > 10000 {
			t.Fatalf("Suppressions(%+v): paging does not end", q)
		}
		p := listSuppressions(t, s, q)
		if len(p) > q.Limit {
			t.Fatalf("Suppressions(%+v): a page of %d", q, len(p))
		}
		if len(p) == 0 {
			break
		}
		for _, r := range p {
			k := store.SuppressionKey{Address: r.Address, Stream: r.Stream}
			if !q.After.IsZero() && compareKeys(k, q.After) <= 0 {
				t.Fatalf("Suppressions after %v returned %v: not after the cursor", q.After, k)
			}
			q.After = k
		}
		all = append(all, p...)
	}
	return all
}

func compareKeys(a, b store.SuppressionKey) int {
	if c := strings.Compare(a.Address, b.Address); c != 0 {
		return c
	}
	return strings.Compare(a.Stream, b.Stream)
}

func keys(rows []store.Suppression) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.Address + "/" + r.Stream
	}
	return out
}

func history(t *testing.T, s store.Store, address string, limit int) []store.SuppressionChange {
	t.Helper()
	got, err := s.SuppressionHistory(context.Background(), address, limit)
	if err != nil {
		t.Fatalf("SuppressionHistory(%q, %d): %v", address, limit, err)
	}
	if got == nil {
		t.Fatalf("SuppressionHistory(%q, %d) = nil, want a non-nil slice", address, limit)
	}
	return got
}

func suppressionStats(t *testing.T, s store.Store, now time.Time) store.SuppressionStats {
	t.Helper()
	st, err := s.SuppressionStats(context.Background(), now)
	if err != nil {
		t.Fatalf("SuppressionStats: %v", err)
	}
	return st
}

// sameSuppression reports the differences between two suppressions,
// comparing times as instants and requiring them in UTC. Updated is not
// compared: the store sets it.
func sameSuppression(got, want store.Suppression) string {
	var diffs []string
	for _, tm := range []struct {
		name      string
		got, want time.Time
	}{{"Since", got.Since, want.Since}, {"Until", got.Until, want.Until}} {
		if !tm.got.Equal(tm.want) {
			diffs = append(diffs, fmt.Sprintf("%s = %v, want %v", tm.name, tm.got, tm.want))
		}
		if !tm.got.IsZero() && tm.got.Location() != time.UTC {
			diffs = append(diffs, fmt.Sprintf("%s location = %v, want UTC", tm.name, tm.got.Location()))
		}
	}
	if !got.Updated.IsZero() && got.Updated.Location() != time.UTC {
		diffs = append(diffs, fmt.Sprintf("Updated location = %v, want UTC", got.Updated.Location()))
	}
	got.Since, want.Since, got.Until, want.Until, got.Updated, want.Updated = time.Time{}, time.Time{}, time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if got != want {
		diffs = append(diffs, fmt.Sprintf("got %+v\nwant %+v", got, want))
	}
	return strings.Join(diffs, "; ")
}

// checkSuppressions compares rows with want, in order.
func checkSuppressions(t *testing.T, what string, got []store.Suppression, want ...store.Suppression) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s = %v, want %v", what, keys(got), keys(want))
		return
	}
	for i := range got {
		if d := sameSuppression(got[i], want[i]); d != "" {
			t.Errorf("%s[%d]: %s", what, i, d)
		}
	}
}

// changeSummary is a change without its time, for comparing histories.
func changeSummary(cs []store.SuppressionChange) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = fmt.Sprintf("%s %s/%s by %s (%s)", c.Action, c.Address, c.Stream, c.Actor, c.Source)
	}
	return out
}

func testSuppressionRoundTrip(t *testing.T, s store.Store) {
	ctx := context.Background()
	zone := time.FixedZone("UTC-5", -5*3600)
	now := time.Now()
	policy := newSuppression("alice@example.com", "tenant-a/news", now)
	policy.Since = policy.Since.In(zone) // must come back as the same instant, in UTC
	policy.Note = "unicode ✓, \"quotes\", 'single', back\\slash"
	manual := store.Suppression{
		Address: "alice@example.com",
		Source:  store.SourceManual,
		Since:   now.Add(-time.Minute),
		Actor:   "ops-token",
		// Class, Reason, Rule, Note and Until empty: a hand-made entry.
	}
	before := time.Now()
	putSuppressions(t, s, policy, manual)
	after := time.Now()

	got := addressSuppressions(t, s, "alice@example.com", time.Now())
	// Global first.
	checkSuppressions(t, "AddressSuppressions", got, manual, policy)
	for _, r := range got {
		if r.Updated.Before(before.Add(-time.Second)) || r.Updated.After(after.Add(time.Second)) {
			t.Errorf("%s/%s: Updated = %v, want the time of the write (%v to %v)", r.Address, r.Stream, r.Updated, before, after)
		}
	}
	// The address is compared lower-cased.
	checkSuppressions(t, "AddressSuppressions(upper case)", addressSuppressions(t, s, "Alice@EXAMPLE.com", time.Now()), manual, policy)
	if got := addressSuppressions(t, s, "bob@example.com", time.Now()); len(got) != 0 {
		t.Errorf("AddressSuppressions(bob) = %v, want none", keys(got))
	}

	list := listSuppressions(t, s, store.SuppressionQuery{AllStreams: true, Now: time.Now(), Limit: 10})
	checkSuppressions(t, "Suppressions", list, manual, policy)
	for i := range list {
		if i < len(got) && !list[i].Updated.Equal(got[i].Updated) {
			t.Errorf("Suppressions[%d].Updated = %v, AddressSuppressions says %v", i, list[i].Updated, got[i].Updated)
		}
	}

	// One add per row in the audit trail, with the row's Updated as time.
	h := history(t, s, "alice@example.com", 10)
	if len(h) != 2 {
		t.Fatalf("SuppressionHistory = %v, want two adds", changeSummary(h))
	}
	byStream := map[string]store.SuppressionChange{}
	for _, c := range h {
		byStream[c.Stream] = c
		if c.Time.Location() != time.UTC {
			t.Errorf("history time %v not in UTC", c.Time)
		}
	}
	for _, r := range got {
		c := byStream[r.Stream]
		want := store.SuppressionChange{Time: r.Updated, Address: r.Address, Stream: r.Stream, Action: store.ActionAdd,
			Source: r.Source, Actor: r.Actor, Note: r.Note, Class: r.Class, Reason: r.Reason, Rule: r.Rule}
		if !c.Time.Equal(want.Time) {
			t.Errorf("history of %s: time %v, want the row's Updated %v", r.Stream, c.Time, want.Time)
		}
		c.Time, want.Time = time.Time{}, time.Time{}
		if c != want {
			t.Errorf("history of %s\n got %+v\nwant %+v", r.Stream, c, want)
		}
	}
	if _, err := s.SuppressionHistory(ctx, "alice@example.com", 0); err == nil {
		t.Error("SuppressionHistory with limit 0 succeeded")
	}
	if h := history(t, s, "alice@example.com", 1); len(h) != 1 {
		t.Errorf("SuppressionHistory(limit 1) = %d changes, want 1", len(h))
	}
	if h := history(t, s, "bob@example.com", 10); len(h) != 0 {
		t.Errorf("SuppressionHistory(bob) = %v, want none", changeSummary(h))
	}
}

// A put replaces its key's row; within one batch the later row wins.
func testSuppressionReplace(t *testing.T, s store.Store) {
	now := time.Now()
	first := newSuppression("a@example.com", "news", now)
	putSuppressions(t, s, first)
	v1 := addressSuppressions(t, s, "a@example.com", time.Now())
	if len(v1) != 1 {
		t.Fatalf("after the first put: %v", keys(v1))
	}

	second := first
	second.Source, second.Class, second.Reason, second.Rule = store.SourceManual, event.ClassHard, event.ReasonUserUnknown, ""
	second.Until = time.Time{}
	second.Actor, second.Note = "ops", "confirmed by the customer"
	putSuppressions(t, s, second)
	v2 := addressSuppressions(t, s, "a@example.com", time.Now())
	checkSuppressions(t, "after the replacing put", v2, second)
	if len(v2) == 1 && !v2[0].Updated.After(v1[0].Updated) {
		t.Errorf("Updated went from %v to %v, want later", v1[0].Updated, v2[0].Updated)
	}

	// The same key twice in one call: the later row is the one kept.
	third, fourth := second, second
	third.Note, fourth.Note = "third", "fourth"
	putSuppressions(t, s, third, fourth)
	v3 := addressSuppressions(t, s, "a@example.com", time.Now())
	checkSuppressions(t, "after a batch holding the key twice", v3, fourth)
	if len(v3) == 1 && !v3[0].Updated.After(v2[0].Updated) {
		t.Errorf("Updated went from %v to %v, want later", v2[0].Updated, v3[0].Updated)
	}

	if st := suppressionStats(t, s, time.Now()); st.Total != 1 {
		t.Errorf("SuppressionStats.Total = %d, want 1 (one key)", st.Total)
	}
	h := history(t, s, "a@example.com", 10)
	wantNotes := []string{"fourth", "third", "confirmed by the customer", first.Note}
	var notes []string
	for _, c := range h {
		notes = append(notes, c.Note)
		if c.Action != store.ActionAdd {
			t.Errorf("history holds %q, want adds only", c.Action)
		}
	}
	if !reflect.DeepEqual(notes, wantNotes) {
		t.Errorf("history notes, newest first = %q, want %q", notes, wantNotes)
	}
	// Each version of the key is later than the one it replaced, also
	// within one call: an add's time is its row's Updated.
	for i := 1; i < len(h); i++ {
		if !h[i-1].Time.After(h[i].Time) {
			t.Errorf("history times %v then %v: want each add later than the one before", h[i].Time, h[i-1].Time)
		}
	}
	if len(h) > 0 && !h[0].Time.Equal(v3[0].Updated) {
		t.Errorf("newest add's time %v, want the row's Updated %v", h[0].Time, v3[0].Updated)
	}
}

// A stream's listing holds its own rows and the global ones;
// AllStreams holds every row.
func testSuppressionScopes(t *testing.T, s store.Store) {
	now := time.Now()
	rows := []store.Suppression{
		newSuppression("a@example.com", "", now),
		newSuppression("a@example.com", "news", now),
		newSuppression("b@example.com", "news", now),
		newSuppression("c@example.com", "billing", now),
		newSuppression("d@example.com", "", now),
		newSuppression("e@example.com", "news-2", now), // a prefix of "news" is not "news"
	}
	// Written out of key order.
	putSuppressions(t, s, rows[3], rows[1], rows[5], rows[0], rows[4], rows[2])
	tests := []struct {
		stream string
		all    bool
		want   []store.Suppression
	}{
		{"news", false, []store.Suppression{rows[0], rows[1], rows[2], rows[4]}},
		{"billing", false, []store.Suppression{rows[0], rows[3], rows[4]}},
		{"other", false, []store.Suppression{rows[0], rows[4]}},
		{"", false, []store.Suppression{rows[0], rows[4]}},
		{"", true, rows},
	}
	for _, tt := range tests {
		q := store.SuppressionQuery{Stream: tt.stream, AllStreams: tt.all, Now: time.Now(), Limit: 100}
		checkSuppressions(t, fmt.Sprintf("Suppressions(stream %q, all %v)", tt.stream, tt.all),
			listSuppressions(t, s, q), tt.want...)
	}
	checkSuppressions(t, "AddressSuppressions(a)", addressSuppressions(t, s, "a@example.com", time.Now()), rows[0], rows[1])
	checkSuppressions(t, "AddressSuppressions(c)", addressSuppressions(t, s, "c@example.com", time.Now()), rows[3])
}

// Only suppressions in force at the given time are returned, listed and
// counted: started (Since <= now) and not ended (Until zero or after
// now).
func testSuppressionExpiry(t *testing.T, s store.Store) {
	now := time.Now().UTC()
	tests := []struct {
		address      string
		since, until time.Time
		inForce      bool
	}{
		{"ended@example.com", now.Add(-48 * time.Hour), now.Add(-time.Minute), false},
		{"ends-now@example.com", now.Add(-48 * time.Hour), now, false},
		{"ends-later@example.com", now.Add(-48 * time.Hour), now.Add(time.Nanosecond), true},
		{"never-ends@example.com", now.Add(-48 * time.Hour), time.Time{}, true},
		{"starts-now@example.com", now, time.Time{}, true},
		{"starts-later@example.com", now.Add(time.Nanosecond), time.Time{}, false},
		{"starts-tomorrow@example.com", now.Add(24 * time.Hour), now.Add(48 * time.Hour), false},
	}
	var rows, want []store.Suppression
	for _, tt := range tests {
		r := newSuppression(tt.address, "", now)
		r.Since, r.Until = tt.since, tt.until
		rows = append(rows, r)
		if tt.inForce {
			want = append(want, r)
		}
	}
	putSuppressions(t, s, rows...)
	slices.SortFunc(want, func(a, b store.Suppression) int { return strings.Compare(a.Address, b.Address) })

	for _, tt := range tests {
		got := addressSuppressions(t, s, tt.address, now)
		if (len(got) == 1) != tt.inForce || len(got) > 1 {
			t.Errorf("AddressSuppressions(%s) at now = %v, want in force %v", tt.address, keys(got), tt.inForce)
		}
	}
	checkSuppressions(t, "Suppressions at now", listSuppressions(t, s,
		store.SuppressionQuery{AllStreams: true, Now: now, Limit: 100}), want...)
	if st := suppressionStats(t, s, now); st.Total != int64(len(want)) || st.BySource[store.SourcePolicy] != int64(len(want)) {
		t.Errorf("SuppressionStats at now: %+v, want %d in force", st, len(want))
	}
	// A day later, only those without an end or ending later are in
	// force; the one starting tomorrow has started.
	later := now.Add(24*time.Hour + time.Second)
	gotLater := keys(listSuppressions(t, s, store.SuppressionQuery{AllStreams: true, Now: later, Limit: 100}))
	wantLater := []string{"never-ends@example.com/", "starts-later@example.com/", "starts-now@example.com/", "starts-tomorrow@example.com/"}
	if !reflect.DeepEqual(gotLater, wantLater) {
		t.Errorf("Suppressions a day later = %v, want %v", gotLater, wantLater)
	}
}

func testSuppressionRemove(t *testing.T, s store.Store) {
	ctx := context.Background()
	ss := s
	key := store.SuppressionKey{Address: "a@example.com", Stream: "news"}
	removal := func(note string) store.SuppressionChange {
		return store.SuppressionChange{Time: time.Now(), Address: key.Address, Stream: key.Stream,
			Action: store.ActionRemove, Source: store.SourceManual, Actor: "ops", Note: note}
	}

	// Nothing to remove: ErrNotFound, nothing written.
	if err := ss.RemoveSuppression(ctx, key, removal("nothing there")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RemoveSuppression of an absent key = %v, want store.ErrNotFound", err)
	}
	if h := history(t, s, key.Address, 10); len(h) != 0 {
		t.Errorf("after removing nothing, history = %v, want none", changeSummary(h))
	}

	now := time.Now()
	putSuppressions(t, s, newSuppression(key.Address, key.Stream, now), newSuppression(key.Address, "", now))
	// Another stream's key, or one not in force at the change's time, is
	// not found.
	other := removal("wrong stream")
	other.Stream = "billing"
	if err := ss.RemoveSuppression(ctx, store.SuppressionKey{Address: key.Address, Stream: "billing"}, other); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RemoveSuppression of another stream = %v, want store.ErrNotFound", err)
	}
	early := removal("before it started")
	early.Time = now.Add(-2 * time.Hour)
	if err := ss.RemoveSuppression(ctx, key, early); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RemoveSuppression before Since = %v, want store.ErrNotFound", err)
	}
	if h := history(t, s, key.Address, 10); len(h) != 2 {
		t.Errorf("after the failed removals, history = %v, want the two adds only", changeSummary(h))
	}

	rm := removal("customer asked")
	if err := ss.RemoveSuppression(ctx, key, rm); err != nil {
		t.Fatalf("RemoveSuppression: %v", err)
	}
	if got := addressSuppressions(t, s, key.Address, time.Now()); len(got) != 1 || got[0].Stream != "" {
		t.Errorf("after the removal, AddressSuppressions = %v, want the global one only", keys(got))
	}
	for _, stream := range []string{"news", ""} {
		got := listSuppressions(t, s, store.SuppressionQuery{Stream: stream, Now: time.Now(), Limit: 10})
		if !reflect.DeepEqual(keys(got), []string{"a@example.com/"}) {
			t.Errorf("after the removal, Suppressions(%q) = %v, want the global one", stream, keys(got))
		}
	}
	if st := suppressionStats(t, s, time.Now()); st.Total != 1 || st.ByStream["news"] != 0 || st.ByStream[""] != 1 {
		t.Errorf("after the removal, stats %+v, want the global one only", st)
	}
	h := history(t, s, key.Address, 10)
	if len(h) != 3 {
		t.Fatalf("history = %v, want the remove and two adds", changeSummary(h))
	}
	got := h[0]
	if !got.Time.Equal(rm.Time) || got.Time.Location() != time.UTC {
		t.Errorf("removal's time = %v, want %v in UTC", got.Time, rm.Time)
	}
	got.Time, rm.Time = time.Time{}, time.Time{}
	if got != rm {
		t.Errorf("history's newest\n got %+v\nwant %+v", got, rm)
	}
	if h[1].Action != store.ActionAdd || h[2].Action != store.ActionAdd || h[1].Time.After(h[0].Time) || h[2].Time.After(h[1].Time) {
		t.Errorf("history = %v, want the removal first, then the adds, newest first", changeSummary(h))
	}

	// Removing it again: nothing in force.
	if err := ss.RemoveSuppression(ctx, key, removal("again")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RemoveSuppression again = %v, want store.ErrNotFound", err)
	}
	if h := history(t, s, key.Address, 10); len(h) != 3 {
		t.Errorf("after removing again, history = %v, want it unchanged", changeSummary(h))
	}

	// A later put suppresses it again.
	again := newSuppression(key.Address, key.Stream, time.Now())
	again.Note = "bounced again"
	putSuppressions(t, s, again)
	got2 := addressSuppressions(t, s, key.Address, time.Now())
	if len(got2) != 2 {
		t.Fatalf("after the new put, AddressSuppressions = %v, want both streams", keys(got2))
	}
	checkSuppressions(t, "the new put", got2[1:], again)
	h = history(t, s, key.Address, 10)
	want := []string{
		"add a@example.com/news by policy (policy)",
		"remove a@example.com/news by ops (manual)",
	}
	if len(h) != 4 || !reflect.DeepEqual(changeSummary(h[:2]), want) || h[0].Note != "bounced again" {
		t.Errorf("history = %v, want %v first", changeSummary(h), want)
	}

	// An expired suppression is not in force: nothing to remove.
	expired := newSuppression("old@example.com", "", time.Now())
	expired.Since, expired.Until = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	putSuppressions(t, s, expired)
	rmOld := store.SuppressionChange{Time: time.Now(), Address: "old@example.com", Action: store.ActionRemove,
		Source: store.SourceManual, Actor: "ops"}
	if err := ss.RemoveSuppression(ctx, store.SuppressionKey{Address: "old@example.com"}, rmOld); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RemoveSuppression of an expired one = %v, want store.ErrNotFound", err)
	}
}

func testSuppressionLatestRemoval(t *testing.T, s store.Store) {
	ctx := context.Background()
	ss := s
	latest := func(address string) time.Time {
		t.Helper()
		at, err := ss.LatestRemoval(ctx, address)
		if err != nil {
			t.Fatalf("LatestRemoval(%q): %v", address, err)
		}
		return at
	}
	if at := latest("a@example.com"); !at.IsZero() {
		t.Errorf("LatestRemoval with nothing stored = %v, want zero", at)
	}
	now := time.Now()
	putSuppressions(t, s, newSuppression("a@example.com", "news", now), newSuppression("a@example.com", "billing", now),
		newSuppression("b@example.com", "news", now))
	if at := latest("a@example.com"); !at.IsZero() {
		t.Errorf("LatestRemoval with adds only = %v, want zero", at)
	}
	remove := func(stream string, at time.Time) {
		t.Helper()
		c := store.SuppressionChange{Time: at, Address: "a@example.com", Stream: stream, Action: store.ActionRemove,
			Source: store.SourceManual, Actor: "ops"}
		if err := ss.RemoveSuppression(ctx, store.SuppressionKey{Address: "a@example.com", Stream: stream}, c); err != nil {
			t.Fatalf("RemoveSuppression(%s): %v", stream, err)
		}
	}
	// The later removal is written first: the latest is by time, not by
	// order of writing. Nanoseconds are kept.
	t2 := time.Now().Add(time.Second + 987654321)
	t1 := t2.Add(-time.Second - 1)
	remove("billing", t2)
	remove("news", t1)
	if at := latest("a@example.com"); !at.Equal(t2) || at.Location() != time.UTC {
		t.Errorf("LatestRemoval = %v, want %v in UTC", at, t2)
	}
	if at := latest("A@Example.COM"); !at.Equal(t2) {
		t.Errorf("LatestRemoval(upper case) = %v, want %v", at, t2)
	}
	if at := latest("b@example.com"); !at.IsZero() {
		t.Errorf("LatestRemoval of another address = %v, want zero", at)
	}
}

// 2,500 rows in pages of 1,000: every row once, in key order; removed
// and expired rows, and other streams', are skipped.
func testSuppressionPaging(t *testing.T, s store.Store) {
	const n = 2500
	now := time.Now()
	streams := []string{"", "news", "billing"}
	var rows []store.Suppression
	var wantAll, wantNews []string
	for i := range n {
		// Addresses that sort differently from their numbers, and
		// several streams per address.
		r := newSuppression(fmt.Sprintf("u%d@example.com", i/3), streams[i%3], now)
		if i%7 == 0 {
			r.Since, r.Until = now.Add(-48*time.Hour), now.Add(-24*time.Hour) // expired
		}
		rows = append(rows, r)
	}
	// Out of key order, in a few calls.
	slices.Reverse(rows)
	putSuppressions(t, s, rows[:1000]...)
	putSuppressions(t, s, rows[1000:]...)
	// Remove some, which must be skipped too.
	removed := map[string]bool{}
	for i, r := range rows {
		if i%50 != 5 || !r.InForce(time.Now()) {
			continue
		}
		c := store.SuppressionChange{Time: time.Now(), Address: r.Address, Stream: r.Stream, Action: store.ActionRemove,
			Source: store.SourceManual, Actor: "ops"}
		if err := s.RemoveSuppression(context.Background(), store.SuppressionKey{Address: r.Address, Stream: r.Stream}, c); err != nil {
			t.Fatalf("RemoveSuppression(%s/%s): %v", r.Address, r.Stream, err)
		}
		removed[r.Address+"/"+r.Stream] = true
	}
	at := time.Now()
	for _, r := range rows {
		k := r.Address + "/" + r.Stream
		if !r.InForce(at) || removed[k] {
			continue
		}
		wantAll = append(wantAll, k)
		if r.Stream == "" || r.Stream == "news" {
			wantNews = append(wantNews, k)
		}
	}
	sortKeys := func(ks []string) {
		slices.SortFunc(ks, func(a, b string) int {
			aa, as, _ := strings.Cut(a, "/")
			ba, bs, _ := strings.Cut(b, "/")
			return compareKeys(store.SuppressionKey{Address: aa, Stream: as}, store.SuppressionKey{Address: ba, Stream: bs})
		})
	}
	sortKeys(wantAll)
	sortKeys(wantNews)
	if len(removed) == 0 || len(wantAll) < 1500 {
		t.Fatalf("test set-up: %d removed, %d in force", len(removed), len(wantAll))
	}

	for _, tt := range []struct {
		name string
		q    store.SuppressionQuery
		want []string
	}{
		{"all streams", store.SuppressionQuery{AllStreams: true, Now: at, Limit: 1000}, wantAll},
		{"news", store.SuppressionQuery{Stream: "news", Now: at, Limit: 1000}, wantNews},
		{"all streams, odd page size", store.SuppressionQuery{AllStreams: true, Now: at, Limit: 333}, wantAll},
	} {
		got := keys(listAll(t, s, tt.q))
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: paged %d rows, want %d; first difference at %d", tt.name, len(got), len(tt.want), firstDiff(got, tt.want))
		}
	}
	// The first page of 1,000 is full; a cursor past the last key gives
	// an empty, non-nil page.
	if p := listSuppressions(t, s, store.SuppressionQuery{AllStreams: true, Now: at, Limit: 1000}); len(p) != 1000 {
		t.Errorf("first page = %d rows, want 1000", len(p))
	}
	last := wantAll[len(wantAll)-1]
	la, ls, _ := strings.Cut(last, "/")
	if p := listSuppressions(t, s, store.SuppressionQuery{AllStreams: true, Now: at, Limit: 1000,
		After: store.SuppressionKey{Address: la, Stream: ls}}); len(p) != 0 {
		t.Errorf("page after the last key = %v, want none", keys(p))
	}
	// A cursor that names no row starts after where it would be.
	p := listSuppressions(t, s, store.SuppressionQuery{AllStreams: true, Now: at, Limit: 1,
		After: store.SuppressionKey{Address: "u1@example.com", Stream: "c"}})
	if want := firstAfter(wantAll, store.SuppressionKey{Address: "u1@example.com", Stream: "c"}); !reflect.DeepEqual(keys(p), []string{want}) {
		t.Errorf("page after u1@example.com/c = %v, want [%s]", keys(p), want)
	}
}

// Pages stay full and ordered when most rows are filtered out: a long
// run of ended and removed rows before the ones in force, and keys
// rewritten many times (an engine that keeps versions must not count
// them as keys).
func testSuppressionPagingSparse(t *testing.T, s store.Store) {
	now := time.Now()
	var rows []store.Suppression
	for i := range 1500 {
		r := newSuppression(fmt.Sprintf("a%04d@example.com", i), "", now)
		r.Since, r.Until = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
		rows = append(rows, r)
	}
	var want []string
	for i := range 60 {
		r := newSuppression(fmt.Sprintf("b%04d@example.com", i), "news", now)
		rows = append(rows, r)
		want = append(want, r.Address+"/"+r.Stream)
	}
	putSuppressions(t, s, rows...)
	// Ten versions of each b key.
	for v := range 9 {
		for i := range rows[1500:] {
			rows[1500+i].Note = fmt.Sprintf("version %d", v+2)
		}
		putSuppressions(t, s, rows[1500:]...)
	}
	// A run of removed keys after the ended ones.
	var removed []store.Suppression
	for i := range 40 {
		removed = append(removed, newSuppression(fmt.Sprintf("a9%03d@example.com", i), "", now))
	}
	putSuppressions(t, s, removed...)
	for _, r := range removed {
		c := store.SuppressionChange{Time: time.Now(), Address: r.Address, Action: store.ActionRemove,
			Source: store.SourceManual, Actor: "ops"}
		if err := s.RemoveSuppression(context.Background(), store.SuppressionKey{Address: r.Address}, c); err != nil {
			t.Fatal(err)
		}
	}

	at := time.Now()
	for _, q := range []store.SuppressionQuery{
		{AllStreams: true, Now: at, Limit: 7},
		{AllStreams: true, Now: at, Limit: 25},
		{Stream: "news", Now: at, Limit: 7},
		{AllStreams: true, Now: at, Limit: 1000},
	} {
		first := listSuppressions(t, s, q)
		if len(first) != min(q.Limit, len(want)) {
			t.Errorf("limit %d: first page = %d rows, want %d", q.Limit, len(first), min(q.Limit, len(want)))
		}
		for _, r := range first {
			if r.Note != "version 10" {
				t.Errorf("limit %d: %s/%s holds %q, want its newest version", q.Limit, r.Address, r.Stream, r.Note)
				break
			}
		}
		if got := keys(listAll(t, s, q)); !reflect.DeepEqual(got, want) {
			t.Errorf("limit %d, stream %q: paged %v, want %v", q.Limit, q.Stream, got, want)
		}
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func firstAfter(sorted []string, k store.SuppressionKey) string {
	for _, s := range sorted {
		a, st, _ := strings.Cut(s, "/")
		if compareKeys(store.SuppressionKey{Address: a, Stream: st}, k) > 0 {
			return s
		}
	}
	return ""
}

// Since keeps the suppressions that started at or after it.
func testSuppressionSince(t *testing.T, s store.Store) {
	now := time.Now().UTC()
	t1, t2, t3 := now.Add(-72*time.Hour), now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	var rows []store.Suppression
	for i, since := range []time.Time{t1, t2, t3} {
		r := newSuppression(fmt.Sprintf("u%d@example.com", i+1), "", now)
		r.Since, r.Until = since, time.Time{}
		rows = append(rows, r)
	}
	putSuppressions(t, s, rows...)
	tests := []struct {
		since time.Time
		want  []store.Suppression
	}{
		{time.Time{}, rows},
		{t1, rows},
		{t2, rows[1:]},
		{t2.Add(time.Nanosecond), rows[2:]},
		{t3, rows[2:]},
		{now, nil},
	}
	for _, tt := range tests {
		got := listSuppressions(t, s, store.SuppressionQuery{AllStreams: true, Since: tt.since, Now: now, Limit: 10})
		checkSuppressions(t, fmt.Sprintf("Suppressions(since %v)", tt.since), got, tt.want...)
	}
}

func testSuppressionStats(t *testing.T, s store.Store) {
	now := time.Now()
	empty := suppressionStats(t, s, now)
	wantEmpty := store.SuppressionStats{
		BySource: map[string]int64{store.SourcePolicy: 0, store.SourceManual: 0, store.SourceImport: 0},
		ByClass:  map[event.Class]int64{},
		ByStream: map[string]int64{},
	}
	if !reflect.DeepEqual(empty, wantEmpty) {
		t.Errorf("SuppressionStats of an empty store = %+v, want %+v", empty, wantEmpty)
	}

	mk := func(address, stream, source string, class event.Class) store.Suppression {
		r := newSuppression(address, stream, now)
		r.Source, r.Class = source, class
		return r
	}
	rows := []store.Suppression{
		mk("a@example.com", "", store.SourcePolicy, event.ClassHard),
		mk("a@example.com", "news", store.SourcePolicy, event.ClassSoft),
		mk("b@example.com", "news", store.SourcePolicy, event.ClassComplaint),
		mk("c@example.com", "news", store.SourceImport, event.ClassHard),
		mk("d@example.com", "billing", store.SourceImport, event.ClassHard),
		mk("e@example.com", "", store.SourceImport, ""),
	}
	expired := mk("x@example.com", "news", store.SourceManual, event.ClassHard)
	expired.Since, expired.Until = now.Add(-48*time.Hour), now.Add(-time.Hour)
	removed := mk("y@example.com", "billing", store.SourceManual, event.ClassSoft)
	putSuppressions(t, s, append(rows, expired, removed)...)
	if err := s.RemoveSuppression(context.Background(), store.SuppressionKey{Address: "y@example.com", Stream: "billing"},
		store.SuppressionChange{Time: time.Now(), Address: "y@example.com", Stream: "billing", Action: store.ActionRemove,
			Source: store.SourceManual, Actor: "ops"}); err != nil {
		t.Fatal(err)
	}

	want := store.SuppressionStats{
		Total:    6,
		BySource: map[string]int64{store.SourcePolicy: 3, store.SourceManual: 0, store.SourceImport: 3},
		ByClass:  map[event.Class]int64{event.ClassHard: 3, event.ClassSoft: 1, event.ClassComplaint: 1, "": 1},
		ByStream: map[string]int64{"": 2, "news": 3, "billing": 1},
	}
	if got := suppressionStats(t, s, time.Now()); !reflect.DeepEqual(got, want) {
		t.Errorf("SuppressionStats\n got %+v\nwant %+v", got, want)
	}
	// Two days ago, only the one that has ended since was in force.
	if got := suppressionStats(t, s, now.Add(-47*time.Hour)); got.Total != 1 || got.BySource[store.SourceManual] != 1 {
		t.Errorf("SuppressionStats two days ago = %+v, want the one that expired since", got)
	}
	if _, err := s.SuppressionStats(context.Background(), time.Time{}); err == nil {
		t.Error("SuppressionStats with a zero now succeeded")
	}
}

// Rows and changes that fail validation fail the whole call: nothing is
// stored, no audit line written.
func testSuppressionInvalid(t *testing.T, s store.Store) {
	ctx := context.Background()
	ss := s
	now := time.Now()
	good := newSuppression("good@example.com", "news", now)
	mod := func(f func(r *store.Suppression)) store.Suppression {
		r := newSuppression("bad@example.com", "news", now)
		f(&r)
		return r
	}
	tests := []struct {
		name string
		row  store.Suppression
	}{
		{"empty address", mod(func(r *store.Suppression) { r.Address = "" })},
		{"not an address", mod(func(r *store.Suppression) { r.Address = "bad.example.com" })},
		{"upper-case address", mod(func(r *store.Suppression) { r.Address = "Bad@example.com" })},
		{"unknown source", mod(func(r *store.Suppression) { r.Source = "api" })},
		{"empty source", mod(func(r *store.Suppression) { r.Source = "" })},
		{"unknown class", mod(func(r *store.Suppression) { r.Class = "HARD" })},
		{"zero since", mod(func(r *store.Suppression) { r.Since = time.Time{} })},
		{"until before since", mod(func(r *store.Suppression) { r.Until = r.Since.Add(-time.Second) })},
		{"until at since", mod(func(r *store.Suppression) { r.Until = r.Since })},
		{"control character in address", mod(func(r *store.Suppression) { r.Address = "bad\x00@example.com" })},
		{"control character in stream", mod(func(r *store.Suppression) { r.Stream = "news\n" })},
		{"control character in note", mod(func(r *store.Suppression) { r.Note = "a\x1bb" })},
		{"DEL in actor", mod(func(r *store.Suppression) { r.Actor = "ops\x7f" })},
		{"oversize note", mod(func(r *store.Suppression) { r.Note = strings.Repeat("n", store.MaxSuppressionField+1) })},
		{"oversize stream", mod(func(r *store.Suppression) { r.Stream = strings.Repeat("s", store.MaxSuppressionField+1) })},
	}
	for _, tt := range tests {
		if err := ss.PutSuppressions(ctx, []store.Suppression{good, tt.row}); err == nil {
			t.Errorf("%s: PutSuppressions succeeded, want an error", tt.name)
		}
	}
	// A note of exactly the limit is fine: checked below, after the
	// failures, so that a partial write above shows up.
	if got := listSuppressions(t, s, store.SuppressionQuery{AllStreams: true, Now: time.Now(), Limit: 10}); len(got) != 0 {
		t.Errorf("after the failed puts, Suppressions = %v, want none", keys(got))
	}
	if h := history(t, s, "good@example.com", 10); len(h) != 0 {
		t.Errorf("after the failed puts, history = %v, want none", changeSummary(h))
	}
	if st := suppressionStats(t, s, time.Now()); st.Total != 0 {
		t.Errorf("after the failed puts, stats = %+v, want nothing", st)
	}
	atLimit := good
	atLimit.Note = strings.Repeat("n", store.MaxSuppressionField)
	putSuppressions(t, s, atLimit)

	key := store.SuppressionKey{Address: good.Address, Stream: good.Stream}
	okChange := store.SuppressionChange{Time: time.Now(), Address: key.Address, Stream: key.Stream,
		Action: store.ActionRemove, Source: store.SourceManual, Actor: "ops"}
	modChange := func(f func(c *store.SuppressionChange)) store.SuppressionChange {
		c := okChange
		f(&c)
		return c
	}
	badChanges := []struct {
		name   string
		key    store.SuppressionKey
		change store.SuppressionChange
	}{
		{"other address", key, modChange(func(c *store.SuppressionChange) { c.Address = "other@example.com" })},
		{"other stream", key, modChange(func(c *store.SuppressionChange) { c.Stream = "" })},
		{"upper-case address", store.SuppressionKey{Address: "Good@example.com", Stream: key.Stream},
			modChange(func(c *store.SuppressionChange) { c.Address = "Good@example.com" })},
		{"zero time", key, modChange(func(c *store.SuppressionChange) { c.Time = time.Time{} })},
		{"add action", key, modChange(func(c *store.SuppressionChange) { c.Action = store.ActionAdd })},
		{"unknown source", key, modChange(func(c *store.SuppressionChange) { c.Source = "api" })},
		{"control character in note", key, modChange(func(c *store.SuppressionChange) { c.Note = "x\ty" })},
		{"oversize note", key, modChange(func(c *store.SuppressionChange) { c.Note = strings.Repeat("n", store.MaxSuppressionField+1) })},
	}
	for _, tt := range badChanges {
		err := ss.RemoveSuppression(ctx, tt.key, tt.change)
		if err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("RemoveSuppression with %s = %v, want a validation error", tt.name, err)
		}
	}
	checkSuppressions(t, "after the failed removals", addressSuppressions(t, s, good.Address, time.Now()), atLimit)
	if h := history(t, s, good.Address, 10); len(h) != 1 {
		t.Errorf("after the failed removals, history = %v, want the one add", changeSummary(h))
	}

	badQueries := []struct {
		name string
		q    store.SuppressionQuery
	}{
		{"limit 0", store.SuppressionQuery{AllStreams: true, Now: time.Now()}},
		{"negative limit", store.SuppressionQuery{AllStreams: true, Now: time.Now(), Limit: -1}},
		{"zero now", store.SuppressionQuery{AllStreams: true, Limit: 10}},
		{"stream and all streams", store.SuppressionQuery{Stream: "news", AllStreams: true, Now: time.Now(), Limit: 10}},
	}
	for _, tt := range badQueries {
		if got, err := ss.Suppressions(ctx, tt.q); err == nil {
			t.Errorf("Suppressions with %s = %v, want an error", tt.name, keys(got))
		}
	}
	if _, err := ss.AddressSuppressions(ctx, good.Address, time.Time{}); err == nil {
		t.Error("AddressSuppressions with a zero now succeeded")
	}
}

func testSuppressionEmpty(t *testing.T, s store.Store) {
	ctx := context.Background()
	for _, rows := range [][]store.Suppression{nil, {}} {
		if err := s.PutSuppressions(ctx, rows); err != nil {
			t.Errorf("PutSuppressions(%#v) = %v, want nil", rows, err)
		}
	}
	if got := listSuppressions(t, s, store.SuppressionQuery{AllStreams: true, Now: time.Now(), Limit: 10}); len(got) != 0 {
		t.Errorf("Suppressions = %v, want none", keys(got))
	}
	if st := suppressionStats(t, s, time.Now()); st.Total != 0 || len(st.BySource) != 3 {
		t.Errorf("SuppressionStats = %+v, want zero totals with every source", st)
	}
}

func testSuppressionCanceledContext(t *testing.T, s store.Store) {
	ss := s
	now := time.Now()
	putSuppressions(t, s, newSuppression("kept@example.com", "", now))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ss.PutSuppressions(ctx, []store.Suppression{newSuppression("a@example.com", "", now)}); err == nil {
		t.Error("PutSuppressions with a canceled context succeeded")
	}
	change := store.SuppressionChange{Time: time.Now(), Address: "kept@example.com", Action: store.ActionRemove,
		Source: store.SourceManual, Actor: "ops"}
	if err := ss.RemoveSuppression(ctx, store.SuppressionKey{Address: "kept@example.com"}, change); err == nil {
		t.Error("RemoveSuppression with a canceled context succeeded")
	}
	if _, err := ss.AddressSuppressions(ctx, "kept@example.com", now); err == nil {
		t.Error("AddressSuppressions with a canceled context succeeded")
	}
	if _, err := ss.Suppressions(ctx, store.SuppressionQuery{AllStreams: true, Now: now, Limit: 10}); err == nil {
		t.Error("Suppressions with a canceled context succeeded")
	}
	if _, err := ss.SuppressionHistory(ctx, "kept@example.com", 10); err == nil {
		t.Error("SuppressionHistory with a canceled context succeeded")
	}
	if _, err := ss.LatestRemoval(ctx, "kept@example.com"); err == nil {
		t.Error("LatestRemoval with a canceled context succeeded")
	}
	if _, err := ss.SuppressionStats(ctx, now); err == nil {
		t.Error("SuppressionStats with a canceled context succeeded")
	}
	// Nothing changed.
	got := keys(listSuppressions(t, s, store.SuppressionQuery{AllStreams: true, Now: time.Now(), Limit: 10}))
	if !reflect.DeepEqual(got, []string{"kept@example.com/"}) {
		t.Errorf("after the canceled calls, Suppressions = %v, want [kept@example.com/]", got)
	}
	if h := history(t, s, "kept@example.com", 10); len(h) != 1 {
		t.Errorf("after the canceled calls, history = %v, want the one add", changeSummary(h))
	}
}

func testSuppressionClosed(t *testing.T, s store.Store) {
	ctx := context.Background()
	ss := s
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	now := time.Now()
	key := store.SuppressionKey{Address: "a@example.com"}
	change := store.SuppressionChange{Time: now, Address: key.Address, Action: store.ActionRemove,
		Source: store.SourceManual, Actor: "ops"}
	checks := []struct {
		name string
		err  error
	}{
		{"PutSuppressions", ss.PutSuppressions(ctx, []store.Suppression{newSuppression("a@example.com", "", now)})},
		{"PutSuppressions empty", ss.PutSuppressions(ctx, nil)},
		{"RemoveSuppression", ss.RemoveSuppression(ctx, key, change)},
		{"AddressSuppressions", func() error { _, err := ss.AddressSuppressions(ctx, "a@example.com", now); return err }()},
		{"Suppressions", func() error {
			_, err := ss.Suppressions(ctx, store.SuppressionQuery{AllStreams: true, Now: now, Limit: 1})
			return err
		}()},
		{"SuppressionHistory", func() error { _, err := ss.SuppressionHistory(ctx, "a@example.com", 1); return err }()},
		{"LatestRemoval", func() error { _, err := ss.LatestRemoval(ctx, "a@example.com"); return err }()},
		{"SuppressionStats", func() error { _, err := ss.SuppressionStats(ctx, now); return err }()},
	}
	for _, c := range checks {
		if !errors.Is(c.err, store.ErrClosed) {
			t.Errorf("%s after Close = %v, want store.ErrClosed", c.name, c.err)
		}
	}
}

// RunSuppressionReads runs the suite's tests of the whole-list and
// send-time reads: EachSuppression (the export), SuppressionAddressesSince
// (a check filter's feed) and CheckSuppressions (the check before a send).
// open is as for Run. They are apart from Run so that an engine's
// suppression tests can run them on their own; Run does not include them.
func RunSuppressionReads(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		run  func(t *testing.T, s store.Store)
	}{
		{"EachSuppression", testEachSuppression},
		{"EachSuppressionStop", testEachSuppressionStop},
		{"EachSuppressionInvalid", testEachSuppressionInvalid},
		{"SuppressionAddressesSince", testSuppressionAddressesSince},
		{"CheckSuppressions", testCheckSuppressions},
		{"SuppressionReadsClosed", testSuppressionReadsClosed},
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

// eachSuppression collects what EachSuppression hands over.
func eachSuppression(t *testing.T, s store.Store, q store.SuppressionQuery) []store.Suppression {
	t.Helper()
	got := []store.Suppression{}
	if err := s.EachSuppression(context.Background(), q, func(r store.Suppression) error {
		got = append(got, r)
		return nil
	}); err != nil {
		t.Fatalf("EachSuppression(%+v): %v", q, err)
	}
	return got
}

// suppressionMix stores n keys over three streams, some ended, some not
// started yet, some removed, some in several versions, some started long
// ago, out of key order; it returns the time the listings are asked at.
func suppressionMix(t *testing.T, s store.Store, n int) time.Time {
	t.Helper()
	now := time.Now()
	streams := []string{"", "news", "billing"}
	var rows []store.Suppression
	for i := range n {
		r := newSuppression(fmt.Sprintf("u%d@example.com", i/3), streams[i%3], now)
		switch i % 11 {
		case 0:
			r.Since, r.Until = now.Add(-48*time.Hour), now.Add(-24*time.Hour) // ended
		case 1:
			r.Since, r.Until = now.Add(time.Hour), time.Time{} // not started
		case 2:
			r.Since = now.Add(-72 * time.Hour) // started long ago
		}
		rows = append(rows, r)
	}
	slices.Reverse(rows)
	for len(rows) > 0 {
		k := min(len(rows), 4000)
		putSuppressions(t, s, rows[:k]...)
		rows = rows[k:]
	}
	// Newer versions of some keys, and removals of others.
	var again []store.Suppression
	for i := 3; i < n; i += 13 {
		r := newSuppression(fmt.Sprintf("u%d@example.com", i/3), streams[i%3], now)
		r.Note = "second version"
		again = append(again, r)
	}
	putSuppressions(t, s, again...)
	for i := 4; i < n; i += 17 {
		key := store.SuppressionKey{Address: fmt.Sprintf("u%d@example.com", i/3), Stream: streams[i%3]}
		c := store.SuppressionChange{Time: time.Now(), Address: key.Address, Stream: key.Stream,
			Action: store.ActionRemove, Source: store.SourceManual, Actor: "ops"}
		if err := s.RemoveSuppression(context.Background(), key, c); err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
	}
	return time.Now()
}

// EachSuppression hands over what paging through Suppressions returns,
// row for row (Updated too), for every kind of query.
func testEachSuppression(t *testing.T, s store.Store) {
	at := suppressionMix(t, s, 3000)
	for _, q := range []store.SuppressionQuery{
		{AllStreams: true, Now: at},
		{Stream: "news", Now: at},
		{Now: at}, // the global scope only
		{Stream: "other", Now: at},
		{AllStreams: true, Now: at.Add(-30 * time.Hour)},
		{AllStreams: true, Now: at.Add(2 * time.Hour)},
		{AllStreams: true, Now: at, Since: at.Add(-2 * time.Hour)},
		{AllStreams: true, Now: at, After: store.SuppressionKey{Address: "u500@example.com", Stream: "news"}},
		{Stream: "billing", Now: at, After: store.SuppressionKey{Address: "u77@example.com"}},
		{AllStreams: true, Now: at, Limit: 10},
		{Stream: "news", Now: at, Limit: 1234, After: store.SuppressionKey{Address: "u2@example.com", Stream: ""}},
	} {
		paged := q
		paged.Limit = 1000
		want := listAll(t, s, paged)
		if q.Limit > 0 && len(want) > q.Limit {
			want = want[:q.Limit]
		}
		got := eachSuppression(t, s, q)
		what := fmt.Sprintf("EachSuppression(stream %q, all %v, now %s, since %v, after %v, limit %d)",
			q.Stream, q.AllStreams, q.Now.Sub(at), !q.Since.IsZero(), q.After, q.Limit)
		if len(want) == 0 && q.Stream != "other" && q.Since.IsZero() {
			t.Fatalf("%s: the pages hold nothing: the test's data is wrong", what)
		}
		if !reflect.DeepEqual(keys(got), keys(want)) {
			i := firstDiff(keys(got), keys(want))
			t.Errorf("%s: %d rows, want %d; first difference at %d", what, len(got), len(want), i)
			continue
		}
		checkSuppressions(t, what, got, want...)
		for i := range got {
			if !got[i].Updated.Equal(want[i].Updated) {
				t.Errorf("%s: %s/%s Updated %v, the pages say %v", what, got[i].Address, got[i].Stream, got[i].Updated, want[i].Updated)
				break
			}
		}
	}
	// An empty selection calls fn never.
	calls := 0
	if err := s.EachSuppression(context.Background(), store.SuppressionQuery{AllStreams: true, Now: at,
		After: store.SuppressionKey{Address: "zzz@example.com"}}, func(store.Suppression) error {
		calls++
		return nil
	}); err != nil || calls != 0 {
		t.Errorf("EachSuppression past the last key: %d calls, %v; want none, nil", calls, err)
	}
}

// fn's error stops the read, comes back as it is, and leaves the store
// working; a canceled context is an error.
func testEachSuppressionStop(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 12000 // more than one block of rows in any engine
	now := time.Now()
	var rows []store.Suppression
	for i := range n {
		rows = append(rows, newSuppression(fmt.Sprintf("a%05d@example.com", i), "", now))
	}
	for i := 0; i < n; i += 4000 {
		putSuppressions(t, s, rows[i:i+4000]...)
	}
	q := store.SuppressionQuery{AllStreams: true, Now: time.Now()}
	stop := errors.New("enough")
	for _, at := range []int{1, 9000} {
		calls := 0
		err := s.EachSuppression(ctx, q, func(store.Suppression) error {
			if calls++; calls == at {
				return stop
			}
			return nil
		})
		if err != stop || calls != at {
			t.Errorf("EachSuppression stopped by fn at row %d: %d calls, error %v; want %d calls and fn's error as it is", at, calls, err, at)
		}
	}
	// The store still answers, and a whole read still sees every row.
	if got := eachSuppression(t, s, q); len(got) != n || got[0].Address != "a00000@example.com" || got[n-1].Address != "a11999@example.com" {
		t.Errorf("after the stopped reads, EachSuppression = %d rows, want %d in key order", len(got), n)
	}
	if got := addressSuppressions(t, s, "a00042@example.com", time.Now()); len(got) != 1 {
		t.Errorf("after the stopped reads, AddressSuppressions = %v", keys(got))
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	calls := 0
	if err := s.EachSuppression(canceled, q, func(store.Suppression) error { calls++; return nil }); err == nil {
		t.Errorf("EachSuppression with a canceled context succeeded after %d calls", calls)
	}
}

func testEachSuppressionInvalid(t *testing.T, s store.Store) {
	putSuppressions(t, s, newSuppression("a@example.com", "", time.Now()))
	for _, tt := range []struct {
		name string
		q    store.SuppressionQuery
	}{
		{"negative limit", store.SuppressionQuery{AllStreams: true, Now: time.Now(), Limit: -1}},
		{"zero now", store.SuppressionQuery{AllStreams: true}},
		{"stream and all streams", store.SuppressionQuery{Stream: "news", AllStreams: true, Now: time.Now()}},
	} {
		calls := 0
		if err := s.EachSuppression(context.Background(), tt.q, func(store.Suppression) error { calls++; return nil }); err == nil || calls != 0 {
			t.Errorf("EachSuppression with %s: %d calls, %v; want an error and no call", tt.name, calls, err)
		}
	}
}

// addressesSince collects SuppressionAddressesSince's addresses as a set.
func addressesSince(t *testing.T, s store.Store, since time.Time) []string {
	t.Helper()
	set := map[string]bool{}
	if err := s.SuppressionAddressesSince(context.Background(), since, func(a string) error {
		set[a] = true
		return nil
	}); err != nil {
		t.Fatalf("SuppressionAddressesSince(%v): %v", since, err)
	}
	out := make([]string, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// SuppressionAddressesSince passes the addresses of the keys put or
// removed at or after a time, to the nanosecond of their Updated,
// whatever their state.
func testSuppressionAddressesSince(t *testing.T, s store.Store) {
	ctx := context.Background()
	if got := addressesSince(t, s, time.Time{}); len(got) != 0 {
		t.Errorf("SuppressionAddressesSince of an empty store = %v", got)
	}
	now := time.Now()
	ended := newSuppression("ended@example.com", "", now)
	ended.Since, ended.Until = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	putSuppressions(t, s, newSuppression("a@example.com", "", now), newSuppression("a@example.com", "news", now),
		newSuppression("b@example.com", "news", now), newSuppression("c@example.com", "", now), ended)
	all := []string{"a@example.com", "b@example.com", "c@example.com", "ended@example.com"}
	if got := addressesSince(t, s, time.Time{}); !reflect.DeepEqual(got, all) {
		t.Errorf("SuppressionAddressesSince(zero) = %v, want %v (ended ones too)", got, all)
	}
	b := addressSuppressions(t, s, "b@example.com", time.Now())
	if len(b) != 1 {
		t.Fatalf("AddressSuppressions(b) = %v", keys(b))
	}
	// Writes after b's: c removed, d put.
	mid := b[0].Updated
	rm := store.SuppressionChange{Time: time.Now(), Address: "c@example.com", Action: store.ActionRemove,
		Source: store.SourceManual, Actor: "ops"}
	if err := s.RemoveSuppression(ctx, store.SuppressionKey{Address: "c@example.com"}, rm); err != nil {
		t.Fatal(err)
	}
	putSuppressions(t, s, newSuppression("d@example.com", "billing", time.Now()))
	if got, want := addressesSince(t, s, mid.Add(time.Nanosecond)), []string{"c@example.com", "d@example.com"}; !reflect.DeepEqual(got, want) {
		t.Errorf("SuppressionAddressesSince(b's Updated + 1 ns) = %v, want %v (a removal and a put)", got, want)
	}
	// At or after: b's own write is in, to the nanosecond. a and ended
	// were written in the same call as b, at most a few nanoseconds
	// apart, so they may be too.
	got := addressesSince(t, s, mid)
	for _, a := range []string{"b@example.com", "c@example.com", "d@example.com"} {
		if !slices.Contains(got, a) {
			t.Errorf("SuppressionAddressesSince(b's Updated) = %v, want %s in it", got, a)
		}
	}
	if got := addressesSince(t, s, time.Now().Add(time.Hour)); len(got) != 0 {
		t.Errorf("SuppressionAddressesSince(an hour ahead) = %v, want none", got)
	}
	all = append(all, "d@example.com")
	slices.Sort(all)
	if got := addressesSince(t, s, time.Time{}); !reflect.DeepEqual(got, all) {
		t.Errorf("SuppressionAddressesSince(zero) = %v, want %v (removed ones too)", got, all)
	}
	// fn's error stops it and comes back as it is.
	stop := errors.New("enough")
	calls := 0
	if err := s.SuppressionAddressesSince(ctx, time.Time{}, func(string) error { calls++; return stop }); err != stop || calls != 1 {
		t.Errorf("SuppressionAddressesSince stopped by fn: %d calls, %v; want 1 and fn's error", calls, err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.SuppressionAddressesSince(canceled, time.Time{}, func(string) error { return nil }); err == nil {
		t.Error("SuppressionAddressesSince with a canceled context succeeded")
	}
}

// CheckSuppressions answers what AddressSuppressions answers for every
// write through the same Store, at once.
func testCheckSuppressions(t *testing.T, s store.Store) {
	ctx := context.Background()
	check := func(address string) []store.Suppression {
		t.Helper()
		got, err := s.CheckSuppressions(ctx, address, time.Now())
		if err != nil {
			t.Fatalf("CheckSuppressions(%q): %v", address, err)
		}
		if got == nil {
			t.Fatalf("CheckSuppressions(%q) = nil, want a non-nil slice", address)
		}
		return got
	}
	same := func(when, address string) {
		t.Helper()
		checkSuppressions(t, fmt.Sprintf("%s: CheckSuppressions(%s)", when, address), check(address),
			addressSuppressions(t, s, address, time.Now())...)
	}
	if got := check("a@example.com"); len(got) != 0 {
		t.Errorf("CheckSuppressions on an empty store = %v", keys(got))
	}
	now := time.Now()
	var many []store.Suppression
	for i := range 500 {
		many = append(many, newSuppression(fmt.Sprintf("m%03d@example.com", i), "", now))
	}
	putSuppressions(t, s, many...)
	// Asked many times, so an engine that loads something in the
	// background answers some of them after it has.
	for round := range 3 {
		for i := range 500 {
			if got := check(fmt.Sprintf("m%03d@example.com", i)); len(got) != 1 {
				t.Fatalf("round %d: CheckSuppressions(m%03d) = %v, want its suppression", round, i, keys(got))
			}
			if got := check(fmt.Sprintf("n%03d@example.com", i)); len(got) != 0 {
				t.Fatalf("round %d: CheckSuppressions(n%03d) = %v, want none", round, i, keys(got))
			}
		}
	}
	putSuppressions(t, s, newSuppression("a@example.com", "news", now), newSuppression("a@example.com", "", now))
	same("after a put", "a@example.com")
	if got := check("A@Example.COM"); len(got) != 2 {
		t.Errorf("CheckSuppressions(upper case) = %v, want both", keys(got))
	}
	rm := store.SuppressionChange{Time: time.Now(), Address: "a@example.com", Action: store.ActionRemove,
		Source: store.SourceManual, Actor: "ops"}
	if err := s.RemoveSuppression(ctx, store.SuppressionKey{Address: "a@example.com"}, rm); err != nil {
		t.Fatal(err)
	}
	same("after a removal", "a@example.com")
	if got := check("a@example.com"); len(got) != 1 || got[0].Stream != "news" {
		t.Errorf("after the removal, CheckSuppressions = %v, want news only", keys(got))
	}
	// Written after many checks of it: shows at once.
	putSuppressions(t, s, newSuppression("n042@example.com", "billing", time.Now()))
	same("after a put of an address checked before", "n042@example.com")
	if got := check("n042@example.com"); len(got) != 1 {
		t.Errorf("CheckSuppressions(n042) after its put = %v, want it", keys(got))
	}
	// Not in force: ended, or not started.
	ended := newSuppression("ended@example.com", "", now)
	ended.Since, ended.Until = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	putSuppressions(t, s, ended)
	if got := check("ended@example.com"); len(got) != 0 {
		t.Errorf("CheckSuppressions of an ended suppression = %v, want none", keys(got))
	}
	if _, err := s.CheckSuppressions(ctx, "a@example.com", time.Time{}); err == nil {
		t.Error("CheckSuppressions with a zero now succeeded")
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	for _, a := range []string{"a@example.com", "nobody@example.com"} {
		if _, err := s.CheckSuppressions(canceled, a, time.Now()); err == nil {
			t.Errorf("CheckSuppressions(%s) with a canceled context succeeded", a)
		}
	}
}

func testSuppressionReadsClosed(t *testing.T, s store.Store) {
	ctx := context.Background()
	putSuppressions(t, s, newSuppression("a@example.com", "", time.Now()))
	if _, err := s.CheckSuppressions(ctx, "nobody@example.com", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.EachSuppression(ctx, store.SuppressionQuery{AllStreams: true, Now: time.Now()},
		func(store.Suppression) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("EachSuppression after Close = %v, want store.ErrClosed", err)
	}
	if err := s.SuppressionAddressesSince(ctx, time.Time{}, func(string) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("SuppressionAddressesSince after Close = %v, want store.ErrClosed", err)
	}
	for _, a := range []string{"a@example.com", "nobody@example.com"} {
		if _, err := s.CheckSuppressions(ctx, a, time.Now()); !errors.Is(err, store.ErrClosed) {
			t.Errorf("CheckSuppressions(%s) after Close = %v, want store.ErrClosed", a, err)
		}
	}
}
