package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/clickhouse/clickhousetest"
)

// benchAddress is key i of bench/suppressions' load.
func benchAddress(i int) string { return fmt.Sprintf("user%d@example%d.com", i, i%1000) }

// benchStream is key i's stream in bench/suppressions' load.
func benchStream(i int) string {
	if i%4 == 3 {
		return "news"
	}
	return ""
}

// fillBenchSuppressions inserts keys 0..n-1 as bench/suppressions' -load
// sql does: one INSERT ... SELECT of every key at version v (every one
// in force, soft ones for 30 days), then a second part with a newer
// version (v+1, the note changed) of about 1 % of them.
func fillBenchSuppressions(t testing.TB, s *Store, n int, v uint64) {
	t.Helper()
	now := time.Now()
	ctx := context.Background()
	if err := s.conn.Exec(ctx, fmt.Sprintf(`INSERT INTO suppressions %s
SELECT a, if(number %% 4 = 3, 'news', ''), toUInt64(%d), toUInt8(0),
	if(number %% 50 = 1, 'manual', 'policy'),
	if(number %% 10 = 0, 'soft', 'hard'),
	if(number %% 10 = 0, 'mailboxfull', 'userunknown'),
	multiIf(number %% 50 = 1, '', number %% 10 = 0, 'soft', 'hard'),
	toInt64(%d) - toInt64(number %% 2592000) * 1000000000,
	if(number %% 10 = 0, toInt64(%d), toInt64(0)),
	if(number %% 50 = 1, 'ops', 'policy'),
	concat('550 5.1.1 <', a, '>: Recipient address rejected: User unknown in virtual mailbox table')
FROM (SELECT number, concat('user', toString(number), '@example', toString(number %% 1000), '.com') AS a FROM numbers(%d))`,
		suppressionsTable.columnList(), v, now.UnixNano(), now.Add(30*24*time.Hour).UnixNano(), n)); err != nil {
		t.Fatal(err)
	}
	newerVersions(t, s, "cityHash64(address) % 100 = 0", 1)
}

// newerVersions inserts, as one part, a newer version (version+bump of
// each key's newest, the note marked) of the keys cond selects.
func newerVersions(t testing.TB, s *Store, cond string, bump uint64) {
	t.Helper()
	if err := s.conn.Exec(context.Background(), fmt.Sprintf(`INSERT INTO suppressions %s
SELECT address, stream, t.1 + %d, t.2, t.3, t.4, t.5, t.6, t.7, t.8, t.9, concat(t.10, ' (newer)')
FROM (SELECT address, stream, argMax(tuple(version, removed, source, class, reason, rule, since, until, actor, note), version) AS t
	FROM suppressions WHERE %s GROUP BY address, stream)`, suppressionsTable.columnList(), bump, cond)); err != nil {
		t.Fatal(err)
	}
}

// envInt is the environment variable name as an int, or def.
func envInt(t testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

// checkVerdict judges one CheckSuppressions answer of bench key i (a
// hit) or of an address never suppressed (i < 0): nil when right.
func checkVerdict(address string, i int, got []store.Suppression, err error) error {
	switch {
	case errors.Is(err, store.ErrBusy):
		return nil // refused, not wrong
	case err != nil:
		return fmt.Errorf("CheckSuppressions(%s): %w", address, err)
	case i < 0 && len(got) != 0:
		return fmt.Errorf("CheckSuppressions(%s), never suppressed = %+v", address, got)
	case i >= 0 && (len(got) != 1 || got[0].Address != address || got[0].Stream != benchStream(i)):
		return fmt.Errorf("CheckSuppressions(%s), in force on stream %q = %+v", address, benchStream(i), got)
	}
	return nil
}

// CheckSuppressions answers every check right while the table changes
// under it as ClickHouse changes it by itself: merges that drop the
// older versions of keys (OPTIMIZE ... FINAL, and plain OPTIMIZE), and
// new parts of newer versions, each making the feed re-read the
// seconds whose sums changed; and across process starts (a new Store
// each life: the starting filter of addresses, its hand-over to the
// filter of every version), with the filter fresh and, in the lives
// with a MaxStaleness shorter than its reads, stale part of the time,
// so that checks fall through to ClickHouse's FINAL read in the middle
// of those merges. The table is bench/suppressions' -load sql (a part
// of every key, a part of newer versions of 1 %), its versions recent
// so that the feed's window holds them. Every loaded key stays in
// force, so every answer has a truth: a hit has its one row, a miss
// none. BOUNCER_CHECK_MERGE_KEYS and BOUNCER_CHECK_MERGE_LIVES scale it
// (defaults 100,000 and 3) for a long hunt.
func TestCheckSuppressionsDuringMerges(t *testing.T) {
	if testing.Short() {
		t.Skip("loads a ClickHouse table and checks it for a while")
	}
	n := envInt(t, "BOUNCER_CHECK_MERGE_KEYS", 100_000)
	lives := envInt(t, "BOUNCER_CHECK_MERGE_LIVES", 3)
	srv := clickhousetest.NewServer(t)
	dsn := srv.DSN(clickhousetest.NewDatabaseName(t))
	writer := openDSN(t, dsn, Options{})
	defer writer.Close()
	fillBenchSuppressions(t, writer, n, uint64(time.Now().Add(-10*time.Second).UnixNano()))

	var checks, wrong, fellThrough atomic.Int64
	for life := range lives {
		// Lives in turn: the filters refreshing as in production; a
		// filter stale between its refreshes, checks waiting for them;
		// no refreshes at all, every check a read of ClickHouse.
		mode := []string{"fresh", "stale", "no filter"}[life%3]
		t.Run(fmt.Sprintf("life %d %s", life, mode), func(t *testing.T) {
			checker := openDSN(t, dsn, Options{})
			defer checker.Close()
			switch mode {
			case "stale":
				checker.checks.opts.MaxStaleness = 20 * time.Millisecond
				checker.checks.opts.Interval = 50 * time.Millisecond
			case "no filter":
				checker.checks.noRun = true
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(life), uint64(w)))
					for ctx.Err() == nil {
						i := rng.IntN(n)
						addr := benchAddress(i)
						if rng.IntN(10) != 0 { // 90 % misses, as the bench
							addr, i = benchAddress(n+i), -1
						}
						got, err := checker.CheckSuppressions(ctx, addr, time.Now())
						if ctx.Err() != nil {
							return
						}
						checks.Add(1)
						if err := checkVerdict(addr, i, got, err); err != nil {
							wrong.Add(1)
							select {
							case errs <- err:
							default:
							}
						}
					}
				}()
			}
			// The disturbances, one after another, while the checks run.
			steps := []func(){
				func() { newerVersions(t, writer, fmt.Sprintf("cityHash64(address) %% 100 = %d", 1+life), 1) },
				func() { optimize(t, writer, "FINAL") },
				func() { newerVersions(t, writer, fmt.Sprintf("cityHash64(address) %% 7 = %d", life%7), 1000) },
				func() { optimize(t, writer, "") },
				func() { optimize(t, writer, "FINAL") },
			}
			for _, step := range steps {
				step()
				time.Sleep(300 * time.Millisecond) // let refreshes see it between steps
			}
			cancel()
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if f := checker.checks.filter.Load(); f != nil {
				st := f.Stats()
				t.Logf("filter: %d addresses, %d versions, loaded %v", st.Addresses, st.Versions, st.Loaded)
			}
			fellThrough.Add(int64(checker.checks.reads.Load()))
		})
	}
	t.Logf("%d checks, %d wrong, %d read from ClickHouse", checks.Load(), wrong.Load(), fellThrough.Load())
}

