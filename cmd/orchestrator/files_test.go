package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/hub/hubtest"
	"github.com/retrainhq/orchestrator/orchestrator/service"
	"github.com/retrainhq/orchestrator/web/api"
)

// pushOf is the webhook body of a push that moved ref of dataset from old ("" for a new ref) to sha.
func pushOf(dataset, ref, old, sha string) string {
	oldJSON := "null"
	if old != "" {
		oldJSON = `"` + old + `"`
	}
	return `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"` + dataset +
		`","id":"66a1f0c2b9e4d3a1f2c3d4e5","headSha":"` + sha + `"},
		"updatedRefs":[{"ref":"` + ref + `","oldSha":` + oldJSON + `,"newSha":"` + sha + `"}]}`
}

// runDetail is GET /api/v1/runs/{id}.
func runDetail(t *testing.T, base string, id int64) api.RunDetail {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("%s/api/v1/runs/%d", base, id))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var d api.RunDetail
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&d))
	return d
}

// onlyRun posts a delivery and returns the one run it queued.
func onlyRun(t *testing.T, base, body string) int64 {
	t.Helper()
	out := postDelivery(t, base, body)
	require.Len(t, out["runs"], 1, "answer: %v", out)
	return int64(out["runs"].([]any)[0].(float64))
}

