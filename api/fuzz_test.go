package api

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/store"
	"github.com/bouncer-mail/bouncer/suppress"
)

// FuzzImport feeds arbitrary bytes to the CSV import's reader. Whatever
// the input: no panic; every row it hands on is one the store accepts
// (store.ValidateSuppressions), so a client's CSV can never fail a write
// midway; every refusal is an importError (a 400 naming the line), never
// another kind of error.
func FuzzImport(f *testing.F) {
	for _, seed := range []string{
		"address\njane@example.com\n",
		"address,stream,class,reason,since,until,note\njane@example.com,news,hard,userunknown,2026-01-02T03:04:05Z,2027-01-01T00:00:00Z,bounced\n",
		"\xef\xbb\xbfAddress,Note\r\n\"J@Example.com\",\"quoted, with comma\"\r\n",
		"address,source,rule,actor\na@b.example,policy,hard,someone\n",
		"address\n\"unterminated\n",
		"address,address\na@b,c@d\n",
		"stream\nnews\n",
		"address,until\na@b.example,2020-01-01T00:00:00Z\n",
		"address\n" + strings.Repeat("x", 70) + "@" + strings.Repeat("y", 260) + ".example\n",
		"address,note\na@[127.0.0.1],ip literal\n",
	} {
		f.Add([]byte(seed), "imported")
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte, note string) {
		for _, norm := range []suppress.Normalization{{}, {GmailDots: true, PlusTags: true}} {
			s := &server{norm: norm}
			rows := 0
			n, err := s.readImport(data, note, "token:0123abcd", now, func(row store.Suppression) error {
				rows++
				if err := store.ValidateSuppressions([]store.Suppression{row}); err != nil {
					t.Fatalf("row %d is not storable: %v: %+v", rows, err, row)
				}
				if row.Source != store.SourceImport || row.Actor != "token:0123abcd" {
					t.Fatalf("row %d: source %q actor %q", rows, row.Source, row.Actor)
				}
				return nil
			})
			if n != rows {
				t.Fatalf("readImport = %d rows, handed on %d", n, rows)
			}
			var ie importError
			if err != nil && !errors.As(err, &ie) {
				t.Fatalf("error %T %v is not a client error", err, err)
			}
		}
	})
}

// FuzzParseAddress: an address from a URL path is either refused or comes
// back lower-cased, with an @, and free of what could break out of a path
// or a header.
func FuzzParseAddress(f *testing.F) {
	for _, seed := range []string{"jane@example.com", "JANE@EXAMPLE.COM", "a/b@x", "..%2F..@x", "x@..", "a@b\r\nX: y", "", "@", "a@", "é@ü.example"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := parseAddress(in)
		if err != nil {
			return
		}
		if got != strings.ToLower(got) || !strings.Contains(got, "@") || strings.ContainsAny(got, "\r\n\x00") {
			t.Fatalf("parseAddress(%q) = %q", in, got)
		}
		// A space only within a quoted local part.
		if local := got[:strings.LastIndexByte(got, '@')]; strings.ContainsRune(got, ' ') &&
			(strings.ContainsRune(got[len(local):], ' ') || len(local) < 2 || local[0] != '"' || local[len(local)-1] != '"') {
			t.Fatalf("parseAddress(%q) = %q: a space outside a quoted local part", in, got)
		}
	})
}
