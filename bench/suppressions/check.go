package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/bouncer-mail/bouncer/store"
)

// checkResult is one request of the check load.
type checkResult struct {
	hit     bool
	latency time.Duration // scheduled time to the end of the body
	service time.Duration // the request's start to the end of its body
	lag     time.Duration // scheduled time to the request's start
	err     error
}

// check runs the paced load: -warmup not counted, then -duration
// measured, and prints the figures. chPid, when not 0, is ClickHouse's
// process, whose CPU time is reported too.
func check(c config, b *bouncerProc, chPid int) error {
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute},
		Timeout:   10 * time.Second,
	}
	defer client.CloseIdleConnections()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	if c.warmup > 0 {
		paced(c, client, b.httpAddr, rng, c.warmup)
	}
	cpu0, chCPU0 := cpuTime(b.cmd.Process.Pid), time.Duration(0)
	if chPid != 0 {
		chCPU0 = cpuTime(chPid)
	}
	rss0 := b.status("VmRSS")
	self0 := cpuTime(os.Getpid())
	start := time.Now()
	results, end := paced(c, client, b.httpAddr, rng, c.duration)
	cpu := cpuTime(b.cmd.Process.Pid) - cpu0
	selfCPU := cpuTime(os.Getpid()) - self0
	var chCPU time.Duration
	if chPid != 0 {
		chCPU = cpuTime(chPid) - chCPU0
	}

	var all, hits, misses, service, lags []time.Duration
	var errs, wrong int
	var firstErr error
	var maxLag time.Duration
	for _, r := range results {
		maxLag = max(maxLag, r.lag)
		lags = append(lags, r.lag)
		if r.err != nil {
			errs++
			if firstErr == nil {
				firstErr = r.err
			}
			continue
		}
		all = append(all, r.latency)
		service = append(service, r.service)
		if r.hit {
			hits = append(hits, r.latency)
		} else {
			misses = append(misses, r.latency)
		}
	}
	nHits := 0
	for _, r := range results {
		if errors.As(r.err, new(*wrongAnswer)) {
			wrong++
		}
		if r.hit {
			nHits++
		}
	}
	n := len(results)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "requests\t%d in %.1f s (%d hits, %d misses), %d errors, %d wrong answers\t\n",
		n, end.Sub(start).Seconds(), nHits, n-nHits, errs-wrong, wrong)
	fmt.Fprintf(w, "achieved rate\t%.0f requests/s (asked %d/s); latest start %.2f ms behind schedule\t\n",
		float64(n)/end.Sub(start).Seconds(), c.rate, ms(maxLag))
	fmt.Fprintf(w, "latency all\t%s\t\n", quantiles(all))
	fmt.Fprintf(w, "latency hits\t%s\t\n", quantiles(hits))
	fmt.Fprintf(w, "latency misses\t%s\t\n", quantiles(misses))
	fmt.Fprintf(w, "service time all (from the actual send)\t%s\t\n", quantiles(service))
	fmt.Fprintf(w, "send lag (schedule to send)\t%s\t\n", quantiles(lags))
	wall := end.Sub(start)
	fmt.Fprintf(w, "bouncer CPU\t%.0f µs a request, %.0f%% of one core; RSS %.1f MiB before, %.1f MiB after, peak since start %.1f MiB\t\n",
		float64(cpu.Microseconds())/float64(max(n, 1)), 100*cpu.Seconds()/wall.Seconds(),
		float64(rss0)/1024, float64(b.status("VmRSS"))/1024, float64(b.status("VmHWM"))/1024)
	if chPid != 0 {
		fmt.Fprintf(w, "clickhouse-server CPU\t%.0f µs a request, %.0f%% of one core\t\n",
			float64(chCPU.Microseconds())/float64(max(n, 1)), 100*chCPU.Seconds()/wall.Seconds())
	}
	fmt.Fprintf(w, "load generator CPU\t%.0f%% of one core\t\n", 100*selfCPU.Seconds()/wall.Seconds())
	fmt.Fprintf(w, "p99 by 10 s of the run\t%s\t\n", windowP99(results, c.rate, 10*time.Second))
	w.Flush()
	// Each wrong answer in full, the first few: which address, which way,
	// when, and what bouncer said; a count alone could not be explained
	// (bench/suppressions/README.md).
	shown := 0
	for _, r := range results {
		var wa *wrongAnswer
		if errors.As(r.err, &wa) && shown < 5 {
			fmt.Printf("wrong answer: %s\n", wa.detail())
			shown++
		}
	}
	if errs > 0 {
		return fmt.Errorf("%d of %d requests failed; first: %v", errs, n, firstErr)
	}
	return nil
}

