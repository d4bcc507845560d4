package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/hub/hubtest"
	"github.com/retrainhq/orchestrator/orchestrator/service"
)

const (
	browserAdminToken = "browser-token"
	// hostileRef is a branch name that is also HTML: the pages must show it as text.
	hostileRef = `refs/heads/"><img src=x onerror=alert(1)>`
	// hostileOutput is what the flaky command prints before it fails: the run page must show it as text.
	hostileOutput = "<script>alert(1)</script>"
)

// TestBrowser drives the pages in a real headless Chromium against the whole orchestrator started in-process:
// the dashboard, a failed run whose ref and output are hostile HTML, the links to log in that stand for Retry,
// Cancel and New mapping while logged out and lead back to them, the retry followed live to success, the
// cancel of a long run, a notify target registered and edited in the mapping form, paths typed into it, and the changed files of runs on a stand-in Hub: a card-only commit
// followed live to skipped, a data commit's table of changes, and the delivery and runs list that say so. Set
// UPDATE_SCREENSHOTS=1 to also write the screenshots to docs/.
func TestBrowser(t *testing.T) {
	t.Parallel()
	shardsScript := `if [ -z "$DATASET_CHANGED_FILES" ]; then echo "training on every file"; exit; fi; ` +
		`echo "training on $(wc -l < "$DATASET_CHANGED_FILES") new or changed files:"; cat "$DATASET_CHANGED_FILES"`
	shardsCommand := []string{"sh", "-c", shardsScript, "it's shards"} // the last is the script's $0
	chrome := findChromium(t)

	dir := t.TempDir()
	sleepMark := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	// flaky fails with hostile output on its first run and succeeds on the next; long runs until cancelled, and
	// its process is found by the mark in its environment.
	flakyScript := `if [ -e "$MARKER" ]; then echo ok; else touch "$MARKER"; echo '` + hostileOutput + `'; exit 2; fi`
	cfgPath := writeConfig(t, dir, `
mappings:
  - name: flaky
    dataset: acme/x
    refs: ["refs/heads/*"]
    command: `+yamlValue(t, []string{"sh", "-c", flakyScript})+`
    env: `+yamlValue(t, map[string]string{"MARKER": filepath.Join(dir, "ran-once")})+`
    max_attempts: 1
  - name: long
    dataset: acme/long
    command: ["sleep", "600"]
    env: `+yamlValue(t, map[string]string{"BROWSER_TEST_SLEEP": sleepMark})+`
    max_attempts: 1
  - name: shards
    dataset: acme/shards
    command: `+yamlValue(t, shardsCommand)+`
    paths: ["data/**"]
    ignore_paths: ["**/*.md"]
    on_new_revision: queue
    max_attempts: 1
`)
	// The stand-in Hub serves acme/shards; acme/x and acme/long are unknown to it, so their runs go ahead
	// without knowing what changed.
	shards := hubtest.NewRepo(t, "acme/shards")
	hubSrv := hubtest.NewServer(t, shards)
	dbURL, _ := dbtest.NewSchema(t)
	svc := startService(t, service.Config{Addr: "127.0.0.1:0", ConfigPath: cfgPath, DatabaseURL: dbURL, WebhookSecret: e2eSecret,
		AdminToken: browserAdminToken, MaxBodyBytes: 1 << 20, MaxWorkers: 4, KillGrace: time.Second, Logger: errorLogger(),
		HFEndpoint: hubSrv.URL, ChangedFiles: service.ChangedFilesAll, FilesTimeout: 20 * time.Second})
	base := "http://" + svc.Addr()

	// The first commit of acme/shards: a new ref, every file added, so it trains.
	shards.Write("README.md", "# shards")
	shards.Write(".gitattributes", "*.parquet filter=lfs diff=lfs merge=lfs -text")
	shards.Write("data/labels.csv", "id,label\n1,spam\n")
	shards.Write("data/stale.csv", "id\n0\n")
	shards.WriteLFS("data/train-00000.parquet", strings.Repeat("r", 2<<20))
	firstShard := shards.Commit(t, "first shards")
	firstID := onlyRun(t, base, pushOf("acme/shards", "refs/heads/main", "", firstShard))
	run := waitRun(t, base, firstID, "succeeded", "failed", "skipped")
	require.Equal(t, "succeeded", run.Status, run.Error)

	// The deliveries: a failing command on a hostile branch name, and a long one.
	matched, err := path.Match("refs/heads/*", hostileRef)
	require.NoError(t, err)
	require.True(t, matched, "the mapping watches the hostile ref")
	failedID := deliveredRun(t, postDelivery(t, base, refDelivery(t, "acme/x", hostileRef, strings.Repeat("a", 40))))
	longID := deliveredRun(t, postDelivery(t, base, refDelivery(t, "acme/long", "refs/heads/main", strings.Repeat("b", 40))))
	failed := waitRun(t, base, failedID, "failed")
	require.Contains(t, failed.Log, hostileOutput)

	ctx, dialogs, consoleErrors := startBrowser(t, chrome)
	noDialog := func() {
		t.Helper()
		require.Empty(t, dialogs(), "a JavaScript dialog opened: page content ran as script")
	}

	// A card-only commit, watched live: the Hub answers its listing late (429, retry after 3 s), so the run
	// page opens while the run waits on its check, and reloads by itself when the run is skipped.
	shards.Write("README.md", "# shards, with a better card")
	card := shards.Commit(t, "card")
	hubSrv.Fail(hubtest.Fault{Path: "/tree/" + card, Status: http.StatusTooManyRequests, RetryAfter: "3", Times: 1})
	skippedID := onlyRun(t, base, pushOf("acme/shards", "refs/heads/main", firstShard, card))
	browse(t, ctx, chromedp.Navigate(fmt.Sprintf("%s/runs/%d", base, skippedID)))
	require.Equal(t, "queued", text(t, ctx, "#run .status"), "the run was decided before its page opened")
	require.Zero(t, count(t, ctx, "#run-files"), "the page opened after the check")
	waitStatus(t, ctx, "skipped")
	require.Equal(t, "1 file changed: 0 added, 1 modified, 0 removed — no watched file changed (README.md).",
		text(t, ctx, "#run-files > p"), "the page reloaded when the run was skipped")
	// A data commit, which trains and tells its command what changed; then one the Hub does not know.
	shards.Write("README.md", "# shards, with a second training shard")
	shards.Write("data/labels.csv", "id,label\n1,spam\n2,ham\n3,spam\n")
	shards.Remove("data/stale.csv")
	shards.WriteLFS("data/train-00001.parquet", strings.Repeat("s", 3<<20))
	data := shards.Commit(t, "a new shard")
	dataID := onlyRun(t, base, pushOf("acme/shards", "refs/heads/main", card, data))
	unknownID := onlyRun(t, base, pushOf("acme/shards", "refs/heads/main", data, strings.Repeat("d", 40)))
	for _, id := range []int64{dataID, unknownID} {
		run := waitRun(t, base, id, "succeeded", "failed", "skipped")
		require.Equal(t, "succeeded", run.Status, run.Error)
	}

	// The dashboard: a row per mapping, statuses as words.
	browse(t, ctx, chromedp.Navigate(base+"/"))
	require.Equal(t, "flaky", text(t, ctx, `#mappings tr[data-mapping="flaky"] td:first-child`))
	require.Equal(t, "acme/x", text(t, ctx, `#mappings tr[data-mapping="flaky"] td:nth-child(2)`))
	require.Equal(t, "failed", text(t, ctx, `#mappings tr[data-mapping="flaky"] td.latest`))
	require.Equal(t, "long", text(t, ctx, `#mappings tr[data-mapping="long"] td:first-child`))
	require.Contains(t, []string{"queued", "running"}, text(t, ctx, `#mappings tr[data-mapping="long"] td.latest`))
	require.Zero(t, count(t, ctx, "main img"), "the hostile ref became an element")
	require.Equal(t, []string{"succeeded", "succeeded", "skipped", "succeeded"},
		texts(t, ctx, `#mappings tr[data-mapping="shards"] ol.strip a`), "the history, newest first")
	glyph, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`getComputedStyle(document.querySelector('#mappings tr[data-mapping="shards"] ol.strip a.status-skipped'), "::before").content`))
	require.NoError(t, err)
	require.Equal(t, `"○"`, glyph, "a skipped run has its own mark in the history")
	saveScreenshot(t, ctx, "dashboard.png")
	noDialog()

	// The failed run: hostile output and ref shown as text.
	loc := clickAndLoad(t, ctx, `#mappings tr[data-mapping="flaky"] td.latest a`)
	require.Equal(t, fmt.Sprintf("%s/runs/%d", base, failedID), loc)
	require.Equal(t, "failed", text(t, ctx, "#run .status"))
	require.Contains(t, text(t, ctx, "#log"), hostileOutput)
	require.Zero(t, count(t, ctx, "#log script"), "the output became a script element")
	require.Contains(t, text(t, ctx, "main"), hostileRef)
	require.Zero(t, count(t, ctx, "main img"), "the ref became an img element")
	require.Regexp(t, `^Could not tell which files changed: .*404`, text(t, ctx, "#run-files"), "acme/x is unknown to the Hub")
	noDialog()

	// Without a session the run offers no Retry, but a link to log in; the login leads back to the run, where
	// one click retries it.
	require.Zero(t, count(t, ctx, "#retry"), "a logged-out browser is offered a button that would ask for the login")
	require.Equal(t, "Log in to retry", text(t, ctx, "#retry-login"))
	loc = logInThrough(t, ctx, "#retry-login", fmt.Sprintf("/runs/%d", failedID))
	require.Equal(t, fmt.Sprintf("%s/runs/%d", base, failedID), loc, "the login leads back to the run")
	loc = clickAndLoad(t, ctx, "#retry")
	match := regexp.MustCompile(`^` + regexp.QuoteMeta(base) + `/runs/(\d+)$`).FindStringSubmatch(loc)
	require.NotNil(t, match, "the retry leads to the new run's page, not %s", loc)
	retryID, err := strconv.ParseInt(match[1], 10, 64)
	require.NoError(t, err)
	require.NotEqual(t, failedID, retryID)
	waitStatus(t, ctx, "succeeded")
	require.Contains(t, text(t, ctx, "#log"), "ok")
	require.Contains(t, text(t, ctx, "#run dl.facts"), fmt.Sprintf("retry of run #%d", failedID))
	var retried struct {
		Status  string `json:"status"`
		RetryOf *int64 `json:"retry_of"`
	}
	getJSON(t, fmt.Sprintf("%s/api/v1/runs/%d", base, retryID), &retried)
	require.Equal(t, "succeeded", retried.Status)
	require.NotNil(t, retried.RetryOf)
	require.Equal(t, failedID, *retried.RetryOf)
	noDialog()

	// Cancel the long run from its page, logged out first: a link to log in stands for Cancel, and leads back
	// to the run, where one click cancels it; the page follows it to the end.
	require.Equal(t, base+"/", clickAndLoad(t, ctx, `form[action="/logout"] button`))
	browse(t, ctx, chromedp.Navigate(fmt.Sprintf("%s/runs/%d", base, longID)))
	waitStatus(t, ctx, "running")
	require.Eventually(t, func() bool { return len(processesWithEnv(t, "BROWSER_TEST_SLEEP="+sleepMark)) == 1 },
		5*time.Second, 20*time.Millisecond, "the long run's sleep is not running")
	require.Zero(t, count(t, ctx, "#cancel"), "a logged-out browser is offered a button that would ask for the login")
	require.Equal(t, "Log in to cancel", text(t, ctx, "#cancel-login"))
	loc = logInThrough(t, ctx, "#cancel-login", fmt.Sprintf("/runs/%d", longID))
	require.Equal(t, fmt.Sprintf("%s/runs/%d", base, longID), loc, "the login leads back to the run")
	waitStatus(t, ctx, "running")
	loc = clickAndLoad(t, ctx, "#cancel")
	require.Equal(t, fmt.Sprintf("%s/runs/%d", base, longID), loc)
	waitStatus(t, ctx, "cancelled")
	require.Equal(t, "signal SIGTERM", text(t, ctx, "#run-exit"))
	require.Equal(t, 1, count(t, ctx, "#retry"), "a finished run offers a retry")
	require.Zero(t, count(t, ctx, "#cancel"))
	var cancelled struct {
		Status string `json:"status"`
		Signal string `json:"signal"`
	}
	getJSON(t, fmt.Sprintf("%s/api/v1/runs/%d", base, longID), &cancelled)
	require.Equal(t, "cancelled", cancelled.Status)
	require.Equal(t, "SIGTERM", cancelled.Signal)
	require.Empty(t, processesWithEnv(t, "BROWSER_TEST_SLEEP="+sleepMark), "the sleep outlived its cancelled run")
	noDialog()

	// The Quickstart's way to a new mapping, logged out: the dashboard offers to log in to register one, the
	// login leads to the form, empty, and the mapping typed into it is registered with one click.
	require.Equal(t, base+"/", clickAndLoad(t, ctx, `form[action="/logout"] button`))
	require.Equal(t, "Log in to register a mapping", text(t, ctx, "#new-mapping"))
	require.Equal(t, base+"/mappings/new", logInThrough(t, ctx, "#new-mapping", "/mappings/new"), "the login leads to the form")
	for _, field := range []string{`input[name="name"]`, `input[name="dataset"]`, `textarea[name="command"]`} {
		typed, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS(field)))
		require.NoError(t, err)
		require.Empty(t, typed, "the new form's %s", field)
	}
	// A mapping with a notify target, registered and then edited in the form: the row shows the URL shortened,
	// and saving it unchanged keeps the full URL.
	const hook = "https://hooks.slack.com/services/T0/B0/browsersecret"
	browse(t, ctx,
		chromedp.SendKeys(chromedp.CSS(`input[name="name"]`), "notified"),
		chromedp.SendKeys(chromedp.CSS(`input[name="dataset"]`), "acme/notified"),
		chromedp.SendKeys(chromedp.CSS(`textarea[name="command"]`), "true"),
		chromedp.SendKeys(chromedp.CSS(`input[name="notify_url_0"]`), hook),
		chromedp.SetValue(chromedp.CSS(`select[name="notify_format_0"]`), "slack"))
	require.Equal(t, base+"/mappings/notified", clickAndLoad(t, ctx, "#save"))
	require.Equal(t, "https://hooks.slack.com/… slack on failed, recovered", text(t, ctx, "#notify"))
	shown, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS(`input[name="notify_url_0"]`)))
	require.NoError(t, err)
	require.Equal(t, "https://hooks.slack.com/…", shown)
	browse(t, ctx, chromedp.Click(chromedp.CSS(`input[name="notify_on_0"][value="succeeded"]`)))
	require.Equal(t, base+"/mappings/notified", clickAndLoad(t, ctx, "#save"))
	require.Equal(t, "https://hooks.slack.com/… slack on failed, succeeded, recovered", text(t, ctx, "#notify"))
	require.NotContains(t, text(t, ctx, "main"), "browsersecret")
	saveScreenshot(t, ctx, "mapping.png")
	pool, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	defer pool.Close()
	var stored string
	require.NoError(t, pool.QueryRow(ctx, `SELECT notify->0->>'url' FROM mappings WHERE name = 'notified'`).Scan(&stored))
	require.Equal(t, hook, stored, "the unchanged row kept the full URL")
	noDialog()
	require.Empty(t, consoleErrors(), "errors in the browser console")

	// A mapping with paths and ignore_paths typed into the form: a bad pattern comes back as the form's error,
	// with what was typed kept; corrected, the mapping page lists the patterns.
	browse(t, ctx, chromedp.Navigate(base+"/mappings/new"),
		chromedp.SendKeys(chromedp.CSS(`input[name="name"]`), "sharded"),
		chromedp.SendKeys(chromedp.CSS(`input[name="dataset"]`), "acme/sharded"),
		chromedp.SendKeys(chromedp.CSS(`textarea[name="command"]`), "true"),
		chromedp.SendKeys(chromedp.CSS(`textarea[name="paths"]`), "data/**\n**/*.parquet"),
		chromedp.SendKeys(chromedp.CSS(`textarea[name="ignore_paths"]`), "README.md\ndata/["))
	require.Equal(t, base+"/mappings", clickAndLoad(t, ctx, "#save"))
	require.Equal(t, `mapping "sharded": ignore_paths[1] "data/[": syntax error in pattern`, text(t, ctx, "#form-error"))
	typed, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS(`textarea[name="paths"]`)))
	require.NoError(t, err)
	require.Equal(t, "data/**\n**/*.parquet", typed, "the form keeps what was typed")
	browse(t, ctx, chromedp.Clear(chromedp.CSS(`textarea[name="ignore_paths"]`)),
		chromedp.SendKeys(chromedp.CSS(`textarea[name="ignore_paths"]`), "README.md\n**/*.md"))
	require.Equal(t, base+"/mappings/sharded", clickAndLoad(t, ctx, "#save"))
	require.Equal(t, "data/** **/*.parquet", text(t, ctx, "#paths"))
	require.Equal(t, "README.md **/*.md", text(t, ctx, "#ignore-paths"))
	var sharded struct {
		Mapping struct {
			Paths       []string `json:"paths"`
			IgnorePaths []string `json:"ignore_paths"`
		} `json:"mapping"`
	}
	getJSON(t, base+"/api/v1/mappings/sharded", &sharded)
	require.Equal(t, []string{"data/**", "**/*.parquet"}, sharded.Mapping.Paths)
	require.Equal(t, []string{"README.md", "**/*.md"}, sharded.Mapping.IgnorePaths)
	noDialog()
	errs := consoleErrors()
	require.Len(t, errs, 1, "errors in the browser console: %v", errs)
	require.Regexp(t, `^`+regexp.QuoteMeta(base)+`/mappings: .*status of 400`, errs[0], "the only error is the refused form's answer")

	// The skipped run, from its mark in the dashboard's history: why, and what changed.
	browse(t, ctx, chromedp.Navigate(base+"/"))
	require.Equal(t, fmt.Sprintf("%s/runs/%d", base, skippedID),
		clickAndLoad(t, ctx, `#mappings tr[data-mapping="shards"] ol.strip a.status-skipped`))
	require.Equal(t, "skipped", text(t, ctx, "#run .status"))
	require.Equal(t, "no watched file changed (README.md)", text(t, ctx, "#run-error"))
	require.Equal(t, 1, count(t, ctx, "#run-error.note"), "a skip is not shown as an error")
	require.Equal(t, [][]string{{"README.md", "modified", "8 B → 28 B"}}, cells(t, ctx, "#changed-files"))
	require.Equal(t, "Run anyway", text(t, ctx, "#retry"), "a retry is not checked: it trains")
	require.Equal(t, "None: the command never started.", text(t, ctx, "#no-attempts"))
	require.Zero(t, count(t, ctx, "#log"), "no output to wait for")
	// Its delivery: the decision became ignored, with the reason and the run.
	loc = clickAndLoad(t, ctx, `#run dl.facts a[href^="/deliveries/"]`)
	require.Regexp(t, `^`+regexp.QuoteMeta(base)+`/deliveries/\d+$`, loc)
	require.Equal(t, fmt.Sprintf("ignored shards refs/heads/main: no watched file changed (README.md) → run #%d (skipped)", skippedID),
		text(t, ctx, "ul.decisions li"))
	require.Equal(t, "ignored", text(t, ctx, "ul.decisions li .decision-ignored"))
	require.Equal(t, fmt.Sprintf("%s/runs/%d", base, skippedID), clickAndLoad(t, ctx, fmt.Sprintf(`ul.decisions li a[href="/runs/%d"]`, skippedID)))
	// The runs list, filtered by status: the skipped run alone.
	require.Equal(t, base+"/runs", clickAndLoad(t, ctx, `header nav a[href="/runs"]`))
	browse(t, ctx, chromedp.SetValue(chromedp.CSS(`select[name="status"]`), "skipped"))
	loc = clickAndLoad(t, ctx, "form.filters button")
	filtered, err := url.Parse(loc)
	require.NoError(t, err)
	require.Equal(t, "skipped", filtered.Query().Get("status"))
	rows := cells(t, ctx, "table.runs")
	require.Len(t, rows, 1, "runs listed: %v", rows)
	require.Equal(t, []string{fmt.Sprintf("#%d", skippedID), "skipped", "shards"}, rows[0][:3])
	// The data commit's run, from the mapping's page: the table of its changes, and what its command got.
	browse(t, ctx, chromedp.Navigate(base+"/mappings/shards"))
	checkCommand(t, ctx, "#command", shardsCommand, "sh -c '"+shardsScript+`' 'it'\''s shards'`)
	require.Equal(t, fmt.Sprintf("%s/runs/%d", base, dataID), clickAndLoad(t, ctx, fmt.Sprintf(`table.runs tr[data-run="%d"] a[href="/runs/%d"]`, dataID, dataID)))
	require.Equal(t, "succeeded", text(t, ctx, "#run .status"))
	require.Equal(t, "4 files changed: 1 added, 2 modified, 1 removed — watched files changed (data/labels.csv, data/stale.csv, data/train-00001.parquet).",
		text(t, ctx, "#run-files > p"))
	require.Equal(t, [][]string{
		{"README.md", "modified", "28 B → 38 B"},
		{"data/labels.csv", "modified", "16 B → 29 B"},
		{"data/stale.csv", "removed", "5 B"},
		{"data/train-00001.parquet", "added", "3.0 MiB"},
	}, cells(t, ctx, "#changed-files"))
	require.Equal(t, "training on 3 new or changed files:\nREADME.md\ndata/labels.csv\ndata/train-00001.parquet", text(t, ctx, "#log"))
	checkCommand(t, ctx, "#attempts tbody tr:first-child", shardsCommand, "sh -c '"+shardsScript+`' 'it'\''s shards'`)
	saveScreenshot(t, ctx, "run.png")
	// The commit the Hub does not know: the run went ahead, and says why it did not check.
	browse(t, ctx, chromedp.Navigate(fmt.Sprintf("%s/runs/%d", base, unknownID)))
	require.Regexp(t, `^Could not tell which files changed: .*\. The run went ahead without checking its mapping's paths\.$`,
		text(t, ctx, "#run-files"))
	require.Zero(t, count(t, ctx, "#changed-files"))
	noDialog()

	// The audit trail, from the header's link: the logins, the retry, the cancel and the registration done above.
	browse(t, ctx, chromedp.Navigate(base+"/"))
	require.Equal(t, base+"/audit", clickAndLoad(t, ctx, "#audit-link"))
	actions := texts(t, ctx, "#audit td.action")
	for _, want := range []string{"login", "run.retry", "run.cancel", "mapping.create"} {
		require.Contains(t, actions, want, "audit entries: %v", actions)
	}
	// Filtered by action, by choosing it in the list.
	browse(t, ctx, chromedp.SendKeys(chromedp.CSS("#audit-action"), "run.retry"))
	audited, err := url.Parse(clickAndLoad(t, ctx, "form.filters button"))
	require.NoError(t, err)
	require.Equal(t, "run.retry", audited.Query().Get("action"))
	retries := cells(t, ctx, "#audit")
	require.NotEmpty(t, retries)
	for _, row := range retries {
		require.Equal(t, "run.retry", row[2], "only retries: %v", retries)
		require.Equal(t, "ok (303)", row[4], "the form's answer: a redirect to the new run")
		require.Equal(t, "session", row[6], "the browser's session did it")
	}

	// Every page forbids inline script.
	for _, p := range []string{"/", fmt.Sprintf("/runs/%d", failedID), "/login", "/runs"} {
		resp, err := http.Get(base + p)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, p)
		csp := resp.Header.Get("Content-Security-Policy")
		require.Contains(t, csp, "script-src 'self'", p)
		require.NotContains(t, csp, "unsafe-inline", p)
	}
}

