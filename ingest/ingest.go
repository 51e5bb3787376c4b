// Package ingest is the pipeline from JetStream to the store (DESIGN.md
// "Data flow", step 2): it fetches raw reports in batches, classifies them,
// writes each batch with one Store.Write and acknowledges the messages only
// after the store committed them. While the store is down nothing is
// acknowledged and JetStream keeps the backlog. What it cannot read goes to
// the dead-letter stream, never away.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Pipeline consumes bouncer's streams into the store. Create it with New,
// start it with Run; Ready is safe to call at any time, from any goroutine.
type Pipeline struct {
	cfg Config
	// fetching holds a slot per fetch of reports in flight or fetched
	// and not yet taken by the processing loop (reportFetches, whatever
	// the partition count).
	fetching chan struct{}
	log      *slog.Logger
	m        *metrics
	now      func() time.Time
	// refolder re-folds the recipients of each committed batch.
	refolder *Refolder

	mu         sync.Mutex
	storeErr   error     // the last store write's error, nil after a success
	storeSince time.Time // when the store started failing
	storeFails int       // failed writes in a row
	natsErr    error     // the last consumer or fetch error, nil after a success

	naks naks
}

// naks are the messages this process nak'ed and has not acked since,
// each until when its nak can still be waiting in the consumer's
// redelivery queue. A stream is not trimmed while one of its messages is
// here: nats-server's purge drops from the redelivery queue the messages
// below the consumer's next delivery, also those still in the stream, so
// a message nak'ed just before a trim came back only after AckWait (30 s)
// instead of at once (broker's TestTrimDropsQueuedRedelivery; ingest's
// TestStoreDown waited 15 s in vain, 1 run in 10 under load). Entries
// expire at their delay plus AckWait, by when the message was delivered
// again (to this process or another), or the server's own AckWait check
// queued it again.
type naks struct {
	mu   sync.Mutex
	open map[nakKey]time.Time
}

type nakKey struct {
	stream string
	seq    uint64
}

// nak asks for msg again after delay (should that fail too, AckWait
// brings it back), and keeps its stream from being trimmed until msg is
// acked or its nak expired.
func (p *Pipeline) nak(msg jetstream.Msg, delay time.Duration) {
	if md, err := msg.Metadata(); err == nil {
		p.naks.mu.Lock()
		if p.naks.open == nil {
			p.naks.open = make(map[nakKey]time.Time)
		}
		p.naks.open[nakKey{md.Stream, md.Sequence.Stream}] = p.now().Add(delay + AckWait)
		p.naks.mu.Unlock()
	}
	_ = msg.NakWithDelay(delay)
}

// settled notes that msgs were acked: their naks no longer hold trims.
func (p *Pipeline) settled(msgs ...jetstream.Msg) {
	p.naks.mu.Lock()
	defer p.naks.mu.Unlock()
	if len(p.naks.open) == 0 {
		return
	}
	for _, msg := range msgs {
		if md, err := msg.Metadata(); err == nil {
			delete(p.naks.open, nakKey{md.Stream, md.Sequence.Stream})
		}
	}
}

// nakOpen reports whether a nak of stream still holds its trims,
// forgetting the expired ones.
func (p *Pipeline) nakOpen(stream string) bool {
	p.naks.mu.Lock()
	defer p.naks.mu.Unlock()
	now, open := p.now(), false
	for k, until := range p.naks.open {
		switch {
		case !now.Before(until):
			delete(p.naks.open, k)
		case k.stream == stream:
			open = true
		}
	}
	return open
}

// source is one stream the pipeline consumes: a reports partition, or the
// sync reply logs; Pipeline.decode reads each by its stream.
type source struct {
	stream  string
	subject string
	durable string
	// trims, when not nil: what every consumer acked is purged from the
	// stream (broker.Trim); the reports streams keep it until then.
	trims *trimState
}

// trimState is when a source's stream was last trimmed, and how far it
// was acked.
type trimState struct {
	mu        sync.Mutex
	untrimmed bool      // acks since the last trim, or a trim that fell short
	lastTrim  time.Time // when the last trim began
	ackedTo   uint64    // the highest stream sequence this process acked
}

// reportSource is the source of a reports stream (a partition).
func (p *Pipeline) reportSource(stream string) source {
	i, _ := broker.ReportPartitionOf(stream)
	return source{stream: stream, subject: broker.ReportSubject(i), durable: p.cfg.Durable, trims: &trimState{}}
}

