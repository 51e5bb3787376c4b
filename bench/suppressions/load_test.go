package main

import (
	"testing"
	"time"
)

// Every loaded row is in force at every time a check may be made with:
// bouncer's clock from an hour behind the load's (a writer whose clock
// is ahead, a host clock stepped back; the reliability clock-jump
// scenario steps it 10 min) to 29 days after it. The SQL loaders start
// key i at keySince(i, now) too, and soft rows end 30 days after the load.
// Before sinceMargin, key 0 started at the load's own instant and keys
// 0..599 were not yet in force for a bouncer 10 min behind.
func TestLoadedRowsInForce(t *testing.T) {
	load := time.Date(2026, 11, 26, 0, 21, 8, 0, time.UTC)
	for _, i := range []int{0, 1, 10, 64, 599, 600, 3599, 3600, 2591999, 2592000, 999999} {
		row := suppressionRow(i, load)
		if row.Address != address(i) {
			t.Errorf("key %d: address %q, want %q", i, row.Address, address(i))
		}
		for _, off := range []time.Duration{-59 * time.Minute, -10 * time.Minute, -time.Second, 0, time.Second,
			10 * time.Minute, 24 * time.Hour, 29 * 24 * time.Hour} {
			if at := load.Add(off); !row.InForce(at) {
				t.Errorf("key %d, loaded at %s: not in force at %s (since %s, until %s)",
					i, load.Format(time.RFC3339), at.Format(time.RFC3339), row.Since.Format(time.RFC3339), row.Until.Format(time.RFC3339))
			}
		}
	}
}