// TestOnlyWhenTheDataChanged drives the whole service against a stand-in Hub serving real git repositories:
// which commits train, what each run is told changed, and what happens when the Hub cannot tell.
func TestOnlyWhenTheDataChanged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, _ := dbtest.NewSchema(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	require.NoError(t, os.Mkdir(out, 0o755))

	tickets := hubtest.NewRepo(t, "acme/tickets")
	private := hubtest.NewRepo(t, "acme/private")
	srv := hubtest.NewServer(t, tickets, private)
	srv.SetPageSize(100)
	const hubToken = "hf_e2e_token"
	srv.SetPrivate("acme/private", hubToken)

	// Each command copies its list of changed files to out/<mapping>-<run>.
	command := func(mapping string) string {
		return `["sh", "-c", "if [ -n \"$DATASET_CHANGED_FILES\" ]; then cp \"$DATASET_CHANGED_FILES\" ` + out + `/` + mapping +
			`-$RUN_ID; else echo unknown > ` + out + `/` + mapping + `-$RUN_ID; fi"]`
	}
	cfgPath := writeConfig(t, dir, `
mappings:
  - name: data
    dataset: acme/tickets
    refs: ["refs/heads/*"]
    command: `+command("data")+`
    on_new_revision: queue
    paths: ["data/**", "**/*.parquet"]
    ignore_paths: ["README.md", "**/*.md"]
  - name: nodocs
    dataset: acme/tickets
    command: `+command("nodocs")+`
    on_new_revision: queue
    ignore_paths: ["**/*.md", ".gitattributes"]
  - name: private
    dataset: acme/private
    command: `+command("private")+`
    paths: ["data/**"]
`)
	svc := startService(t, service.Config{Addr: "127.0.0.1:0", ConfigPath: cfgPath, DatabaseURL: url, WebhookSecret: e2eSecret,
		AdminToken: cliToken, MaxWorkers: 4, KillGrace: time.Second, Logger: errorLogger(),
		HFEndpoint: srv.URL, HFToken: hubToken, ChangedFiles: service.ChangedFilesAll, FilesTimeout: 20 * time.Second})
	base := "http://" + svc.Addr()
	listed := func(mapping string, run int64) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("%s-%d", mapping, run)))
		require.NoError(t, err)
		return string(data)
	}

	// The first commit: a new ref, so every file counts as changed.
	tickets.Write("README.md", "# tickets")
	tickets.Write(".gitattributes", "*.parquet filter=lfs diff=lfs merge=lfs -text")
	tickets.WriteLFS("data/train-00000.parquet", "rows 0..999")
	first := tickets.Commit(t, "first")
	runs := postDelivery(t, base, pushOf("acme/tickets", "refs/heads/main", "", first))["runs"].([]any)
	require.Len(t, runs, 2)
	for _, r := range runs {
		run := waitRun(t, base, int64(r.(float64)), "succeeded", "failed", "skipped")
		require.Equal(t, "succeeded", run.Status, run.Error)
	}
	d := runDetail(t, base, int64(runs[0].(float64)))
	require.NotNil(t, d.Files)
	require.Equal(t, 3, d.Files.Added)

	t.Run("CardOnlyCommitIsIgnored", func(t *testing.T) {
		tickets.Write("README.md", "# tickets, with a better card")
		card := tickets.Commit(t, "card")
		answer := postDelivery(t, base, pushOf("acme/tickets", "refs/heads/main", first, card))
		var ids []int64
		for _, r := range answer["runs"].([]any) {
			ids = append(ids, int64(r.(float64)))
		}
		require.Len(t, ids, 2, "the webhook answers before the Hub is asked: both runs are queued")
		for _, id := range ids {
			run := waitRun(t, base, id, "succeeded", "failed", "skipped")
			require.Equal(t, "skipped", run.Status)
			require.Equal(t, "no watched file changed (README.md)", run.Error)
		}
		// The delivery's decisions say why it did not train.
		resp, err := http.Get(fmt.Sprintf("%s/api/v1/deliveries?limit=1", base))
		require.NoError(t, err)
		defer resp.Body.Close()
		var list api.DeliveryList
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
		for _, dec := range list.Deliveries[0].Decisions {
			require.Equal(t, "ignored", string(dec.Decision))
			require.Equal(t, "no watched file changed (README.md)", dec.Reason)
			require.NotZero(t, dec.RunID)
		}
		// The run page shows the change and the verdict.
		page := getPage(t, fmt.Sprintf("%s/runs/%d", base, ids[0]))
		require.Contains(t, page, "Changed files")
		require.Contains(t, page, "<code>README.md</code>")
		require.Contains(t, page, "no watched file changed (README.md)")
		first = card
	})

	t.Run("NewShardTrains", func(t *testing.T) {
		tickets.WriteLFS("data/train-00001.parquet", "rows 1000..1999")
		tickets.Write("notes.md", "a note")
		shard := tickets.Commit(t, "shard")
		answer := postDelivery(t, base, pushOf("acme/tickets", "refs/heads/main", first, shard))
		byMapping := map[string]int64{}
		for _, dec := range answer["decisions"].([]any) {
			m := dec.(map[string]any)
			byMapping[m["mapping"].(string)] = int64(m["run_id"].(float64))
		}
		run := waitRun(t, base, byMapping["data"], "succeeded", "failed", "skipped")
		require.Equal(t, "succeeded", run.Status, run.Error)
		require.Equal(t, "data/train-00001.parquet\nnotes.md\n", listed("data", byMapping["data"]))
		d := runDetail(t, base, byMapping["data"])
		require.Equal(t, "watched", string(d.FilesCheck))
		require.Equal(t, 2, d.Files.Added)
		require.Equal(t, int64(len("rows 1000..1999")), d.Files.Files[0].Size, "an LFS file's size is its content's")
		// ignore_paths alone: a parquet file is not ignored.
		run = waitRun(t, base, byMapping["nodocs"], "succeeded", "failed", "skipped")
		require.Equal(t, "succeeded", run.Status, run.Error)
		first = shard
	})

	t.Run("IgnorePathsOnly", func(t *testing.T) {
		tickets.Write("guide.md", "how to label")
		tickets.Write(".gitattributes", "*.parquet filter=lfs diff=lfs merge=lfs -text\n*.arrow filter=lfs")
		docs := tickets.Commit(t, "docs")
		answer := postDelivery(t, base, pushOf("acme/tickets", "refs/heads/main", first, docs))
		for _, r := range answer["runs"].([]any) {
			run := waitRun(t, base, int64(r.(float64)), "succeeded", "failed", "skipped")
			require.Equal(t, "skipped", run.Status, "guide.md and .gitattributes are ignored by nodocs and unwatched by data")
		}
		first = docs
	})

	t.Run("NewBranchEveryFileChanged", func(t *testing.T) {
		tickets.Branch(t, "v2", first)
		tickets.Checkout(t, "v2")
		tickets.Write("README.md", "# v2")
		v2 := tickets.Commit(t, "v2 card")
		id := onlyRun(t, base, pushOf("acme/tickets", "refs/heads/v2", "", v2))
		run := waitRun(t, base, id, "succeeded", "failed", "skipped")
		require.Equal(t, "succeeded", run.Status, "a new ref: the data files count as changed too")
		d := runDetail(t, base, id)
		require.Equal(t, d.Files.Total, d.Files.Added)
		require.Contains(t, listed("data", id), "data/train-00000.parquet\n")
		tickets.Checkout(t, "main")
	})

	t.Run("TwoThousandFilesInOneCommit", func(t *testing.T) {
		for i := range 2000 {
			tickets.Write(fmt.Sprintf("data/shards/%04d.jsonl", i), fmt.Sprintf(`{"row": %d}`, i))
		}
		big := tickets.Commit(t, "2,000 shards")
		answer := postDelivery(t, base, pushOf("acme/tickets", "refs/heads/main", first, big))
		var dataRun int64
		for _, dec := range answer["decisions"].([]any) {
			if m := dec.(map[string]any); m["mapping"] == "data" {
				dataRun = int64(m["run_id"].(float64))
			}
		}
		run := waitRun(t, base, dataRun, "succeeded", "failed", "skipped")
		require.Equal(t, "succeeded", run.Status, run.Error)
		d := runDetail(t, base, dataRun)
		require.Equal(t, 2000, d.Files.Total)
		require.Len(t, d.Files.Files, 100, "the API shows the first hundred")
		require.Len(t, strings.Fields(listed("data", dataRun)), 2000, "the command gets them all")
		first = big
	})

	t.Run("HubDownRunGoesAheadWithTheReason", func(t *testing.T) {
		tickets.Write("README.md", "# card again")
		card := tickets.Commit(t, "card while the Hub is down")
		srv.Fail(hubtest.Fault{Path: "/tree/", Status: http.StatusBadGateway})
		before := time.Now()
		answer := postDelivery(t, base, pushOf("acme/tickets", "refs/heads/main", first, card))
		require.Less(t, time.Since(before), 5*time.Second, "the webhook never waits for the Hub")
		for _, r := range answer["runs"].([]any) {
			id := int64(r.(float64))
			run := waitRun(t, base, id, "succeeded", "failed", "skipped")
			require.Equal(t, "succeeded", run.Status, "missing a retraining is worse than one run too many")
			d := runDetail(t, base, id)
			require.Equal(t, "unknown", string(d.FilesCheck))
			require.Contains(t, d.Files.Unknown, "502")
		}
		srv.ClearFaults()
		first = card
	})

	t.Run("PrivateDatasetWithTheToken", func(t *testing.T) {
		private.Write("README.md", "private card")
		p1 := private.Commit(t, "first")
		private.WriteLFS("data/x.parquet", "secret rows")
		p2 := private.Commit(t, "data")
		onlyRunOrNone := postDelivery(t, base, pushOf("acme/private", "refs/heads/main", "", p1))["runs"].([]any)
		require.Len(t, onlyRunOrNone, 1)
		run := waitRun(t, base, int64(onlyRunOrNone[0].(float64)), "succeeded", "failed", "skipped")
		require.Equal(t, "skipped", run.Status, "a card alone, listed with the token")
		id := onlyRun(t, base, pushOf("acme/private", "refs/heads/main", p1, p2))
		run = waitRun(t, base, id, "succeeded", "failed", "skipped")
		require.Equal(t, "succeeded", run.Status, run.Error)
		require.Equal(t, "data/x.parquet\n", listed("private", id))
	})

	t.Run("CheckFromTheCommandLine", func(t *testing.T) {
		tickets.Write("README.md", "# check me")
		card := tickets.Commit(t, "unpushed card")
		env := map[string]string{"ORCHESTRATOR_URL": base, "ORCHESTRATOR_ADMIN_TOKEN": cliToken}
		var stdout, stderr bytes.Buffer
		code := run(ctx, []string{"mappings", "check", "data", "--revision", card}, func(k string) string { return env[k] }, &stdout, &stderr)
		require.Equal(t, 0, code, stderr.String())
		require.Contains(t, stdout.String(), "would not trigger a run")
		require.Contains(t, stdout.String(), "no watched file changed (README.md)")
		require.Contains(t, stdout.String(), first, "compared with the commit's parent")
		stdout.Reset()
		code = run(ctx, []string{"mappings", "check", "nodocs", "--revision", card, "--old", d.Revision, "--json"}, func(k string) string { return env[k] }, &stdout, &stderr)
		require.Equal(t, 0, code, stderr.String())
		var res api.MappingCheck
		require.NoError(t, json.Unmarshal(stdout.Bytes(), &res))
		require.True(t, res.Trigger, "from the first commit, data files changed too")
		stdout.Reset()
		code = run(ctx, []string{"mappings", "check", "data", "--revision", strings.Repeat("0", 40)}, func(k string) string { return env[k] }, &stdout, &stderr)
		require.Equal(t, 1, code)
		require.Contains(t, stderr.String(), "404")
	})
}

// getPage returns the HTML of a console page.
func getPage(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/html")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	require.NoError(t, err)
	return b.String()
}
