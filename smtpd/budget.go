package smtpd

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// budget bounds the message bytes all sessions hold at once: a message is
// read into memory whole, then copied on its way into JetStream, so
// without a bound the listener's memory is the connections times the
// message size limit (1 GiB and more with 50 senders of large messages,
// docs/reliability.md "Hostile content"). A session takes from it as it
// reads a message, in chunks, and gives all back once the message is
// published or refused; when the budget is spent it waits up to
// budgetWait for another session to give some back, then answers 451
// 4.3.1 and the sender retries later.
type budget struct {
	mu      sync.Mutex
	free    int64
	changed chan struct{} // closed, and replaced, whenever bytes come back
}

func newBudget(n int64) *budget { return &budget{free: n, changed: make(chan struct{})} }

// take takes n bytes, waiting until ctx is done for them.
func (b *budget) take(ctx context.Context, n int64) error {
	for {
		b.mu.Lock()
		if b.free >= n {
			b.free -= n
			b.mu.Unlock()
			return nil
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// tryTake takes n bytes if they are free, without waiting.
func (b *budget) tryTake(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.free < n {
		return false
	}
	b.free -= n
	return true
}

// give gives n bytes back.
func (b *budget) give(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.free += n
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// held is how many of capacity bytes are taken.
func (b *budget) held(capacity int64) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return capacity - b.free
}

// budgetChunk is how much a session takes from the budget at a time.
const budgetChunk = 64 << 10

// budgetWait bounds a session's wait for budget: a message that cannot
// have it by then is answered 451 4.3.1.
const budgetWait = 5 * time.Second

// errBusy answers a message the budget could not hold.
var errBusy = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system resources for this message now, try again later"}

// errBudget is readBudgeted's error when the budget could not be had.
var errBudget = errors.New("smtpd: in-flight message budget spent")

// readBudgeted reads r whole, taking from b a chunk at a time before it
// reads into it, and returns the bytes and how many it took, to give back
// when the message is done with. On an error it has given everything back
// already. It reads into pooled chunks and returns a copy of the
// message's own size: a fresh chunk per message was 64 KiB allocated and
// zeroed for a report of a few KB (most are), about 130 MB/s of garbage
// at 2,000 reports/s and most of the listener's allocations
// (bench/README.md, "The message buffer"). The copy is
// the caller's: it may outlive the call (a publish that timed out can
// leave it in a bundle being written).
func readBudgeted(b *budget, r io.Reader, wait time.Duration) ([]byte, int64, error) {
	var (
		chunks []*[]byte
		size   int
		taken  int64
	)
	defer func() {
		for _, c := range chunks {
			chunkPool.Put(c)
		}
	}()
	fail := func(err error) ([]byte, int64, error) {
		b.give(taken)
		return nil, 0, err
	}
	for {
		if !b.tryTake(budgetChunk) {
			// A timer only when the budget is short: a context with a
			// deadline per message was the next allocation after the
			// chunks.
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			err := b.take(ctx, budgetChunk)
			cancel()
			if err != nil {
				return fail(errBudget)
			}
		}
		taken += budgetChunk
		c := chunkPool.Get().(*[]byte)
		chunks = append(chunks, c)
		n, err := io.ReadFull(r, (*c)[:budgetChunk])
		*c = (*c)[:n]
		size += n
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fail(err)
		}
	}
	raw := make([]byte, 0, size)
	for _, c := range chunks {
		raw = append(raw, *c...)
	}
	return raw, taken, nil
}

// chunkPool holds readBudgeted's chunks, budgetChunk bytes each.
var chunkPool = sync.Pool{New: func() any {
	c := make([]byte, budgetChunk)
	return &c
}}