// findChromium returns the browser to drive, and fails the test when there is none.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("TestBrowser needs Chromium, and none of chromium, chromium-browser or google-chrome is on PATH: " +
		"install it with `apt-get install -y chromium` (Debian/Ubuntu), or run `bash .ci/deps` as root")
	return ""
}

// startBrowser starts a headless Chromium with a fresh profile that stays off the network, and returns the
// context of its tab (bounded, so that a hung page fails the test) and funcs that return the JavaScript dialogs
// and the console errors seen so far. Dialogs are dismissed so that the test goes on to report them.
func startBrowser(t *testing.T, chrome string) (context.Context, func() []string, func() []string) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	// The first action starts the browser and binds it to browserCtx, which has no deadline.
	require.NoError(t, chromedp.Do(browserCtx), "start %s", chrome)

	var mu sync.Mutex
	var dialogs, consoleErrors []string
	dialogEvents := chromedp.Events(browserCtx, page.JavascriptDialogOpening)
	messages := chromedp.Console(browserCtx)
	go func() {
		for ev, err := range dialogEvents {
			if err != nil {
				return
			}
			mu.Lock()
			dialogs = append(dialogs, fmt.Sprintf("%s dialog on %s: %q", ev.Type, ev.URL, ev.Message))
			mu.Unlock()
			_, _ = chromedp.Call(browserCtx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	go func() {
		for msg, err := range messages {
			if err != nil {
				return
			}
			// The pages have no icon: the browser's request for one is answered 404, which is fine.
			if (msg.IsException() || msg.Type == chromedp.ConsoleError) && !strings.HasSuffix(msg.URL, "/favicon.ico") {
				mu.Lock()
				consoleErrors = append(consoleErrors, fmt.Sprintf("%s: %s", msg.URL, msg))
				mu.Unlock()
			}
		}
	}()
	snapshot := func(s *[]string) func() []string {
		return func() []string {
			mu.Lock()
			defer mu.Unlock()
			return append([]string(nil), *s...)
		}
	}

	ctx, cancel := context.WithTimeout(browserCtx, 40*time.Second)
	t.Cleanup(cancel)
	return ctx, snapshot(&dialogs), snapshot(&consoleErrors)
}

// browse runs actions in the tab.
func browse(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, actions...))
}

