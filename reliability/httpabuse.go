package reliability

// http-abuse: the running all-in-one's HTTP API (api/, DESIGN.md "HTTP
// API") under abusive requests while the SMTP load runs: out-of-range
// limits and cursors, many concurrent CSV exports, exports read a byte a
// second, bad and overlong tokens, path tricks, oversize imports and many
// concurrent checks. Every refused request must get a clear 4xx (or 503
// with Retry-After when busy), the suppression list must not change, the
// process must stay within an RSS bound and answer a normal check after.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func init() {
	Scenarios = append(Scenarios, Scenario{"http-abuse", "abusive requests to the HTTP API of the running all-in-one under SMTP load: huge limits, bad cursors, concurrent and slow-read CSV exports, bad tokens, path tricks, oversize imports, concurrent checks", runHTTPAbuse})
}

// httpRSSBound is the resident set the all-in-one may reach under the
// HTTP abuse, in KiB.
const httpRSSBound = 1 << 20 // 1 GiB

const (
	abuseReadToken  = "read-token-for-the-abuse-scenario"
	abuseAdminToken = "admin-token-for-the-abuse-scenario"
	abuseDomain     = "abuse.example" // the imported suppressions' domain
)

// httpAbuse is one run's client and tallies.
type httpAbuse struct {
	base   string
	client *http.Client
	codes  map[string]*tally // by step: "HTTP 400" and the like
	mu     sync.Mutex
	order  []string
}

func (h *httpAbuse) count(step string, code string) {
	h.mu.Lock()
	t, ok := h.codes[step]
	if !ok {
		t = newTally()
		h.codes[step] = t
		h.order = append(h.order, step)
	}
	h.mu.Unlock()
	t.add(code)
}

// do sends one request with tok (none when empty) and returns the status
// and body (the first 64 KiB), counting the status under step.
func (h *httpAbuse) do(ctx context.Context, step, method, path, tok string, body io.Reader, hdr http.Header) (int, []byte, http.Header) {
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, body)
	if err != nil {
		// The URL itself: bypass url parsing with Opaque.
		req, err = http.NewRequestWithContext(ctx, method, h.base+"/", body)
		if err != nil {
			h.count(step, "client error")
			return 0, nil, nil
		}
		req.URL.Opaque = path
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.count(step, "transport error")
		return 0, nil, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	io.Copy(io.Discard, resp.Body)
	h.count(step, fmt.Sprintf("HTTP %d", resp.StatusCode))
	return resp.StatusCode, b, resp.Header
}

// suppressionDigest exports the list with a normal request and returns
// the number of rows of abuseDomain and a digest of them: the load's own
// suppressions (its recipients at dest.example) change as it runs.
func (h *httpAbuse) suppressionDigest(ctx context.Context) (int, string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.base+"/v1/suppressions?format=csv", nil)
	req.Header.Set("Authorization", "Bearer "+abuseReadToken)
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("export: HTTP %d", resp.StatusCode)
	}
	var rows []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "@"+abuseDomain) {
			rows = append(rows, sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		return 0, "", err
	}
	sort.Strings(rows)
	sum := sha256.Sum256([]byte(strings.Join(rows, "\n")))
	return len(rows), hex.EncodeToString(sum[:8]), nil
}