// optimize runs OPTIMIZE TABLE suppressions with how ("FINAL" or "").
func optimize(t testing.TB, s *Store, how string) {
	t.Helper()
	if err := s.conn.Exec(context.Background(), "OPTIMIZE TABLE suppressions "+how); err != nil {
		t.Fatal(err)
	}
}

// Every loaded key, checked once the filter has loaded, is answered in
// force, in each of several lives (a fresh Store each) over one static
// table of bench/suppressions' shape, its versions older than the
// feed's window as in the bench: a key the filter's first read lost
// would be answered "not suppressed" in every check of it for the life
// of the process. Checks run from the first moment too (the starting
// filter, the hand-over), each judged. BOUNCER_CHECK_MERGE_KEYS and
// BOUNCER_CHECK_EVERY_LIVES (default 2) scale it.
func TestCheckSuppressionsEveryKey(t *testing.T) {
	if testing.Short() {
		t.Skip("loads a ClickHouse table and checks every key")
	}
	n := envInt(t, "BOUNCER_CHECK_MERGE_KEYS", 100_000)
	lives := envInt(t, "BOUNCER_CHECK_EVERY_LIVES", 2)
	srv := clickhousetest.NewServer(t)
	dsn := srv.DSN(clickhousetest.NewDatabaseName(t))
	writer := openDSN(t, dsn, Options{})
	defer writer.Close()
	fillBenchSuppressions(t, writer, n, uint64(time.Now().Add(-3*time.Minute).UnixNano()))
	for life := range lives {
		checker := openDSN(t, dsn, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var early, earlyWrong atomic.Int64
		errs := make(chan error, 16)
		report := func(err error) {
			select {
			case errs <- err:
			default:
			}
		}
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(life), uint64(w)))
				for ctx.Err() == nil {
					i := rng.IntN(n)
					addr := benchAddress(i)
					if rng.IntN(10) != 0 {
						addr, i = benchAddress(n+i), -1
					}
					got, err := checker.CheckSuppressions(ctx, addr, time.Now())
					if ctx.Err() != nil {
						return
					}
					early.Add(1)
					if err := checkVerdict(addr, i, got, err); err != nil {
						earlyWrong.Add(1)
						report(fmt.Errorf("life %d, while starting: %w", life, err))
					}
				}
			}()
		}
		for f := checker.checks.filter.Load(); f == nil || !f.Loaded(); f = checker.checks.filter.Load() {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond) // the hand-over, under load
		cancel()
		wg.Wait()
		wrong := 0
		now := time.Now()
		for i := range n {
			got, err := checker.CheckSuppressions(context.Background(), benchAddress(i), now)
			if err := checkVerdict(benchAddress(i), i, got, err); err != nil {
				wrong++
				report(fmt.Errorf("life %d, loaded: %w", life, err))
			}
		}
		st := checker.checks.filter.Load().Stats()
		t.Logf("life %d: %d checks while starting (%d wrong), then %d keys each once: %d wrong; %d ClickHouse reads; filter %d addresses",
			life, early.Load(), earlyWrong.Load(), n, wrong, checker.checks.reads.Load(), st.Addresses)
		checker.Close()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
}
