package clickhouse

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
)

func TestEachChunk(t *testing.T) {
	long := func(i int) string { return fmt.Sprintf("%s.%d@example.org", strings.Repeat("o'n", 80), i) }
	short := func(i int) string { return fmt.Sprintf("User%d@Example.org", i) }
	tests := []struct {
		name       string
		addresses  []string
		wantChunks int
	}{
		{"none", nil, 0},
		{"one", []string{"a@b.example"}, 1},
		{"duplicates folded by case", []string{"A@b.example", "a@B.example", "a@b.example"}, 1},
		{"2,000 ordinary", gen(2000, short), 1},
		{"count bound", gen(chunkAddresses+1, func(i int) string { return fmt.Sprintf("%d@x", i) }), 2},
		{"byte bound", gen(1000, long), 1000 * literalCost(long(999)) / chunkBytes},
		{"2,000 of 30 bytes", gen(2000, func(i int) string { return fmt.Sprintf("%s.%04d@example.org", strings.Repeat("x", 8), i) }), 1},
		{"one longer than the bound", []string{strings.Repeat("x", chunkBytes) + "@example.org", "a@b.example"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[string]int{}
			chunks := 0
			err := eachChunk(tt.addresses, func(g ch.GroupSet) error {
				chunks++
				size := 0
				for _, v := range g.Value {
					a := v.(string)
					if a != strings.ToLower(a) {
						t.Errorf("address %q not lower-cased", a)
					}
					seen[a]++
					size += literalCost(a)
				}
				if len(g.Value) > chunkAddresses {
					t.Errorf("chunk of %d addresses, bound %d", len(g.Value), chunkAddresses)
				}
				if size > chunkBytes && len(g.Value) > 1 {
					t.Errorf("chunk of %d bytes in %d addresses, bound %d", size, len(g.Value), chunkBytes)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range tt.addresses {
				if n := seen[strings.ToLower(a)]; n != 1 {
					t.Errorf("address %q passed %d times, want once", a, n)
				}
			}
			// The byte bound's count is a floor: a chunk ends before
			// the address that would cross it.
			if tt.name == "byte bound" {
				if chunks < tt.wantChunks || chunks > tt.wantChunks+1 {
					t.Errorf("%d chunks, want %d or %d", chunks, tt.wantChunks, tt.wantChunks+1)
				}
			} else if chunks != tt.wantChunks {
				t.Errorf("%d chunks, want %d", chunks, tt.wantChunks)
			}
		})
	}
}

func gen(n int, f func(int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

// TestBatchReadsLongAddresses: the batch reads of a re-fold over 3,000
// addresses of 250 bytes full of quotes (the worst literals an IN list
// holds) stay below the real server's max_query_size, and answer each
// address, those in different chunks included.
func TestBatchReadsLongAddresses(t *testing.T) {
	s := openDSN(t, clickhousetest.Start(t), Options{})
	defer s.Close()
	ctx := context.Background()
	addrs := gen(3000, func(i int) string { return fmt.Sprintf("%s.%04d@example.org", strings.Repeat("o'\\", 79), i) })
	now := time.Now().UTC().Truncate(time.Second)
	var events []store.Event
	for _, i := range []int{0, 1499, 2999} {
		events = append(events, store.Event{
			ID: fmt.Sprintf("e%d", i), Version: 1, Time: now, Source: "sync", Stream: "news",
			Event: event.Event{Recipient: addrs[i], Class: event.ClassHard, Reason: event.Reason("userunknown"), Status: "5.1.1", ReplyCode: 550},
		})
	}
	if err := s.Write(ctx, nil, events); err != nil {
		t.Fatal(err)
	}
	evs, err := s.RecipientsEvents(ctx, addrs, 10)
	if err != nil {
		t.Fatalf("RecipientsEvents: %v", err)
	}
	for i, a := range addrs {
		want := 0
		if i == 0 || i == 1499 || i == 2999 {
			want = 1
		}
		if got := evs[a]; len(got) != want || (want == 1 && got[0].ID != fmt.Sprintf("e%d", i)) {
			t.Fatalf("address %d: events %+v, want %d", i, got, want)
		}
	}
	if outs, err := s.RecipientsOutcomes(ctx, addrs); err != nil || len(outs) != len(addrs) {
		t.Errorf("RecipientsOutcomes: %d addresses, %v; want %d", len(outs), err, len(addrs))
	}
	if rem, err := s.LatestRemovals(ctx, addrs); err != nil || len(rem) != len(addrs) {
		t.Errorf("LatestRemovals: %d addresses, %v; want %d", len(rem), err, len(addrs))
	}
	if sup, err := s.AddressesSuppressions(ctx, addrs, now); err != nil || len(sup) != len(addrs) {
		t.Errorf("AddressesSuppressions: %d addresses, %v; want %d", len(sup), err, len(addrs))
	}
}