func runHTTPAbuse(ctx context.Context, e *Env, c Config) (Result, error) {
	// The sizes: CI's short form keeps the heavy parts small.
	// Slow readers are held past the export's write window
	// (api.exportWriteWindow, a minute) in the runner's size, to see
	// whether the server lets go of them.
	// CI's concurrent imports are smaller (16 MiB): building and sending
	// 60 MiB bodies took most of a minute on a loaded host.
	exports, slow, imports, checkers, suppressions, slowHold, importMiB := 50, 20, 8, 200, 20000, 75*time.Second, 60
	if c.Attack < 10000 { // ShortConfig
		exports, slow, imports, checkers, suppressions, slowHold, importMiB = 10, 5, 3, 50, 3000, c.Fault, 16
	}
	r := Result{Scenario: "http-abuse", Injected: fmt.Sprintf("HTTP API abuse under SMTP load: out-of-range limits and cursors, %d concurrent CSV exports of %d suppressions, %d exports read a byte a second, bad and overlong tokens, path tricks, %d concurrent %d MiB imports and a 65 MiB one, %d concurrent checkers",
		exports, suppressions, slow, imports, importMiB, checkers)}
	dir, err := e.subdir("http-abuse")
	if err != nil {
		return r, err
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("read "+abuseReadToken+"\nadmin "+abuseAdminToken+"\n"), 0o600); err != nil {
		return r, err
	}
	b, err := e.NewBouncer("http-abuse-bouncer", filepath.Join(dir, "data"), BouncerOptions{Args: []string{"--api-tokens-file", tokens}})
	if err != nil {
		return r, err
	}
	if err := b.Start(); err != nil {
		return r, err
	}
	defer b.Kill()
	h := &httpAbuse{base: "http://" + b.HTTPAddr, codes: map[string]*tally{},
		client: &http.Client{Timeout: 10 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 300}}}
	// The list the exports read: a valid import.
	var csv bytes.Buffer
	csv.WriteString("address,reason\n")
	for i := range suppressions {
		fmt.Fprintf(&csv, "user%d@%s,userunknown\n", i, abuseDomain)
	}
	if code, body, _ := h.do(ctx, "setup: import", http.MethodPost, "/v1/suppressions:import?note=abuse+scenario", abuseAdminToken, bytes.NewReader(csv.Bytes()), nil); code != http.StatusOK {
		return r, fmt.Errorf("http-abuse: the setup import got HTTP %d: %s", code, body)
	}
	nBefore, digestBefore, err := h.suppressionDigest(ctx)
	if err != nil {
		return r, err
	}
	if nBefore != suppressions {
		return r, fmt.Errorf("http-abuse: %d suppressions of %s after importing %d", nBefore, abuseDomain, suppressions)
	}
	rssBefore := vmRSS(b.Pid())
	rss := watchRSS(b.Pid())
	run := newRun()
	load := c.startLoad(b.SMTPAddr, run)
	var abuseErr error
	var slowRead atomic.Int64
	var checkLat []time.Duration
	var afterCheck time.Duration
	inject := func() error {
		abuseErr = h.abuse(ctx, exports, slow, imports, importMiB, checkers, suppressions, slowHold, &slowRead, &checkLat)
		return nil
	}
	recover := func() error {
		t0 := time.Now()
		code, _, _ := h.do(ctx, "after: a normal check", http.MethodGet, "/v1/suppressions/user1@"+abuseDomain, abuseReadToken, nil, nil)
		afterCheck = time.Since(t0)
		if code != http.StatusOK {
			return fmt.Errorf("http-abuse: a normal check after the abuse got HTTP %d", code)
		}
		if !b.Running() {
			return errors.New("bouncer died under the abuse: " + lastLines(b.LogPath, 3))
		}
		return nil
	}
	if err := drive(ctx, e, c, &r, load, fault{"the abuse", inject, recover}); err != nil {
		return r, errors.Join(abuseErr, err)
	}
	peak := rss.stop()
	nAfter, digestAfter, derr := h.suppressionDigest(ctx)
	sort.Slice(checkLat, func(i, j int) bool { return checkLat[i] < checkLat[j] })
	for _, step := range h.order {
		r.Notes = append(r.Notes, step+": "+h.codes[step].String())
	}
	r.Notes = append(r.Notes,
		fmt.Sprintf("slow readers read %d bytes in all", slowRead.Load()),
		fmt.Sprintf("concurrent checks: %d, p50 %s, p99 %s, max %s", len(checkLat), percentile(checkLat, 0.5).Round(time.Millisecond), percentile(checkLat, 0.99).Round(time.Millisecond), percentile(checkLat, 1).Round(time.Millisecond)),
		fmt.Sprintf("a normal check after the abuse: 200 in %s", afterCheck.Round(time.Millisecond)),
		fmt.Sprintf("suppressions of %s: %d (digest %s) before, %d (digest %s) after", abuseDomain, nBefore, digestBefore, nAfter, digestAfter),
		fmt.Sprintf("RSS %d MiB before, peak %d MiB (bound %d MiB)", rssBefore>>10, peak>>10, httpRSSBound>>10))
	errs := []error{abuseErr, derr}
	if derr == nil && (nAfter != nBefore || digestAfter != digestBefore) {
		errs = append(errs, fmt.Errorf("http-abuse: the suppressions of %s changed: %d rows (%s) before, %d (%s) after", abuseDomain, nBefore, digestBefore, nAfter, digestAfter))
	}
	if peak > httpRSSBound {
		errs = append(errs, fmt.Errorf("http-abuse: RSS peaked at %d MiB, over %d MiB", peak>>10, httpRSSBound>>10))
	}
	drainErr := check(ctx, c, &r, b, b.NATSURL, load, sqliteReader(b.DataDir, run), nil)
	errs = append(errs, drainErr)
	// check's comparison of reports_received asks without a token; ask
	// with one. The store is fresh: every report in it is the load's.
	var st struct {
		ReportsReceived int64 `json:"reports_received"`
	}
	if code, body, _ := h.do(ctx, "after: GET /v1/stats", http.MethodGet, "/v1/stats?window=24h", abuseReadToken, nil, nil); code != http.StatusOK {
		errs = append(errs, fmt.Errorf("http-abuse: GET /v1/stats: HTTP %d", code))
	} else if err := json.Unmarshal(body, &st); err != nil {
		errs = append(errs, fmt.Errorf("http-abuse: GET /v1/stats: %v", err))
	} else if drainErr == nil && st.ReportsReceived != int64(r.Stored) {
		errs = append(errs, fmt.Errorf("http-abuse: the API's reports_received is %d, the store holds %d reports", st.ReportsReceived, r.Stored))
	}
	return r, errors.Join(append(errs, b.Stop())...)
}

