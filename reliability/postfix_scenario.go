package reliability

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/bouncer-mail/bouncer/verp"
)

// postfixVERPKey signs the return paths of the Postfix scenarios: the
// bouncer under test verifies them, so they also cover VERP end to end.
const postfixVERPKey = "reliability-harness-verp-key-01"

func runPostfix(ctx context.Context, e *Env, c Config) (Result, error) {
	return postfixRun(ctx, e, c, Result{Scenario: "postfix",
		Injected: "none: Postfix relays to a Postfix MX that refuses every recipient with 550 5.1.1, and delivers its DSNs to bouncer"})
}

func runPostfixKill9(ctx context.Context, e *Env, c Config) (Result, error) {
	return postfixRun(ctx, e, c, Result{Scenario: "postfix-kill9",
		Injected: "kill -9 of the all-in-one bouncer while Postfix delivers its DSNs, restart after the fault time; Postfix retries"})
}

// submission is one message given to the sending Postfix.
type submission struct {
	rcpt, messageID, returnPath string
}

// postfixRun relays c.Messages messages through a real Postfix to a Postfix
// MX that refuses every recipient; the DSNs Postfix writes go to bouncer.
// With r.Scenario "postfix-kill9", bouncer is killed once a third of them
// arrived and restarted after c.Fault. Every message's DSN must be stored
// once, as a hard userunknown event of its recipient.
func postfixRun(ctx context.Context, e *Env, c Config, r Result) (Result, error) {
	kill := r.Scenario == "postfix-kill9"
	dir, err := e.subdir(r.Scenario)
	if err != nil {
		return r, err
	}
	b, err := e.NewBouncer(r.Scenario+"-bouncer", dir, BouncerOptions{VERPKeys: postfixVERPKey})
	if err != nil {
		return r, err
	}
	if err := b.Start(); err != nil {
		return r, err
	}
	defer b.Kill()
	mx, err := e.StartRejectingMX(RecipientDomain)
	if err != nil {
		return r, err
	}
	defer mx.Close()
	mta, err := e.StartRelayMTA("mta.sender.example", map[string]string{
		RecipientDomain: "smtp:[127.0.0.1]:" + port(mx.SMTPAddr),
		BounceDomain:    "smtp:[127.0.0.1]:" + port(b.SMTPAddr),
	})
	if err != nil {
		return r, err
	}
	defer mta.Close()

	keys, err := verp.ParseKeys(postfixVERPKey)
	if err != nil {
		return r, err
	}
	signer := &verp.Signer{Keys: keys}
	run := newRun()
	subs := make([]submission, c.Messages)
	for i := range subs {
		s := submission{rcpt: fmt.Sprintf("%s%d@%s", prefix(run), i, RecipientDomain),
			messageID: fmt.Sprintf("<m.%s.%d@sender.example>", run, i)}
		if s.returnPath, err = signer.Sign(BounceDomain, s.rcpt, s.messageID); err != nil {
			return r, err
		}
		subs[i] = s
	}
	e.logf("%s: submitting %d messages to Postfix %s", r.Scenario, len(subs), mta.SMTPAddr)
	submitted := make(chan error, 1)
	go func() { submitted <- submitAll(mta.SMTPAddr, subs, min(4, c.Sessions)) }()
	if kill {
		// Kill once a third of the DSNs got bouncer's 250: Postfix
		// delivers DSNs while the submission goes on.
		deadline := time.Now().Add(c.DrainWait)
		for {
			l, err := mta.ReadLog(BounceDomain)
			if err != nil {
				return r, err
			}
			if l.DSNSent >= len(subs)/3 {
				r.Notes = append(r.Notes, fmt.Sprintf("bouncer killed after Postfix logged %d of %d DSNs sent", l.DSNSent, len(subs)))
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return r, fmt.Errorf("Postfix delivered %d DSNs in %s, waiting for %d", l.DSNSent, c.DrainWait, len(subs)/3)
			}
			sleep(ctx, 20*time.Millisecond)
		}
		if err := b.Kill(); err != nil {
			return r, err
		}
		sleep(ctx, c.Fault)
		if err := b.Start(); err != nil {
			return r, err
		}
	}
	if err := <-submitted; err != nil {
		return r, err
	}

	// Postfix's queue empties once every DSN was delivered (or bounced).
	e.logf("%s: waiting for Postfix's queue to empty", r.Scenario)
	var pl PostfixLog
	deadline := time.Now().Add(c.DrainWait)
	for {
		q, err := mta.Queued()
		if err != nil {
			return r, err
		}
		if pl, err = mta.ReadLog(BounceDomain); err != nil {
			return r, err
		}
		if q == 0 && pl.DSNs >= len(subs) && pl.DSNSent+pl.DSNBounced >= pl.DSNs {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return r, fmt.Errorf("after %s Postfix still queues %d messages; log counts %+v", c.DrainWait, q, pl)
		}
		sleep(ctx, 200*time.Millisecond)
	}
	r.Counts = Counts{Sent: pl.DSNs, Attempts: pl.DSNSent + pl.DSNDeferred + pl.DSNBounced, Acked: pl.DSNSent,
		TempReplies: pl.DSNDeferred, Rejected: pl.DSNBounced}
	r.Notes = append(r.Notes, fmt.Sprintf("Postfix: %d messages accepted, %d recipients refused by the MX, %d DSNs written, %d delivered to bouncer (250), %d deferred, %d refused",
		len(subs), pl.Bounced, pl.DSNs, pl.DSNSent, pl.DSNDeferred, pl.DSNBounced))
	if len(pl.DeferredLines) > 0 {
		r.Notes = append(r.Notes, "first deferral: "+pl.DeferredLines[0])
	}
	// Not drained: still compare, to tell a stall from a loss.
	drainErr := waitDrained(ctx, b.NATSURL, c.DrainWait, nil)
	inStream := streamIDs(ctx, &r, b.NATSURL)
	v, err := ReadSQLite(ctx, b.DataDir, prefix(run))
	if err != nil {
		return r, err
	}
	// The DSNs' bytes are Postfix's: match them by recipient. Every
	// message's DSN must be stored, once.
	r.Stored = len(v.Reports)
	if drainErr == nil {
		if got, err := b.ReportsReceived(ctx); err == nil && got != int64(len(v.Reports)) {
			drainErr = fmt.Errorf("the API's reports_received is %d, the store holds %d reports", got, len(v.Reports))
		}
	}
	for _, s := range subs {
		switch n := v.Events[s.rcpt]; {
		case n == 0:
			r.Lost++
		case n > 1:
			r.Duplicated += n - 1
		}
	}
	// DSNs still in the stream are waiting, not lost; their bytes are
	// Postfix's, so they are counted, not matched.
	for id := range inStream {
		if v.Reports[id] == 0 && r.Lost > 0 {
			r.Lost--
			r.Waiting++
		}
	}
	r.Misclassified = v.Wrong
	if len(v.WrongSample) > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("misclassified, e.g. %v", v.WrongSample))
	}
	if r.Stored != len(subs) {
		r.Notes = append(r.Notes, fmt.Sprintf("%d reports stored for %d messages", r.Stored, len(subs)))
	}
	// And read back through the API what a user sees.
	checked, bad := 0, []string{}
	for i, s := range subs {
		if i >= 200 && i%10 != 0 { // the first 200, then every tenth
			continue
		}
		evs, err := b.RecipientEvents(ctx, s.rcpt)
		if err != nil {
			return r, err
		}
		checked++
		if len(evs) != 1 || evs[0].Class != "hard" || evs[0].Reason != "userunknown" || evs[0].Status != "5.1.1" ||
			evs[0].MessageID != s.messageID || evs[0].Source != "ndr" {
			bad = append(bad, fmt.Sprintf("%s: %+v", s.rcpt, evs))
		}
	}
	r.Notes = append(r.Notes, fmt.Sprintf("API: %d recipients read back, %d not a single hard/userunknown 5.1.1 NDR event with the original Message-ID", checked, len(bad)))
	if len(bad) > 0 {
		r.Misclassified += len(bad)
		r.Notes = append(r.Notes, "e.g. "+bad[0])
	}
	if pl.DSNBounced > 0 {
		return r, fmt.Errorf("bouncer refused %d of Postfix's DSNs with 5xx", pl.DSNBounced)
	}
	return r, errors.Join(drainErr, b.Stop())
}

// submitAll sends every submission to the MTA over sessions connections;
// each must be answered 250.
func submitAll(addr string, subs []submission, sessions int) error {
	ch := make(chan submission)
	errc := make(chan error, sessions)
	var wg sync.WaitGroup
	for w := range max(sessions, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &smtpClient{addr: addr, helo: fmt.Sprintf("app%d.sender.example", w)}
			defer cl.close()
			for s := range ch {
				raw := fmt.Sprintf("From: <news@sender.example>\r\nTo: <%s>\r\nSubject: reliability harness\r\nMessage-ID: %s\r\nDate: %s\r\n\r\nHello.\r\n",
					s.rcpt, s.messageID, time.Now().UTC().Format(time.RFC1123Z))
				res := cl.send(s.returnPath, s.rcpt, []byte(raw))
				if res.code != 250 {
					errc <- fmt.Errorf("Postfix answered %q (%v) to the message for %s", res.reply, res.err, s.rcpt)
					for range ch {
					}
					return
				}
			}
		}()
	}
	for _, s := range subs {
		ch <- s
	}
	close(ch)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// port is the port of a host:port address.
func port(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }
