package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/bouncer-mail/bouncer/store/clickhouse"
)

// chFloor measures, with bouncer's load still to come, what one
// ClickHouse round trip costs from Go on this machine, one at a time:
// SELECT 1, and the store's own point read of a suppressed address
// (clickhouse.Store.AddressSuppressions: the read a check of a
// suppressed address costs). The check's goal cannot be lower than
// what a hit costs here.
func chFloor(dsn string, n, reads int) error {
	ctx := context.Background()
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		return err
	}
	conn, err := ch.Open(opts)
	if err != nil {
		return err
	}
	defer conn.Close()
	s, err := clickhouse.Open(ctx, dsn, clickhouse.Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	one := make([]time.Duration, 0, reads)
	point := make([]time.Duration, 0, reads)
	for i := range 2 * reads {
		start := time.Now()
		if i%2 == 0 {
			var v uint8
			if err := conn.QueryRow(ctx, "SELECT 1").Scan(&v); err != nil {
				return err
			}
			one = append(one, time.Since(start))
			continue
		}
		rows, err := s.AddressSuppressions(ctx, address(rng.IntN(n)), time.Now())
		if err != nil {
			return err
		}
		if len(rows) != 1 {
			return fmt.Errorf("point read: %d rows, want 1", len(rows))
		}
		point = append(point, time.Since(start))
	}
	fmt.Printf("ClickHouse from Go, one at a time, %d each (load %s):\n", reads, loadAvg())
	fmt.Printf("  SELECT 1                               %s\n", quantiles(one))
	fmt.Printf("  AddressSuppressions of a suppressed one %s\n", quantiles(point))

	// The check filter's full read: what its first load costs, and what
	// each of its refreshes (four a second) costs while every key was
	// written within store.DefaultFilterOverlap, as after a large import.
	var feed []time.Duration
	for range 3 {
		start, k := time.Now(), 0
		if err := s.SuppressionAddressesSince(ctx, time.Time{}, func(string) error { k++; return nil }); err != nil {
			return err
		}
		feed = append(feed, time.Since(start))
		if k < n {
			return fmt.Errorf("feed: %d addresses, want at least %d", k, n)
		}
	}
	fmt.Printf("  SuppressionAddressesSince(all), 3 reads %.0f, %.0f, %.0f ms (load %s)\n",
		ms(feed[0]), ms(feed[1]), ms(feed[2]), loadAvg())
	return nil
}
