package clickhouse

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/ext"

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
		{"twice the count bound", gen(2*chunkAddresses, short), 2},
		{"1,000 long ones with quotes", gen(1000, long), 1},
		{"one of a megabyte", []string{strings.Repeat("x", 1<<20) + "@example.org", "a@b.example"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[string]int{}
			chunks := 0
			err := eachChunk(tt.addresses, func(tbl *ext.Table) error {
				chunks++
				if tbl.Name() != batchTable {
					t.Errorf("table %q, want %q", tbl.Name(), batchTable)
				}
				b := tbl.Block()
				if len(b.Columns) != 1 || b.Columns[0].Name() != "address" {
					t.Fatalf("table's columns %v, want one, address", b.Columns)
				}
				rows := b.Rows()
				if rows > chunkAddresses {
					t.Errorf("chunk of %d addresses, bound %d", rows, chunkAddresses)
				}
				for i := range rows {
					a := b.Columns[0].Row(i, false).(string)
					if a != strings.ToLower(a) {
						t.Errorf("address %q not lower-cased", a)
					}
					seen[a]++
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
			if chunks != tt.wantChunks {
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

// TestBatchReadsLongAddresses: the batch reads of a re-fold over more
// than a chunk of addresses of 250 bytes full of quotes (as literals they
// would have passed the real server's max_query_size) answer each
// address, in both chunks.
func TestBatchReadsLongAddresses(t *testing.T) {
	s := openDSN(t, clickhousetest.Start(t), Options{})
	defer s.Close()
	ctx := context.Background()
	n := chunkAddresses + 1000
	addrs := gen(n, func(i int) string { return fmt.Sprintf("%s.%05d@example.org", strings.Repeat("o'\\", 79), i) })
	now := time.Now().UTC().Truncate(time.Second)
	var events []store.Event
	marked := []int{0, chunkAddresses / 2, chunkAddresses - 1, chunkAddresses, n - 1}
	for _, i := range marked {
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
		if slices.Contains(marked, i) {
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
