package smtpd

import (
	"context"

	"github.com/bouncer-mail/bouncer/event"
)

// Publisher makes an accepted report durable. Publish returns nil only once
// the report is durable (for JetStream: the publish was acknowledged); the
// listener answers 250 after that and 451 4.3.0 on any error, so the remote
// MTA keeps the report and retries. env.ID is the hex SHA-256 of raw;
// publishing the same bytes twice must store them once.
type Publisher interface {
	Publish(ctx context.Context, env event.Envelope, raw []byte) error
}
