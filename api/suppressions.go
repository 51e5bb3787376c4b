package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// Suppressions over HTTP (DESIGN.md "Suppression policy", "HTTP API"):
// listing and export, the per-address check a sending application makes
// before each send, manual add and removal, CSV import, the audit trail and
// counts. Addresses are keyed as the policy keys them (Config.Normalize).

// Bounds of the suppression routes.
const (
	listChunk            = 1000     // rows per store call while listing
	maxSuppressionsLimit = 10000    // ?limit= of GET /v1/suppressions
	maxStreamLen         = 255      // octets of a stream name
	maxPutBody           = 64 << 10 // PUT body
	maxImportBytes       = 64 << 20 // POST /v1/suppressions:import body
	maxImportLine        = 16 << 10 // one CSV record; ten full fields fit
	importBatch          = 5000     // rows per PutSuppressions of an import
	defaultHistoryLimit  = 100
	maxHistoryLimit      = 1000
	// A long export or import keeps its connection while it makes
	// progress: each page written, or the whole body read, extends the
	// server's deadline by this much.
	exportWriteWindow = time.Minute
	importReadWindow  = 10 * time.Minute
)

// csvColumns are the columns of an export, in order.
var csvColumns = []string{"address", "stream", "source", "class", "reason", "rule", "since", "until", "actor", "note"}

// importColumns are the columns an import reads; the export's others are
// accepted and ignored (an import's source is always "import", its actor
// the caller), so an export imports as it is.
var importColumns = map[string]bool{"address": true, "stream": true, "class": true, "reason": true, "since": true, "until": true, "note": true}

var ignoredImportColumns = map[string]bool{"source": true, "rule": true, "actor": true}

// suppressionJSON is one suppression in a response.
type suppressionJSON struct {
	Address string       `json:"address"`
	Stream  string       `json:"stream"` // "": every stream (the global scope)
	Source  string       `json:"source"`
	Class   event.Class  `json:"class"`
	Reason  event.Reason `json:"reason"`
	Rule    string       `json:"rule"`
	Since   time.Time    `json:"since"`
	Until   *time.Time   `json:"until"` // null: until lifted
	Actor   string       `json:"actor"`
	Note    string       `json:"note"`
	Updated time.Time    `json:"updated"`
}

func suppressionToJSON(s store.Suppression) suppressionJSON {
	j := suppressionJSON{
		Address: s.Address, Stream: s.Stream, Source: s.Source, Class: s.Class, Reason: s.Reason, Rule: s.Rule,
		Since: s.Since.UTC(), Actor: s.Actor, Note: s.Note, Updated: s.Updated.UTC(),
	}
	if !s.Until.IsZero() {
		u := s.Until.UTC()
		j.Until = &u
	}
	return j
}

func suppressionsToJSON(rows []store.Suppression) []suppressionJSON {
	out := make([]suppressionJSON, len(rows))
	for i, s := range rows {
		out[i] = suppressionToJSON(s)
	}
	return out
}

// suppressionAddress reads an address from a request path or a CSV field:
// parseAddress's checks, then the configured normalisation, which also
// refuses what cannot be a suppression key (spaces, <, >, commas); the
// domain must be labels, not a path. The error is fit for a client and
// does not repeat the input.
func (s *server) suppressionAddress(raw string) (string, error) {
	a, err := parseAddress(raw)
	if err != nil {
		return "", err
	}
	n := s.norm.Address(a)
	if n == "" {
		return "", errors.New("address holds characters no suppressed address may hold")
	}
	domain := n[strings.LastIndexByte(n, '@')+1:]
	if !strings.HasPrefix(domain, "[") && (strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, "..")) {
		return "", errors.New("address has an invalid domain")
	}
	return n, nil
}

// checkStream refuses stream names no sender would use; any other name is
// fine, known or not ("" is the global scope).
func checkStream(v string) error {
	switch {
	case len(v) > maxStreamLen:
		return fmt.Errorf("stream is longer than %d octets", maxStreamLen)
	case !utf8.ValidString(v):
		return errors.New("stream is not valid UTF-8")
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return errors.New("stream contains control characters")
	case strings.TrimSpace(v) != v:
		return errors.New("stream has leading or trailing spaces")
	}
	return nil
}

