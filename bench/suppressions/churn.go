package main

import (
	"context"
	"fmt"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
)

// churn changes the ClickHouse table under a check round as imports and
// merges do, without changing any answer: every d, a part of newer
// versions (version now, the note marked, in force as before) of a
// twentieth of the keys, a different twentieth each time, then
// OPTIMIZE TABLE suppressions FINAL, which merges every part into one and
// drops the older versions. The check filter's feed then reads the new
// part's rows (50,000 versions at 1,000,000 keys: a rebuild of the
// filter every second or third time) and the seconds the merge changed,
// while checks read the filter, or ClickHouse when it is stale. It
// stops when ctx ends and returns how many of each it ran.
func churn(ctx context.Context, dsn string, d time.Duration) (parts, merges int, err error) {
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		return 0, 0, err
	}
	conn, err := ch.Open(opts)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	t := time.NewTicker(d)
	defer t.Stop()
	for k := 0; ; k++ {
		select {
		case <-ctx.Done():
			return parts, merges, nil
		case <-t.C:
		}
		// Not ctx: a statement cut off by the round's end would leave
		// an error rather than a changed table.
		bg := context.Background()
		if err := conn.Exec(bg, fmt.Sprintf(`INSERT INTO suppressions
	(address, stream, version, removed, source, class, reason, rule, since, until, actor, note)
SELECT address, stream, toUInt64(%d), t.2, t.3, t.4, t.5, t.6, t.7, t.8, t.9, concat(t.10, ' (churn)')
FROM (SELECT address, stream, argMax(tuple(version, removed, source, class, reason, rule, since, until, actor, note), version) AS t
	FROM suppressions WHERE cityHash64(address) %% 20 = %d GROUP BY address, stream)`, time.Now().UnixNano(), k%20)); err != nil {
			return parts, merges, fmt.Errorf("churn: newer versions: %w", err)
		}
		parts++
		if err := conn.Exec(bg, "OPTIMIZE TABLE suppressions FINAL"); err != nil {
			return parts, merges, fmt.Errorf("churn: OPTIMIZE: %w", err)
		}
		merges++
	}
}