// The kinds of batches, each with its processing loop and batch limit
// (the label of bouncer_ingest_batch_limit).
const (
	kindReports  = "reports"
	kindAttempts = "attempts"
)

// New checks cfg and registers the pipeline's metrics on cfg.Registerer.
func New(cfg Config) (*Pipeline, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	p := &Pipeline{cfg: cfg, log: cfg.Logger.With("component", "ingest"), m: m, now: time.Now, fetching: make(chan struct{}, reportFetches)}
	p.refolder = &Refolder{Store: cfg.Store, Policy: cfg.Policy, Now: func() time.Time { return p.now() }}
	// The batch limits' series exist from the start, at BatchSize, as
	// Run will set them: a scrape before Run began found the family
	// missing (cmd/bouncer's TestMetricsExposed, once under -race).
	for _, kind := range []string{kindReports, kindAttempts} {
		m.batchLimit.WithLabelValues(kind).Set(float64(cfg.BatchSize))
	}
	return p, nil
}

// Run is New then Pipeline.Run.
func Run(ctx context.Context, cfg Config) error {
	p, err := New(cfg)
	if err != nil {
		return err
	}
	return p.Run(ctx)
}

// Run consumes until ctx is done, then returns nil once the batch in hand
// is written and acked (within WriteTimeout). Failures of NATS or the store
// are retried with backoff, never returned; Ready tells about them. The
// streams must exist (broker.EnsureStreams).
func (p *Pipeline) Run(ctx context.Context) error {
	// One processing loop per kind, fed by a fetcher per stream: every
	// reports partition feeds the one reports loop, so the store sees one
	// writer of reports whatever the partition count (four writers at
	// once cost ClickHouse 4.5 times the server time for the same rows,
	// bench/ingest), and batches fetched from several partitions at once
	// are written together. A loop ends once its fetchers have, having
	// written what they handed over.
	var processing, fetching sync.WaitGroup
	reports, attempts := make(chan fetched), make(chan fetched)
	// Each kind's batch limit is shared by its loop and its fetchers.
	reportsLimit, attemptsLimit := p.newBatchLimit(kindReports), p.newBatchLimit(kindAttempts)
	processing.Go(func() { p.processLoop(ctx, reports, reportsLimit) })
	processing.Go(func() { p.processLoop(ctx, attempts, attemptsLimit) })
	defer processing.Wait()
	defer close(attempts)
	defer close(reports)
	defer fetching.Wait()
	started := map[string]bool{}
	start := func(src source, out chan<- fetched, limit *batchLimit) {
		started[src.stream] = true
		fetching.Go(func() { p.fetchLoop(ctx, src, out, limit) })
	}
	start(p.reportSource(broker.StreamReports), reports, reportsLimit)
	start(source{stream: broker.StreamAttempts, subject: broker.SubjectAttempts, durable: p.cfg.Durable + "-attempts"}, attempts, attemptsLimit)
	// The other reports partitions: every one that exists, whatever
	// count the listeners publish over (broker.ReportStreams), looked
	// for again every PartitionScan for those a listener creates later.
	scan := time.NewTicker(p.cfg.PartitionScan)
	defer scan.Stop()
	for {
		names, err := broker.ReportStreams(ctx, p.cfg.JS)
		if err != nil && ctx.Err() == nil {
			p.log.Warn("cannot list the reports partitions; will look again", "error", err, "retry_in", p.cfg.PartitionScan)
		}
		for _, name := range names {
			if !started[name] {
				p.log.Debug("consuming reports partition", "stream", name)
				start(p.reportSource(name), reports, reportsLimit)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-scan.C:
		}
	}
}

// Ready returns nil when ingest can do its work: the last store write
// succeeded (or none failed yet), the NATS connection is up and the last
// consumer request succeeded. Otherwise it describes the failure. It backs
// /readyz.
func (p *Pipeline) Ready() error {
	p.mu.Lock()
	storeErr, since, fails, natsErr := p.storeErr, p.storeSince, p.storeFails, p.natsErr
	p.mu.Unlock()
	if storeErr != nil {
		return fmt.Errorf("ingest: store write failing since %s (%d attempts): %w",
			since.UTC().Format(time.RFC3339), fails, storeErr)
	}
	// A fetch while disconnected merely times out, like an idle one: ask
	// the connection.
	if nc := p.cfg.JS.Conn(); nc != nil && !nc.IsConnected() {
		return fmt.Errorf("ingest: NATS connection is %s", strings.ToLower(nc.Status().String()))
	}
	return natsErr
}

func (p *Pipeline) setStoreErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		p.storeErr, p.storeFails = nil, 0
		return
	}
	if p.storeErr == nil {
		p.storeSince = p.now()
	}
	p.storeErr = err
	p.storeFails++
}

