package classify

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/rules"
)

// TestEventsDoNotRetainReports: the events Bytes returns must not keep
// the report they were read from alive (ingest holds a batch's events
// until its re-fold). The DSN parser works on a normalised copy of the
// raw bytes and returns substrings of it; an event holding one kept the
// whole copy, about the size of the report, so a backlog of full batches
// held each report twice (the raw bytes, released after the write, and
// the copy). The raw bytes here are dropped at once: what stays must be
// far below the reports' size.
func TestEventsDoNotRetainReports(t *testing.T) {
	const n = 2000
	cl := New(rules.MustDefault())
	padding := strings.Repeat("X-Padding: "+strings.Repeat("p", 60)+"\r\n", 60) // about 4 KB, as the soak's
	raw := func(i int) []byte {
		return []byte(fmt.Sprintf("From: MAILER-DAEMON@mx.example.net\r\nTo: b@bounces.example.com\r\n%s"+
			"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"+
			"--b\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n"+
			"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"+
			"Final-Recipient: rfc822; user%d@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"+
			"Remote-MTA: dns; mx%d.example.org\r\nDiagnostic-Code: smtp; 550 5.1.1 <user%d@example.org>: user unknown\r\n\r\n"+
			"--b--\r\n", padding, i, i, i))
	}
	if _, err := cl.Bytes(raw(n)); err != nil { // the rules' lazy state
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC() // sync.Pool's victims go at the second
	runtime.ReadMemStats(&before)
	kept := make([][]event.Event, n)
	size := 0
	for i := range kept {
		raw := raw(i)
		size += len(raw)
		evs, err := cl.Bytes(raw) // raw is dropped here: only the events stay
		if err != nil || len(evs) != 1 || evs[0].Class != event.ClassHard {
			t.Fatalf("report %d: events %+v, %v; want one hard bounce", i, evs, err)
		}
		kept[i] = evs
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d reports of %d KiB: their events hold %d KiB", n, size>>10, held>>10)
	if held > int64(size)/4 {
		t.Errorf("%d reports' events hold %d KiB of heap, of %d KiB of reports: they keep the reports alive", n, held>>10, size>>10)
	}
	runtime.KeepAlive(kept)
}
