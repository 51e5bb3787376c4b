package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// statsFromRows is Stats as it was before the rollup: every row in the
// window counted, the newest version of each set only. The rollup must
// give the same answer for any window.
func statsFromRows(ctx context.Context, db *sql.DB, since time.Time) (store.Stats, error) {
	st := store.NewStats(since)
	from := clampUnixNano(since)
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM reports WHERE received >= ?", from).
		Scan(&st.ReportsReceived); err != nil {
		return st, err
	}
	rows, err := db.QueryContext(ctx, `SELECT e.class, e.reason, e.provider, count(*) FROM events e
		WHERE e.time >= ? AND `+newest+` GROUP BY e.class, e.reason, e.provider`, from)
	if err != nil {
		return st, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			class, reason, provider string
			n                       int64
		)
		if err := rows.Scan(&class, &reason, &provider, &n); err != nil {
			return st, err
		}
		st.Add(store.StatsKey{Class: event.Class(class), Reason: event.Reason(reason), Provider: provider}, n)
	}
	return st, rows.Err()
}

// TestStatsRollup writes random batches, the way ingest, redeliveries and
// reclassifications do (sets in parts, versions out of order, higher
// versions with fewer or other events, rows written twice, events
// without a report, times either side of minute bounds and of 1970),
// and after each compares Stats with the count from the rows for windows
// starting on, just before and just after every minute involved.
func TestStatsRollup(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			s := openTemp(t)
			defer s.Close()
			rng := rand.New(rand.NewPCG(seed, 7))
			base := t0.Truncate(time.Minute)
			if seed == 7 {
				base = time.Unix(0, 0).UTC() // minutes either side of the epoch
			}
			at := func() time.Time {
				return base.Add(time.Duration(rng.IntN(5*60)-150) * time.Second).Add(time.Duration(rng.IntN(3)) * time.Millisecond)
			}
			classes := []event.Class{event.ClassHard, event.ClassSoft, event.ClassGreylist, event.ClassDelivered}
			reasons := []event.Reason{event.ReasonUserUnknown, event.ReasonMailboxFull, event.ReasonGreylisting}
			providers := []string{"", "gmail", "yahoo"}
			var windows []time.Time
			for m := -4; m <= 4; m++ {
				b := base.Add(time.Duration(m) * time.Minute)
				windows = append(windows, b, b.Add(-time.Nanosecond), b.Add(time.Second), b.Add(59*time.Second+time.Nanosecond))
			}
			windows = append(windows, time.Time{}, base.Add(time.Hour))

			for batch := range 40 {
				var (
					reports []store.Report
					events  []store.Event
				)
				for range 1 + rng.IntN(6) {
					version := uint32(1 + rng.IntN(3))
					class := classes[rng.IntN(len(classes))]
					ev := func(report string, idx int, id string) store.Event {
						return store.Event{ID: id, ReportID: report, Index: idx, Version: version, Time: at(),
							Source: "ndr",
							Event:  event.Event{Recipient: fmt.Sprintf("r%d@example.com", idx), Class: class, Reason: reasons[rng.IntN(len(reasons))], Provider: providers[rng.IntN(len(providers))]}}
					}
					if rng.IntN(4) == 0 {
						// A sync reply log event: no report, its id is its set.
						id := fmt.Sprintf("sync%d", rng.IntN(6))
						events = append(events, ev("", 0, id))
						continue
					}
					report := fmt.Sprintf("report%d", rng.IntN(8))
					if rng.IntN(2) == 0 {
						reports = append(reports, store.Report{Envelope: event.Envelope{ID: report, Received: at()}, Raw: []byte("raw")})
					}
					// A set of up to 3 events, or a part of one.
					for idx := range 3 {
						if rng.IntN(3) > 0 {
							events = append(events, ev(report, idx, store.EventID(report, idx)))
						}
					}
				}
				if rng.IntN(5) == 0 && len(events) > 0 {
					events = append(events, events[0]) // the same row twice in a batch
				}
				if err := s.Write(ctx, reports, events); err != nil {
					t.Fatalf("batch %d: %v", batch, err)
				}
				// A wrong count stays wrong, so every fourth batch is
				// checked (the whole comparison is slow under -race).
				if batch%4 != 3 {
					continue
				}
				for _, since := range windows {
					got, err := s.Stats(ctx, since)
					if err != nil {
						t.Fatal(err)
					}
					want, err := statsFromRows(ctx, s.r, since)
					if err != nil {
						t.Fatal(err)
					}
					if got.ReportsReceived != want.ReportsReceived || !reflect.DeepEqual(got.Events, want.Events) ||
						!reflect.DeepEqual(got.EventsByClass, want.EventsByClass) {
						t.Fatalf("batch %d, since %v:\nrollup %d reports, %v\nrows   %d reports, %v",
							batch, since, got.ReportsReceived, got.Events, want.ReportsReceived, want.Events)
					}
				}
			}
		})
	}
}

// BenchmarkStats24h: Stats over the last 24 hours of a store holding
// statsBenchEvents events (one report each) spread over those hours, from
// the rollup, and the same count from the rows as Stats did before it:
//
//	go test -run '^$' -bench Stats24h -benchtime 20x ./store/sqlite/
const statsBenchEvents = 200_000

func BenchmarkStats24h(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, b.TempDir()+"/bouncer.db", Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	now := time.Now().UTC()
	classes := []event.Class{event.ClassHard, event.ClassSoft, event.ClassGreylist, event.ClassDelivered}
	providers := []string{"", "gmail", "yahoo", "outlook", "icloud"}
	for i := 0; i < statsBenchEvents; {
		var (
			reports []store.Report
			events  []store.Event
		)
		for ; len(events) < 2000 && i < statsBenchEvents; i++ {
			id := fmt.Sprintf("report%d", i)
			at := now.Add(-time.Duration(i) * 24 * time.Hour / statsBenchEvents)
			reports = append(reports, store.Report{Envelope: event.Envelope{ID: id, Received: at}, Raw: []byte("raw")})
			events = append(events, store.Event{ID: store.EventID(id, 0), ReportID: id, Version: 1, Time: at, Source: "ndr",
				Event: event.Event{Recipient: fmt.Sprintf("r%d@example.com", i), Class: classes[i%len(classes)],
					Reason: event.ReasonUserUnknown, Provider: providers[i%len(providers)]}})
		}
		if err := s.Write(ctx, reports, events); err != nil {
			b.Fatal(err)
		}
	}
	since := now.Add(-24 * time.Hour)
	for _, bc := range []struct {
		name  string
		stats func() (store.Stats, error)
	}{
		{"rollup", func() (store.Stats, error) { return s.Stats(ctx, since) }},
		{"rows", func() (store.Stats, error) { return statsFromRows(ctx, s.r, since) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				st, err := bc.stats()
				if err != nil {
					b.Fatal(err)
				}
				if st.ReportsReceived != statsBenchEvents {
					b.Fatalf("%d reports counted, want %d", st.ReportsReceived, statsBenchEvents)
				}
			}
		})
	}
}