// text returns the visible text of the first element that matches the CSS selector, waiting a few seconds for
// one to exist. It reads the text in the page rather than through DevTools' node ids: a page that reloads by
// itself (the run page does when its run ends) can leave those stale, and the read then fails.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	expr := fmt.Sprintf(`(function () { var e = document.querySelector(%q); return e ? e.innerText : null; })()`, sel)
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[*string](expr))
		require.NoError(t, err, "text of %s", sel)
		if s != nil {
			return strings.TrimSpace(*s)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no element matches %s", sel)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// texts returns the visible text of every element that matches the CSS selector.
func texts(t *testing.T, ctx context.Context, sel string) []string {
	t.Helper()
	expr := fmt.Sprintf(`Array.from(document.querySelectorAll(%q), function (e) { return e.innerText.trim(); })`, sel)
	s, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](expr))
	require.NoError(t, err, "texts of %s", sel)
	return s
}

// cells returns the visible text of the cells of the body rows of the table that matches the CSS selector.
func cells(t *testing.T, ctx context.Context, table string) [][]string {
	t.Helper()
	expr := fmt.Sprintf(`Array.from(document.querySelectorAll(%q), function (r) {
		return Array.from(r.cells, function (c) { return c.innerText.trim(); });
	})`, table+" tbody tr")
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[][]string](expr))
	require.NoError(t, err, "cells of %s", table)
	return rows
}