// checkText refuses a note the store would refuse, with a client's words.
func checkText(name, v string) error {
	switch {
	case len(v) > store.MaxSuppressionField:
		return fmt.Errorf("%s is longer than %d octets", name, store.MaxSuppressionField)
	case !utf8.ValidString(v):
		return fmt.Errorf("%s is not valid UTF-8", name)
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return fmt.Errorf("%s contains control characters", name)
	}
	return nil
}

// rowInput is a suppression as a client writes it (PUT body, CSV row).
type rowInput struct {
	stream, class, reason, since, until, note string
}

// suppression checks in and returns the suppression of address it asks
// for, from source by actor, starting now unless in.since says otherwise.
// Times are kept to the second, as every engine keeps them.
func (in rowInput) suppression(address, source, actor string, now time.Time) (store.Suppression, error) {
	row := store.Suppression{Address: address, Stream: in.stream, Source: source, Since: now, Actor: actor}
	if err := checkStream(in.stream); err != nil {
		return row, err
	}
	if row.Class = event.Class(in.class); row.Class != "" && !store.KnownClass(row.Class) {
		return row, fmt.Errorf("class %q is not one of %v", shorten(in.class), event.Classes)
	}
	if row.Reason = event.Reason(in.reason); row.Reason != "" && !row.Reason.Valid() {
		return row, fmt.Errorf("reason %q is not in the reason vocabulary (userunknown, mailboxfull, ...)", shorten(in.reason))
	}
	row.Note = strings.TrimSpace(in.note)
	if row.Note == "" {
		return row, errors.New("a note is required: say why")
	}
	if err := checkText("note", row.Note); err != nil {
		return row, err
	}
	if in.since != "" {
		t, err := time.Parse(time.RFC3339, in.since)
		if err != nil {
			return row, errors.New("since must be an RFC 3339 time such as 2025-01-31T12:00:00Z")
		}
		if row.Since = t.UTC().Truncate(time.Second); row.Since.After(now) {
			return row, errors.New("since is in the future")
		}
	}
	if in.until != "" {
		t, err := time.Parse(time.RFC3339, in.until)
		if err != nil {
			return row, errors.New("until must be an RFC 3339 time such as 2025-01-31T12:00:00Z")
		}
		if row.Until = t.UTC().Truncate(time.Second); !row.Until.After(now) {
			return row, errors.New("until is not in the future")
		}
	}
	if err := store.ValidateSuppressions([]store.Suppression{row}); err != nil {
		return row, errors.New("the suppression is not valid") // checked above; the store agrees
	}
	return row, nil
}

// shorten keeps a client's value short enough to quote in an error.
func shorten(v string) string {
	if len(v) > 40 {
		return v[:40] + "..."
	}
	return v
}

// findStream returns the row of stream among rows, or nil.
func findStream(rows []store.Suppression, stream string) *store.Suppression {
	for i := range rows {
		if rows[i].Stream == stream {
			return &rows[i]
		}
	}
	return nil
}

// query parses the query string, answering 400 when it is malformed.
func (s *server) query(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, "malformed query string")
		return nil, false
	}
	return q, true
}

// --- GET /v1/suppressions ------------------------------------------------

// encodeCursor and decodeCursor turn a listing's last key into the opaque
// next_cursor and back: base64url of the JSON pair [address, stream].
func encodeCursor(k store.SuppressionKey) string {
	b, _ := json.Marshal([2]string{k.Address, k.Stream})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(c string) (store.SuppressionKey, error) {
	bad := errors.New("cursor is not one this API returned")
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) > 2*store.MaxSuppressionField+16 {
		return store.SuppressionKey{}, bad
	}
	var k [2]string
	if err := json.Unmarshal(b, &k); err != nil || k[0] == "" {
		return store.SuppressionKey{}, bad
	}
	return store.SuppressionKey{Address: k[0], Stream: k[1]}, nil
}

