package reliability

import (
	"testing"
	"time"
)

// TestPacer checks the send times a paced load gets: on schedule while the
// sessions keep up, made up at once after a short delay, and at most
// pacerSlack's worth made up after a long stall.
func TestPacer(t *testing.T) {
	start := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return start.Add(time.Duration(n) * time.Millisecond) }
	tests := []struct {
		name string
		asks []time.Time // when each slot is asked for
		want []time.Time // the times handed out
	}{
		{
			name: "asked early: every slot on schedule",
			asks: []time.Time{ms(0), ms(0), ms(0), ms(0)},
			want: []time.Time{ms(0), ms(10), ms(20), ms(30)},
		},
		{
			name: "asked late within the slack: the missed slots are sent at once",
			asks: []time.Time{ms(0), ms(500), ms(500), ms(500)},
			want: []time.Time{ms(0), ms(10), ms(20), ms(30)},
		},
		{
			name: "after a stall longer than the slack: a second made up, no more",
			asks: []time.Time{ms(0), ms(5000), ms(5000)},
			want: []time.Time{ms(0), ms(4000), ms(4010)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPacer(100, start) // a slot every 10 ms
			for i, now := range tt.asks {
				if got := p.next(now); !got.Equal(tt.want[i]) {
					t.Errorf("slot %d asked at %v: got %v, want %v", i, now.Sub(start), got.Sub(start), tt.want[i].Sub(start))
				}
			}
		})
	}
}
