package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/dsn"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/mbox"
)

// refRecord is one record of the corpus's labels.jsonl (the reference
// parser's opinion).
type refRecord struct {
	Recipient      string `json:"recipient"`
	Reason         string `json:"reason"`
	DeliveryStatus string `json:"deliverystatus"`
	ReplyCode      string `json:"replycode"`
	HardBounce     bool   `json:"hardbounce"`
	DecodedBy      string `json:"decodedby"`
	Action         string `json:"action"`
	SMTPCommand    string `json:"smtpcommand"`
	Diagnostic     string `json:"diagnosticcode"`
}

type refFile struct {
	File    string      `json:"file"`
	Records []refRecord `json:"records"`
	Errors  []string    `json:"errors"`
}

// Report holds the agreement figures of one run. Ratios are over the
// reference records unless said otherwise.
type Report struct {
	Files          int // files read
	RefFiles       int // files with at least one reference record
	Covered        int // of RefFiles, those where we found at least one event
	RefRecords     int
	Recipient      int // records whose recipient we found
	Class          int // records paired with an event of the same class
	Reason         int
	StatusRecords  int // records whose reference status is a real code (not a x.0.9xx placeholder)
	Status         int // of StatusRecords, those with the same status
	NonBounceFiles int // files under maildir/not/
	NonBounceFail  int // failure events we reported on them
	Extra          []string
	Confusion      map[string]map[string]int // reference class -> our class -> records
	Mismatches     []Mismatch
	Bytes          int64
	Elapsed        time.Duration // wall time of the timed passes
	CPU            time.Duration // process CPU time of the timed passes
	Messages       int
}

// Mismatch is one reference record we disagree with.
type Mismatch struct {
	File   string
	Want   string // reference: recipient class/reason status
	Got    string
	Weight int // how bad: 3 recipient missing, 2 class, 1 reason or status
}

func pct(n, d int) float64 {
	if d == 0 {
		return 100
	}
	return 100 * float64(n) / float64(d)
}

// Figures returns the headline percentages by name.
func (r *Report) Figures() map[string]float64 {
	return map[string]float64{
		"coverage":  pct(r.Covered, r.RefFiles),
		"recipient": pct(r.Recipient, r.RefRecords),
		"class":     pct(r.Class, r.RefRecords),
		"reason":    pct(r.Reason, r.RefRecords),
		"status":    pct(r.Status, r.StatusRecords),
	}
}

// refClass maps the reference's reason and hardbounce flag onto our classes.
func refClass(rec refRecord) event.Class {
	switch rec.Reason {
	case "feedback":
		return event.ClassComplaint
	case "vacation":
		return event.ClassAutoreply
	case "delivered":
		return event.ClassDelivered
	}
	if rec.HardBounce {
		return event.ClassHard
	}
	return event.ClassSoft
}

// refReason maps the reference's older reason names onto our vocabulary:
// Sisimai merged mesgtoobig and exceedlimit into emailtoolarge, and
// toomanyconn and speeding into ratelimited.
func refReason(r string) string {
	switch r {
	case "mesgtoobig", "exceedlimit":
		return "emailtoolarge"
	case "toomanyconn", "speeding":
		return "ratelimited"
	}
	return r
}

// placeholderStatus reports whether s is one of the reference parser's own
// x.0.9xx codes, which stand for "no status in the message".
func placeholderStatus(s string) bool {
	parts := strings.Split(s, ".")
	return len(parts) == 3 && parts[1] == "0" && len(parts[2]) == 3 && parts[2][0] == '9'
}