// windowP99 is the p99 latency of each window of d, by scheduled time
// (request i is scheduled at i/rate), in milliseconds: whether a bad
// p99 is a steady state or a stretch of the run.
func windowP99(results []checkResult, rate int, d time.Duration) string {
	per := max(1, int(d.Seconds()*float64(rate)))
	var parts []string
	for lo := 0; lo < len(results); lo += per {
		var ls []time.Duration
		for _, r := range results[lo:min(len(results), lo+per)] {
			if r.err == nil {
				ls = append(ls, r.latency)
			}
		}
		if len(ls) == 0 {
			parts = append(parts, "-")
			continue
		}
		slices.Sort(ls)
		parts = append(parts, fmt.Sprintf("%.2f", ms(ls[min(len(ls)-1, len(ls)*99/100)])))
	}
	return strings.Join(parts, " ") + " ms"
}

// wrongAnswer is a check answered other than the load says it should be.
type wrongAnswer struct {
	address string
	want    bool // suppressed
	at      time.Time
	body    []byte
	loaded  store.Suppression // a hit's row as loaded; zero for a miss
}

func (e *wrongAnswer) Error() string { return "wrong answer" }

func (e *wrongAnswer) detail() string {
	s := fmt.Sprintf("%s at %s: want suppressed=%v, got %s", e.address, e.at.UTC().Format(time.RFC3339Nano), e.want, bytes.TrimSpace(e.body))
	if !e.loaded.Since.IsZero() {
		until := "none"
		if !e.loaded.Until.IsZero() {
			until = e.loaded.Until.UTC().Format(time.RFC3339Nano)
		}
		s += fmt.Sprintf(" (loaded with since %s, until %s)", e.loaded.Since.UTC().Format(time.RFC3339Nano), until)
	}
	return s
}

// paced sends c.rate requests a second for d, open loop: request i is
// started at start + i/rate whether or not earlier ones have been
// answered, each in its own goroutine.
//
// The pacing sleeps with nanosleep(2) on a thread of its own, not
// time.Sleep: the Go runtime's timers wake through epoll_pwait, whose
// timeout is in whole milliseconds, so time.Sleep to a point 1 ms away
// oversleeps by up to a millisecond, and that lateness, the load
// generator's and not bouncer's, would count in every latency (it
// measured 0.5 ms at the median here). The thread sleeps and does not
// spin, so it leaves the CPUs to bouncer.
func paced(c config, client *http.Client, httpAddr string, rng *rand.Rand, d time.Duration) ([]checkResult, time.Time) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	total := int(d.Seconds() * float64(c.rate))
	interval := time.Second / time.Duration(c.rate)
	results := make([]checkResult, total)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range total {
		hit := rng.Float64() < c.hitRatio
		var addr string
		key := -1
		if hit {
			key = rng.IntN(c.suppressions)
			addr = address(key)
		} else {
			addr = missAddress(c.suppressions, rng.IntN(c.suppressions))
		}
		at := start.Add(time.Duration(i) * interval)
		if wait := time.Until(at); wait > 0 {
			ts := syscall.NsecToTimespec(int64(wait))
			for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			r.hit = hit
			sent := time.Now()
			r.err = checkOne(client, httpAddr, addr, hit)
			if wa := (*wrongAnswer)(nil); errors.As(r.err, &wa) && key >= 0 {
				wa.loaded = suppressionRow(key, c.loadNow)
			}
			done := time.Now()
			r.lag, r.latency, r.service = sent.Sub(at), done.Sub(at), done.Sub(sent)
		}()
	}
	wg.Wait()
	return results, time.Now()
}

// checkOne asks whether addr is suppressed and compares the answer with
// want.
func checkOne(client *http.Client, httpAddr, addr string, want bool) error {
	resp, err := client.Get("http://" + httpAddr + "/v1/suppressions/" + url.PathEscape(addr))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", addr, resp.StatusCode, body)
	}
	var got struct {
		Suppressed   bool              `json:"suppressed"`
		Suppressions []json.RawMessage `json:"suppressions"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	if got.Suppressed != want || (len(got.Suppressions) > 0) != want {
		return &wrongAnswer{address: addr, want: want, at: time.Now(), body: body}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quantiles formats p50, p95, p99, p99.9 and max of ds in milliseconds.
func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return fmt.Sprintf("p50 %.2f  p95 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms (n %d)",
		ms(q(0.50)), ms(q(0.95)), ms(q(0.99)), ms(q(0.999)), ms(s[len(s)-1]), len(s))
}