// abuse runs every abusive step and returns what got a wrong answer.
func (h *httpAbuse) abuse(ctx context.Context, exports, slow, imports, importMiB, checkers, suppressions int, slowHold time.Duration, slowRead *atomic.Int64, checkLat *[]time.Duration) error {
	var errs []error
	want := func(step string, code int, ok ...int) {
		for _, o := range ok {
			if code == o {
				return
			}
		}
		errs = append(errs, fmt.Errorf("http-abuse: %s: HTTP %d, want one of %v", step, code, ok))
	}
	// Limits and cursors.
	for _, q := range []string{"limit=1000000000", "limit=-1", "limit=0", "limit=99999999999999999999999", "limit=abc", "limit=10001"} {
		code, _, _ := h.do(ctx, "huge or bad limit", http.MethodGet, "/v1/suppressions?"+q, abuseReadToken, nil, nil)
		want("?"+q, code, 400)
	}
	deep := base64.RawURLEncoding.EncodeToString([]byte(`["~~~~~~~~@zzzzzzzz.example",""]`))
	code, body, _ := h.do(ctx, "cursor past the end", http.MethodGet, "/v1/suppressions?limit=10&cursor="+deep, abuseReadToken, nil, nil)
	want("cursor past the end", code, 200)
	if code == 200 && bytes.Contains(body, []byte("@")) {
		errs = append(errs, fmt.Errorf("http-abuse: a cursor past the end listed rows: %.200s", body))
	}
	for _, cur := range []string{"not-base64!!", base64.RawURLEncoding.EncodeToString([]byte(`["a"`)), base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte("A"), 100<<10))} {
		code, _, _ := h.do(ctx, "bad or 100 KiB cursor", http.MethodGet, "/v1/suppressions?limit=10&cursor="+cur, abuseReadToken, nil, nil)
		want("bad cursor", code, 400)
	}
	// Tokens.
	for _, tc := range []struct {
		tok  string
		want []int
	}{
		{"", []int{401}},
		{"wrong", []int{403}},
		{strings.Repeat("x", 100<<10), []int{403}},
		{strings.Repeat("x", 2<<20), []int{431}},
		{abuseReadToken + "\u00e9", []int{403}},
	} {
		code, _, _ := h.do(ctx, "bad or overlong token", http.MethodGet, "/v1/suppressions/user1@"+abuseDomain, tc.tok, nil, nil)
		want(fmt.Sprintf("token of %d bytes", len(tc.tok)), code, tc.want...)
	}
	code, _, _ = h.do(ctx, "read token on a write", http.MethodPut, "/v1/suppressions/new@"+abuseDomain, abuseReadToken, strings.NewReader(`{}`), nil)
	want("PUT with a read token", code, 403)
	// Paths: reads and writes with the admin token; none may change the
	// list.
	long := strings.Repeat("a", 10<<10) + "@" + abuseDomain
	for _, p := range []string{"..%2f..", "..%2F..%2Fadmin", "%2e%2e%2f%2e%2e", "user1%00@" + abuseDomain, "user1@" + abuseDomain + "%00", long, "a@b%2f..%2f..%2fetc", "%ff%fe@" + abuseDomain, "user1@" + abuseDomain + "%0d%0aX-Injected:%201"} {
		code, _, _ := h.do(ctx, "path tricks: GET", http.MethodGet, "/v1/suppressions/"+p, abuseReadToken, nil, nil)
		want("GET /v1/suppressions/"+shortPath(p), code, 400, 404, 301)
		code, _, _ = h.do(ctx, "path tricks: PUT", http.MethodPut, "/v1/suppressions/"+p, abuseAdminToken, strings.NewReader(`{"reason":"x"}`), nil)
		want("PUT /v1/suppressions/"+shortPath(p), code, 400, 404, 301, 405)
		code, _, _ = h.do(ctx, "path tricks: DELETE", http.MethodDelete, "/v1/suppressions/"+p, abuseAdminToken, nil, nil)
		want("DELETE /v1/suppressions/"+shortPath(p), code, 400, 404, 301, 405)
	}
	// Oversize imports: one over the limit, and several large ones at
	// once (just under it in the runner's size) whose last line is bad,
	// so nothing is written.
	big := bytes.Repeat([]byte("x"), 65<<20)
	code, _, _ = h.do(ctx, "import over 64 MiB", http.MethodPost, "/v1/suppressions:import?note=abuse+scenario", abuseAdminToken, bytes.NewReader(append([]byte("address\n"), big...)), nil)
	want("65 MiB import", code, 413)
	var nearly bytes.Buffer
	nearly.WriteString("address\n")
	for i := 0; nearly.Len() < importMiB<<20; i++ {
		fmt.Fprintf(&nearly, "bulk%d@%s\n", i, abuseDomain)
	}
	nearly.WriteString("not an address\n")
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range imports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, hdr := h.do(ctx, "concurrent large imports with a bad last line", http.MethodPost, "/v1/suppressions:import?note=abuse+scenario", abuseAdminToken, bytes.NewReader(nearly.Bytes()), nil)
			mu.Lock()
			defer mu.Unlock()
			if code == 503 && hdr.Get("Retry-After") == "" {
				errs = append(errs, errors.New("http-abuse: a 503 to an import without Retry-After"))
			}
			want("concurrent import with a bad line", code, 400, 503)
		}()
	}
	wg.Wait()
	// Exports: some read a byte a second, for slowHold, while many read
	// at full speed and checks run.
	sctx, stopSlow := context.WithTimeout(ctx, slowHold)
	var swg sync.WaitGroup
	for range slow {
		swg.Add(1)
		go func() {
			defer swg.Done()
			h.slowExport(sctx, slowRead)
		}()
	}
	for range exports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, code, err := h.fullExport(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || code != 200 && code != 503 || code == 200 && n < suppressions {
				errs = append(errs, fmt.Errorf("http-abuse: a concurrent export: HTTP %d, %d rows, %v", code, n, err))
			}
		}()
	}
	for i := range checkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				t0 := time.Now()
				code, _, hdr := h.do(ctx, "concurrent checks", http.MethodGet, fmt.Sprintf("/v1/suppressions/user%d@%s", (i*20+j)%suppressions, abuseDomain), abuseReadToken, nil, nil)
				mu.Lock()
				*checkLat = append(*checkLat, time.Since(t0))
				if code == 503 && hdr.Get("Retry-After") == "" {
					errs = append(errs, errors.New("http-abuse: a 503 to a check without Retry-After"))
				}
				if code != 200 && code != 503 {
					errs = append(errs, fmt.Errorf("http-abuse: a check got HTTP %d", code))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	swg.Wait()
	stopSlow()
	return errors.Join(errs...)
}

