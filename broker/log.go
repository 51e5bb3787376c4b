package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// natsLogger adapts slog to nats-server's Logger. nats-server reports
// start-up failures (a port in use, a store it cannot open) only as a
// Fatalf log line; the first one is kept so StartEmbedded can return it.
type natsLogger struct {
	l *slog.Logger

	mu    sync.Mutex
	fatal error
}

func (n *natsLogger) fatalErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fatal
}

func (n *natsLogger) Noticef(format string, v ...any) {
	n.l.Info(fmt.Sprintf(format, v...), "component", "nats")
}

func (n *natsLogger) Warnf(format string, v ...any) {
	n.l.Warn(fmt.Sprintf(format, v...), "component", "nats")
}

func (n *natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	n.mu.Lock()
	if n.fatal == nil {
		n.fatal = errors.New(msg)
	}
	n.mu.Unlock()
	n.l.Error(msg, "component", "nats", "fatal", true)
}

func (n *natsLogger) Errorf(format string, v ...any) {
	n.l.Error(fmt.Sprintf(format, v...), "component", "nats")
}

func (n *natsLogger) Debugf(format string, v ...any) {
	n.l.Debug(fmt.Sprintf(format, v...), "component", "nats")
}

func (n *natsLogger) Tracef(format string, v ...any) {
	n.l.Debug(fmt.Sprintf(format, v...), "component", "nats")
}