// listRequest is a parsed GET /v1/suppressions.
type listRequest struct {
	q      store.SuppressionQuery
	csv    bool
	limit  int // 0: everything
	cursor bool
}

func parseList(q url.Values) (listRequest, error) {
	var l listRequest
	l.q.Stream = q.Get("stream")
	if err := checkStream(l.q.Stream); err != nil {
		return l, err
	}
	if v := q.Get("all_streams"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return l, errors.New("all_streams must be true or false")
		}
		l.q.AllStreams = b
	}
	if l.q.AllStreams && l.q.Stream != "" {
		return l, errors.New("stream and all_streams=true exclude each other")
	}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return l, errors.New("since must be an RFC 3339 time such as 2025-01-31T12:00:00Z")
		}
		l.q.Since = t.UTC()
	}
	switch q.Get("format") {
	case "", "json":
	case "csv":
		l.csv = true
	default:
		return l, errors.New("format must be json or csv")
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxSuppressionsLimit {
			return l, fmt.Errorf("limit must be a number from 1 to %d", maxSuppressionsLimit)
		}
		l.limit = n
	}
	if v := q.Get("cursor"); v != "" {
		k, err := decodeCursor(v)
		if err != nil {
			return l, err
		}
		l.q.After = k
	}
	return l, nil
}

// pager walks a listing through the store a chunk at a time: at most
// limit rows in all (0: no limit), and under a limit it finds out whether
// rows follow the last one it returned.
type pager struct {
	sup   store.SuppressionStore
	q     store.SuppressionQuery
	limit int
	sent  int
	done  bool // the last chunk was returned
	more  bool // done under a limit with rows left: next_cursor is due
}

func (p *pager) next(ctx context.Context) ([]store.Suppression, error) {
	if p.done {
		return nil, nil
	}
	n := listChunk
	if p.limit > 0 && p.limit-p.sent <= listChunk {
		n = p.limit - p.sent + 1 // one more than wanted says whether the page is the last
	}
	p.q.Limit = n
	rows, err := p.sup.Suppressions(ctx, p.q)
	if err != nil {
		return nil, err
	}
	switch {
	case p.limit > 0 && p.sent+len(rows) > p.limit:
		rows = rows[:p.limit-p.sent]
		p.done, p.more = true, true
	case len(rows) < n:
		p.done = true
	}
	if len(rows) > 0 {
		last := rows[len(rows)-1]
		p.q.After = store.SuppressionKey{Address: last.Address, Stream: last.Stream}
	}
	p.sent += len(rows)
	return rows, nil
}

