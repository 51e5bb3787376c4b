package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// bundleOf encodes reports as Publisher.publish does.
func bundleOf(t testing.TB, raws ...[]byte) []byte {
	t.Helper()
	var b []byte
	for _, raw := range raws {
		hdr, err := json.Marshal(envelopeOf(raw))
		if err != nil {
			t.Fatal(err)
		}
		b = appendBundled(b, hdr, raw)
	}
	return b
}

func bundleReport(i int) []byte {
	return []byte(fmt.Sprintf("Subject: report %d\r\n\r\n%s\r\n", i, strings.Repeat("x", 500+i)))
}

func TestDecodeBundle(t *testing.T) {
	raws := [][]byte{bundleReport(1), bundleReport(2), []byte{}}
	got, err := DecodeBundle(bundleOf(t, raws...), "3")
	if err != nil {
		t.Fatalf("DecodeBundle: %v", err)
	}
	if len(got) != len(raws) {
		t.Fatalf("%d reports, want %d", len(got), len(raws))
	}
	for i, r := range got {
		want := envelopeOf(raws[i])
		if !bytes.Equal(r.Raw, raws[i]) || r.Envelope.ID != want.ID || r.Envelope.Helo != want.Helo ||
			!r.Envelope.Received.Equal(want.Received) || len(r.Envelope.Recipients) != 1 {
			t.Errorf("report %d: %+v, want %+v with its bytes", i, r.Envelope, want)
		}
	}
}

func TestDecodeBundleErrors(t *testing.T) {
	one, two := bundleReport(1), bundleReport(2)
	good := bundleOf(t, one, two)
	badID := envelopeOf(one)
	badID.ID = envelopeOf(two).ID
	badIDHdr, _ := json.Marshal(badID)
	for _, tc := range []struct {
		name, count string
		data        []byte
		want        string
	}{
		{"count not a number", "two", good, "not a count"},
		{"count zero", "0", good, "not a count"},
		{"count too high", strconv.Itoa(MaxBundleReports + 1), good, "not a count"},
		{"fewer reports than the count", "3", good, "report 3 of 3: envelope length unreadable"},
		{"more reports than the count", "1", good, "bytes after its 1 reports"},
		{"truncated report", "2", good[:len(good)-1], "report 2 of 2: report of"},
		{"truncated length", "1", []byte{0x80}, "envelope length unreadable"},
		{"envelope over the bound", "1", appendBundled(nil, bytes.Repeat([]byte(" "), MaxEnvelopeBytes+1), one), "at most 65536"},
		{"envelope not JSON", "1", appendBundled(nil, []byte("{"), one), "envelope: unexpected end"},
		{"id not the bytes' hash", "1", appendBundled(nil, badIDHdr, one), "is not the SHA-256"},
		{"empty", "1", nil, "envelope length unreadable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeBundle(tc.data, tc.count)
			if !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), tc.want) || got != nil {
				t.Errorf("DecodeBundle: %d reports, %v; want ErrBadBundle mentioning %q", len(got), err, tc.want)
			}
		})
	}
}

func FuzzDecodeBundle(f *testing.F) {
	f.Add(bundleOf(f, bundleReport(1), bundleReport(2)), "2")
	f.Add(bundleOf(f, []byte{}), "1")
	f.Add([]byte{0x80, 0x80, 0x80}, "1")
	f.Fuzz(func(t *testing.T, data []byte, count string) {
		got, err := DecodeBundle(data, count)
		if err != nil {
			if !errors.Is(err, ErrBadBundle) || got != nil {
				t.Fatalf("error %v with %d reports, want ErrBadBundle and none", err, len(got))
			}
			return
		}
		if n, _ := strconv.Atoi(count); n != len(got) {
			t.Fatalf("%d reports for count %q", len(got), count)
		}
		// Everything decoded is the bytes it names, and encodes back to
		// a bundle that decodes the same.
		var again []byte
		for _, r := range got {
			if envelopeID(r.Raw) != r.Envelope.ID {
				t.Fatalf("report %s decoded with other bytes", r.Envelope.ID)
			}
			hdr, err := json.Marshal(r.Envelope)
			if err != nil {
				t.Fatal(err)
			}
			again = appendBundled(again, hdr, r.Raw)
		}
		back, err := DecodeBundle(again, strconv.Itoa(len(got)))
		if err != nil || len(back) != len(got) {
			t.Fatalf("re-encoded: %d reports, %v", len(back), err)
		}
		for i := range back {
			if back[i].Envelope.ID != got[i].Envelope.ID || !bytes.Equal(back[i].Raw, got[i].Raw) {
				t.Fatalf("report %d changed on re-encoding", i)
			}
		}
	})
}

func envelopeID(raw []byte) string { return envelopeOf(raw).ID }

// queuedPublisher returns a Publisher whose partition 0 has n reports
// queued and no publisher running yet, so the run started after holds
// them all: what a partition holds while its fsync runs, made
// deterministic.
func queuedPublisher(t *testing.T, js jetstream.JetStream, bundleBytes, n int) (*Publisher, [][]byte, []chan error) {
	t.Helper()
	p := &Publisher{JS: js, BundleBytes: bundleBytes}
	q := make(chan *pendingReport, MaxBundleReports)
	p.queues = map[int]chan *pendingReport{0: q}
	p.quit = make(chan struct{})
	t.Cleanup(p.Close)
	var raws [][]byte
	var done []chan error
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	for i := range n {
		raw := bundleReport(i)
		env := envelopeOf(raw)
		hdr, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		w := &pendingReport{ctx: ctx, env: env, hdr: hdr, raw: raw, done: make(chan error, 1)}
		q <- w
		raws = append(raws, raw)
		done = append(done, w.done)
	}
	p.wg.Go(func() { p.run(0, q, p.quit) })
	return p, raws, done
}

