package broker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Reports are spread over partitions: StreamReports (partition 0, the
// stream of every bouncer before partitions) and BOUNCER_REPORTS_1 ...
// BOUNCER_REPORTS_<n-1>, each with its own subject (bouncer.reports.1,
// ...) and the same configuration.
//
// Why: with SyncAlways a stream stores its messages one at a time, each
// written and fsynced before the next, on one goroutine of the server.
// That serial fsync, not the CPU, held the listener: 50 SMTP sessions
// waited in line for it (bench/README.md). Streams store in parallel, so
// n partitions keep n fsyncs in flight; a publish is still acknowledged
// only once its own message is on disk.
//
// A report's partition is a hash of its message id, so a resend of the
// same bytes goes to the same stream and its deduplication holds as long
// as the partition count is unchanged. Ingest reads every reports stream
// that exists (ReportStreams), whatever count the listeners were given,
// so lowering the count leaves the higher partitions to be drained, not
// lost.
const (
	// DefaultReportPartitions is the listener's partition count unless
	// told otherwise (--report-partitions). On the 2-CPU test machine 4
	// gave the highest rate of durable publishes.
	DefaultReportPartitions = 4
	// MaxReportPartitions bounds the count: each is a stream, with its
	// files (and, clustered, its Raft group).
	MaxReportPartitions = 64
)

// ReportStream is the name of reports partition i.
func ReportStream(i int) string {
	if i == 0 {
		return StreamReports
	}
	return StreamReports + "_" + strconv.Itoa(i)
}

// ReportSubject is the subject of reports partition i.
func ReportSubject(i int) string {
	if i == 0 {
		return SubjectReports
	}
	return SubjectReports + "." + strconv.Itoa(i)
}

// ReportPartitionOf returns the partition a stream name is, or false when
// it is not a reports stream.
func ReportPartitionOf(stream string) (int, bool) {
	if stream == StreamReports {
		return 0, true
	}
	rest, ok := strings.CutPrefix(stream, StreamReports+"_")
	if !ok || rest == "" || rest[0] == '0' || len(rest) > 3 {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i <= 0 {
		return 0, false
	}
	return i, true
}

// IsReportStream reports whether stream holds raw reports (any partition).
func IsReportStream(stream string) bool {
	_, ok := ReportPartitionOf(stream)
	return ok
}

// ReportPartition is the partition of the report with message id id among
// n (values below 2 mean partition 0).
func ReportPartition(id string, n int) int {
	if n < 2 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(n))
}

// ValidateReportPartitions checks a partition count given by a user.
func ValidateReportPartitions(n int) error {
	if n < 1 || n > MaxReportPartitions {
		return fmt.Errorf("report partitions must be 1 to %d, got %d", MaxReportPartitions, n)
	}
	return nil
}

// EnsureReportPartitions creates reports partitions 1 to n-1, or updates
// them to the reports stream's configuration with replicas replicas
// (partition 0 is EnsureStreams'). A listener calls it at start, after
// EnsureStreams, with the count it publishes over. Partitions at or above
// n that exist are left alone: ingest drains them.
func EnsureReportPartitions(ctx context.Context, js jetstream.JetStream, replicas, n int) error {
	if err := ValidateReportPartitions(n); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, EnsureTimeout)
		defer cancel()
	}
	base := StreamConfigs(replicas)[0]
	for i := 1; i < n; i++ {
		cfg := base
		cfg.Name, cfg.Subjects = ReportStream(i), []string{ReportSubject(i)}
		cfg.Description = fmt.Sprintf("raw reports accepted by the bouncer listener, partition %d", i)
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("broker: ensuring stream %s (%s): %w", cfg.Name, cfg.Subjects[0], err)
		}
	}
	return nil
}

// ReportStreams returns the reports streams that exist, in partition
// order.
func ReportStreams(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	type part struct {
		i    int
		name string
	}
	var parts []part
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		if i, ok := ReportPartitionOf(name); ok {
			parts = append(parts, part{i, name})
		}
	}
	if err := names.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return nil, fmt.Errorf("broker: listing reports streams: %w", err)
	}
	slices.SortFunc(parts, func(a, b part) int { return a.i - b.i })
	out := make([]string, len(parts))
	for k, p := range parts {
		out[k] = p.name
	}
	return out, nil
}