// listSuppressions streams the suppressions in force as JSON
// {"suppressions":[...],"next_cursor":"..."} or as CSV. Without a limit
// it lists everything (after the cursor, when one is given) from one
// store read, exportSuppressions; with one, a page, read from the store a
// chunk at a time, and (when more rows exist) the cursor of the next: in
// the body for JSON, in the X-Next-Cursor header for CSV (the page is
// read before it is written, at most maxSuppressionsLimit rows).
func (s *server) listSuppressions(w http.ResponseWriter, r *http.Request) {
	q, ok := s.query(w, r)
	if !ok {
		return
	}
	l, err := parseList(q)
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	l.q.Now = time.Now().UTC()
	if l.limit == 0 && r.Method != http.MethodHead {
		// An export holds a store read (one of SQLite's 4 read
		// connections) for as long as its client takes to read it: bound
		// how many run at once, or exports take every connection and
		// the checks before a send wait for them (http-abuse: p99 9 s
		// under 50 exports).
		select {
		case s.exports <- struct{}{}:
			defer func() { <-s.exports }()
		default:
			w.Header().Set("Retry-After", strconv.Itoa(exportRetryAfter))
			s.writeError(w, r, http.StatusServiceUnavailable, fmt.Sprintf("%d exports are in progress, retry later or list by pages (limit)", maxExportsAtOnce))
			return
		}
		s.exportSuppressions(w, r, l)
		return
	}
	p := &pager{sup: s.store, q: l.q, limit: l.limit}
	rows, err := p.next(r.Context())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if l.csv && l.limit > 0 {
		for !p.done {
			more, err := p.next(r.Context())
			if err != nil {
				s.storeError(w, r, err)
				return
			}
			rows = append(rows, more...)
		}
	}
	listHeaders(w.Header(), l.csv)
	if l.csv && p.more {
		w.Header().Set("X-Next-Cursor", encodeCursor(p.q.After))
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	var write func([]store.Suppression) error
	if l.csv {
		write = csvPageWriter(bw)
	} else {
		write = jsonPageWriter(bw)
	}
	for {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(exportWriteWindow))
		if err := write(rows); err != nil {
			return // the client went away
		}
		if err := bw.Flush(); err != nil {
			return
		}
		if p.done {
			break
		}
		if rows, err = p.next(r.Context()); err != nil {
			// The status is sent: cut the response so the client sees a
			// failed transfer, never a short list that looks whole.
			s.log.ErrorContext(r.Context(), "api: listing suppressions", "rows_sent", p.sent, "err", err)
			panic(http.ErrAbortHandler)
		}
	}
	if !l.csv {
		bw.WriteString("\n]")
		if p.more {
			fmt.Fprintf(bw, `,"next_cursor":%q`, encodeCursor(p.q.After))
		}
		bw.WriteString("}\n")
	}
	bw.Flush()
}

// listHeaders sets the headers of a listing's 200.
func listHeaders(h http.Header, csv bool) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	if csv {
		h.Set("Content-Type", "text/csv; charset=utf-8")
		h.Set("Content-Disposition", `attachment; filename="suppressions.csv"`)
	} else {
		h.Set("Content-Type", "application/json; charset=utf-8")
	}
}

// maxExportsAtOnce is how many unpaged exports may be in progress;
// another one is answered 503 with Retry-After: exportRetryAfter seconds.
// Below the SQLite store's read connections (4), so checks and pages
// always find one.
const (
	maxExportsAtOnce = 2
	exportRetryAfter = 10
)

// exportSuppressions streams every suppression in force that l selects
// (a listing without a limit) from one store read, EachSuppression: the
// rows go out as the store hands them over, listChunk at a time through
// the page writers, so memory stays flat and the store reads the list
// once instead of once a page (a ClickHouse page costs about the rows
// after its cursor, so an export by pages costs the square of its
// length). The status waits for the first chunk, so a store that fails
// at once gets its error status; one that fails later cuts the
// connection, as a paged listing does, so a partial list never looks
// whole.
func (s *server) exportSuppressions(w http.ResponseWriter, r *http.Request, l listRequest) {
	var (
		bw        *bufio.Writer
		write     func([]store.Suppression) error
		clientErr error // a write to the client failed: it went away
		sent      int
	)
	rc := http.NewResponseController(w)
	chunk := make([]store.Suppression, 0, listChunk)
	flush := func() error {
		if bw == nil {
			listHeaders(w.Header(), l.csv)
			w.WriteHeader(http.StatusOK)
			bw = bufio.NewWriterSize(w, 32<<10)
			if l.csv {
				write = csvPageWriter(bw)
			} else {
				write = jsonPageWriter(bw)
			}
		}
		_ = rc.SetWriteDeadline(time.Now().Add(exportWriteWindow))
		if err := write(chunk); err != nil {
			clientErr = err
			return err
		}
		sent += len(chunk)
		chunk = chunk[:0]
		return nil
	}
	err := s.store.EachSuppression(r.Context(), l.q, func(row store.Suppression) error {
		chunk = append(chunk, row)
		if len(chunk) == cap(chunk) {
			return flush()
		}
		return nil
	})
	switch {
	case clientErr != nil || (err != nil && r.Context().Err() != nil):
		return // the client went away
	case err != nil && bw == nil:
		s.storeError(w, r, err)
		return
	case err != nil:
		s.log.ErrorContext(r.Context(), "api: exporting suppressions", "rows_sent", sent, "err", err)
		panic(http.ErrAbortHandler)
	}
	if err := flush(); err != nil { // the last chunk, and the CSV header of an empty list
		return
	}
	if !l.csv {
		bw.WriteString("\n]}\n")
	}
	bw.Flush()
}

