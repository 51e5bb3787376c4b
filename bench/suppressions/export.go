package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// export times curl fetching every suppression in force as CSV into
// file, samples bouncer's RSS while it runs, and checks the file: the
// header and one line per loaded suppression.
func export(c config, b *bouncerProc, file string) error {
	url := "http://" + b.httpAddr + "/v1/suppressions?all_streams=true&format=csv"
	args := []string{"-sS", "--fail", "-o", file, "-w", "%{http_code} %{size_download} %{time_starttransfer} %{time_total}", url}
	fmt.Printf("curl %s\n", strings.Join(args, " "))
	rss0 := b.status("VmRSS")

	hwm0 := b.status("VmHWM")
	var (
		mu      sync.Mutex
		maxRSS  int64
		samples []rssSample
	)
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				v := b.status("VmRSS")
				mu.Lock()
				maxRSS = max(maxRSS, v)
				samples = append(samples, rssSample{time.Now(), v})
				mu.Unlock()
			}
		}
	}()
	reset := b.resetHWM()
	ctx, cancel := context.WithTimeout(context.Background(), c.exportLimit)
	defer cancel()
	cpu0 := cpuTime(b.cmd.Process.Pid)
	start := time.Now()
	out, err := exec.CommandContext(ctx, "curl", args...).Output()
	elapsed := time.Since(start)
	cpu := cpuTime(b.cmd.Process.Pid) - cpu0
	close(done)
	<-sampled
	if err != nil {
		return fmt.Errorf("curl after %.1f s: %v: %s", elapsed.Seconds(), err, out)
	}
	var code, size int
	var ttfb, total float64
	fmt.Sscan(string(out), &code, &size, &ttfb, &total)

	hwm := b.status("VmHWM")
	lines, first, err := countLines(file)
	if err != nil {
		return err
	}
	fmt.Printf("HTTP %d, %d bytes, %d lines (header + %d rows), first byte after %.3f s, all in %.2f s (curl: %.2f s), %.0f rows/s\n",
		code, size, lines, lines-1, ttfb, elapsed.Seconds(), total, float64(lines-1)/elapsed.Seconds())
	hwmWhat := "peak RSS during the export (VmHWM, reset before)"
	if !reset {
		hwmWhat = "peak RSS since start (VmHWM; could not reset it)"
	}
	fmt.Printf("bouncer RSS before %.1f MiB, peak since start before %.1f MiB; %s %.1f MiB; highest sampled RSS %.1f MiB; CPU %.2f s\n",
		float64(rss0)/1024, float64(hwm0)/1024, hwmWhat, float64(hwm)/1024, float64(maxRSS)/1024, cpu.Seconds())
	fmt.Printf("bouncer RSS during the export, by fifths of its time: %s\n", rssProfile(samples, start, elapsed))
	if first != "address,stream,source,class,reason,rule,since,until,actor,note" {
		return fmt.Errorf("header %q", first)
	}
	if lines-1 != c.suppressions {
		return fmt.Errorf("%d rows exported, want %d", lines-1, c.suppressions)
	}
	return checkExport(file, c.suppressions)
}

type rssSample struct {
	at  time.Time
	rss int64 // kB
}

// rssProfile is the highest RSS sampled in each fifth of the export: a
// flat memory is the same in the last fifth as in the first.
func rssProfile(samples []rssSample, start time.Time, d time.Duration) string {
	var peak [5]int64
	for _, s := range samples {
		i := min(4, max(0, int(5*s.at.Sub(start)/max(d, 1))))
		peak[i] = max(peak[i], s.rss)
	}
	parts := make([]string, len(peak))
	for i, p := range peak {
		parts[i] = "-" // no sample in that fifth
		if p > 0 {
			parts[i] = fmt.Sprintf("%.1f", float64(p)/1024)
		}
	}
	return strings.Join(parts, ", ") + " MiB"
}

// checkExport reads the exported CSV back: every row has the ten
// columns, rows come in key order (address, stream) without repeats,
// and the addresses are exactly address(0) .. address(n-1), each once,
// with the stream, source and class the loaders gave them.
func checkExport(file string, n int) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReaderSize(f, 1<<20))
	r.ReuseRecord = true
	r.FieldsPerRecord = 10
	if _, err := r.Read(); err != nil {
		return err
	}
	seen := make([]bool, n)
	var prevAddr, prevStream string
	for row := 1; ; row++ {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("export row %d: %w", row, err)
		}
		addr, stream := rec[0], rec[1]
		if row > 1 && (addr < prevAddr || (addr == prevAddr && stream <= prevStream)) {
			return fmt.Errorf("export row %d: %s/%s after %s/%s: not in key order", row, addr, stream, prevAddr, prevStream)
		}
		prevAddr, prevStream = strings.Clone(addr), strings.Clone(stream)
		var i, dom int
		if _, err := fmt.Sscanf(addr, "user%d@example%d.com", &i, &dom); err != nil || i < 0 || i >= n || address(i) != addr {
			return fmt.Errorf("export row %d: address %q was not loaded", row, addr)
		}
		if seen[i] {
			return fmt.Errorf("export row %d: %s twice", row, addr)
		}
		seen[i] = true
		want := suppressionRow(i, time.Now())
		if stream != want.Stream || rec[2] != want.Source || rec[3] != string(want.Class) {
			return fmt.Errorf("export row %d: %s: stream, source, class %q, %q, %q; loaded %q, %q, %q",
				row, addr, stream, rec[2], rec[3], want.Stream, want.Source, want.Class)
		}
	}
	for i, ok := range seen {
		if !ok {
			return fmt.Errorf("%s was not exported", address(i))
		}
	}
	fmt.Println("export checked: every loaded suppression once, in key order, with its stream, source and class")
	return nil
}

// countLines counts a file's lines (records: the loaded notes hold no
// line breaks) and returns its first.
func countLines(file string) (int, string, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	first, err := r.ReadString('\n')
	if err != nil {
		return 0, "", fmt.Errorf("%s: no first line: %w", file, err)
	}
	n := 1
	buf := make([]byte, 1<<20)
	for {
		k, err := r.Read(buf)
		n += bytes.Count(buf[:k], []byte{'\n'})
		if err != nil {
			break
		}
	}
	return n, strings.TrimSpace(first), nil
}
