package api_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/store"
)

// chromium returns the path of a Chromium binary, "" when there is none.
func chromium() string {
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// lockedBuffer collects the browser's output from its process's pipes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// headless starts a headless Chromium with a fresh profile, as PEERS.md
// says it runs here (as root too), and returns a tab's context.
func headless(t *testing.T) context.Context {
	t.Helper()
	bin := chromium()
	if bin == "" {
		t.Skip("no chromium binary found (/usr/bin/chromium, chromium, chromium-browser, google-chrome): the browser test needs one; .ci/run installs it")
	}
	out := &lockedBuffer{}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.CombinedOutput(out),
	}
	// Generous: two CPUs shared with other work; nothing here is timed.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	tctx, tcancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		chromedp.Cancel(tctx) // closes the browser and waits for it
		tcancel()
		acancel()
		cancel()
		if t.Failed() {
			t.Logf("chromium's output:\n%s", out.String())
		}
	})
	if err := chromedp.Do(tctx); err != nil {
		t.Fatalf("starting %s: %v\n%s", bin, err, out.String())
	}
	return tctx
}

// TestBrowser clicks through the pages in a real headless Chromium, with
// tokens configured, so it logs in through the form first.
func TestBrowser(t *testing.T) {
	e := startWeb(t, []string{webReadToken}, []string{webAdminToken})
	seeded := seedWeb(t, e.store)
	ctx := headless(t)

	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// load runs steps that navigate and checks the page that loaded.
	load := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		resp, err := chromedp.RunResponse(ctx, steps...)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if resp.Status != 200 {
			t.Fatalf("%s: HTTP %d (%s)", what, resp.Status, resp.URL)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	count := func(sel string) int {
		t.Helper()
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll(`+strconv.Quote(sel)+`).length`))
		if err != nil {
			t.Fatalf("counting %s: %v", sel, err)
		}
		return n
	}

	// 1. The start page sends the browser to the login form; the admin
	// token gets it in and back.
	load("opening /", chromedp.Navigate(e.srv.URL+"/"))
	do("typing the token", chromedp.SendKeys(chromedp.ID("token"), webAdminToken))
	load("logging in", chromedp.Click(chromedp.ID("login")))

	// 2. The 24-hour summary counts what was seeded in the window.
	if got, want := text("#reports-received"), strconv.FormatInt(seeded.reportsInWindow, 10); got != want {
		t.Errorf("reports received = %s, want %s", got, want)
	}
	for _, c := range event.Classes {
		if got, want := text("#class-"+c.String()), strconv.FormatInt(seeded.classInWindow[c], 10); got != want {
			t.Errorf("%s events = %s, want %s", c, got, want)
		}
	}
	// By provider and class: the seeded events of the window.
	for sel, want := range map[string]string{
		"#provider-gmail-hard": "1", "#provider-gmail-delivered": "1", "#provider-gmail-soft": "0",
		"#provider-outlook-soft": "1", "#provider-yahoo-greylist": "1", "#provider-yahoo-complaint": "1",
	} {
		if got := text(sel); got != want {
			t.Errorf("%s = %s, want %s", sel, got, want)
		}
	}
	if got, want := text("#suppressed-total"), strconv.Itoa(seeded.inForce); got != want {
		t.Errorf("suppressions in force = %s, want %s", got, want)
	}
	if got := text("#source-import"); got != "55" {
		t.Errorf("imported suppressions = %s, want 55", got)
	}

	// 3. Look up an address: its suppressions and its events.
	do("typing an address", chromedp.SendKeys(chromedp.ID("lookup"), "Alice@Example.com"))
	load("looking it up", chromedp.Click(chromedp.ID("lookup-go")))
	if got := text("#address"); got != "alice@example.com" {
		t.Errorf("address heading = %q", got)
	}
	sup := text("#suppressions")
	for _, want := range []string{"Suppressed", "news", "every stream (global)", "policy (hard rule)", "hard / userunknown", "asked us to stop"} {
		if !strings.Contains(sup, want) {
			t.Errorf("the suppression section lacks %q:\n%s", want, sup)
		}
	}
	evs := text("#events")
	for _, want := range []string{"550-5.1.1 The email account that you tried to reach does not exist", "an old bounce outside the window", "gmail", "userunknown"} {
		if !strings.Contains(evs, want) {
			t.Errorf("the events section lacks %q:\n%s", want, evs)
		}
	}
	if n := count("#events tbody tr"); n != 2 {
		t.Errorf("alice's events: %d rows, want 2", n)
	}
	if got := text("#outcomes tbody"); !strings.Contains(got, "bounced") || !strings.Contains(got, "<web-report-0@example.com>") {
		t.Errorf("the outcomes section shows %q; want the bounced message", got)
	}

	// 4. Browse: two pages of suppressions, by cursor.
	load("opening the list", chromedp.Click(chromedp.CSS(`nav a[href="/ui/suppressions"]`)))
	first := text("#list")
	if n := count("#list tbody tr"); n != 50 {
		t.Errorf("first page: %d rows, want 50", n)
	}
	for _, want := range []string{"alice@example.com", "bob@example.net", seeded.bulk[0]} {
		if !strings.Contains(first, want) {
			t.Errorf("the first page lacks %s", want)
		}
	}
	if strings.Contains(first, "ended@example.com") {
		t.Errorf("the list shows a suppression that has ended")
	}
	load("next page", chromedp.Click(chromedp.ID("next")))
	second := text("#list")
	if n := count("#list tbody tr"); n != seeded.inForce-50 {
		t.Errorf("second page: %d rows, want %d", n, seeded.inForce-50)
	}
	if last := seeded.bulk[len(seeded.bulk)-1]; !strings.Contains(second, last) || strings.Contains(second, "alice@example.com") {
		t.Errorf("the second page does not go on where the first stopped:\n%s", second)
	}
	if n := count("#next"); n != 0 {
		t.Errorf("the last page links to a next one")
	}

	// Filter by stream: "news" and the global ones.
	do("typing a stream", chromedp.SendKeys(chromedp.ID("stream"), "news"))
	load("filtering", chromedp.Click(chromedp.ID("filter")))
	if n := count("#list tbody tr"); n != 3 { // alice news, alice global, bob news
		t.Errorf("stream news: %d rows, want 3:\n%s", n, text("#list"))
	}

	// 5. Export the whole list as CSV: the browser downloads it.
	load("every stream again", chromedp.Click(chromedp.CSS(`form.filter a`)))
	dir := t.TempDir()
	progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: new(true),
	}); err != nil {
		t.Fatalf("allowing downloads: %v", err)
	}
	do("clicking export", chromedp.Click(chromedp.ID("export")))
	var file string
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("waiting for the download: %v", err)
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatalf("the download was canceled")
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			file = filepath.Join(dir, ev.GUID)
			break
		}
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("reading the download: %v", err)
	}
	records, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if err != nil || len(records) == 0 || records[0][0] != "address" || records[0][1] != "stream" {
		t.Fatalf("the export is not CSV with a header line (%v):\n%s", err, raw)
	}
	var exported []string
	for _, r := range records[1:] {
		exported = append(exported, r[0]+"/"+r[1])
	}
	want := []string{"alice@example.com/", "alice@example.com/news", "bob@example.net/news"}
	for _, a := range seeded.bulk {
		want = append(want, a+"/promo")
	}
	slices.Sort(want)
	slices.Sort(exported)
	if !slices.Equal(exported, want) {
		t.Errorf("exported address/stream = %v\nwant %v", exported, want)
	}

	// 6. Remove alice's "news" suppression with a reason.
	load("opening alice", chromedp.Navigate(e.srv.URL+"/ui/address?address=alice@example.com"))
	const reason = "she wrote in: the mailbox works again"
	form := `form.remove[data-stream="news"]`
	do("typing the reason", chromedp.SendKeys(chromedp.CSS(form+` input[name="reason"]`), reason))
	load("removing", chromedp.Click(chromedp.CSS(form+` button`)))
	if got := text("#removed"); !strings.Contains(got, "news") {
		t.Errorf("after the removal the page says %q", got)
	}
	if n := count(`tr.suppression[data-stream="news"]`); n != 0 {
		t.Errorf("the news suppression is still shown")
	}
	if n := count(`tr.suppression[data-stream=""]`); n != 1 {
		t.Errorf("the global suppression is no longer shown")
	}
	newest := text("#history tbody tr:first-child")
	for _, want := range []string{"removed", "news", reason, "token:"} {
		if !strings.Contains(newest, want) {
			t.Errorf("the newest history line lacks %q: %s", want, newest)
		}
	}
	rows, err := e.store.AddressSuppressions(context.Background(), "alice@example.com", time.Now())
	if err != nil || len(rows) != 1 || rows[0].Stream != "" {
		t.Errorf("the store holds %+v, %v; want alice's global suppression only", rows, err)
	}
	hist, err := e.store.SuppressionHistory(context.Background(), "alice@example.com", 1)
	if err != nil || len(hist) != 1 || hist[0].Action != store.ActionRemove || hist[0].Stream != "news" || hist[0].Note != reason {
		t.Errorf("the store's latest change is %+v, %v; want the removal with its reason", hist, err)
	}

	// The summary follows.
	load("back to the start", chromedp.Click(chromedp.CSS(`nav a.brand`)))
	if got, want := text("#suppressed-total"), strconv.Itoa(seeded.inForce-1); got != want {
		t.Errorf("suppressions in force after the removal = %s, want %s", got, want)
	}
}