func (p *Pipeline) setNATSErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.natsErr = err
}

// fetched is one fetch from a source's consumer.
type fetched struct {
	src  source
	msgs []jetstream.Msg
}

// fetchLoop fetches batches of src and hands them to its processing loop
// (out), until ctx is done. It owns src's consumer and its failures; an
// idle fetch trims src. A fetch under way when ctx ends is handed over
// still: the loop writes it (a nak at shutdown could be lost with the
// server, leaving the messages delivered until AckWait).
//
// A batch waits here while the loop processes another: at most one per
// source. While the store fails the loop backs off (up to MaxBackoff)
// and a waiting batch can outlast AckWait; its messages are then
// redelivered too, and written twice, which Store.Write makes harmless.
func (p *Pipeline) fetchLoop(ctx context.Context, src source, out chan<- fetched, limit *batchLimit) {
	bo := backoff{first: p.cfg.Backoff, max: p.cfg.MaxBackoff}
	reports := broker.IsReportStream(src.stream)
	var cons jetstream.Consumer
	// perMsg is how many reports a message of src's last fetch carried,
	// on average: bundles carry up to 256. A fetch asks for as many
	// messages as make one batch of reports at that rate, not one batch
	// of messages, which would hold many batches of reports (in this
	// process and in the NATS server's buffers) while ingest is behind.
	perMsg := 1.0
	for ctx.Err() == nil {
		if cons == nil {
			c, err := p.cfg.JS.CreateOrUpdateConsumer(ctx, src.stream, jetstream.ConsumerConfig{
				Durable:       src.durable,
				Description:   "bouncer ingest: " + src.subject + " to the store",
				FilterSubject: src.subject,
				DeliverPolicy: jetstream.DeliverAllPolicy,
				AckPolicy:     jetstream.AckExplicitPolicy,
				AckWait:       AckWait,
				MaxDeliver:    -1, // a message is acked or dead-lettered, never dropped
				MaxAckPending: 20 * p.cfg.BatchSize,
			})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				err = fmt.Errorf("ingest: consumer %s on stream %s: %w", src.durable, src.stream, err)
				p.setNATSErr(err)
				d := bo.fail()
				p.log.Error("cannot create consumer; retrying", "error", err, "retry_in", d)
				sleep(ctx, d)
				continue
			}
			cons = c
		}

		maxBytes := attemptsFetchBytes
		if reports {
			maxBytes = p.cfg.BatchBytes / reportFetches
			select {
			case p.fetching <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
		msgs, ferr := fetch(cons, fetchCount(limit.get(), perMsg), p.cfg.BatchWait, maxBytes)
		if len(msgs) > 0 {
			_, n := fitting(msgs, math.MaxInt)
			perMsg = float64(n) / float64(len(msgs))
		}
		if ferr != nil {
			ferr = fmt.Errorf("ingest: fetching from %s: %w", src.stream, ferr)
			cons = nil // it may be gone: create it again
		}
		p.setNATSErr(ferr)
		if len(msgs) > 0 {
			out <- fetched{src: src, msgs: msgs}
		}
		// A fetch's slot is free once the loop took its messages: while
		// ingest is behind, fetched batches wait for it in reportFetches
		// loops at most, not in every partition's.
		if reports {
			<-p.fetching
		}
		switch {
		case ferr != nil:
			d := bo.fail()
			p.log.Error("fetch failed; retrying", "error", ferr, "retry_in", d)
			sleep(ctx, d)
		case len(msgs) > 0:
			bo.reset()
		case src.trims != nil:
			// Idle: the last batch's acks may have reached the ack
			// floor only after the trim that followed them.
			p.trim(ctx, src, 0)
		}
	}
}

// processLoop writes the batches its fetchers hand over (in) until in is
// closed, which Run does once they ended: what they fetched is written
// even after ctx is done. Batches waiting at once are written together,
// up to BatchSize messages. A failed batch is nak'ed and the loop pauses
// (backoff), no longer once ctx is done.
func (p *Pipeline) processLoop(ctx context.Context, in <-chan fetched, limit *batchLimit) {
	bo := backoff{first: p.cfg.Backoff, max: p.cfg.MaxBackoff}
	// Committed batches wait here for their acks and re-fold: one being
	// finished and one waiting at most, so a slow finish slows the loop.
	// They are finished before processLoop returns.
	done := make(chan committed, 1)
	var finishing sync.WaitGroup
	finishing.Go(func() { p.finish(done) })
	defer finishing.Wait()
	defer close(done)
	// Naks are sent without waiting: flushed before Run returns, or a
	// server stopped right after could drop them.
	defer func() {
		if nc := p.cfg.JS.Conn(); nc != nil {
			_ = nc.FlushTimeout(time.Second)
		}
	}()
	var carry *fetched // received, too big to join the last batch
	for {
		var f fetched
		if carry != nil {
			f, carry = *carry, nil
		} else {
			var ok bool
			if f, ok = <-in; !ok {
				return
			}
		}
		// The limit counts reports: a bundle of them is one message, so
		// a fetch of bundles holds many times the limit, and a Store.Write
		// of it all would be that much bigger (and its memory, with the
		// batches before it still in hand).
		size := limit.get()
		n, count := fitting(f.msgs, size)
		if n < len(f.msgs) {
			// More than the limit (bundles, or fetched before the limit
			// shrank): the rest waits.
			carry = &fetched{src: f.src, msgs: f.msgs[n:]}
			f.msgs = f.msgs[:n]
		}
		msgs, srcs := f.msgs, []source{f.src}
	join:
		for carry == nil && count < size {
			select {
			case g, ok := <-in:
				if !ok {
					break join
				}
				// What fits joins the batch, the rest waits for the next:
				// carried whole, a fetch of about a batch (fetchCount)
				// made the carry of the one before a small batch of its
				// own, every other batch.
				n, more := fitting(g.msgs, size-count)
				if count+more > size {
					n, more = 0, 0 // its first message alone is too big
				}
				if n < len(g.msgs) {
					carry = &fetched{src: g.src, msgs: g.msgs[n:]}
				}
				if n == 0 {
					break join
				}
				count += more
				msgs = append(msgs, g.msgs[:n]...)
				if !slices.ContainsFunc(srcs, func(s source) bool { return s.stream == g.src.stream }) {
					srcs = append(srcs, g.src)
				}
			default:
				break join
			}
		}
		// A failed batch is nak'ed with the pause the loop then takes,
		// so its messages come back when they are fetched again.
		began := time.Now()
		if err := p.process(ctx, msgs, srcs, bo.next(), done); err != nil {
			d := bo.fail()
			p.log.Error("batch not stored; its messages stay in JetStream", "error", err, "messages", len(msgs), "reports", count, "retry_in", d,
				"next_batch_limit", limit.failed(count))
			sleep(ctx, d)
			continue
		}
		limit.succeeded(count, time.Since(began))
		bo.reset()
	}
}

// batchLimit is the most messages a kind's batches take now: BatchSize
// while writes succeed, halved after a failed write down to one message,
// grown back (doubled) after a batch written in under a quarter of
// WriteTimeout. A store behind a link too slow for a whole batch within
// WriteTimeout then gets batches it can take, instead of failing the same
// batch for ever (a timed-out write is nak'ed and fetched again whole),
// and the limit settles where a batch takes more than a quarter of
// WriteTimeout and less than all of it, rather than swinging back into
// the timeout. (A batch written whose dead letters could not all be
// sent counts as failed too: it is retried the same way.)
type batchLimit struct {
	n     atomic.Int64
	max   int
	quick time.Duration // a write this quick lets the limit grow
	gauge prometheus.Gauge
}

func (p *Pipeline) newBatchLimit(kind string) *batchLimit {
	l := &batchLimit{max: p.cfg.BatchSize, quick: p.cfg.WriteTimeout / 4, gauge: p.m.batchLimit.WithLabelValues(kind)}
	l.set(l.max)
	return l
}

func (l *batchLimit) get() int { return int(l.n.Load()) }

func (l *batchLimit) set(n int) {
	l.n.Store(int64(n))
	l.gauge.Set(float64(n))
}

// failed halves the limit below a failed batch of n reports (or sync
// reply logs) and returns it.
func (l *batchLimit) failed(n int) int {
	next := max(min(l.get(), n)/2, 1)
	l.set(next)
	return next
}

// succeeded grows the limit after a batch of n reports (or sync reply
// logs) written in took, when the batch was a full one and quick.
func (l *batchLimit) succeeded(n int, took time.Duration) {
	if cur := l.get(); cur < l.max && n >= cur && took < l.quick {
		l.set(min(2*cur, l.max))
	}
}

// fitting returns how many of msgs, from the first, hold at most size
// reports (at least one message, whatever it holds), and the reports
// they hold: a bundle (broker.HeaderBundle) counts its reports, any other
// message one.
func fitting(msgs []jetstream.Msg, size int) (n, reports int) {
	for n < len(msgs) {
		k := 1
		if c, err := strconv.Atoi(msgs[n].Headers().Get(broker.HeaderBundle)); err == nil && c > 1 && c <= broker.MaxBundleReports {
			k = c
		}
		if n > 0 && reports+k > size {
			break
		}
		reports += k
		n++
	}
	return n, reports
}

// fetchCount is how many messages a fetch asks for so that, at perMsg
// reports a message, it holds about limit reports: at least one.
func fetchCount(limit int, perMsg float64) int {
	if perMsg <= 1 {
		return limit
	}
	return max(1, int(math.Ceil(float64(limit)/perMsg)))
}

// fetch returns one batch of at most size messages and maxBytes bytes,
// waiting at most wait for them. It may return messages and an error:
// the messages are to be handled still.
func fetch(cons jetstream.Consumer, size int, wait time.Duration, maxBytes int) ([]jetstream.Msg, error) {
	batch, err := cons.Fetch(size, jetstream.FetchMaxWait(wait), jetstream.FetchMaxBytes(maxBytes))
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for msg := range batch.Messages() {
		msgs = append(msgs, msg)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
		return msgs, err
	}
	return msgs, nil
}

// backoff is an exponential backoff: first, doubling up to max.
type backoff struct {
	first, max, cur time.Duration
}

// next is the pause the next failure will bring.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		return b.first
	}
	return b.cur
}

