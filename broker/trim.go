package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Trim removes from stream the messages every one of its consumers has
// acknowledged: all up to the lowest ack floor. It returns that floor when
// it purged up to it, 0 when it had nothing to do. A stream without
// consumers is left alone: nobody has read it.
//
// StreamReports keeps what ingest acked until Trim removes it (see
// StreamConfigs); ingest calls Trim after its acks. On a stream of another
// retention it does no harm: a work queue has dropped those messages
// already. Every consumer counts, so a consumer somebody attached to look
// at the stream and never acks from holds the stream's messages on disk:
// inspect with AckNone, or with a direct get.
func Trim(ctx context.Context, js jetstream.JetStream, stream string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("broker: trimming %s: %w", stream, err)
	}
	var (
		floor uint64
		seen  bool
	)
	consumers := s.ListConsumers(ctx)
	for info := range consumers.Info() {
		if !seen || info.AckFloor.Stream < floor {
			floor = info.AckFloor.Stream
		}
		seen = true
	}
	if err := consumers.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return 0, fmt.Errorf("broker: trimming %s: listing its consumers: %w", stream, err)
	}
	if !seen || floor < s.CachedInfo().State.FirstSeq {
		return 0, nil
	}
	// Sequence: purge everything below it.
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(floor+1)); err != nil {
		return 0, fmt.Errorf("broker: trimming %s up to %d: %w", stream, floor, err)
	}
	return floor, nil
}
