package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bouncer-mail/bouncer/store"
)

// slowStore is a store behind a slow link: a Write takes perReport for
// each of its reports before it reaches the engine, and one whose time
// runs past its context's deadline fails with it, having stored nothing.
// A fake for the link: a link this slow cannot be made in-process (the
// reliability scenario clickhouse-slow makes a real one with tc in front
// of ClickHouse); the writes that get through go to the real SQLite
// engine (faultStore).
type slowStore struct {
	*faultStore
	perReport time.Duration
}

func (s *slowStore) Write(ctx context.Context, reports []store.Report, events []store.Event) error {
	select {
	case <-time.After(time.Duration(len(reports)) * s.perReport):
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.faultStore.Write(ctx, reports, events)
}

// TestBatchLimitSlowStore: a backlog whose full batch cannot be written
// within WriteTimeout is stored anyway, each report once: the failed
// batch makes the next ones smaller. Before the limit, the same 40
// reports were fetched, timed out and nak'ed for ever.
func TestBatchLimitSlowStore(t *testing.T) {
	e := newEnv(t)
	st := &slowStore{faultStore: newFaultStore(t), perReport: 40 * time.Millisecond}
	const n = 60
	var ids []string
	for i := range n {
		ids = append(ids, e.publish(dsnReport(fmt.Sprintf("user%d@example.org", i), fmt.Sprintf("r%d", i))).ID)
	}
	// 40 reports take 1.6 s, over the 1 s WriteTimeout; 20 take 0.8 s.
	p := e.runWith(st, func(c *Config) {
		c.BatchSize = 40
		c.WriteTimeout = time.Second
	})
	waitFor(t, "every report stored", func() bool {
		reports, _, _ := st.snapshot()
		return len(reports) == n
	})
	for _, id := range ids {
		if w := st.writes(id); w != 1 {
			t.Errorf("report %s written %d times, want once", id, w)
		}
	}
	if got := metric(t, p.reg, "bouncer_ingest_write_errors_total", nil); got < 1 {
		t.Errorf("write errors = %v, want the full batch's timeout at least", got)
	}
	// 20 reports took 0.8 s, not under a quarter of WriteTimeout: the
	// limit stays where batches fit.
	if got := metric(t, p.reg, "bouncer_ingest_batch_limit", map[string]string{"kind": "reports"}); got < 1 || got > 20 {
		t.Errorf("reports batch limit = %v, want 1 to 20", got)
	}
	if got := metric(t, p.reg, "bouncer_ingest_batch_limit", map[string]string{"kind": "attempts"}); got != 40 {
		t.Errorf("attempts batch limit = %v, want 40 (its writes never failed)", got)
	}
}

func TestBatchLimit(t *testing.T) {
	l := &batchLimit{max: 100, quick: 100 * time.Millisecond, gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "limit"})}
	l.set(100)
	steps := []struct {
		name string
		do   func()
		want int
	}{
		{"start", func() {}, 100},
		{"a failed full batch", func() { l.failed(100) }, 50},
		{"a failed smaller batch halves below it", func() { l.failed(10) }, 5},
		{"a slow success keeps it", func() { l.succeeded(5, time.Second) }, 5},
		{"a quick partial batch keeps it", func() { l.succeeded(3, time.Millisecond) }, 5},
		{"a quick full batch doubles it", func() { l.succeeded(5, time.Millisecond) }, 10},
		{"down to one", func() {
			for range 10 {
				l.failed(l.get())
			}
		}, 1},
		{"up to the batch size, never past it", func() {
			for range 10 {
				l.succeeded(l.get(), time.Millisecond)
			}
		}, 100},
	}
	for _, s := range steps {
		s.do()
		if got := l.get(); got != s.want {
			t.Fatalf("%s: limit %d, want %d", s.name, got, s.want)
		}
		var m dto.Metric
		if err := l.gauge.Write(&m); err != nil || m.GetGauge().GetValue() != float64(s.want) {
			t.Fatalf("%s: gauge %v (%v), want %d", s.name, m.GetGauge().GetValue(), err, s.want)
		}
	}
}
