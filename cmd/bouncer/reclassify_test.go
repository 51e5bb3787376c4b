package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/rules"
	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/store/sqlite"
)

// A report stored with wrong events (a different class, and one event
// too many) gets its current classification from reclassify; a second
// run changes nothing the API shows, and runs whose window or --dry-run
// excludes it touch nothing.
func TestReclassify(t *testing.T) {
	ctx := context.Background()
	raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "ndr", "activehunter-userunknown.eml"))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Default()
	if err != nil {
		t.Fatal(err)
	}
	want, err := classify.New(rs).Bytes(raw)
	if err != nil || len(want) != 1 {
		t.Fatalf("classify = %v, %v; want one event", want, err)
	}
	rcpt := want[0].Recipient

	dir := t.TempDir()
	sum := sha256.Sum256(raw)
	id := hex.EncodeToString(sum[:])
	received := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	report := store.Report{Envelope: event.Envelope{ID: id, Received: received,
		Recipients: []string{"B+X@bounces.example.com"}}, Raw: raw}
	wrong := want[0]
	wrong.Class, wrong.Reason, wrong.Scope = event.ClassSoft, event.ReasonMailboxFull, event.ScopeRecipient
	ghost := want[0]
	ghost.Recipient = "ghost@example.com"
	ghost.Class = event.ClassDelivered
	stored := []store.Event{
		{ID: store.EventID(id, 0), ReportID: id, Index: 0, Version: 1, Time: received, Source: "ndr", Event: wrong},
		{ID: store.EventID(id, 1), ReportID: id, Index: 1, Version: 1, Time: received, Source: "ndr", Event: ghost},
	}
	withStore(t, dir, func(s store.Store) {
		if err := s.Write(ctx, []store.Report{report}, stored); err != nil {
			t.Fatal(err)
		}
	})
	// events returns the API-visible events of a recipient.
	events := func(address string) []store.Event {
		var out []store.Event
		withStore(t, dir, func(s store.Store) {
			var err error
			if out, err = s.RecipientEvents(ctx, address, 10); err != nil {
				t.Fatal(err)
			}
		})
		return out
	}
	reclassify := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		args = append([]string{"reclassify", "--data-dir", dir}, args...)
		if code := run(args, strings.NewReader(""), &stdout, &stderr); code != 0 {
			t.Fatalf("bouncer %s: exit %d, stderr %s", strings.Join(args, " "), code, stderr.String())
		}
		return stdout.String()
	}
	unchanged := func(step string) {
		t.Helper()
		got := events(rcpt)
		if len(got) != 1 || got[0].Class != event.ClassSoft || len(events("ghost@example.com")) != 1 {
			t.Errorf("%s: events changed: %+v", step, got)
		}
	}

	out := reclassify("--since", "30m")
	unchanged("--since excluding the report")
	if !strings.Contains(out, "reports read: 0") {
		t.Errorf("--since excluding the report: summary %q, want 0 reports read", out)
	}
	out = reclassify("--since", "2h", "--dry-run")
	unchanged("--dry-run")
	if !strings.Contains(out, "reports read: 1") || !strings.Contains(out, "to write: 1") {
		t.Errorf("--dry-run summary %q, want 1 report read, 1 event to write", out)
	}

	out = reclassify("--since", "2h")
	if !strings.Contains(out, "2 before -> 1 after") || !strings.Contains(out, "hard       0 -> 1") {
		t.Errorf("summary %q, want 2 -> 1 events and the hard class", out)
	}
	check := func(step string) {
		t.Helper()
		got := events(rcpt)
		if len(got) != 1 {
			t.Fatalf("%s: RecipientEvents(%s) = %+v, want one event", step, rcpt, got)
		}
		if !reflect.DeepEqual(got[0].Event, want[0]) {
			t.Errorf("%s: event\n got %+v\nwant %+v", step, got[0].Event, want[0])
		}
		if got[0].Version <= 1 || got[0].ReturnPath != "b+x@bounces.example.com" || !got[0].Time.Equal(received) {
			t.Errorf("%s: version %d, return path %q, time %v; want > 1, the report's lower-cased, %v",
				step, got[0].Version, got[0].ReturnPath, got[0].Time, received)
		}
		if g := events("ghost@example.com"); len(g) != 0 {
			t.Errorf("%s: the old set's extra event is still visible: %+v", step, g)
		}
	}
	check("first run")
	// The recipient's outcome follows the new set, and the hard failure the
	// old rules read as a full mailbox now suppresses it.
	if !strings.Contains(out, "recipients re-folded: 1 (0 failed); policy suppressions added: 1, lifted: 0") {
		t.Errorf("summary %q, want 1 recipient re-folded and 1 suppression added", out)
	}
	withStore(t, dir, func(s store.Store) {
		outs, err := s.RecipientOutcomes(ctx, rcpt)
		if err != nil {
			t.Fatal(err)
		}
		if len(outs) != 1 || outs[0].Class != event.ClassHard || !outs[0].Final {
			t.Errorf("outcomes after the run: %+v, want one final hard", outs)
		}
		sup, err := s.AddressSuppressions(ctx, rcpt, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(sup) != 1 || sup[0].Rule != "hard" || sup[0].Source != store.SourcePolicy {
			t.Errorf("suppressions after the run: %+v, want the policy's hard one", sup)
		}
	})

	// A run a second later writes a higher version of the same set.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	out = reclassify("--since", "2h")
	check("second run")
	if !strings.Contains(out, "1 before -> 1 after") || !strings.Contains(out, "policy suppressions added: 0") {
		t.Errorf("second run summary %q, want 1 -> 1 and no suppression added again", out)
	}
}

func TestReclassifyUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"--since", "0s"}, {"--since", "-1h"}, {"--since", "1h", "extra"}, {"--bogus"}} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"reclassify", "--data-dir", t.TempDir()}, args...), strings.NewReader(""), &stdout, &stderr); code != 2 {
			t.Errorf("reclassify %v: exit %d, want 2", args, code)
		}
	}
}

func withStore(t *testing.T, dir string, f func(store.Store)) {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, "bouncer.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f(s)
}
