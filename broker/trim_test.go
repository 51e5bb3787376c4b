package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestTrim: Trim removes what every consumer acked, and nothing else.
func TestTrim(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := connect(t, startServer(t, t.TempDir()), nats.MaxReconnects(0))
	for i := range 10 {
		if _, err := js.Publish(ctx, SubjectReports, fmt.Appendf(nil, "report %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// ack acks the next n messages of a new or existing durable consumer.
	ack := func(durable string, n int) {
		t.Helper()
		c, err := js.CreateOrUpdateConsumer(ctx, StreamReports, jetstream.ConsumerConfig{Durable: durable, AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		b, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	state := func() (first, msgs uint64) {
		t.Helper()
		s, err := js.Stream(ctx, StreamReports)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State.FirstSeq, s.CachedInfo().State.Msgs
	}

	steps := []struct {
		name            string
		do              func()
		wantFloor       uint64 // Trim's answer
		wantFirst, msgs uint64 // the stream after it
	}{
		{"no consumer: nobody has read it", func() {}, 0, 1, 10},
		{"two consumers that acked nothing", func() { ack("a", 0); ack("b", 0) }, 0, 1, 10},
		{"one acks 6, the other nothing: the lowest floor counts", func() { ack("a", 6) }, 0, 1, 10},
		{"the other acks 3", func() { ack("b", 3) }, 3, 4, 7},
		{"it catches up past the first", func() { ack("b", 5) }, 6, 7, 4},
		{"the first acks the rest", func() { ack("a", 4) }, 8, 9, 2},
		{"both at the end", func() { ack("b", 2) }, 10, 11, 0},
		{"again: nothing to do", func() {}, 0, 11, 0},
	}
	for _, st := range steps {
		st.do()
		got, err := Trim(ctx, js, StreamReports)
		if err != nil {
			t.Fatalf("%s: Trim: %v", st.name, err)
		}
		first, msgs := state()
		if got != st.wantFloor || first != st.wantFirst || msgs != st.msgs {
			t.Errorf("%s: Trim = %d, stream first %d, %d messages; want %d, first %d, %d messages",
				st.name, got, first, msgs, st.wantFloor, st.wantFirst, st.msgs)
		}
	}
	if _, err := Trim(ctx, js, "NO_SUCH_STREAM"); err == nil {
		t.Error("Trim of a missing stream: no error")
	}
}

// TestEnsureStreamsKeepsWorkQueue: a reports stream an older bouncer made
// as a work queue cannot become a limits stream; EnsureStreams keeps it
// and does not fail.
func TestEnsureStreamsKeepsWorkQueue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := startServer(t, t.TempDir())
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	old := StreamConfigs(1)[0]
	old.Retention = jetstream.WorkQueuePolicy
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStreams(ctx, js, 1); err != nil {
		t.Fatalf("EnsureStreams over a work-queue reports stream: %v", err)
	}
	st, err := js.Stream(ctx, StreamReports)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.Retention; got != jetstream.WorkQueuePolicy {
		t.Errorf("retention %v, want the work queue kept", got)
	}

	// A fresh server gets the limits stream.
	js2 := connect(t, startServer(t, t.TempDir()))
	st, err = js2.Stream(ctx, StreamReports)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.Retention; got != jetstream.LimitsPolicy {
		t.Errorf("new reports stream: retention %v, want limits", got)
	}
}

// TestTrimDropsQueuedRedelivery pins a behaviour of nats-server (v2.15.2,
// consumer.purge) that ingest works around: a purge drops from a
// consumer's redelivery queue every message below the next one it would
// deliver, also those still in the stream, so a message nak'ed just
// before a Trim is redelivered only after AckWait, not at once. Ingest
// therefore does not trim a stream while a message it nak'ed there is
// unsettled (ingest's TestStoreDown caught the 30 s wait). When this test
// fails, the server has changed, and the workaround may go.
func TestTrimDropsQueuedRedelivery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := connect(t, startServer(t, t.TempDir()), nats.MaxReconnects(0))
	for i := range 3 {
		if _, err := js.Publish(ctx, SubjectReports, fmt.Appendf(nil, "report %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := js.CreateOrUpdateConsumer(ctx, StreamReports, jetstream.ConsumerConfig{Durable: "ingest",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// redelivered nak's the third of three messages after acking the
	// first two, trims or not, and says whether a fetch gets it again
	// within a second.
	redelivered := func(trim bool) bool {
		t.Helper()
		b, err := c.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var msgs []jetstream.Msg
		for m := range b.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) != 3 {
			t.Fatalf("fetched %d messages, want 3", len(msgs))
		}
		for _, m := range msgs[:2] {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := msgs[2].Nak(); err != nil {
			t.Fatal(err)
		}
		if err := js.Conn().Flush(); err != nil {
			t.Fatal(err)
		}
		if trim {
			if floor, err := Trim(ctx, js, StreamReports); err != nil || floor == 0 {
				t.Fatalf("Trim = %d, %v; want a purge", floor, err)
			}
		}
		again, err := c.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range again.Messages() {
			n++
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		return n == 1
	}
	if !redelivered(false) {
		t.Fatal("a nak'ed message was not redelivered at once without a trim")
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, SubjectReports, fmt.Appendf(nil, "report %d", 3+i)); err != nil {
			t.Fatal(err)
		}
	}
	if redelivered(true) {
		t.Error("a nak'ed message was redelivered at once after a trim: nats-server no longer drops it from the redelivery queue")
	}
}