// Run classifies every file of the corpus at dir and compares with its
// labels.jsonl.
func Run(cl *classify.Classifier, dir string, repeat int) (*Report, error) {
	refs, err := readLabels(filepath.Join(dir, "labels.jsonl"))
	if err != nil {
		return nil, err
	}
	rep := &Report{Confusion: map[string]map[string]int{}}
	// Read every file first so the timing covers parsing and classifying only.
	type input struct {
		ref  refFile
		msgs [][]byte
		err  error
	}
	inputs := make([]input, 0, len(refs))
	for _, ref := range refs {
		b, err := os.ReadFile(filepath.Join(dir, "emails", ref.File))
		in := input{ref: ref, err: err}
		if err == nil {
			in.msgs, in.err = split(b)
			rep.Bytes += int64(len(b))
		}
		inputs = append(inputs, in)
	}
	results := make([][]event.Event, len(inputs))
	start, cpu := time.Now(), cpuTime()
	for i, in := range inputs {
		for _, m := range in.msgs {
			rep.Messages++
			evs, err := cl.Bytes(m)
			if err == nil {
				results[i] = append(results[i], evs...)
			}
		}
	}
	// Further passes only time the work: the corpus is small, and one pass
	// is too short to measure on a busy machine.
	for pass := 1; pass < repeat; pass++ {
		for _, in := range inputs {
			for _, m := range in.msgs {
				rep.Messages++
				cl.Bytes(m)
			}
		}
	}
	rep.Bytes *= int64(max(repeat, 1))
	rep.Elapsed = time.Since(start)
	rep.CPU = cpuTime() - cpu
	for i, in := range inputs {
		rep.Files++
		rep.compare(in.ref, results[i])
	}
	sort.SliceStable(rep.Mismatches, func(i, j int) bool { return rep.Mismatches[i].Weight > rep.Mismatches[j].Weight })
	return rep, nil
}