func shortPath(p string) string {
	if len(p) > 40 {
		return fmt.Sprintf("%s... (%d bytes)", p[:20], len(p))
	}
	return p
}

// fullExport reads a whole CSV export and counts its rows of abuseDomain.
func (h *httpAbuse) fullExport(ctx context.Context) (int, int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.base+"/v1/suppressions?format=csv", nil)
	req.Header.Set("Authorization", "Bearer "+abuseReadToken)
	resp, err := h.client.Do(req)
	if err != nil {
		h.count("concurrent CSV exports", "transport error")
		return 0, 0, err
	}
	defer resp.Body.Close()
	h.count("concurrent CSV exports", fmt.Sprintf("HTTP %d", resp.StatusCode))
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "@"+abuseDomain) {
			n++
		}
	}
	return n, resp.StatusCode, sc.Err()
}

// slowExport asks for the CSV export over a raw connection with a small
// receive buffer and reads it a byte a second until ctx ends.
func (h *httpAbuse) slowExport(ctx context.Context, read *atomic.Int64) {
	d := net.Dialer{Control: nil}
	conn, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(h.base, "http://"))
	if err != nil {
		h.count("CSV exports read a byte a second", "dial error")
		return
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetReadBuffer(4096)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	fmt.Fprintf(conn, "GET /v1/suppressions?format=csv HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", strings.TrimPrefix(h.base, "http://"), abuseReadToken)
	buf := make([]byte, 1)
	var status []byte
	for ctx.Err() == nil {
		n, err := conn.Read(buf)
		if n > 0 {
			read.Add(1)
			if len(status) < 12 {
				status = append(status, buf[0])
				if len(status) == 12 {
					h.count("CSV exports read a byte a second", string(status))
				}
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				h.count("CSV exports read a byte a second: ended by the server", "closed")
			}
			return
		}
		sleep(ctx, time.Second)
	}
}