// jsonPageWriter writes the opening of the JSON object and returns a
// function writing each page's rows, one per line.
func jsonPageWriter(bw *bufio.Writer) func([]store.Suppression) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	bw.WriteString(`{"suppressions":[`)
	first := true
	return func(rows []store.Suppression) error {
		for _, row := range rows {
			buf.Reset()
			if err := enc.Encode(suppressionToJSON(row)); err != nil {
				return err
			}
			if !first {
				bw.WriteByte(',')
			}
			first = false
			bw.WriteByte('\n')
			if _, err := bw.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n"))); err != nil {
				return err
			}
		}
		return nil
	}
}

// A spreadsheet runs a cell that begins with =, +, -, @, a tab or a CR as
// a formula (CSV injection), and a note is free text that anyone's import
// or API call may have written. So an export's actor and note cells that
// begin so get a leading apostrophe, which spreadsheets take as "text"
// and do not show; so do those that begin with an apostrophe before such
// a character or another apostrophe, and an import takes one apostrophe
// off the same cells again: an export imports exactly as it was.
// Addresses are exported as they are, though =, + and - may begin one: a
// suppression list is matched against the addresses a sending system
// holds, and one altered there would let mail through to it.
func textCell(s string) string {
	if len(s) > 0 && formulaStart(s[0]) || quotedText(s) {
		return "'" + s
	}
	return s
}

// fromTextCell undoes textCell.
func fromTextCell(s string) string {
	if quotedText(s) {
		return s[1:]
	}
	return s
}

// quotedText reports whether s begins with an apostrophe before a
// formula's first character or another apostrophe: the cells textCell
// quotes once more, and fromTextCell takes one apostrophe off.
func quotedText(s string) bool {
	return len(s) > 1 && s[0] == '\'' && (formulaStart(s[1]) || s[1] == '\'')
}

func formulaStart(c byte) bool {
	switch c {
	case '=', '+', '-', '@', '\t', '\r':
		return true
	}
	return false
}

// csvPageWriter writes the header line and then each page's rows, RFC 4180.
func csvPageWriter(bw *bufio.Writer) func([]store.Suppression) error {
	cw := csv.NewWriter(bw)
	header := true
	rec := make([]string, len(csvColumns))
	return func(rows []store.Suppression) error {
		if header {
			header = false
			if err := cw.Write(csvColumns); err != nil {
				return err
			}
		}
		for _, s := range rows {
			until := ""
			if !s.Until.IsZero() {
				until = s.Until.UTC().Format(time.RFC3339)
			}
			rec = append(rec[:0], s.Address, s.Stream, s.Source, string(s.Class), string(s.Reason), s.Rule,
				s.Since.UTC().Format(time.RFC3339), until, textCell(s.Actor), textCell(s.Note))
			if err := cw.Write(rec); err != nil {
				return err
			}
		}
		cw.Flush()
		return cw.Error()
	}
}

// --- /v1/suppressions/{address} ------------------------------------------

type addressResponse struct {
	Address      string            `json:"address"`
	Suppressed   bool              `json:"suppressed"`
	Suppressions []suppressionJSON `json:"suppressions"`
}

