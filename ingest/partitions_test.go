package ingest

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/sqlite"
	"github.com/nats-io/nats.go/jetstream"
)

// TestPartitions: reports spread over four partitions, two of them
// created after Run started (as a listener started later with more
// partitions does), are all stored once, every partition is acked and
// trimmed empty, and the store never sees two writes at once: the
// partitions feed one processing loop.
func TestPartitions(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := broker.EnsureReportPartitions(ctx, e.js, 1, 2); err != nil {
		t.Fatalf("EnsureReportPartitions(2): %v", err)
	}
	st := newFaultStore(t)
	pub := &broker.Publisher{JS: e.js, Partitions: 2}
	defer pub.Close()
	const first, second = 20, 40
	perStream := map[string]int{}
	publish := func(i int) {
		raw := dsnReport(fmt.Sprintf("user%d@example.org", i), fmt.Sprint(i))
		en := envelopeOf(raw)
		if err := pub.Publish(ctx, en, raw); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
		perStream[broker.ReportStream(broker.ReportPartition(en.ID, pub.Partitions))]++
	}
	for i := range first { // a backlog in both partitions before Run
		publish(i)
	}
	e.runWith(st, func(c *Config) { c.PartitionScan = 50 * time.Millisecond })
	// Two more partitions while Run is consuming the first two.
	if err := broker.EnsureReportPartitions(ctx, e.js, 1, 4); err != nil {
		t.Fatalf("EnsureReportPartitions(4): %v", err)
	}
	pub.Partitions = 4
	for i := first; i < second; i++ {
		publish(i)
	}
	for i := range 4 {
		if perStream[broker.ReportStream(i)] == 0 {
			t.Fatalf("no report went to partition %d (%v): the test proves nothing for it", i, perStream)
		}
	}
	waitFor(t, "every report in the store", func() bool { r, _, _ := st.snapshot(); return len(r) == second })
	for i := range 4 {
		name := broker.ReportStream(i)
		waitFor(t, name+" acked and trimmed", func() bool { return e.streamMsgs(name) == 0 })
	}
	reports, events, _ := st.snapshot()
	if len(reports) != second || len(events) != second {
		t.Errorf("%d reports and %d events stored, want %d of each", len(reports), len(events), second)
	}
	if n := st.mostInWrite.Load(); n != 1 {
		t.Errorf("%d Store.Write calls at once, want 1: one writer whatever the partitions", n)
	}
}

// TestBatchSizeDefaults: a zero BatchSize takes the store's own
// (ingest.BatchSizer: SQLite's 8,000), else DefaultBatchSize; a given one
// is kept.
func TestBatchSizeDefaults(t *testing.T) {
	sq, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "b.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	for _, tc := range []struct {
		name  string
		st    store.Store
		given int
		want  int
	}{
		{"sqlite", sq, 0, 8000},
		{"sqlite, given", sq, 50, 50},
		{"a store without a preference", newFaultStore(t), 0, DefaultBatchSize},
	} {
		if got := (Config{Store: tc.st, BatchSize: tc.given}).withDefaults().BatchSize; got != tc.want {
			t.Errorf("%s: BatchSize %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestTrimAfterAnotherConsumer: a trim that falls short of what ingest
// acked (the stream's floor held below by another consumer here; by acks
// the server had not counted yet in a CI run) is tried again when idle,
// so the stream empties once the other consumer acks, without another
// report arriving.
func TestTrimAfterAnotherConsumer(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	other, err := e.js.CreateOrUpdateConsumer(ctx, broker.StreamReports, jetstream.ConsumerConfig{
		Durable: "inspector", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: broker.SubjectReports,
	})
	if err != nil {
		t.Fatal(err)
	}
	st := newFaultStore(t)
	e.run(st)
	for i := range 3 {
		e.publish(dsnReport(fmt.Sprintf("u%d@example.org", i), fmt.Sprint("trim", i)))
	}
	waitFor(t, "the reports in the store", func() bool { r, _, _ := st.snapshot(); return len(r) == 3 })
	waitFor(t, "ingest's acks", func() bool { ci := e.consumerInfo(); return ci.NumAckPending == 0 && ci.NumPending == 0 })
	if n := e.streamMsgs(broker.StreamReports); n != 3 {
		t.Fatalf("the stream holds %d reports while the inspector acked none, want 3", n)
	}
	batch, err := other.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	acked := 0
	for msg := range batch.Messages() {
		if err := msg.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
		acked++
	}
	if acked != 3 {
		t.Fatalf("the inspector got %d reports, want 3", acked)
	}
	waitFor(t, "the stream emptied by ingest's idle trim", func() bool { return e.streamMsgs(broker.StreamReports) == 0 })
}
