package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
)

// With every check read slot taken, a check that must read ClickHouse
// (with Options.CheckAddressesOnly, a suppressed address) is refused
// with store.ErrBusy after a short wait, not queued; one the filter
// answers (an address never suppressed, and without the option a
// suppressed one too) is still answered; once a slot frees, the read
// goes through.
func TestCheckSuppressionsBusy(t *testing.T) {
	for _, addrOnly := range []bool{true, false} {
		t.Run(fmt.Sprintf("CheckAddressesOnly=%v", addrOnly), func(t *testing.T) {
			s := openDSN(t, clickhousetest.Start(t), Options{MaxOpenConns: 3, CheckAddressesOnly: addrOnly})
			defer s.Close()
			if got := cap(s.checkReads); got != 1 {
				t.Fatalf("read slots with 3 connections = %d, want 1 (two kept for the refresh and ingest)", got)
			}
			ctx := context.Background()
			now := time.Now()
			row := store.Suppression{Address: "gone@example.com", Source: store.SourceManual, Class: event.ClassHard,
				Reason: event.ReasonUserUnknown, Since: now.Add(-time.Hour), Actor: "ops", Note: "test"}
			if err := s.PutSuppressions(ctx, []store.Suppression{row}); err != nil {
				t.Fatal(err)
			}
			// The first check starts the filter and waits for its first read.
			if got, err := s.CheckSuppressions(ctx, "gone@example.com", now); err != nil || len(got) != 1 {
				t.Fatalf("check with a free slot = %d rows, %v; want 1", len(got), err)
			}

			// And, without the option, for the filter of every version
			// (the starting one of addresses only sends a hit to the
			// store).
			for deadline := time.Now().Add(30 * time.Second); !s.checks.filter.Load().Loaded(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the filter has not loaded in 30 s")
				}
			}

			s.checkReads <- struct{}{} // every slot taken
			began := time.Now()
			got, err := s.CheckSuppressions(ctx, "gone@example.com", now)
			if !addrOnly {
				if err != nil || len(got) != 1 {
					t.Errorf("check of a suppressed address from memory, slots taken = %d rows, %v; want 1, nil", len(got), err)
				}
			} else {
				if !errors.Is(err, store.ErrBusy) {
					t.Errorf("check with every slot taken = %v, want store.ErrBusy", err)
				}
				if waited := time.Since(began); waited < checkQueueWait {
					t.Errorf("refused after %v, before checkQueueWait (%v)", waited, checkQueueWait)
				}
			}
			if got, err := s.CheckSuppressions(ctx, "never@example.com", now); err != nil || len(got) != 0 {
				t.Errorf("check of an address the filter answers, slots taken = %d rows, %v; want 0, nil", len(got), err)
			}
			if addrOnly {
				canceled, cancel := context.WithCancel(ctx)
				cancel()
				if _, err := s.CheckSuppressions(canceled, "gone@example.com", now); !errors.Is(err, context.Canceled) {
					t.Errorf("canceled check with every slot taken = %v, want context.Canceled", err)
				}
			}

			<-s.checkReads // a slot frees
			if got, err := s.CheckSuppressions(ctx, "gone@example.com", now); err != nil || len(got) != 1 {
				t.Errorf("check once a slot is free = %d rows, %v; want 1", len(got), err)
			}
		})
	}
}

func TestCheckReadSlots(t *testing.T) {
	for _, tt := range []struct{ open, want int }{{1, 1}, {2, 1}, {3, 1}, {4, 1}, {5, 2}, {10, 7}, {50, 47}} {
		if got := checkReadSlots(tt.open); got != tt.want {
			t.Errorf("checkReadSlots(%d) = %d, want %d", tt.open, got, tt.want)
		}
	}
}
