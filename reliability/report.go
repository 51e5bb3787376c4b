package reliability

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable prints results as a plain table, then each result's notes.
func WriteTable(w io.Writer, results []Result, errs []error) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tsent\tattempts\tacked 250\t4xx msgs\t4xx replies\tin doubt\t5xx\tstored\twaiting\tlost\tduplicated\tno event\tmisclassified\tresult\t")
	for i, r := range results {
		verdict := "ok"
		if errs[i] != nil {
			verdict = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", r.Scenario, r.Sent, r.Attempts, r.Acked,
			r.TempFailed, r.TempReplies, r.InDoubt, r.Rejected, r.Stored, r.Waiting, r.Lost, r.Duplicated, r.NoEvent, r.Misclassified, verdict)
	}
	tw.Flush()
	for i, r := range results {
		fmt.Fprintf(w, "\n%s — %s\n", r.Scenario, r.Injected)
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
		if r.StoredUnacked > 0 {
			fmt.Fprintf(w, "  - %d stored reports were never answered 250 (in doubt at the fault; the sender's resend or the first copy was kept)\n", r.StoredUnacked)
		}
		if r.ExtraRows > 0 {
			fmt.Fprintf(w, "  - %d ClickHouse rows beyond one per report, not merged yet (readers count each id once)\n", r.ExtraRows)
		}
		if errs[i] != nil {
			fmt.Fprintf(w, "  - FAIL: %v\n", errs[i])
		}
	}
}

// MarkdownRow is r as a row of docs/reliability.md's table.
func MarkdownRow(r Result, command string) string {
	return fmt.Sprintf("| %s | %s | %d | %d | %d | %d | %d | %d | `%s` |", r.Scenario,
		strings.ReplaceAll(r.Injected, "|", "/"), r.Sent, r.Acked, r.TempFailed, r.Stored, r.Lost, r.Duplicated, command)
}
