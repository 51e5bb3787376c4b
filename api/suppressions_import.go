package api

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bouncer-mail/bouncer/store"
)

// maxImportsAtOnce is how many imports may be in progress; another one is
// answered 503 with Retry-After: importRetryAfter seconds.
const (
	maxImportsAtOnce = 2
	importRetryAfter = 5
)

// importError is a client's mistake in an import, answered 400.
type importError string

func (e importError) Error() string { return string(e) }

type importResponse struct {
	Imported int    `json:"imported"` // data lines read, each written (a later line of the same key wins)
	Actor    string `json:"actor"`
}

// importSuppressions reads a CSV (header line naming the columns; address
// required) and stores each line as a suppression from SourceImport by the
// caller. Every line is checked before anything is written: one bad line
// is a 400 naming it, with nothing changed. Rows are then written in
// batches; should the store fail midway, the answer says how many were
// written, and importing the same file again is safe.
func (s *server) importSuppressions(w http.ResponseWriter, r *http.Request) {
	q, ok := s.query(w, r)
	if !ok {
		return
	}
	note := strings.TrimSpace(q.Get("note"))
	if err := checkText("note", note); err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	// Each import holds its whole body in memory (up to twice
	// maxImportBytes while it grows): bound how many run at once, or
	// concurrent imports take as much memory as clients send.
	select {
	case s.imports <- struct{}{}:
		defer func() { <-s.imports }()
	default:
		w.Header().Set("Retry-After", strconv.Itoa(importRetryAfter))
		s.writeError(w, r, http.StatusServiceUnavailable, fmt.Sprintf("%d imports are in progress, retry later", maxImportsAtOnce))
		return
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(importReadWindow))
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxImportBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.writeError(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("the CSV is larger than %d MiB", maxImportBytes>>20))
			return
		}
		s.log.InfoContext(r.Context(), "api: reading an import", "err", err)
		s.writeError(w, r, http.StatusBadRequest, "the body could not be read")
		return
	}
	who, now := actor(r), time.Now().UTC().Truncate(time.Second)
	total, err := s.readImport(data, note, who, now, func(store.Suppression) error { return nil })
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}

	batch := make([]store.Suppression, 0, min(total, importBatch))
	index := make(map[store.SuppressionKey]int, cap(batch))
	written := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := s.store.PutSuppressions(r.Context(), batch); err != nil {
			return err
		}
		written += len(batch)
		batch = batch[:0]
		clear(index)
		return nil
	}
	_, err = s.readImport(data, note, who, now, func(row store.Suppression) error {
		k := store.SuppressionKey{Address: row.Address, Stream: row.Stream}
		if i, ok := index[k]; ok {
			batch[i] = row // one key once per batch: the later line wins
			return nil
		}
		index[k] = len(batch)
		batch = append(batch, row)
		if len(batch) < importBatch {
			return nil
		}
		return flush()
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		if written == 0 {
			s.storeError(w, r, err)
			return
		}
		s.log.ErrorContext(r.Context(), "api: import failed midway", "written", written, "rows", total, "err", err)
		s.writeError(w, r, http.StatusInternalServerError,
			fmt.Sprintf("the store failed after %d of %d rows were written; importing the same file again is safe", written, total))
		return
	}
	s.log.InfoContext(r.Context(), "api: suppressions imported", "rows", total, "actor", who)
	s.writeJSON(w, r, http.StatusOK, importResponse{Imported: total, Actor: who})
}

// readImport parses an import CSV and calls each with every row, in
// order; it returns the number of rows. A client's mistake is an
// importError naming the line; each's errors are returned as they are.
func (s *server) readImport(data []byte, note, who string, now time.Time, each func(store.Suppression) error) (int, error) {
	cr := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")))) // a spreadsheet's BOM
	cr.ReuseRecord = true
	header, err := cr.Read()
	switch {
	case err == io.EOF:
		return 0, importError("the CSV is empty: it needs a header line naming the columns, address at least")
	case err != nil:
		return 0, csvError(err, 0)
	}
	cols := map[string]int{}
	for i, name := range header {
		name = strings.ToLower(strings.TrimSpace(name))
		switch {
		case !importColumns[name] && !ignoredImportColumns[name]:
			return 0, importError(fmt.Sprintf("line 1: unknown column %q; the columns are address, stream, class, reason, since, until, note (source, rule and actor are ignored)", shorten(name)))
		case cols[name] != 0:
			return 0, importError(fmt.Sprintf("line 1: column %q appears twice", name))
		}
		cols[name] = i + 1 // 0: absent
	}
	if cols["address"] == 0 {
		return 0, importError("line 1: the header names no address column")
	}
	columns := len(header)
	field := func(rec []string, name string) string {
		if i := cols[name]; i > 0 {
			return rec[i-1]
		}
		return ""
	}
	rows, prev := 0, cr.InputOffset()
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return rows, nil
		}
		if err != nil {
			return rows, csvError(err, columns)
		}
		line, _ := cr.FieldPos(0)
		off := cr.InputOffset()
		if off-prev > maxImportLine {
			return rows, importError(fmt.Sprintf("line %d is longer than %d KiB", line, maxImportLine>>10))
		}
		prev = off
		addr, err := s.suppressionAddress(strings.TrimSpace(field(rec, "address")))
		if err != nil {
			return rows, importError(fmt.Sprintf("line %d: %v", line, err))
		}
		in := rowInput{
			stream: field(rec, "stream"), class: field(rec, "class"), reason: field(rec, "reason"),
			since: strings.TrimSpace(field(rec, "since")), until: strings.TrimSpace(field(rec, "until")),
			note: fromTextCell(field(rec, "note")), // as an export wrote it (textCell)
		}
		if strings.TrimSpace(in.note) == "" {
			in.note = note
		}
		row, err := in.suppression(addr, store.SourceImport, who, now)
		if err != nil {
			if in.note == "" {
				err = errors.New("a note is required: give a note column or ?note=")
			}
			return rows, importError(fmt.Sprintf("line %d: %v", line, err))
		}
		rows++
		if err := each(row); err != nil {
			return rows, err
		}
	}
}

// csvError words a CSV syntax error for the client; columns is the
// header's width (0 while reading the header).
func csvError(err error, columns int) error {
	var pe *csv.ParseError
	if !errors.As(err, &pe) {
		return importError("the CSV could not be read")
	}
	if errors.Is(pe.Err, csv.ErrFieldCount) {
		return importError(fmt.Sprintf("line %d: the line has a different number of fields than the header's %d", pe.StartLine, columns))
	}
	return importError(fmt.Sprintf("line %d, column %d: %v", pe.Line, pe.Column, pe.Err))
}
