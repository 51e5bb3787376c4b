package storetest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// GrowingBatch is n reports of about 4 KB from seq on, as the soak sends
// them, for the benchmarks that fill a store batch by batch: ids that are
// SHA-256s, as the listener names reports (so a batch's ids fall all over
// an index ordered by id), one hard bounce each, of classification
// version, for a recipient of its own, with a VERP return path. The same
// seq gives the same reports.
func GrowingBatch(seq, n int, at time.Time, version uint32) ([]store.Report, []store.Event) {
	raw := []byte(strings.Repeat("Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n", 85))
	reports := make([]store.Report, 0, n)
	events := make([]store.Event, 0, n)
	for i := seq; i < seq+n; i++ {
		sum := sha256.Sum256(fmt.Appendf(nil, "report %d", i))
		id := hex.EncodeToString(sum[:])
		rcpt := fmt.Sprintf("user%d@example%d.com", i, i%977)
		rp := "b+" + id[:12] + "@bounces.example.com"
		reports = append(reports, store.Report{Envelope: event.Envelope{ID: id, Received: at, ReturnPath: rp, Recipients: []string{"bounce@bounces.example.com"}}, Raw: raw})
		events = append(events, store.Event{ID: store.EventID(id, 0), ReportID: id, Version: version, Time: at, Source: "ndr", // ingest.SourceNDR
			ReturnPath: rp, Stream: "news",
			Event: event.Event{Recipient: rcpt, Class: event.ClassHard, Reason: event.ReasonUserUnknown, Scope: event.ScopeRecipient,
				Status: "5.1.1", Action: "failed", Diagnostic: "smtp; 550 5.1.1 user unknown", Provider: "gmail",
				MessageID: fmt.Sprintf("<m%d@sender.example>", i)}})
	}
	return reports, events
}
