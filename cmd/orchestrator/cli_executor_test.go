package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/web/api"
)

// TestCLIExecutorFormat: "mappings show" prints the executor, the hf_jobs settings (secrets by name) and the
// cost; "runs show" each attempt's Job and whether it waits for hardware.
func TestCLIExecutorFormat(t *testing.T) {
	t.Parallel()
	m := orchestrator.Mapping{Name: "train", Dataset: "acme/d", Command: []string{"python", "train.py"},
		Executor: orchestrator.ExecutorHFJobs, HFJobs: &orchestrator.HFJobsSettings{Namespace: "acme", Space: "acme/trainer",
			Secrets: []string{"HF_TOKEN"}, MountDataset: "/data", Labels: map[string]string{"team": "nlp", "a": "b"}}}.WithDefaults()
	shown := api.NewMapping(&m)
	cases := []struct {
		name    string
		mapping api.Mapping
		cost    string
		want    []string
		not     []string
	}{
		{"HFJobs", shown, "$0.42", []string{"executor:", "hf-jobs", "acme, space acme/trainer, cpu-basic", "HF_TOKEN", "/data", "a=b, team=nlp", "cost:", "$0.42"}, nil},
		{"Local", api.Mapping{Name: "l", Executor: orchestrator.ExecutorLocal}, "$0.00", []string{"executor:", "local"}, []string{"hf_jobs", "cost"}},
		{"NoCostKnown", shown, "", []string{"hf-jobs"}, []string{"cost"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			require.NoError(t, printMapping(&out, &tc.mapping, tc.cost))
			for _, w := range tc.want {
				require.Contains(t, out.String(), w)
			}
			for _, w := range tc.not {
				require.NotContains(t, out.String(), w)
			}
		})
	}

	t.Run("Run", func(t *testing.T) {
		t.Parallel()
		created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		running, ended := created.Add(90*time.Second), created.Add(90*time.Second+25*time.Minute)
		e := orchestrator.AttemptExecution{RunID: 1, Attempt: 1, Executor: orchestrator.ExecutorHFJobs, ExternalID: "j1",
			Namespace: "acme", URL: "https://huggingface.co/jobs/acme/j1", Flavor: "a10g-small", Stage: "COMPLETED",
			CreatedAt: created, RunningAt: &running, EndedAt: &ended, CostMicroUSD: 416675}
		waiting := orchestrator.AttemptExecution{RunID: 1, Attempt: 2, Executor: orchestrator.ExecutorHFJobs, ExternalID: "j2",
			Namespace: "acme", Flavor: "a10g-small", Stage: "SCHEDULING", CreatedAt: ended}
		d := api.RunDetail{Run: orchestrator.Run{ID: 1, Status: orchestrator.RunRunning, Attempt: 2},
			Executions: api.NewExecutions([]orchestrator.AttemptExecution{e, waiting}, ended.Add(time.Minute)), WaitingForHardware: true}
		var out bytes.Buffer
		require.NoError(t, printRun(&out, &d))
		for _, w := range []string{"waiting for hardware", "1: COMPLETED acme/j1 a10g-small, waited 1m30s, ran 25m0s, $0.42",
			"url: https://huggingface.co/jobs/acme/j1", "2: SCHEDULING acme/j2 a10g-small, waited 1m0s, ran 0s, $0.00"} {
			require.Contains(t, out.String(), w)
		}
	})
}