// addressSuppressions answers whether an address may be mailed: its
// suppressions in force on every stream, and suppressed — on ?stream=
// when given (a global suppression counts), on any stream when not. One
// store call, CheckSuppressions: a sending application makes it before
// each send, so the engine may answer an address it has never suppressed
// from memory (store.MaxCheckStaleness behind other processes' writes,
// this process's at once).
func (s *server) addressSuppressions(w http.ResponseWriter, r *http.Request) {
	addr, err := s.suppressionAddress(r.PathValue("address"))
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	q, ok := s.query(w, r)
	if !ok {
		return
	}
	stream := q.Get("stream")
	if err := checkStream(stream); err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	rows, err := s.store.CheckSuppressions(r.Context(), addr, time.Now().UTC())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	resp := addressResponse{Address: addr, Suppressions: suppressionsToJSON(rows)}
	for _, row := range rows {
		if stream == "" || row.Stream == "" || row.Stream == stream {
			resp.Suppressed = true
		}
	}
	s.writeJSON(w, r, http.StatusOK, resp)
}

// putBody is the body of PUT /v1/suppressions/{address}.
type putBody struct {
	Stream string `json:"stream"`
	Reason string `json:"reason"`
	Note   string `json:"note"`
	Until  string `json:"until"`
}

// putSuppression adds a manual suppression of the address on a stream
// ("" for every stream), or replaces the one that key holds, and answers
// the stored row: 201 when none was in force, 200 when one was replaced.
func (s *server) putSuppression(w http.ResponseWriter, r *http.Request) {
	addr, err := s.suppressionAddress(r.PathValue("address"))
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	var body putBody
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPutBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.writeError(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d octets", maxPutBody))
			return
		}
		s.writeError(w, r, http.StatusBadRequest, `the body must be a JSON object {"stream","reason","note","until"}`)
		return
	}
	if dec.Decode(&struct{}{}) != io.EOF {
		s.writeError(w, r, http.StatusBadRequest, "the body must hold one JSON object only")
		return
	}
	now := time.Now().UTC().Truncate(time.Second)
	row, err := rowInput{stream: body.Stream, reason: body.Reason, note: body.Note, until: body.Until}.
		suppression(addr, store.SourceManual, actor(r), now)
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	before, err := s.store.AddressSuppressions(r.Context(), addr, now)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if err := s.store.PutSuppressions(r.Context(), []store.Suppression{row}); err != nil {
		s.storeError(w, r, err)
		return
	}
	s.log.InfoContext(r.Context(), "api: suppression added", "address", addr, "stream", row.Stream, "actor", row.Actor)
	after, err := s.store.AddressSuppressions(r.Context(), addr, time.Now().UTC())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if stored := findStream(after, row.Stream); stored != nil {
		row = *stored // with the store's Updated
	}
	status := http.StatusOK
	if findStream(before, row.Stream) == nil {
		status = http.StatusCreated
		w.Header().Set("Location", "/v1/suppressions/"+url.PathEscape(addr))
	}
	s.writeJSON(w, r, status, suppressionToJSON(row))
}

type deleteResponse struct {
	Removed suppressionJSON `json:"removed"`
}

// deleteSuppression lifts the suppression of the address on ?stream= (""
// the global one), recording ?note= and the caller in the audit trail, and
// answers what it removed; 404 when none is in force.
func (s *server) deleteSuppression(w http.ResponseWriter, r *http.Request) {
	addr, err := s.suppressionAddress(r.PathValue("address"))
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	q, ok := s.query(w, r)
	if !ok {
		return
	}
	stream, note := q.Get("stream"), strings.TrimSpace(q.Get("note"))
	if err := checkStream(stream); err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if note == "" {
		s.writeError(w, r, http.StatusBadRequest, "a note is required: say why (?note=)")
		return
	}
	if err := checkText("note", note); err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	now := time.Now().UTC()
	current, err := s.store.AddressSuppressions(r.Context(), addr, now)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	cur := findStream(current, stream)
	notFound := "no suppression of this address is in force on this stream"
	if stream == "" {
		notFound = "no global suppression of this address is in force (name a stream with ?stream=)"
	}
	if cur == nil {
		s.writeError(w, r, http.StatusNotFound, notFound)
		return
	}
	key := store.SuppressionKey{Address: addr, Stream: stream}
	change := store.SuppressionChange{
		Time: now, Address: addr, Stream: stream, Action: store.ActionRemove,
		Source: store.SourceManual, Actor: actor(r), Note: note,
	}
	switch err := s.store.RemoveSuppression(r.Context(), key, change); {
	case errors.Is(err, store.ErrNotFound):
		s.writeError(w, r, http.StatusNotFound, notFound)
		return
	case err != nil:
		s.storeError(w, r, err)
		return
	}
	s.log.InfoContext(r.Context(), "api: suppression removed", "address", addr, "stream", stream, "actor", change.Actor)
	s.writeJSON(w, r, http.StatusOK, deleteResponse{Removed: suppressionToJSON(*cur)})
}

