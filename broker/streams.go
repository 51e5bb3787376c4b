package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Subjects and streams. A stream's subjects are fixed here; consumers
// filter on them.
const (
	// SubjectReports carries raw reports from the listener: the message
	// data is the report as received, the envelope is in HeaderEnvelope.
	SubjectReports = "bouncer.reports"
	StreamReports  = "BOUNCER_REPORTS"

	// SubjectAttempts is where sending MTAs publish their sync reply logs
	// (DESIGN.md "Sync reply logs"), one subject per sender below it.
	SubjectAttempts = "delivery.attempts.>"
	StreamAttempts  = "DELIVERY_ATTEMPTS"

	// SubjectDeadLetter holds what ingest could not read, one subject per
	// source below it (SubjectDeadLetterReports, ...), kept for inspection.
	SubjectDeadLetter         = "bouncer.deadletter.>"
	SubjectDeadLetterReports  = "bouncer.deadletter.reports"
	SubjectDeadLetterAttempts = "bouncer.deadletter.attempts"
	StreamDeadLetter          = "BOUNCER_DEADLETTER"
)

// Headers ingest adds to a dead letter, beside the original's own headers.
const (
	HeaderDeadLetterError    = "Bouncer-Error"           // why it could not be read
	HeaderDeadLetterStream   = "Bouncer-Origin-Stream"   // the stream it came from
	HeaderDeadLetterSubject  = "Bouncer-Origin-Subject"  // its subject there
	HeaderDeadLetterSequence = "Bouncer-Origin-Sequence" // its stream sequence there
	// HeaderDeadLetterIndex is set on a report dead-lettered alone out of
	// a bundle (HeaderBundle): its place there, from 0.
	HeaderDeadLetterIndex = "Bouncer-Origin-Index"
)

// Stream limits.
const (
	// ReportsMaxMsgSize bounds one report message: the listener accepts
	// 10 MiB of message; the rest is room for headers.
	ReportsMaxMsgSize = 12 << 20
	// ReportsDuplicates is the dedup window for reports: a resend of the
	// same message within it (a publish retried after a timeout whose
	// first try had landed, a report alone or a whole bundle) is stored
	// once. For a report resent in another bundle, or beyond the
	// window, the store's idempotent Write is the dedup: a remote MTA's
	// resend after a 451 (Postfix retries after 5 minutes) is stored
	// twice in the stream and once in the store. The window costs the
	// server about 160 bytes of heap per message received within it (measured: 150,000 ids held 24.4 MB): at
	// 15 minutes, as before, a soak at 1,170 reports/s held about 170 MB
	// and its RSS passed 512 MiB after 13 minutes; 2 minutes, NATS's own
	// default, holds a seventh of that.
	ReportsDuplicates = 2 * time.Minute

	// AttemptsMaxMsgSize bounds one sync reply log record.
	AttemptsMaxMsgSize = 1 << 20
	// AttemptsMaxAge is how long sync reply logs are kept.
	AttemptsMaxAge = 7 * 24 * time.Hour

	// DeadLetterMaxMsgSize leaves room for the error headers ingest adds
	// to a report-sized message.
	DeadLetterMaxMsgSize = ReportsMaxMsgSize + 1<<20
	// DeadLetterMaxAge is how long dead letters are kept for inspection.
	DeadLetterMaxAge = 30 * 24 * time.Hour

	// duplicates is the dedup window of the other streams.
	duplicates = 2 * time.Minute
)

// EnsureTimeout bounds EnsureStreams when its context has no deadline.
const EnsureTimeout = time.Minute

// StreamConfigs returns the configuration of every stream bouncer uses,
// with replicas replicas (values below 1 mean 1).
func StreamConfigs(replicas int) []jetstream.StreamConfig {
	if replicas < 1 {
		replicas = 1
	}
	return []jetstream.StreamConfig{{
		Name:        StreamReports,
		Description: "raw reports accepted by the bouncer listener",
		Subjects:    []string{SubjectReports},
		// Limits retention with no limits: nothing ages out, and a
		// report leaves the stream only when Trim purges it, once every
		// consumer acked it, which ingest does only after the store
		// committed it. When the disk fills, publishes fail and the
		// listener answers 451, so the remote MTA keeps the report.
		//
		// Not a work queue, although that is what this is: a work queue
		// removes each acked message on its own, and under the
		// listener's sync-always file store that is a tombstone written
		// and fsynced per report, one at a time, which held ingest to a
		// fraction of the store's rate. Trim removes a batch with one
		// purge. A stream created as a work queue by an older bouncer
		// stays one (EnsureStreams; docs/deploy.md).
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxMsgSize:  ReportsMaxMsgSize,
		Duplicates:  ReportsDuplicates,
		AllowDirect: true,
	}, {
		Name:        StreamAttempts,
		Description: "sync reply logs published by sending MTAs",
		Subjects:    []string{SubjectAttempts},
		// Limits retention: ingest reads the logs with its own durable
		// consumer, and a week of history lets a new consumer (or a
		// reprocessing) start from the past without the stream growing
		// without bound.
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxMsgSize:  AttemptsMaxMsgSize,
		MaxAge:      AttemptsMaxAge,
		Duplicates:  duplicates,
		AllowDirect: true,
	}, {
		Name:        StreamDeadLetter,
		Description: "messages ingest could not read, kept for inspection",
		Subjects:    []string{SubjectDeadLetter},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxMsgSize:  DeadLetterMaxMsgSize,
		MaxAge:      DeadLetterMaxAge,
		Duplicates:  duplicates,
		AllowDirect: true,
	}}
}

// EnsureStreams creates bouncer's streams, or updates them to
// StreamConfigs(replicas) when they exist. Every process that publishes
// or consumes calls it at start; it is idempotent.
//
// The reports stream of an older bouncer is a work queue, and JetStream
// cannot change a stream's retention to or from a work queue: such a
// stream keeps its retention, and works as before, acked reports leaving
// it one by one (docs/deploy.md says how to move it).
//
// Without a deadline in ctx, it allows EnsureTimeout for the whole: the
// client library's own default, 5 s a request, was too short for creating
// a sync-always file stream on a busy disk (a CI run saw it time out).
func EnsureStreams(ctx context.Context, js jetstream.JetStream, replicas int) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, EnsureTimeout)
		defer cancel()
	}
	for _, cfg := range StreamConfigs(replicas) {
		if cfg.Name == StreamReports {
			if s, err := js.Stream(ctx, cfg.Name); err == nil && s.CachedInfo().Config.Retention == jetstream.WorkQueuePolicy {
				cfg.Retention = jetstream.WorkQueuePolicy
			}
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("broker: ensuring stream %s (%s): %w", cfg.Name, cfg.Subjects[0], err)
		}
	}
	return nil
}

// CheckMaxPayload returns an error when the server js is connected to
// refuses messages as large as ReportsMaxMsgSize: NATS' default
// max_payload is 1 MiB, and with it every larger report would be answered
// 451 for ever. The embedded server is set up right; an external one needs
// max_payload: 16MB.
func CheckMaxPayload(js jetstream.JetStream) error {
	nc := js.Conn()
	if nc == nil {
		return errors.New("broker: no NATS connection")
	}
	if got := nc.MaxPayload(); got < ReportsMaxMsgSize {
		return fmt.Errorf("broker: NATS server max_payload is %d bytes, reports need %d (set max_payload: 16MB)", got, ReportsMaxMsgSize)
	}
	return nil
}