// fail records a failure and returns the pause it brings.
func (b *backoff) fail() time.Duration {
	d := b.next()
	b.cur = min(2*d, b.max)
	return d
}

func (b *backoff) reset() { b.cur = 0 }

// sleep pauses for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// trimEvery is how often a busy pipeline trims the reports stream: after
// a batch's acks, when the last trim is at least this old. An idle one
// trims once its last acks are in.
const trimEvery = time.Second

// trim purges from src's stream what every consumer acked
// (broker.Trim), when there were acks since the last trim and that trim
// began at least every ago. A failure is logged; the next trim removes
// the same messages.
func (p *Pipeline) trim(ctx context.Context, src source, every time.Duration) {
	t := src.trims
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if !t.untrimmed || now.Sub(t.lastTrim) < every || p.nakOpen(src.stream) {
		return
	}
	t.untrimmed, t.lastTrim = false, now
	floor, err := broker.Trim(ctx, p.cfg.JS, src.stream)
	if err == nil && floor < t.ackedTo {
		// Short of what was acked: the server had not counted every ack
		// in the consumer's floor yet (acks are queued there), or another
		// process holds messages below. Again at the next idle fetch, or
		// nothing would trim the rest until the next ack (a CI run of
		// TestRestartKeepsUnacked waited 15 s for an empty stream).
		t.untrimmed = true
	}
	if err != nil {
		t.untrimmed = true
		if ctx.Err() != nil {
			return // shutting down: the next start trims
		}
		p.m.trimErrors.Inc()
		p.log.Warn("cannot remove acknowledged reports from the stream; will retry", "stream", src.stream, "error", err)
	}
}

// acked notes acks of src, up to stream sequence seq, for its next trim.
func (p *Pipeline) acked(src source, seq uint64) {
	src.trims.mu.Lock()
	src.trims.untrimmed = true
	src.trims.ackedTo = max(src.trims.ackedTo, seq)
	src.trims.mu.Unlock()
}