// --- GET /v1/recipients/{address}/history --------------------------------

// changeJSON is one line of the audit trail.
type changeJSON struct {
	Time    time.Time    `json:"time"`
	Address string       `json:"address"`
	Stream  string       `json:"stream"`
	Action  string       `json:"action"` // add, remove
	Source  string       `json:"source"`
	Actor   string       `json:"actor"`
	Note    string       `json:"note"`
	Class   event.Class  `json:"class"`
	Reason  event.Reason `json:"reason"`
	Rule    string       `json:"rule"`
}

type historyResponse struct {
	Address      string            `json:"address"`
	Suppressions []suppressionJSON `json:"suppressions"` // in force now
	Changes      []changeJSON      `json:"changes"`      // newest first
}

// recipientHistory answers an address's suppression audit trail (every
// add, import, removal and policy decision, newest first, ?limit=1..1000,
// default 100) and its suppressions in force. The address is keyed as the
// policy keys it.
func (s *server) recipientHistory(w http.ResponseWriter, r *http.Request) {
	addr, err := s.suppressionAddress(r.PathValue("address"))
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	q, ok := s.query(w, r)
	if !ok {
		return
	}
	limit := defaultHistoryLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxHistoryLimit {
			s.writeError(w, r, http.StatusBadRequest, fmt.Sprintf("limit must be a number from 1 to %d", maxHistoryLimit))
			return
		}
		limit = n
	}
	rows, err := s.store.AddressSuppressions(r.Context(), addr, time.Now().UTC())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	changes, err := s.store.SuppressionHistory(r.Context(), addr, limit)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	resp := historyResponse{Address: addr, Suppressions: suppressionsToJSON(rows), Changes: make([]changeJSON, len(changes))}
	for i, c := range changes {
		resp.Changes[i] = changeJSON{
			Time: c.Time.UTC(), Address: c.Address, Stream: c.Stream, Action: c.Action, Source: c.Source,
			Actor: c.Actor, Note: c.Note, Class: c.Class, Reason: c.Reason, Rule: c.Rule,
		}
	}
	s.writeJSON(w, r, http.StatusOK, resp)
}

// --- GET /v1/suppressions:stats ------------------------------------------

type suppressionStatsResponse struct {
	Total    int64            `json:"total"`
	BySource map[string]int64 `json:"by_source"` // every source, zeros too
	ByClass  map[string]int64 `json:"by_class"`  // every class and "" (none), zeros too
	ByStream map[string]int64 `json:"by_stream"` // streams holding any; "" is the global scope
}

// suppressionStats counts the suppressions in force now.
func (s *server) suppressionStats(w http.ResponseWriter, r *http.Request) {
	st, err := s.store.SuppressionStats(r.Context(), time.Now().UTC())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	resp := suppressionStatsResponse{
		Total:    st.Total,
		BySource: make(map[string]int64, len(store.SuppressionSources)),
		ByClass:  map[string]int64{"": st.ByClass[""]},
		ByStream: make(map[string]int64, len(st.ByStream)),
	}
	for _, src := range store.SuppressionSources {
		resp.BySource[src] = st.BySource[src]
	}
	for _, c := range event.Classes {
		resp.ByClass[string(c)] = st.ByClass[c]
	}
	for stream, n := range st.ByStream {
		resp.ByStream[stream] = n
	}
	s.writeJSON(w, r, http.StatusOK, resp)
}
