package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/ingest"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/suppress"
)

// reclassifyPage is how many reports one Store.Reports call returns, and
// so how many reports' events one Write carries.
const reclassifyPage = 500

// reclassifyRefoldChunk is how many recipients one Refolder.Recipients
// call re-folds: a few store calls for all of them, with bounded memory.
const reclassifyRefoldChunk = 500

// reclassifySummary is what a run did.
type reclassifySummary struct {
	Reports     int                   // reports read
	ParseErrors int                   // reports the current rules cannot read
	Written     int                   // events written (would be, in a dry run)
	NewClasses  map[event.Class]int64 // the written events by class
	// Before and After are the store's event counts by class in the
	// window (Stats), around the run; After is nil in a dry run. Sync
	// events, unaffected, are in both.
	Before, After map[event.Class]int64
	// Refolded is how many recipients of the new sets had their outcomes
	// re-folded and their suppressions brought in line; RefoldErrors how
	// many of them failed.
	Refolded, RefoldErrors int
	// Suppressed and Lifted count the policy's suppressions that changed.
	Suppressed, Lifted int
}

// runReclassify is `bouncer reclassify`: classify the stored raw reports
// again with the current rules and write their events as a new set.
func runReclassify(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("reclassify", flag.ContinueOnError)
	fl.SetOutput(stderr)
	since := fl.Duration("since", 0, "reclassify the reports received within this `duration` (required), e.g. 72h")
	rulesPath := fl.String("rules", os.Getenv("BOUNCER_RULES"), "extra rules `file` overriding the embedded defaults (env BOUNCER_RULES)")
	dsn := fl.String("clickhouse-dsn", os.Getenv("BOUNCER_CLICKHOUSE_DSN"), "ClickHouse `dsn`; empty: SQLite under --data-dir (env BOUNCER_CLICKHOUSE_DSN)")
	dataDir := fl.String("data-dir", envOr("BOUNCER_DATA_DIR", "./bouncer-data"), "`directory` of the SQLite store (env BOUNCER_DATA_DIR)")
	dryRun := fl.Bool("dry-run", false, "classify and count, write nothing")
	policyPath := fl.String("suppression-policy", os.Getenv("BOUNCER_SUPPRESSION_POLICY"), "suppression policy `file` (JSON); empty: the defaults (env BOUNCER_SUPPRESSION_POLICY)")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: bouncer reclassify --since DURATION [--rules FILE] [--clickhouse-dsn DSN | --data-dir DIR] [--dry-run]")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *since <= 0 || fl.NArg() > 0 {
		fl.Usage()
		return 2
	}
	rs, err := loadRules(*rulesPath)
	if err != nil {
		fmt.Fprintf(stderr, "bouncer reclassify: %v\n", err)
		return 2
	}
	policy, err := loadPolicy(*policyPath)
	if err != nil {
		fmt.Fprintf(stderr, "bouncer reclassify: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, err := openStore(ctx, Options{DataDir: *dataDir, ClickHouseDSN: *dsn}, nil, nil)
	if err != nil {
		fmt.Fprintf(stderr, "bouncer reclassify: %v\n", err)
		return 1
	}
	defer st.Close()

	now := time.Now()
	sum, err := reclassify(ctx, st, classify.New(rs), policy, now.Add(-*since), reclassifyVersion(now), *dryRun)
	printSummary(stdout, sum, *dryRun)
	if err != nil {
		fmt.Fprintf(stderr, "bouncer reclassify: %v\n", err)
		return 1
	}
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// reclassifyVersion is the Version a run writes: the Unix second it
// started. It needs no read of the stored versions, is above ingest's
// ClassificationVersion, and a later run's set supersedes an earlier
// run's, whichever finishes last. Two runs within one second share a
// version, and the second one's events for an (id, version) already
// stored are ignored (first write wins); runs a second apart are fine.
// It lasts until 2106, as ClickHouse's DateTime does.
func reclassifyVersion(now time.Time) uint32 { return uint32(now.Unix()) }

// reclassify pages through the reports received since, classifies each
// with cl and writes its events as set version, one Write per page; then
// re-folds the outcomes of every recipient of the new sets and brings
// their suppressions in line with policy, as ingest does after a batch.
// Writes nothing when dryRun.
//
// TODO: a recipient the old set named and the new one does not (the
// rules now read another address) is not re-folded: finding it needs a
// read of the old set.
// TODO: a report the current rules read no events from keeps its old
// set: the store has no way yet to write an empty set.
// TODO: reports whose events did not change are written again under the
// new version; skipping them needs a read of a report's current set.
func reclassify(ctx context.Context, st store.Store, cl *classify.Classifier, policy suppress.Policy, since time.Time, version uint32, dryRun bool) (reclassifySummary, error) {
	sum := reclassifySummary{NewClasses: map[event.Class]int64{}}
	recipients := map[string]bool{}
	before, err := st.Stats(ctx, since)
	if err != nil {
		return sum, err
	}
	sum.Before = before.EventsByClass
	after := ""
	for {
		page, err := st.Reports(ctx, since, after, reclassifyPage)
		if err != nil {
			return sum, err
		}
		if len(page) == 0 {
			break
		}
		after = page[len(page)-1].ID
		var events []store.Event
		for _, r := range page {
			sum.Reports++
			evs, err := cl.Bytes(r.Raw)
			if err != nil {
				sum.ParseErrors++
			}
			for i, ev := range evs {
				events = append(events, store.Event{
					ID:         store.EventID(r.ID, i),
					ReportID:   r.ID,
					Index:      i,
					Version:    version,
					Time:       r.Received,
					Source:     ingest.SourceNDR,
					ReturnPath: reportReturnPath(r.Envelope),
					Event:      ev,
				})
				sum.NewClasses[ev.Class]++
				if ev.Recipient != "" {
					recipients[strings.ToLower(ev.Recipient)] = true
				}
			}
		}
		sum.Written += len(events)
		if !dryRun && len(events) > 0 {
			if err := st.Write(ctx, nil, events); err != nil {
				return sum, fmt.Errorf("writing the events of %d reports: %w", len(page), err)
			}
		}
		if len(page) < reclassifyPage {
			break
		}
	}
	if dryRun {
		return sum, nil
	}
	refolder := &ingest.Refolder{Store: st, Policy: policy}
	for chunk := range slices.Chunk(slices.Sorted(maps.Keys(recipients)), reclassifyRefoldChunk) {
		res, err := refolder.Recipients(ctx, chunk)
		sum.Refolded += len(chunk)
		sum.Suppressed += len(res.Suppressed)
		sum.Lifted += len(res.Lifted)
		if err != nil {
			if ctx.Err() != nil {
				return sum, ctx.Err()
			}
			sum.RefoldErrors += res.Failed
		}
	}
	afterStats, err := st.Stats(ctx, since)
	if err != nil {
		return sum, err
	}
	sum.After = afterStats.EventsByClass
	if sum.RefoldErrors > 0 {
		return sum, fmt.Errorf("%d of %d recipients could not be re-folded (the events are written; run again to re-fold them)", sum.RefoldErrors, sum.Refolded)
	}
	return sum, nil
}

// reportReturnPath is ingest's correlation return path of a report
// (docs/outcomes.md): its single envelope recipient, lower-cased; "" for
// several. It must stay what ingest writes, or a reclassified event
// would lose its correlation.
func reportReturnPath(env event.Envelope) string {
	if len(env.Recipients) != 1 {
		return ""
	}
	return strings.ToLower(strings.TrimSpace(env.Recipients[0]))
}

func printSummary(w io.Writer, s reclassifySummary, dryRun bool) {
	total := func(m map[event.Class]int64) (n int64) {
		for _, v := range m {
			n += v
		}
		return n
	}
	verb := "written"
	if dryRun {
		verb = "to write"
	}
	fmt.Fprintf(w, "reports read: %d (%d unreadable with the current rules)\n", s.Reports, s.ParseErrors)
	fmt.Fprintf(w, "events %s: %d\n", verb, s.Written)
	if !dryRun {
		fmt.Fprintf(w, "recipients re-folded: %d (%d failed); policy suppressions added: %d, lifted: %d\n", s.Refolded, s.RefoldErrors, s.Suppressed, s.Lifted)
	}
	if s.After == nil {
		fmt.Fprintf(w, "events in the window: %d before\n", total(s.Before))
	} else {
		fmt.Fprintf(w, "events in the window: %d before -> %d after\n", total(s.Before), total(s.After))
	}
	for _, c := range event.Classes {
		b, n := s.Before[c], s.NewClasses[c]
		switch {
		case s.After != nil && s.After[c] != b:
			fmt.Fprintf(w, "  %-10s %d -> %d (%+d)\n", c, b, s.After[c], s.After[c]-b)
		case s.After == nil && n > 0:
			fmt.Fprintf(w, "  %-10s %d in the window, %d in the new sets\n", c, b, n)
		}
	}
}
