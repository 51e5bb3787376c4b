package main

import (
	"context"
	"fmt"
	"time"

	"github.com/bouncer-mail/bouncer/reliability"
)

// sinkHarness is the goal's other denominator: smtp-sink under the load
// the reliability harness puts on bouncer (reliability.StartLoad: -sessions
// persistent sessions sending unique reports of -size bytes, pipelined with
// -pipelining), as fast as smtp-sink answers, for -load-time. smtp-source,
// the throughput mode's load, opens a connection per message and never
// pipelines; the soaks' rates are compared with this one too.
func sinkHarness(c config) error {
	addr, args, stop, err := c.startSink()
	if err != nil {
		return err
	}
	defer stop()
	fmt.Printf("\n== sink-harness: smtp-sink %v under the harness's load: %d sessions, %d B reports, pipelining %v, %s\n",
		args, c.sessions, c.size, c.pipelining, c.loadTime)
	start := time.Now()
	load := reliability.StartLoad(reliability.LoadConfig{Addr: addr, Sessions: c.sessions, Size: c.size, Run: "sink", Pipelining: c.pipelining})
	time.Sleep(c.loadTime)
	load.StopNew()
	elapsed := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := load.Finish(ctx, 30*time.Second); err != nil {
		return err
	}
	n := load.Ledger.Counts()
	fmt.Printf("smtp-sink answered 250 to %d messages in %.1f s: %.0f messages/s (4xx %d, 5xx %d, connections failed %d)\n",
		n.Acked, elapsed.Seconds(), float64(n.Acked)/elapsed.Seconds(), n.TempReplies, n.Rejected, n.ConnFailed)
	if n.Acked == 0 || n.Rejected > 0 {
		return fmt.Errorf("smtp-sink answered %d messages 250 and refused %d", n.Acked, n.Rejected)
	}
	return nil
}
