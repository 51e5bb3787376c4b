package broker

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestReportPartitionNames(t *testing.T) {
	for _, tc := range []struct {
		stream  string
		part    int
		isPart  bool
		subject string
	}{
		{"BOUNCER_REPORTS", 0, true, "bouncer.reports"},
		{"BOUNCER_REPORTS_1", 1, true, "bouncer.reports.1"},
		{"BOUNCER_REPORTS_63", 63, true, "bouncer.reports.63"},
		{"BOUNCER_REPORTS_0", 0, false, ""},  // partition 0 has no suffix
		{"BOUNCER_REPORTS_01", 0, false, ""}, // nor leading zeros
		{"BOUNCER_REPORTS_", 0, false, ""},
		{"BOUNCER_REPORTS_x", 0, false, ""},
		{"BOUNCER_REPORTS_-1", 0, false, ""},
		{"BOUNCER_REPORTS_1000", 0, false, ""},
		{"BOUNCER_REPORTSX", 0, false, ""},
		{"DELIVERY_ATTEMPTS", 0, false, ""},
		{"BOUNCER_DEADLETTER", 0, false, ""},
	} {
		part, ok := ReportPartitionOf(tc.stream)
		if ok != tc.isPart || part != tc.part {
			t.Errorf("ReportPartitionOf(%q) = %d, %v; want %d, %v", tc.stream, part, ok, tc.part, tc.isPart)
		}
		if IsReportStream(tc.stream) != tc.isPart {
			t.Errorf("IsReportStream(%q) = %v", tc.stream, !tc.isPart)
		}
		if tc.isPart {
			if got := ReportStream(tc.part); got != tc.stream {
				t.Errorf("ReportStream(%d) = %q, want %q", tc.part, got, tc.stream)
			}
			if got := ReportSubject(tc.part); got != tc.subject {
				t.Errorf("ReportSubject(%d) = %q, want %q", tc.part, got, tc.subject)
			}
		}
	}
}

func TestReportPartitionSpread(t *testing.T) {
	for _, n := range []int{-1, 0, 1} {
		if got := ReportPartition("abc", n); got != 0 {
			t.Errorf("ReportPartition(abc, %d) = %d, want 0", n, got)
		}
	}
	// 4,000 ids over 4 partitions: each gets its share within 20%, and an
	// id always gets the same one.
	counts := make([]int, 4)
	for i := range 4000 {
		id := fmt.Sprintf("%064x", i*7919)
		p := ReportPartition(id, 4)
		if p != ReportPartition(id, 4) {
			t.Fatalf("ReportPartition(%s) is not stable", id)
		}
		counts[p]++
	}
	for p, c := range counts {
		if c < 800 || c > 1200 {
			t.Errorf("partition %d got %d of 4000 ids: %v", p, c, counts)
		}
	}
	for _, n := range []int{0, -1, MaxReportPartitions + 1} {
		if ValidateReportPartitions(n) == nil {
			t.Errorf("ValidateReportPartitions(%d) = nil, want an error", n)
		}
	}
}

// TestPublishPartitions: a Publisher over 3 partitions stores each report
// in the partition of its id, once even when sent twice; ReportStreams
// lists them in order; the partitions carry the reports stream's
// configuration.
func TestPublishPartitions(t *testing.T) {
	s := startServer(t, t.TempDir())
	js := connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := EnsureReportPartitions(ctx, js, 1, 3); err != nil {
		t.Fatalf("EnsureReportPartitions: %v", err)
	}
	if err := EnsureReportPartitions(ctx, js, 1, 0); err == nil {
		t.Error("EnsureReportPartitions(0) = nil, want an error")
	}
	got, err := ReportStreams(ctx, js)
	if want := []string{"BOUNCER_REPORTS", "BOUNCER_REPORTS_1", "BOUNCER_REPORTS_2"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("ReportStreams = %v, %v; want %v", got, err, want)
	}
	base := StreamConfigs(1)[0]
	for i := 1; i < 3; i++ {
		st, err := js.Stream(ctx, ReportStream(i))
		if err != nil {
			t.Fatal(err)
		}
		c := st.CachedInfo().Config
		if c.Retention != base.Retention || c.Discard != base.Discard || c.Storage != jetstream.FileStorage ||
			c.MaxMsgSize != base.MaxMsgSize || c.Duplicates != base.Duplicates || !slices.Equal(c.Subjects, []string{ReportSubject(i)}) {
			t.Errorf("partition %d config = %+v, want the reports stream's with subject %s", i, c, ReportSubject(i))
		}
	}

	pub := &Publisher{JS: js, Partitions: 3}
	want := make([]uint64, 3)
	for i := range 30 {
		raw := fmt.Appendf(nil, "Subject: report %d\r\n\r\nbody\r\n", i)
		env := envelopeOf(raw)
		for range 2 { // the resend is a duplicate of its own partition
			if err := pub.Publish(ctx, env, raw); err != nil {
				t.Fatalf("Publish %d: %v", i, err)
			}
		}
		want[ReportPartition(env.ID, 3)]++
	}
	for i := range 3 {
		st, err := js.Stream(ctx, ReportStream(i))
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != want[i] || want[i] == 0 {
			t.Errorf("partition %d holds %d reports, want %d (and more than 0)", i, info.State.Msgs, want[i])
		}
	}
}