// count returns how many elements match the CSS selector.
func count(t *testing.T, ctx context.Context, sel string) int {
	t.Helper()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
	require.NoError(t, err, "count %s", sel)
	return n
}

// clickAndLoad clicks the element and waits for the page it leads to; it returns that page's URL.
func clickAndLoad(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(sel))))
	require.NoError(t, err, "click %s", sel)
	loc, err := chromedp.Run(ctx, chromedp.Location())
	require.NoError(t, err)
	return loc
}

// logInThrough clicks the link that stands for an action of a logged-out page, checks that it leads to the
// login form that goes on to next, logs in there by typing the admin token, and returns the URL the login
// leads to.
func logInThrough(t *testing.T, ctx context.Context, link, next string) string {
	t.Helper()
	loc := clickAndLoad(t, ctx, link)
	login, err := url.Parse(loc)
	require.NoError(t, err)
	require.Equal(t, "/login", login.Path, "%s leads to the login form, not %s", link, loc)
	require.Equal(t, next, login.Query().Get("next"))
	browse(t, ctx, chromedp.SendKeys(chromedp.CSS("#token"), browserAdminToken))
	return clickAndLoad(t, ctx, "#login")
}

// waitStatus waits until the run page shows the status, without reloading: the page updates itself.
func waitStatus(t *testing.T, ctx context.Context, want string) {
	t.Helper()
	const expr = `(function () { var s = document.querySelector("#run .status"); return s ? s.textContent : ""; })()`
	deadline := time.Now().Add(20 * time.Second)
	var got string
	var err error
	for time.Now().Before(deadline) {
		evalCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		got, err = chromedp.Run(evalCtx, chromedp.Evaluate[string](expr))
		cancel()
		if err == nil && strings.TrimSpace(got) == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the run page never showed %q: it shows %q (last error: %v)", want, got, err)
}

// checkCommand checks the command shown inside the element that matches the CSS selector: one element per
// argument with the argument as its text, and the line to paste into a shell.
func checkCommand(t *testing.T, ctx context.Context, sel string, argv []string, line string) {
	t.Helper()
	expr := fmt.Sprintf(`Array.from(document.querySelectorAll(%q), function (e) { return e.textContent; })`, sel+" ol.argv > li")
	args, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](expr))
	require.NoError(t, err, "arguments in %s", sel)
	require.Equal(t, argv, args, "arguments in %s", sel)
	require.Equal(t, line, text(t, ctx, sel+" pre.cmdline"), "command line in %s", sel)
	require.Equal(t, 1, count(t, ctx, sel+" button.copy"), "copy button in %s", sel)
}

