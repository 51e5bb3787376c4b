package sqlite

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The WAL's checkpoints run on a connection of their own, beside the
// writer, instead of inside the writer's commits.
//
// SQLite checkpoints by itself at the end of a commit that leaves more
// than wal_autocheckpoint pages (1,000) in the WAL. Ingest's batch
// dirties far more than that on a store of some size (every key lands on
// a page of its own), so nearly every commit copied its pages into the
// database file and fsynced it before the writer could start the next
// batch: the write path paid for the checkpoint's reads, writes and
// fsyncs in full. A checkpointer connection copies the frames of
// committed transactions while the writer goes on appending new ones
// (WAL mode allows both at once); the writer resets the WAL to its start
// whenever it finds it fully copied.
//
// It checkpoints every checkpointInterval, not as soon as there is
// something to copy: on 2 CPUs the listener, NATS and ingest share the
// CPU, and a checkpoint after every commit (ingest commits several times
// a batch, and keeps up with small batches) took it from the listener.
// The unpaced 3-minute soak, one build each (docs/reliability.md): the
// writer checkpointing at 1,000 pages 2,519 and 2,304 reports/s, VmHWM
// 437-439 MiB, ingest up to 2 s behind; a checkpointer going again
// whenever it copied something 2,158 and 2,097/s, 243-245 MiB, 0.3 s; every
// 100 ms 2,622/s; every 250 ms 2,673 and 2,755/s, 315 MiB, 0.3-0.7 s;
// every second 2,403/s, 405 MiB. A checkpoint copies a quarter second
// of commits at once: one pair of fsyncs for all, and a page several of
// them wrote is written once.
//
// The writer keeps a checkpoint of its own as a backstop, at
// writerAutoCheckpoint pages: if the checkpointer stops or falls behind,
// the WAL is still bounded, as before, only larger.
const (
	// writerAutoCheckpoint is the writer's wal_autocheckpoint: 16,384
	// pages of 4 KiB, 64 MiB of WAL.
	writerAutoCheckpoint = 16384
	// checkpointInterval is how long the checkpointer waits between
	// checkpoints.
	checkpointInterval = 250 * time.Millisecond
	// checkpointRetry is how long it waits after an error.
	checkpointRetry = time.Second
)

// checkpointer runs PASSIVE checkpoints on its own connection until
// stopped. PASSIVE never waits for readers or the writer: it copies what
// it can and returns.
type checkpointer struct {
	db     *sql.DB
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	copied atomic.Int64 // checkpoints that copied frames
	errs   atomic.Int64 // checkpoints that failed

	stopOnce sync.Once
}

func startCheckpointer(db *sql.DB, log *slog.Logger) *checkpointer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &checkpointer{db: db, log: log, cancel: cancel, done: make(chan struct{})}
	go c.run(ctx)
	return c
}

// run checkpoints every checkpointInterval, or checkpointRetry after a
// failure.
func (c *checkpointer) run(ctx context.Context) {
	defer close(c.done)
	wait := time.NewTimer(0)
	defer wait.Stop()
	var (
		prev    walState
		failing bool // since the last checkpoint that worked
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-wait.C:
		}
		st, err := c.once(ctx)
		if err == nil && failing {
			failing = false
			c.log.Info("WAL checkpoints work again")
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			// Logged when checkpoints start failing, not every retry;
			// the writer's own checkpoint still bounds the WAL.
			c.errs.Add(1)
			if !failing {
				failing = true
				c.log.Warn("WAL checkpoint failed; the writer checkpoints by itself meanwhile", "err", err, "retry", checkpointRetry)
			}
			wait.Reset(checkpointRetry)
		default:
			if st.copied > 0 && st != prev {
				c.copied.Add(1)
			}
			wait.Reset(checkpointInterval)
		}
		prev = st
	}
}

// walState is what a checkpoint returns: the WAL's frames and how many of
// them are copied into the database file. Both are -1 when the file is
// not in WAL mode.
type walState struct{ frames, copied int64 }

func (c *checkpointer) once(ctx context.Context) (walState, error) {
	var busy int64
	var st walState
	if err := c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &st.frames, &st.copied); err != nil {
		return walState{}, err
	}
	// busy is 1 when another checkpoint (another process's) held the
	// lock: nothing was done, try again later.
	if busy != 0 {
		return walState{}, nil
	}
	return st, nil
}

// stop ends the loop and waits for a running checkpoint.
func (c *checkpointer) stop() {
	c.stopOnce.Do(func() {
		c.cancel()
		<-c.done
	})
}

// collectors are the checkpointer's metrics, read from its counters.
func (c *checkpointer) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "bouncer_sqlite_checkpoints_total",
			Help: "WAL checkpoints that copied frames into the SQLite database file, run beside the writer.",
		}, func() float64 { return float64(c.copied.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "bouncer_sqlite_checkpoint_errors_total",
			Help: "WAL checkpoints that failed (retried every second; the writer checkpoints by itself past 64 MiB of WAL).",
		}, func() float64 { return float64(c.errs.Load()) }),
	}
}