func split(b []byte) ([][]byte, error) {
	if bytes.IndexByte(b, '\n') < 0 && bytes.IndexByte(b, '\r') >= 0 {
		// A classic Mac OS file ends its lines with a bare CR; the mbox
		// reader splits on LF, so give it LF (dsn.Parse reads either).
		b = bytes.ReplaceAll(b, []byte("\r"), []byte("\n"))
	}
	if !mbox.IsMbox(b) {
		return [][]byte{b}, nil
	}
	var out [][]byte
	r := mbox.NewReader(bytes.NewReader(b), int(dsn.MaxSize))
	for {
		m, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

func readLabels(path string) ([]refFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []refFile
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var r refFile
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

func (rep *Report) compare(ref refFile, got []event.Event) {
	if strings.HasPrefix(ref.File, "maildir/not/") {
		rep.NonBounceFiles++
		for _, e := range got {
			if e.Class.IsFailure() {
				rep.NonBounceFail++
				rep.Extra = append(rep.Extra, fmt.Sprintf("%s: failure event on a non-bounce: %s %s/%s", ref.File, e.Recipient, e.Class, e.Reason))
			}
		}
	}
	if len(ref.Records) == 0 {
		for _, e := range got {
			if e.Class.IsFailure() {
				rep.Extra = append(rep.Extra, fmt.Sprintf("%s: no reference record; we say %s %s/%s %s", ref.File, e.Recipient, e.Class, e.Reason, e.Status))
			}
		}
		return
	}
	rep.RefFiles++
	if len(got) > 0 {
		rep.Covered++
	}
	ref.Records = dedupe(ref.Records)
	used := make([]bool, len(got))
	for _, rec := range ref.Records {
		rep.RefRecords++
		wantClass := refClass(rec)
		wantReason := refReason(rec.Reason)
		rcpt := strings.ToLower(strings.Trim(rec.Recipient, "<> "))
		idx := -1
		for i, e := range got {
			if !used[i] && e.Recipient == rcpt {
				idx = i
				break
			}
		}
		recipientOK := idx >= 0
		if idx < 0 && len(ref.Records) == 1 && len(got) == 1 {
			idx = 0 // one each: compare them even though the recipients differ
		}
		gotClass, gotReason, gotStatus, gotRcpt := "-", "-", "", "-"
		if idx >= 0 {
			used[idx] = true
			e := got[idx]
			gotClass, gotReason, gotStatus, gotRcpt = string(e.Class), string(e.Reason), e.Status, e.Recipient
		}
		if recipientOK {
			rep.Recipient++
		}
		if rep.Confusion[string(wantClass)] == nil {
			rep.Confusion[string(wantClass)] = map[string]int{}
		}
		rep.Confusion[string(wantClass)][gotClass]++
		classOK := gotClass == string(wantClass)
		reasonOK := gotReason == wantReason
		if classOK {
			rep.Class++
		}
		if reasonOK {
			rep.Reason++
		}
		statusOK := true
		if rec.DeliveryStatus != "" && !placeholderStatus(rec.DeliveryStatus) {
			rep.StatusRecords++
			statusOK = gotStatus == rec.DeliveryStatus
			if statusOK {
				rep.Status++
			}
		}
		weight := 0
		switch {
		case !recipientOK:
			weight = 3
		case !classOK:
			weight = 2
		case !reasonOK || !statusOK:
			weight = 1
		}
		if weight > 0 {
			rep.Mismatches = append(rep.Mismatches, Mismatch{
				File:   ref.File,
				Want:   fmt.Sprintf("%s %s/%s %s", rcpt, wantClass, wantReason, rec.DeliveryStatus),
				Got:    fmt.Sprintf("%s %s/%s %s", gotRcpt, gotClass, gotReason, gotStatus),
				Weight: weight,
			})
		}
	}
}

// Print writes the report for a reader.
func (rep *Report) Print(w io.Writer, worst int) {
	f := rep.Figures()
	fmt.Fprintf(w, "files %d, with reference records %d, reference records %d\n", rep.Files, rep.RefFiles, rep.RefRecords)
	fmt.Fprintf(w, "coverage   %6.2f%%  (%d/%d files with a reference record where we found an event)\n", f["coverage"], rep.Covered, rep.RefFiles)
	fmt.Fprintf(w, "recipient  %6.2f%%  (%d/%d)\n", f["recipient"], rep.Recipient, rep.RefRecords)
	fmt.Fprintf(w, "class      %6.2f%%  (%d/%d)\n", f["class"], rep.Class, rep.RefRecords)
	fmt.Fprintf(w, "reason     %6.2f%%  (%d/%d)\n", f["reason"], rep.Reason, rep.RefRecords)
	fmt.Fprintf(w, "status     %6.2f%%  (%d/%d records whose reference status is a real code)\n", f["status"], rep.Status, rep.StatusRecords)
	fmt.Fprintf(w, "non-bounce files %d, failure events on them %d\n", rep.NonBounceFiles, rep.NonBounceFail)
	secs := rep.Elapsed.Seconds()
	if secs > 0 {
		fmt.Fprintf(w, "speed      %d messages in %.3fs: %.0f messages/s, %.1f MB/s (one goroutine, GOMAXPROCS=%d)\n",
			rep.Messages, secs, float64(rep.Messages)/secs, float64(rep.Bytes)/secs/1e6, runtime.GOMAXPROCS(0))
	}
	if cpu := rep.CPU.Seconds(); cpu > 0 {
		fmt.Fprintf(w, "cpu        %.3fs of CPU time: %.0f messages/s, %.1f MB/s per CPU second (the load of other processes left out)\n",
			cpu, float64(rep.Messages)/cpu, float64(rep.Bytes)/cpu/1e6)
	}
	fmt.Fprintln(w, "\nconfusion (rows: reference class, columns: ours)")
	cols := append([]string{}, classNames()...)
	cols = append(cols, "-")
	fmt.Fprintf(w, "%-10s", "")
	for _, c := range cols {
		fmt.Fprintf(w, " %9s", c)
	}
	fmt.Fprintln(w)
	for _, row := range classNames() {
		if rep.Confusion[row] == nil {
			continue
		}
		fmt.Fprintf(w, "%-10s", row)
		for _, c := range cols {
			fmt.Fprintf(w, " %9d", rep.Confusion[row][c])
		}
		fmt.Fprintln(w)
	}
	if len(rep.Extra) > 0 {
		fmt.Fprintln(w, "\nevents where the reference has none:")
		for _, e := range rep.Extra {
			fmt.Fprintln(w, "  "+e)
		}
	}
	if worst > 0 && len(rep.Mismatches) > 0 {
		fmt.Fprintf(w, "\nworst mismatches (%d in all; want -> got):\n", len(rep.Mismatches))
		for i, m := range rep.Mismatches {
			if i == worst {
				break
			}
			fmt.Fprintf(w, "  %-55s %s -> %s\n", m.File, m.Want, m.Got)
		}
	}
}

func classNames() []string {
	out := make([]string, len(event.Classes))
	for i, c := range event.Classes {
		out[i] = string(c)
	}
	return out
}

// dedupe drops reference records that repeat an earlier one of the same
// file (same recipient, reason and status): the reference parser reports a
// bounce quoted inside another bounce twice, and one event is right.
func dedupe(recs []refRecord) []refRecord {
	seen := map[string]bool{}
	out := recs[:0:0]
	for _, r := range recs {
		k := strings.ToLower(r.Recipient) + "\x00" + r.Reason + "\x00" + r.DeliveryStatus
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, r)
	}
	return out
}
