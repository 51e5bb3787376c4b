package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/suppress"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config's tunables.
const (
	DefaultDurable       = "ingest"
	DefaultBatchSize     = 500
	DefaultBatchWait     = 200 * time.Millisecond
	DefaultBatchBytes    = 48 << 20
	DefaultBackoff       = 500 * time.Millisecond
	DefaultMaxBackoff    = 30 * time.Second
	DefaultWriteTimeout  = 20 * time.Second
	DefaultPartitionScan = 30 * time.Second
)

// AckWait is how long JetStream waits for ingest's ack before it
// redelivers a message, to this or another ingest process. A batch is
// fetched, classified, written and acked well within it (WriteTimeout is
// below it); a redelivery is harmless, Store.Write being idempotent.
const AckWait = 30 * time.Second

// maxBatchSize bounds BatchSize; the consumer's MaxAckPending is a
// multiple of it.
const maxBatchSize = 10000

// minFetchBytes is the smallest fetch of reports: it must be able to
// carry the largest report, or JetStream would never hand it out.
const minFetchBytes = broker.ReportsMaxMsgSize + 1<<20

// minBatchBytes is the smallest BatchBytes: each of the reportFetches
// fetches at once gets its share.
const minBatchBytes = reportFetches * minFetchBytes

// reportFetches is how many fetches of reports are in flight at once,
// whatever the partition count, each of BatchBytes / reportFetches bytes
// at most. Deliveries the NATS server has not written to ingest's
// connection yet count against that connection's pending limit
// (max_pending, 64 MB by default), and a connection over it is cut as a
// slow consumer: with a fetch per partition in flight, 8 partitions of
// 2,000 reports of 8 KB each were 128 MB, the connection was cut and the
// reports came back only after AckWait (bench/listener, 30.7 s).
const reportFetches = 2

// attemptsFetchBytes bounds a fetch of sync reply logs (each at most
// broker.AttemptsMaxMsgSize), beside the reports' BatchBytes.
const attemptsFetchBytes = 8 << 20

// BatchSizer is a store that knows a better BatchSize than
// DefaultBatchSize for itself; Config takes it when BatchSize is zero.
type BatchSizer interface {
	IngestBatchSize() int
}

// Config configures a Pipeline. JS, Store, Classifier, Logger and
// Registerer are required; zero tunables take the defaults above.
type Config struct {
	JS         jetstream.JetStream
	Store      store.Store
	Classifier *classify.Classifier
	Logger     *slog.Logger
	Registerer prometheus.Registerer

	// Durable names the consumer. Every ingest process with the same
	// name shares it: each message goes to one of them.
	Durable string
	// BatchSize and BatchWait bound one fetch, and so one Store.Write:
	// at most BatchSize messages, waiting at most BatchWait for them.
	// A bundle of reports (broker.HeaderBundle) is one message of
	// several reports: a batch takes bundles up to BatchSize reports
	// (one bundle at least), and the rest of the fetch waits for the next
	// batch. Zero: the store's IngestBatchSize (BatchSizer), else
	// DefaultBatchSize.
	BatchSize int
	BatchWait time.Duration
	// BatchBytes bounds the bytes of the fetches of reports in flight at
	// once: reportFetches fetches, each of a share at most (so that with
	// the sync reply logs' 8 MiB it stays under the NATS server's
	// default 64 MB max_pending), whatever the partition count. At least
	// 26 MiB, so that a share carries the largest report.
	BatchBytes int
	// Backoff is the first pause after a failed store write or NATS
	// request; it doubles with every further failure up to MaxBackoff.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// WriteTimeout bounds one Store.Write, and the acks after it. It is
	// below AckWait.
	WriteTimeout time.Duration
	// PartitionScan is how often Run looks for reports partitions it
	// does not consume yet (a listener started with more partitions
	// creates them).
	PartitionScan time.Duration
	// Policy decides the suppressions of the recipients whose outcomes a
	// batch changed; the zero Policy means suppress.Default.
	Policy suppress.Policy
}

// withDefaults returns c with zero tunables set to their defaults.
func (c Config) withDefaults() Config {
	if c.Durable == "" {
		c.Durable = DefaultDurable
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
		if bs, ok := c.Store.(BatchSizer); ok && bs.IngestBatchSize() > 0 {
			c.BatchSize = min(bs.IngestBatchSize(), maxBatchSize)
		}
	}
	if c.BatchWait == 0 {
		c.BatchWait = DefaultBatchWait
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = DefaultBatchBytes
	}
	if c.Backoff == 0 {
		c.Backoff = DefaultBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.Backoff)
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.PartitionScan == 0 {
		c.PartitionScan = DefaultPartitionScan
	}
	if c.Policy == (suppress.Policy{}) {
		c.Policy = suppress.Default
	}
	return c
}

// Validate reports the first thing wrong with c, zero tunables taking
// their defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.JS == nil:
		return errors.New("ingest: Config.JS is required")
	case c.Store == nil:
		return errors.New("ingest: Config.Store is required")
	case c.Classifier == nil:
		return errors.New("ingest: Config.Classifier is required")
	case c.Logger == nil:
		return errors.New("ingest: Config.Logger is required")
	case c.Registerer == nil:
		return errors.New("ingest: Config.Registerer is required")
	case c.BatchSize < 1 || c.BatchSize > maxBatchSize:
		return fmt.Errorf("ingest: Config.BatchSize %d is outside 1..%d", c.BatchSize, maxBatchSize)
	case c.BatchWait < 0:
		return fmt.Errorf("ingest: Config.BatchWait %s is negative", c.BatchWait)
	case c.BatchBytes < minBatchBytes:
		return fmt.Errorf("ingest: Config.BatchBytes %d is below %d, %d times the largest report", c.BatchBytes, minBatchBytes, reportFetches)
	case c.Backoff < 0:
		return fmt.Errorf("ingest: Config.Backoff %s is negative", c.Backoff)
	case c.MaxBackoff < c.Backoff:
		return fmt.Errorf("ingest: Config.MaxBackoff %s is below Config.Backoff %s", c.MaxBackoff, c.Backoff)
	case c.PartitionScan < 0:
		return fmt.Errorf("ingest: Config.PartitionScan %s is negative", c.PartitionScan)
	case c.WriteTimeout < 0 || c.WriteTimeout >= AckWait:
		return fmt.Errorf("ingest: Config.WriteTimeout %s must be positive and below AckWait %s", c.WriteTimeout, AckWait)
	}
	if err := c.Policy.Validate(); err != nil {
		return fmt.Errorf("ingest: Config.Policy: %w", err)
	}
	return nil
}