// saveScreenshot saves a full-page PNG of the tab in the test's temporary directory, and also in docs/ when
// UPDATE_SCREENSHOTS=1.
func saveScreenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 gives a PNG
	require.NoError(t, err, "screenshot %s", name)
	require.NoError(t, os.WriteFile(filepath.Join(t.TempDir(), name), png, 0o644))
	if os.Getenv("UPDATE_SCREENSHOTS") == "1" {
		docs := filepath.Join("..", "..", "docs")
		require.NoError(t, os.MkdirAll(docs, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(docs, name), png, 0o644))
		t.Logf("wrote %s", filepath.Join(docs, name))
	}
}

// refDelivery is a delivery of one new commit on one ref of a dataset.
func refDelivery(t *testing.T, dataset, ref, sha string) string {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"event":       map[string]string{"scope": "repo.content", "action": "update"},
		"repo":        map[string]string{"type": "dataset", "name": dataset, "id": "66a1f0c2b9e4d3a1f2c3d4e5"},
		"updatedRefs": []map[string]any{{"ref": ref, "oldSha": nil, "newSha": sha}},
	})
	require.NoError(t, err)
	return string(body)
}

// deliveredRun returns the one run a delivery queued.
func deliveredRun(t *testing.T, answer map[string]any) int64 {
	t.Helper()
	runs, _ := answer["runs"].([]any)
	require.Len(t, runs, 1, "answer: %v", answer)
	return int64(runs[0].(float64))
}

// yamlValue writes v as a YAML flow value (JSON is YAML).
func yamlValue(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, u)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
}

// processesWithEnv returns the pids of the processes whose environment holds the KEY=VALUE entry.
func processesWithEnv(t *testing.T, entry string) []int {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/environ")
	require.NoError(t, err)
	var pids []int
	for _, p := range procs {
		env, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile, or not ours
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if kv == entry {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}
