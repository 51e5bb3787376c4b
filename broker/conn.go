package broker

import (
	"time"

	"github.com/nats-io/nats.go"
)

// Connection timing of bouncer's NATS clients (ClientOptions).
const (
	// FlusherTimeout bounds one write of the connection's buffered
	// commands to the socket. nats.go holds the connection's lock for
	// that write, and everything else on the connection waits for the
	// lock without looking at its context: the listener's publishes,
	// ingest's fetches and acks, /readyz. With nats.go's default, a
	// minute, a link that stops taking data held them all past the
	// listener's 15 s publish timeout (docs/reliability.md, "Network
	// partitions"). Past this bound the write fails, nats.go drops the
	// connection and reconnects, and the waiting calls fail: a 451 the
	// sender retries, an ack JetStream redelivers for.
	FlusherTimeout = 5 * time.Second
	// PingInterval and MaxPingsOutstanding: a connection whose server
	// answers no ping for about PingInterval × (MaxPingsOutstanding + 1)
	// is taken as broken and reconnected, so a silent partition shows in
	// /readyz within that, not after nats.go's default of about 6 minutes.
	PingInterval        = 5 * time.Second
	MaxPingsOutstanding = 2
)

// ClientOptions are the options every bouncer process connects to NATS
// with, before its own (name, reconnects, handlers).
func ClientOptions() []nats.Option {
	return []nats.Option{
		nats.FlusherTimeout(FlusherTimeout),
		nats.PingInterval(PingInterval),
		nats.MaxPingsOutstanding(MaxPingsOutstanding),
	}
}
