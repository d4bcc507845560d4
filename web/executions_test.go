package web_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// secretValue is the value of the only secret in the server's environment: it must never be shown.
const secretValue = "hf_secret_value_never_shown_123"

// TestExecutions: an hf-jobs mapping created through the API, whose secrets must be in the environment; an
// attempt's Job recorded through the store, then shown by the run page and API (waiting for hardware, then
// its times and cost), and the mapping's summed cost by the mapping page and API. No secret value appears.
func TestExecutions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := map[string]string{"HF_TOKEN": secretValue}
	b := setupWithOpts(t, setupOpts{adminToken: adminToken,
		lookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
	bearer := map[string]string{"Authorization": "Bearer " + adminToken, "Content-Type": "application/json"}
	spec := func(secrets string) string {
		return `{"name":"tickets","dataset":"acme/support-tickets","command":["python","train.py"],"executor":"hf-jobs",
			"hf_jobs":{"namespace":"acme","image":"python:3.12","flavor":"a10g-small","secrets":[` + secrets + `],
			"mount_dataset":"/data","labels":{"team":"nlp"}}}`
	}

	// Refused while a secret is not in the environment, by the create and by the update.
	status, _, resp := b.request(t, http.MethodPost, "/api/v1/mappings", spec(`"HF_TOKEN","WANDB_API_KEY"`), bearer)
	require.Equal(t, http.StatusBadRequest, status, "%v", resp)
	require.Contains(t, fmt.Sprint(resp), "hf_jobs.secrets WANDB_API_KEY not set")
	status, _, resp = b.request(t, http.MethodPost, "/api/v1/mappings", `{"name":"tickets","dataset":"acme/support-tickets",
		"command":["x"],"executor":"hf-jobs","hf_jobs":{"namespace":"acme","image":"i","flavor":"t9"}}`, bearer)
	require.Equal(t, http.StatusBadRequest, status, "%v", resp)
	require.Contains(t, fmt.Sprint(resp), `hf_jobs.flavor "t9" is not a known flavor: one of cpu-basic`)

	status, _, resp = b.request(t, http.MethodPost, "/api/v1/mappings", spec(`"HF_TOKEN"`), bearer)
	require.Equal(t, http.StatusCreated, status, "%v", resp)
	shown := resp["mapping"].(map[string]any)
	require.Equal(t, "hf-jobs", shown["executor"])
	require.Equal(t, []any{"HF_TOKEN"}, shown["hf_jobs"].(map[string]any)["secrets"])
	status, _, resp = b.request(t, http.MethodPut, "/api/v1/mappings/tickets", spec(`"HF_TOKEN","WANDB_API_KEY"`), bearer)
	require.Equal(t, http.StatusBadRequest, status, "%v", resp)
	stored, err := b.store.MappingGetByName(ctx, "tickets")
	require.NoError(t, err)
	require.Equal(t, []string{"HF_TOKEN"}, stored.HFJobs.Secrets, "the refused update changed nothing")
	require.Equal(t, "a10g-small", stored.HFJobs.Flavor)

	runID := b.pushRun(t, "refs/heads/main", strings.Repeat("a", 40))
	require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: runID, Attempt: 1, Argv: []string{"python", "train.py"}}))
	created := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	job := orchestrator.AttemptExecution{RunID: runID, Attempt: 1, Executor: orchestrator.ExecutorHFJobs,
		ExternalID: "687fb701029421ae5549d998", Namespace: "acme", URL: "https://huggingface.co/jobs/acme/687fb701029421ae5549d998",
		Flavor: "a10g-small", Stage: "SCHEDULING", CreatedAt: created, UnitCostMicroUSD: 16667}
	require.NoError(t, b.store.AttemptExecutionRecord(ctx, job))

	runPath := fmt.Sprintf("/runs/%d", runID)
	apiRun := func(t *testing.T) map[string]any {
		t.Helper()
		status, _, raw := b.rawRequest(t, http.MethodGet, "/api/v1"+runPath, "", nil)
		require.Equal(t, http.StatusOK, status)
		require.NotContains(t, string(raw), secretValue)
		_, _, resp := b.request(t, http.MethodGet, "/api/v1"+runPath, "", nil)
		return resp
	}
	p := b.getPage(t, runPath, nil)
	require.Equal(t, http.StatusOK, p.status)
	require.Equal(t, "waiting for hardware", text(p.one(t, byAttr("id", "run-waiting"))))
	link := p.one(t, byAttr("class", "job-link"))
	require.Equal(t, job.URL, attr(link, "href"))
	require.Equal(t, job.ExternalID, strings.TrimSpace(text(link)))
	resp = apiRun(t)
	require.Equal(t, true, resp["waiting_for_hardware"])
	exec := resp["executions"].([]any)[0].(map[string]any)
	require.Equal(t, job.ExternalID, exec["external_id"])
	require.Equal(t, "SCHEDULING", exec["stage"])
	require.Equal(t, true, exec["waiting_for_hardware"])
	require.Equal(t, float64(0), exec["running_seconds"])

	// The Job got its hardware 90 seconds in and ran 25 minutes.
	running, ended := created.Add(90*time.Second), created.Add(90*time.Second+25*time.Minute)
	job.Stage, job.Message, job.RunningAt, job.EndedAt, job.CostMicroUSD = "COMPLETED", "Job finished", &running, &ended, 416675
	require.NoError(t, b.store.AttemptExecutionRecord(ctx, job))
	p = b.getPage(t, runPath, nil)
	require.Empty(t, find(p.root, byAttr("id", "run-waiting")))
	row := text(p.one(t, byAttr("id", "executions")))
	for _, want := range []string{"acme", "a10g-small", "COMPLETED", "Job finished", "1m30s", "25m0s", "$0.42"} {
		require.Contains(t, row, want)
	}
	require.NotContains(t, p.raw, secretValue)
	resp = apiRun(t)
	require.Equal(t, false, resp["waiting_for_hardware"])
	exec = resp["executions"].([]any)[0].(map[string]any)
	require.Equal(t, float64(90), exec["waiting_seconds"])
	require.Equal(t, float64(1500), exec["running_seconds"])
	require.Equal(t, "$0.42", exec["cost"])
	require.Equal(t, float64(416675), exec["cost_micro_usd"])

	p = b.getPage(t, "/mappings/tickets", nil)
	require.Equal(t, http.StatusOK, p.status)
	require.Equal(t, "$0.42", text(p.one(t, byAttr("id", "cost"))))
	require.Equal(t, "a10g-small", text(p.one(t, byAttr("id", "hf-flavor"))))
	require.Contains(t, text(p.one(t, byAttr("id", "hf-secrets"))), "HF_TOKEN")
	require.NotContains(t, p.raw, secretValue)
	status, _, raw := b.rawRequest(t, http.MethodGet, "/api/v1/mappings/tickets", "", nil)
	require.Equal(t, http.StatusOK, status)
	require.NotContains(t, string(raw), secretValue)
	_, _, resp = b.request(t, http.MethodGet, "/api/v1/mappings/tickets", "", nil)
	require.Equal(t, "$0.42", resp["cost"])
	require.Equal(t, float64(416675), resp["cost_micro_usd"])
	require.Equal(t, "acme", resp["mapping"].(map[string]any)["hf_jobs"].(map[string]any)["namespace"])

	// The console's edit form, which does not carry the executor, keeps it.
	basic := map[string]string{"Authorization": "Basic " + basicAuth("me", adminToken)}
	values := mappingFormValues(t, b.getPage(t, "/mappings/tickets", basic))
	values.Set("max_attempts", "3")
	answer := b.postPage(t, "/mappings/tickets", values, basic)
	require.Equal(t, http.StatusSeeOther, answer.status, answer.raw)
	after, err := b.store.MappingGetByName(ctx, "tickets")
	require.NoError(t, err)
	require.Equal(t, 3, after.MaxAttempts)
	require.Equal(t, orchestrator.ExecutorHFJobs, after.Executor)
	require.Equal(t, stored.HFJobs, after.HFJobs)
}