// streamReports reads every message of the reports stream, each decoded.
func streamReports(t *testing.T, js jetstream.JetStream, want int) (msgs int, counts []int, reports []BundledReport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(ctx, StreamReports, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		t.Fatal(err)
	}
	for len(reports) < want {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("after %d messages, %d reports: %v", msgs, len(reports), err)
		}
		got, err := DecodeReports(msg)
		if err != nil {
			t.Fatalf("message %d: %v", msgs+1, err)
		}
		msgs++
		counts = append(counts, len(got))
		reports = append(reports, got...)
	}
	return msgs, counts, reports
}

// TestPublishBundles queues 40 reports on one partition before its
// publisher runs: they are stored as one bundle, each sender is answered
// nil, and every report comes out whole, in order.
func TestPublishBundles(t *testing.T) {
	s := startServer(t, t.TempDir())
	js := connect(t, s)
	_, raws, done := queuedPublisher(t, js, 0, 40)
	for i, d := range done {
		if err := <-d; err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
	}
	msgs, counts, got := streamReports(t, js, len(raws))
	if msgs != 1 || counts[0] != 40 {
		t.Errorf("%d messages holding %v reports, want one bundle of 40", msgs, counts)
	}
	for i, r := range got {
		if !bytes.Equal(r.Raw, raws[i]) || r.Envelope.ID != envelopeID(raws[i]) {
			t.Errorf("report %d: %s, want %s", i, r.Envelope.ID, envelopeID(raws[i]))
		}
	}
}

// TestPublishBundleBytes bounds bundles at the bytes of four reports:
// ten queued reports go as 4, 4 and 2, and a report alone above the
// bound goes alone, as a plain message.
func TestPublishBundleBytes(t *testing.T) {
	s := startServer(t, t.TempDir())
	js := connect(t, s)
	size := 0
	for i := range 4 {
		raw := bundleReport(i)
		hdr, _ := json.Marshal(envelopeOf(raw))
		size += bundledSize(len(hdr), len(raw))
	}
	// Each report is a byte longer than the one before: the next four
	// take 16 bytes more.
	size += 16
	p, raws, done := queuedPublisher(t, js, size, 10)
	for i, d := range done {
		if err := <-d; err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
	}
	big := bytes.Repeat([]byte("y"), 2*size)
	if err := p.Publish(context.Background(), envelopeOf(big), big); err != nil {
		t.Fatalf("a report over the bundle bytes: %v", err)
	}
	msgs, counts, got := streamReports(t, js, len(raws)+1)
	if msgs != 4 || fmt.Sprint(counts) != "[4 4 2 1]" {
		t.Errorf("%d messages holding %v reports, want [4 4 2 1]", msgs, counts)
	}
	if !bytes.Equal(got[10].Raw, big) {
		t.Errorf("the big report came out as %d bytes, want %d", len(got[10].Raw), len(big))
	}
}

// TestPublishConcurrent publishes 300 reports from 300 goroutines over
// two partitions: every Publish returns nil and every report is in the
// streams exactly once, however they were bundled.
func TestPublishConcurrent(t *testing.T) {
	s := startServer(t, t.TempDir())
	js := connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := EnsureReportPartitions(ctx, js, 1, 2); err != nil {
		t.Fatal(err)
	}
	p := &Publisher{JS: js, Partitions: 2}
	defer p.Close()
	const n = 300
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			raw := bundleReport(i)
			errs[i] = p.Publish(ctx, envelopeOf(raw), raw)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
	}
	seen := map[string]int{}
	msgs := 0
	for part := range 2 {
		cons, err := js.CreateOrUpdateConsumer(ctx, ReportStream(part), jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy})
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range info.NumPending {
			msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeReports(msg)
			if err != nil {
				t.Fatal(err)
			}
			msgs++
			for _, r := range got {
				if ReportPartition(r.Envelope.ID, 2) != part {
					t.Errorf("report %s in partition %d, want %d", r.Envelope.ID, part, ReportPartition(r.Envelope.ID, 2))
				}
				seen[r.Envelope.ID]++
			}
		}
	}
	for i := range n {
		if id := envelopeID(bundleReport(i)); seen[id] != 1 {
			t.Errorf("report %d stored %d times, want 1", i, seen[id])
		}
	}
	t.Logf("%d reports in %d messages", n, msgs)
}

// TestPublisherClose: a Publish after Close fails at once, naming it.
func TestPublisherClose(t *testing.T) {
	s := startServer(t, t.TempDir())
	js := connect(t, s)
	p := &Publisher{JS: js}
	raw := bundleReport(1)
	if err := p.Publish(context.Background(), envelopeOf(raw), raw); err != nil {
		t.Fatal(err)
	}
	p.Close()
	p.Close() // twice is harmless
	raw = bundleReport(2)
	if err := p.Publish(context.Background(), envelopeOf(raw), raw); !errors.Is(err, ErrPublisherClosed) {
		t.Errorf("Publish after Close: %v, want ErrPublisherClosed", err)
	}
}
