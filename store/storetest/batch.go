package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// testBatchReads: each batch read (RecipientsEvents, RecipientsOutcomes,
// LatestRemovals, AddressesSuppressions) answers, for every address asked
// for, exactly what the single-address read answers, over a mix that
// exercises what the single reads decide: superseded versions and
// report sets, a limit that cuts one history, expired and removed
// suppressions, addresses asked twice or in another case, unknown ones,
// and more addresses than an engine sends in one statement.
func testBatchReads(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now()

	// Events: r0..r4 have 1..5 events each over 3 reports; r1's first
	// report is reclassified to r5 (its set replaced: the old event leaves
	// r1's history); r2 gets a sync event and a second version of it.
	var (
		reports []store.Report
		events  []store.Event
	)
	for r := 0; r < 5; r++ {
		rcpt := fmt.Sprintf("r%d@example.com", r)
		for i := 0; i <= r; i++ {
			id := fmt.Sprintf("rep-%d-%d", r, i)
			reports = append(reports, newReport(id, base.Add(time.Duration(i)*time.Minute)))
			events = append(events, newEvent(id, 0, rcpt, event.ClassHard, base.Add(time.Duration(i)*time.Minute)))
		}
	}
	sync := newEvent("", 0, "r2@example.com", event.ClassSoft, base.Add(time.Hour))
	sync.ID, sync.Source = "sync-1", "sync"
	events = append(events, sync)
	write(t, s, reports, events)
	moved := newEvent("rep-1-0", 0, "r5@example.com", event.ClassSoft, base)
	moved.Version = 2
	sync2 := sync
	sync2.Version, sync2.Class = 2, event.ClassGreylist
	write(t, s, nil, []store.Event{moved, sync2})

	// Outcomes: two for r0, one for r3, two versions of one key of r4.
	writeOutcomes(t, s,
		newOutcome("o1", "r0@example.com", 1, base),
		newOutcome("o2", "r0@example.com", 2, base.Add(time.Minute)),
		newOutcome("o3", "r3@example.com", 1, base),
		newOutcome("o4", "r4@example.com", 1, base),
		newOutcome("o4", "r4@example.com", 3, base.Add(time.Hour)),
	)

	// Suppressions: r0 on two streams, r1 expired, r2 removed on one of
	// its two streams, r3 removed twice.
	expired := newSuppression("r1@example.com", "news", now)
	expired.Since, expired.Until = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	putSuppressions(t, s,
		newSuppression("r0@example.com", "", now), newSuppression("r0@example.com", "news", now),
		expired,
		newSuppression("r2@example.com", "news", now), newSuppression("r2@example.com", "billing", now),
		newSuppression("r3@example.com", "news", now),
	)
	remove := func(address, stream string, at time.Time) {
		t.Helper()
		key := store.SuppressionKey{Address: address, Stream: stream}
		if err := s.RemoveSuppression(ctx, key, store.SuppressionChange{Time: at, Address: address, Stream: stream,
			Action: store.ActionRemove, Source: store.SourceManual, Actor: "ops", Note: "test"}); err != nil {
			t.Fatalf("RemoveSuppression(%s/%s): %v", address, stream, err)
		}
	}
	remove("r2@example.com", "news", now.Add(-time.Minute))
	remove("r3@example.com", "news", now.Add(-2*time.Minute))
	putSuppressions(t, s, newSuppression("r3@example.com", "news", now))
	remove("r3@example.com", "news", now.Add(-time.Second))

	// r6 is asked for only after the unknown addresses below, so an
	// engine's later statement must find its events, outcome,
	// suppression and removal too.
	r6 := newEvent("rep-6", 0, "r6@example.com", event.ClassHard, base)
	r6b := newEvent("rep-6", 1, "r6@example.com", event.ClassHard, base)
	write(t, s, []store.Report{newReport("rep-6", base)}, []store.Event{r6, r6b})
	writeOutcomes(t, s, newOutcome("o6", "r6@example.com", 2, base))
	putSuppressions(t, s, newSuppression("r6@example.com", "news", now))
	remove("r6@example.com", "news", now.Add(-3*time.Second))
	putSuppressions(t, s, newSuppression("r6@example.com", "", now))

	// The addresses asked: the six above, one twice and one in capitals,
	// then enough unknown ones that an engine sending a few hundred per
	// statement needs several.
	addresses := []string{"r0@example.com", "R1@Example.COM", "r2@example.com", "r3@example.com",
		"r4@example.com", "r5@example.com", "r0@example.com", "nobody@example.com"}
	for i := range 600 {
		addresses = append(addresses, fmt.Sprintf("unknown%d@example.net", i))
	}
	addresses = append(addresses, "R6@example.com") // asked only here
	addresses = append(addresses, "r4@example.com") // after the first statement's worth
	const limit = 3                                 // cuts r3's and r4's histories

	gotEvents, err := s.RecipientsEvents(ctx, addresses, limit)
	if err != nil {
		t.Fatalf("RecipientsEvents: %v", err)
	}
	gotOutcomes, err := s.RecipientsOutcomes(ctx, addresses)
	if err != nil {
		t.Fatalf("RecipientsOutcomes: %v", err)
	}
	gotRemovals, err := s.LatestRemovals(ctx, addresses)
	if err != nil {
		t.Fatalf("LatestRemovals: %v", err)
	}
	gotSuppressions, err := s.AddressesSuppressions(ctx, addresses, now)
	if err != nil {
		t.Fatalf("AddressesSuppressions: %v", err)
	}
	distinct := map[string]bool{}
	for _, a := range addresses {
		distinct[strings.ToLower(a)] = true
	}
	for name, n := range map[string]int{"RecipientsEvents": len(gotEvents), "RecipientsOutcomes": len(gotOutcomes),
		"LatestRemovals": len(gotRemovals), "AddressesSuppressions": len(gotSuppressions)} {
		if n != len(distinct) {
			t.Errorf("%s: %d entries, want one per distinct address, %d", name, n, len(distinct))
		}
	}
	for addr := range distinct {
		if strings.HasPrefix(addr, "unknown") && !strings.HasSuffix(addr, "00@example.net") {
			// Most unknown ones are checked to be empty only: a single
			// read each of 600 addresses takes seconds on ClickHouse.
			if len(gotEvents[addr])+len(gotOutcomes[addr])+len(gotSuppressions[addr]) != 0 || !gotRemovals[addr].IsZero() {
				t.Errorf("unknown address %s: batch reads found something", addr)
			}
			continue
		}
		evs := recipientEvents(t, s, addr, limit)
		if got, ok := gotEvents[addr]; !ok || got == nil || !reflect.DeepEqual(foldEvents(got), foldEvents(evs)) {
			t.Errorf("RecipientsEvents[%s] = %+v (present %t), RecipientEvents = %+v", addr, foldEvents(got), ok, foldEvents(evs))
		}
		outs := recipientOutcomes(t, s, addr)
		if got, ok := gotOutcomes[addr]; !ok || got == nil || !reflect.DeepEqual(got, outs) {
			t.Errorf("RecipientsOutcomes[%s] = %+v (present %t), RecipientOutcomes = %+v", addr, got, ok, outs)
		}
		removed, err := s.LatestRemoval(ctx, addr)
		if err != nil {
			t.Fatalf("LatestRemoval(%s): %v", addr, err)
		}
		if got, ok := gotRemovals[addr]; !ok || !got.Equal(removed) {
			t.Errorf("LatestRemovals[%s] = %v (present %t), LatestRemoval = %v", addr, got, ok, removed)
		}
		sups := addressSuppressions(t, s, addr, now)
		if got, ok := gotSuppressions[addr]; !ok || got == nil || !reflect.DeepEqual(got, sups) {
			t.Errorf("AddressesSuppressions[%s] = %v (present %t), AddressSuppressions = %v", addr, keys(got), ok, keys(sups))
		}
	}

	// The mix is what it is meant to be: the comparisons above would pass
	// on an empty store too.
	for addr, want := range map[string]int{"r1@example.com": 1, "r2@example.com": 3, "r3@example.com": 3, "r5@example.com": 1,
		"r6@example.com": 2} {
		if n := len(gotEvents[addr]); n != want {
			t.Errorf("RecipientsEvents[%s]: %d events, want %d", addr, n, want)
		}
	}
	if got := gotEvents["r2@example.com"]; len(got) > 0 && (got[0].ID != "sync-1" || got[0].Class != event.ClassGreylist) {
		t.Errorf("r2's newest event = %s %s, want sync-1's version 2 (greylist)", got[0].ID, got[0].Class)
	}
	if n := len(gotOutcomes["r0@example.com"]); n != 2 {
		t.Errorf("RecipientsOutcomes[r0]: %d, want 2", n)
	}
	if got := gotOutcomes["r4@example.com"]; len(got) != 1 || got[0].Observations != 3 {
		t.Errorf("RecipientsOutcomes[r4] = %+v, want o4's version of 3 observations", got)
	}
	if got := gotRemovals["r3@example.com"]; got.IsZero() || got.Before(now.Add(-10*time.Second)) {
		t.Errorf("LatestRemovals[r3] = %v, want the later of its two removals (%v)", got, now.Add(-time.Second))
	}
	if n := len(gotOutcomes["r6@example.com"]); n != 1 {
		t.Errorf("RecipientsOutcomes[r6]: %d, want 1", n)
	}
	if gotRemovals["r6@example.com"].IsZero() {
		t.Errorf("LatestRemovals[r6] is zero, want its removal (%v)", now.Add(-3*time.Second))
	}
	if !gotRemovals["r0@example.com"].IsZero() {
		t.Errorf("LatestRemovals[r0] = %v, want zero: never removed", gotRemovals["r0@example.com"])
	}
	for addr, want := range map[string][]string{"r0@example.com": {"r0@example.com/", "r0@example.com/news"},
		"r1@example.com": nil, "r2@example.com": {"r2@example.com/billing"}, "r6@example.com": {"r6@example.com/"}} {
		if got := keys(gotSuppressions[addr]); !reflect.DeepEqual(got, want) && (len(got) != 0 || len(want) != 0) {
			t.Errorf("AddressesSuppressions[%s] = %v, want %v", addr, got, want)
		}
	}

	// Nothing asked: empty maps. Bad arguments: errors.
	if got, err := s.RecipientsEvents(ctx, nil, 10); err != nil || len(got) != 0 {
		t.Errorf("RecipientsEvents(nil) = %v, %v; want empty, nil", got, err)
	}
	if _, err := s.RecipientsEvents(ctx, addresses[:2], 0); err == nil {
		t.Errorf("RecipientsEvents with limit 0 succeeded, want an error")
	}
	if _, err := s.AddressesSuppressions(ctx, addresses[:2], time.Time{}); !errors.Is(err, store.ErrZeroTime) {
		t.Errorf("AddressesSuppressions at a zero time = %v, want store.ErrZeroTime", err)
	}

	// Closed: ErrClosed from each.
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for name, call := range map[string]func() error{
		"RecipientsEvents":      func() error { _, err := s.RecipientsEvents(ctx, addresses[:2], 1); return err },
		"RecipientsOutcomes":    func() error { _, err := s.RecipientsOutcomes(ctx, addresses[:2]); return err },
		"LatestRemovals":        func() error { _, err := s.LatestRemovals(ctx, addresses[:2]); return err },
		"AddressesSuppressions": func() error { _, err := s.AddressesSuppressions(ctx, addresses[:2], now); return err },
	} {
		if err := call(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close = %v, want store.ErrClosed", name, err)
		}
	}
}

// foldEvents is store.FoldEvent of each of evs: what RecipientsEvents
// promises of RecipientEvents' events.
func foldEvents(evs []store.Event) []store.Event {
	out := make([]store.Event, len(evs))
	for i, e := range evs {
		out[i] = store.FoldEvent(e)
	}
	return out
}
